"""Changes to a run file given on the command line (`run --num-samples 10 --model KEY -T k=v`...),
applied to the file as written, before it is validated and resolved, so they are checked exactly
as the file's own values are. `--max-connections` applies to the resolved models (registered or
`provider$name` ones included)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from shared.errors import SpecError
from shared.spec import RunFile, did_you_mean, spec_error_from


def parse_assignment(text: str) -> tuple[str, Any]:
    """`key=value`, the value read as YAML (`0.5` a number, `[a, b]` a list, `x` text). A value in
    braces with no `key: value` inside (`{input} ...`, a prompt template) stays text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(None, "-T", f"{text!r} is not key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: text, as a template with braces often is
    if isinstance(value, dict) and ": " not in raw:
        value = raw
    return key.strip(), value


@dataclass(frozen=True)
class Overrides:
    num_samples: int | None = None
    subsampling: str | None = None
    model: str | None = None
    task_config: tuple[tuple[str, Any], ...] = ()
    cache_policy: str | None = None
    max_connections: int | None = None
    specs: tuple[str, ...] = field(default_factory=tuple)

    @property
    def empty(self) -> bool:
        return self == Overrides()

    def apply(self, run_file: RunFile, file: str) -> RunFile:
        """The run file with these changes; a SpecError names the option that does not fit."""
        from workers.tasks import BUILTIN_TASKS

        evaluation = run_file.evaluation
        if evaluation is None:
            return run_file
        specs = [one for listed in evaluation.task_specifications for one in listed.for_each_model()]
        if self.specs:
            keys = [s.key or s.derived_key for s in specs]
            unknown = [k for k in self.specs if k not in keys]
            if unknown:
                raise SpecError(file, "--spec", f"no task specification {unknown[0]!r}{did_you_mean(unknown[0], keys)}; "
                                f"the file has: {', '.join(keys)}")
            specs = [s for s, k in zip(specs, keys, strict=True) if k in self.specs]
        changed = []
        applied_config: set[str] = set()
        for spec in specs:
            update: dict[str, Any] = {}
            if self.num_samples is not None:
                update["num_samples"] = self.num_samples
            if self.subsampling is not None:
                update["subsampling"] = self.subsampling
            if self.model is not None and spec.model_key is not None:
                update["model_key"] = self.model
            if self.task_config:
                config = dict(spec.task_config)
                for key, value in self.task_config:
                    if _accepts(spec.task_key, run_file, key, BUILTIN_TASKS):
                        config[key] = value
                        applied_config.add(key)
                update["task_config"] = config
            changed.append(spec.model_copy(update=update))
        missing = [key for key, _ in self.task_config if key not in applied_config]
        if missing:
            raise SpecError(file, f"-T {missing[0]}", f"no task of the selected specifications has a config field "
                                                     f"{missing[0]!r} (`evalfleet tasks` lists them)")
        evaluation_update: dict[str, Any] = {"task_specifications": changed}
        if self.cache_policy is not None:
            evaluation_update["cache_policy"] = self.cache_policy
        data = run_file.model_dump(mode="python")
        data["evaluation"] = {**evaluation.model_dump(mode="python"), **{
            k: ([s.model_dump(mode="python") for s in v] if k == "task_specifications" else v)
            for k, v in evaluation_update.items()}}
        try:
            return RunFile.model_validate(data)
        except ValidationError as exc:
            raise spec_error_from(exc, file, RunFile, data) from None

    def apply_resolved(self, specs: list) -> list:  # noqa: ANN001 - services.resolver.ResolvedSpec
        if self.max_connections is None:
            return specs
        from dataclasses import replace

        out = []
        for item in specs:
            if item.spec.model is None:
                out.append(item)
                continue
            model = item.spec.model.model_copy(update={"max_connections": self.max_connections})
            out.append(replace(item, spec=item.spec.model_copy(update={"model": model})))
        return out


def _accepts(task_key: str, run_file: RunFile, field_name: str, builtins: dict) -> bool:
    """Whether a task's config model has a field: the file's task entity, or a built-in."""
    entity = next((t for t in run_file.tasks if t.key == task_key), None)
    template = entity.template if entity is not None else task_key
    cls = builtins.get(template) if template else None
    if cls is None:
        return True  # a registered or user task: its own validation decides
    return field_name in cls.config_model.model_fields
