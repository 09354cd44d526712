"""Errors a user can hit, typed, each carrying the file and the field it is about."""

from __future__ import annotations


class EvalfleetError(Exception):
    """Base of every error evalfleet reports to a user as one sentence."""


class SpecError(EvalfleetError):
    """Bad input in a run file or a dataset: names the file and the field."""

    def __init__(self, file: str | None, field: str | None, message: str):
        self.file = file
        self.field = field
        self.message = message
        where = ": ".join(part for part in (file, f"field `{field}`" if field else None) if part)
        super().__init__(f"{where}: {message}" if where else message)


class StoreError(EvalfleetError):
    """A result store or log store could not be read or written."""


class RunNotFound(EvalfleetError):
    def __init__(self, run_id: str):
        super().__init__(f"no run with id {run_id!r}")
        self.run_id = run_id
