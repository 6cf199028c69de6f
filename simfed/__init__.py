"""simfed: a discrete-event simulator for federated on-device fine-tuning of language models.

The Python API (simfed/api.py) is imported on first use, so `import simfed` stays light:
`simfed.run(scenario)`, `simfed.load_run(run_dir)`, `simfed.load_device_model(run_dir, method, device)`,
`simfed.export(run_dir, method, out)`.
"""

__version__ = "0.1.0"

_API = ("load_run", "load_device_model", "export")  # `simfed.run` is the callable package simfed/run


def __getattr__(name: str):
    if name == "run":  # simfed.run(...) before any simfed.run.* module was imported
        import importlib

        return importlib.import_module("simfed.run")
    if name in _API:
        from simfed import api

        return getattr(api, name)
    raise AttributeError(f"module 'simfed' has no attribute {name!r}")
