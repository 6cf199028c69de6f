"""Tables and plots built from a run directory."""
