"""The run file as written: pydantic models of its sections and `load_run_file`, which turns any
problem into one `SpecError` naming the file and the field."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.errors import SpecError

KEY_PATTERN = r"^[a-zA-Z0-9_\-]+$"
Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN, max_length=250)]
# `provider$name` references a model with no registration, e.g. `openai$gpt-4-1-nano`.
MODEL_REF_PATTERN = r"^([a-zA-Z0-9_\-]+|(openai|mock|python)\$[^\s$]+)$"
ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

Subsampling = Literal["head", "random"]
CachePolicy = Literal["reuse", "update", "no-cache"]
# `reference`: a prompt rendered from the task's template is logged as the template's hash plus
# the extra fields it was rendered with, not in full for every sample.
PromptLogging = Literal["full", "reference"]
Provider = Literal["openai", "mock", "python"]
DEBUG_MODE_SAMPLES = 10


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetEntity(Strict):
    key: Key
    path: str | None = Field(None, description="Path relative to the run file, or s3://bucket/key.")
    rows: list[dict[str, Any]] | None = Field(
        None, description="The samples themselves, inline (instead of `path`): a list of objects.")
    id_field: str = "id"
    input_field: str = "input"
    target_field: str = "target"
    description: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DatasetEntity:
        if (self.path is None) == (self.rows is None):
            raise ValueError("set exactly one of `path` and `rows`")
        if self.rows is not None and not self.rows:
            raise ValueError("`rows` is empty")
        return self


class Pricing(Strict):
    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)

    def cost_usd(self, input_tokens: float, output_tokens: float) -> float:
        """The price of these tokens: the one formula every cost figure uses."""
        return (input_tokens * self.input_per_million + output_tokens * self.output_per_million) / 1_000_000


class GenerationSettings(Strict):
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: PositiveInt | None = None
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: list[str] | None = None


class ModelEntity(GenerationSettings):
    key: Key
    provider: Provider
    name: str = Field(min_length=1, description="Model name, or `module:function` for `python`.")
    base_url: str | None = None
    api_key_env: Annotated[str, StringConstraints(pattern=ENV_VAR_PATTERN)] | None = Field(
        None, description="Name of the environment variable holding the API key (never the key)."
    )
    max_connections: PositiveInt = 32
    requests_per_minute: PositiveInt | None = Field(None, description="Shared budget across all workers.")
    queue: Key | None = Field(None, description="Broker queue for this model's samples (routing).")
    timeout: float = Field(120.0, gt=0, description="Seconds for one request.")
    latency_ms: float = Field(0, ge=0, description="`mock` only: simulated latency per call.")
    max_attempts: PositiveInt = Field(6, description="Tries of one request before the sample fails.")
    retry_timeout: float = Field(600.0, gt=0, description="Seconds one sample may spend retrying.")
    pricing: Pricing | None = None


class TaskEntity(Strict):
    key: Key
    template: Key | None = Field(None, description="A built-in task whose config this entity presets.")
    entrypoint: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    config: dict[str, Any] = Field(default_factory=dict, description="Defaults for the specifications' task_config.")
    dataset_key: Key | None = Field(None, description="The dataset a specification of this task uses when it "
                                                        "names none.")
    description: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TaskEntity:
        if (self.template is None) == (self.entrypoint is None):
            raise ValueError("set exactly one of `template` and `entrypoint`")
        return self


class StarMetric(Strict):
    """The one metric a task result is judged by: `<scorer>/<metric>` (or just `<scorer>`, its main
    metric), and the value it must reach for the task result to pass."""

    metric: str = Field(min_length=1, description="`<scorer>/<metric>`, e.g. `includes/accuracy`.")
    success_threshold: float | None = Field(None, description="Pass when the metric is at least this.")
    success_threshold_pct: float | None = Field(None, ge=0, le=100, description="The same, in percent.")

    @model_validator(mode="after")
    def _one_threshold(self) -> StarMetric:
        if (self.success_threshold is None) == (self.success_threshold_pct is None):
            raise ValueError("set exactly one of `success_threshold` and `success_threshold_pct`")
        return self

    @property
    def threshold(self) -> float:
        return self.success_threshold if self.success_threshold is not None else self.success_threshold_pct / 100


class TaskSpecification(Strict):
    key: Key | None = None
    display_name: str | None = None
    task_key: Key
    task_config: dict[str, Any] = Field(default_factory=dict)
    model_key: Annotated[str, StringConstraints(pattern=MODEL_REF_PATTERN, max_length=250)] | None = None
    model_keys: list[Annotated[str, StringConstraints(pattern=MODEL_REF_PATTERN, max_length=250)]] | None = Field(
        None, min_length=1, description="Several models: one task specification per model, keyed "
        "`<key>-<model key>` (a benchmark).")
    dataset_key: Key | None = None
    num_samples: PositiveInt | None = None
    epochs: PositiveInt | None = Field(None, description="Overrides the evaluation's epochs.")
    epoch_reducer: str | None = Field(None, description="Overrides the evaluation's epoch_reducer.")
    subsampling: Subsampling | None = None
    task_result_log_path: str | None = None
    star_metric: StarMetric | None = Field(None, description="Overrides the evaluation's star metric.")

    @model_validator(mode="after")
    def _one_model_field(self) -> TaskSpecification:
        if self.model_key is not None and self.model_keys is not None:
            raise ValueError("set `model_key` or `model_keys`, not both")
        if self.model_keys is not None and len(set(self.model_keys)) != len(self.model_keys):
            raise ValueError("`model_keys` names a model twice")
        return self

    @property
    def derived_key(self) -> str:
        parts = [self.task_key, self.model_key, self.dataset_key]
        return "__".join(re.sub(r"[^a-zA-Z0-9_\-]", "-", p) for p in parts if p)[:250]

    def for_each_model(self) -> list[TaskSpecification]:
        """`model_keys` as one specification per model (this one alone otherwise)."""
        if self.model_keys is None:
            return [self]
        out = []
        for model_key in self.model_keys:
            base = self.key or "__".join(p for p in (self.task_key, self.dataset_key) if p)
            key = f"{base}-{re.sub(r'[^a-zA-Z0-9_-]', '-', model_key)}"[:250]
            display = f"{self.display_name or base} ({model_key})"
            out.append(self.model_copy(update={"model_key": model_key, "model_keys": None, "key": key,
                                               "display_name": display}))
        return out


class EvaluationSpec(Strict):
    key: Key
    display_name: str | None = Field(None, min_length=1, description="Default: the key.")
    num_samples: PositiveInt | None = None
    subsampling: Subsampling = "head"
    mode: Literal["debug", "full"] | None = Field(None, description="Deprecated: use num_samples.")
    cache_policy: CachePolicy = "reuse"
    epochs: PositiveInt = Field(1, description="Times each sample is run; each epoch is its own inference.")
    epoch_reducer: str = Field("mean", description="How a sample's epochs become one score per scorer: mean, "
                               "median, max, mode, at_least_<k>, pass_at_<k>.")
    log_prompts: PromptLogging = Field(
        "full", description="full: every sample's log record holds the prompt sent; reference: prompts rendered "
        "from a prompt_template are logged as the template's hash and the fields it was rendered with.")
    fail_on_error: bool | Annotated[float, Field(ge=0)] = Field(
        0.1,
        description="true: any failed sample fails the task; false: never; a fraction below 1: "
        "fail above that share of samples; a number from 1: fail from that many failed samples.",
    )
    task_specifications: list[TaskSpecification] = Field(min_length=1)
    star_metric: StarMetric | None = Field(None, description="The metric each task result passes or fails by.")
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    long_description: str | None = None

    @model_validator(mode="after")
    def _apply_mode(self) -> EvaluationSpec:
        if self.mode is None:
            return self
        warnings.warn(
            "`evaluation.mode` is deprecated: use `num_samples` (debug = 10, full = absent)",
            DeprecationWarning,
            stacklevel=2,
        )
        implied = DEBUG_MODE_SAMPLES if self.mode == "debug" else None
        if "num_samples" in self.model_fields_set and self.num_samples != implied:
            raise ValueError(
                f"`mode: {self.mode}` contradicts `num_samples: {self.num_samples}`; drop `mode`"
            )
        self.num_samples = implied
        return self

    @model_validator(mode="after")
    def _display_name(self) -> EvaluationSpec:
        if self.display_name is None:
            self.display_name = self.key
        return self

    @field_validator("fail_on_error", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, int | float) and value >= 0):
            return value
        raise ValueError("must be true, false, a fraction below 1 or a count from 1")

    @field_validator("task_specifications")
    @classmethod
    def _unique_keys(cls, specs: list[TaskSpecification]) -> list[TaskSpecification]:
        seen: set[str] = set()
        for spec in (one for listed in specs for one in listed.for_each_model()):
            key = spec.key or spec.derived_key
            if key in seen:
                hint = "" if spec.key else " (derived from task, model and dataset: set `key`)"
                raise ValueError(f"task specification key {key!r} is used twice{hint}")
            seen.add(key)
        return specs


class RunFile(Strict):
    datasets: list[DatasetEntity] = Field(default_factory=list)
    models: list[ModelEntity] = Field(default_factory=list)
    tasks: list[TaskEntity] = Field(default_factory=list)
    evaluation: EvaluationSpec | None = Field(None, description="Required to run; `evalfleet add` takes entities alone.")

    @model_validator(mode="after")
    def _unique_entities(self) -> RunFile:
        for section in ("datasets", "models", "tasks"):
            seen: set[str] = set()
            for entity in getattr(self, section):
                if entity.key in seen:
                    raise ValueError(f"{section} key {entity.key!r} is defined twice")
                seen.add(entity.key)
        return self


def did_you_mean(word: str, choices: list[str]) -> str:
    """`; did you mean 'x'?` for the closest choices, or nothing when none is close."""
    import difflib

    close = difflib.get_close_matches(word, choices, n=2, cutoff=0.5)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe loading that refuses a mapping with the same key twice instead of keeping the last."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path, display_name: str | None = None) -> Any:
    name = display_name or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(name, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(name, None, f"cannot read: {exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(name, None, f"malformed YAML: {where}{problem}") from None


def load_run_file(path: str | Path, display_name: str | None = None, *, needs_evaluation: bool = True) -> RunFile:
    """Read and validate a run file; every problem becomes a `SpecError` (naming the file as
    `display_name` when given). `needs_evaluation`: false for a file of entities alone (add)."""
    path = Path(path)
    name = display_name or str(path)
    data = load_yaml(path, display_name)
    if not isinstance(data, dict):
        raise SpecError(name, None, "a run file is a mapping with an `evaluation` section"
                        if needs_evaluation else "a run file is a mapping (datasets, models, tasks, evaluation)")
    if needs_evaluation and "evaluation" not in data:
        present = ", ".join(f"`{k}`" for k in data) or "nothing"
        raise SpecError(name, "evaluation", f"required to run (the file has {present}); to register entities "
                                            "alone, use `evalfleet add -f`")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeprecationWarning)
            run_file = RunFile.model_validate(data)
        for warning in caught:
            warnings.warn(f"{name}: {warning.message}", DeprecationWarning, stacklevel=2)
        return run_file
    except ValidationError as exc:
        raise spec_error_from(exc, name, RunFile, data) from None


def spec_error_from(
    exc: ValidationError, file: str, model: type[BaseModel], data: Any, prefix: str = ""
) -> SpecError:
    """The first validation problem as a SpecError naming the field by its path in the file."""
    error = exc.errors()[0]
    loc = list(error["loc"])
    field = prefix + _dotted(loc, data)
    if error["type"] == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        names = list(owner.model_fields) if owner else []
        hint = did_you_mean(str(loc[-1]), names)
        return SpecError(file, field, f"unknown field{hint}; accepted fields: {', '.join(names)}")
    message = error["msg"]
    if error["type"] == "missing":
        message = "required field is missing"
    elif error["type"] == "string_pattern_mismatch":
        message = _pattern_message(error["input"], error["ctx"]["pattern"])
    elif error["type"] == "literal_error":
        expected = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        message = f"{error['input']!r} is not one of {', '.join(expected)}{did_you_mean(str(error['input']), expected)}"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return SpecError(file, field, message)


PROVIDERS = ("openai", "mock", "python")


def _pattern_message(value: Any, pattern: str) -> str:
    """A key or model reference that does not parse, said in words, with the fix when it is known."""
    text = str(value)
    if pattern == MODEL_REF_PATTERN:
        provider, sep, name = text.partition("$")
        if not sep and "/" in text:
            provider, _, name = text.partition("/")
            if provider in PROVIDERS:
                return (f"{text!r}: models are named provider$name here, not provider/name: write "
                        f"'{provider}${name}'")
            return f"{text!r}: models are named provider$name, e.g. openai${name}"
        if sep and provider not in PROVIDERS:
            return (f"unknown provider {provider!r}{did_you_mean(provider, list(PROVIDERS))} in {text!r}; providers: "
                    f"{', '.join(PROVIDERS)}")
        return (f"{text!r} is neither a model key (letters, digits, '_' and '-') nor provider$name "
                "(e.g. openai$gpt-4.1-nano, mock$target)")
    if pattern == KEY_PATTERN:
        return f"{text!r}: a key may hold only letters, digits, '_' and '-' (at most 250 characters)"
    return f"{text!r} does not match {pattern}"


def _dotted(loc: list[Any], data: Any) -> str:
    """`evaluation.task_specifications[0].task_key`; list items named by their key when they have one."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            key = node[part].get("key") if isinstance(node, list) and isinstance(node[part], dict) else None
            out += f"[{part}]" if not key else f"[{part}:{key}]"
        else:
            out += f".{part}" if out else str(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return out


def _model_at(model: type[BaseModel], loc: list[Any]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return None
        current = _inner_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
