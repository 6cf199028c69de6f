"""User-facing errors: the CLI prints their message (one line per problem) and exits with `exit_code`."""
from __future__ import annotations


class SimfedError(Exception):
    """A problem the user can fix (bad scenario, missing corpus, unknown model card).

    The CLI prints `str(error)` to stderr without a traceback and exits with `exit_code`.
    Subclasses (DataError, ModelCardError, ScenarioError, ...) keep the message to one line
    per problem.
    """

    exit_code = 2


class FieldProblem(ValueError):
    """Raise inside a pydantic validator to blame a key *below* the validated model.

    pydantic locates an error at the model (or field) whose validator raised it; a cross-field
    check such as "method names are unique" knows better: `FieldProblem(("methods", 2, "name"),
    "duplicate method name 'comigs'")` makes the scenario error point at that key's line.
    `path` is relative to the model or field whose validator raises.
    """

    def __init__(self, path: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.path = tuple(path)
        self.message = message
