"""What is built in, described from the code itself: each built-in task with its config fields
(from its pydantic config model: name, type, default) and metrics, and each scorer with its
options. `evalfleet tasks` prints it."""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from shared.plan import ResolvedDataset
from workers.scorers import SCORERS
from workers.tasks import BUILTIN_TASKS


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("workers.scorers.", "").replace("SerializeAsAny[ScorerOptions]",
                                                                               "scorer")


def fields_of(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    out = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        entry: dict[str, Any] = {"name": name, "type": _type_name(info.annotation)}
        if info.default is not PydanticUndefined:
            entry["default"] = info.default.model_dump() if isinstance(info.default, BaseModel) else info.default
        elif info.default_factory is not None:
            value = info.default_factory()
            entry["default"] = [v.model_dump() if isinstance(v, BaseModel) else v for v in value] \
                if isinstance(value, list) else value
        if info.description:
            entry["description"] = info.description
        out.append(entry)
    return out


def _first_line(text: str | None) -> str:
    return (inspect.cleandoc(text or "").splitlines() or [""])[0]


def catalogue() -> dict[str, dict[str, Any]]:
    tasks = {}
    for name, cls in BUILTIN_TASKS.items():
        try:
            metrics = cls(cls.validate_config(_sample_config(cls)), ResolvedDataset(key="-", path="-")).metrics()
            metric_names = [f"{label}/{m}" for label, names in metrics.items() for m in names]
        except Exception:  # noqa: BLE001 - a task whose metrics need a config value: shown without them
            metric_names = []
        tasks[name] = {"description": _first_line(cls.__doc__ or inspect.getmodule(cls).__doc__),
                       "needs_model": cls.needs_model, "fields": fields_of(cls.config_model), "metrics": metric_names}
    scorers = {name: {"description": _first_line(function.__doc__), "fields": fields_of(options, skip=("name",))}
               for name, (options, function) in SCORERS.items()}
    return {"tasks": tasks, "scorers": scorers}


def _sample_config(cls: type) -> dict[str, Any]:
    """The least config that validates: required fields get a placeholder."""
    return {name: "field" for name, info in cls.config_model.model_fields.items() if info.is_required()}
