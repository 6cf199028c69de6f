"""Run glue: the only package that joins the simulated world and the learning.

`simfed.run(scenario)` is the Python API's entry point (simfed/api.py `run`), and `simfed.run` is
also this package: Python sets the attribute `run` of `simfed` to this module as soon as any
`simfed.run.*` module is imported, so a function of that name could not live beside it. The
package is therefore made callable instead — calling it is calling `simfed.api.run`.
"""
import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from simfed.api import run

        return run(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
