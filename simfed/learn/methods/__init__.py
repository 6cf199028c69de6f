"""One module a method; `registry.py` maps scenario names to classes."""
