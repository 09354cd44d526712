"""Importing user code named `package.module:attribute` (tasks, python models). Importing runs that
code with the worker's rights, so it is imported only from modules listed in
`EVALFLEET_ALLOWED_MODULES`."""

from __future__ import annotations

import importlib
from typing import Any

from shared.errors import SpecError
from shared.settings import get_settings


def load_entrypoint(reference: str, *, file: str | None = None, field: str | None = None) -> Any:
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise SpecError(file, field, f"{reference!r} is not of the form package.module:function")
    allowed = get_settings().allowed_module_prefixes
    if not any(module_name == p or module_name.startswith(p + ".") for p in allowed):
        raise SpecError(file, field, f"module {module_name!r} is not allowed: list it in EVALFLEET_ALLOWED_MODULES "
                        "(comma-separated) on the submitter and the workers; its code runs with their rights")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(file, field, f"cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise SpecError(file, field, f"module {module_name!r} has no attribute {attribute!r}") from None
