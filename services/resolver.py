"""Resolving a run file: every key becomes the entity it names (the file's own first, then the
registered ones, then built-ins and `provider$name` models), task configs are validated against
their task, and each task specification's samples are selected. Anything wrong is a `SpecError`
raised before anything is registered or submitted."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import ValidationError

from services.overrides import Overrides
from services.registry import EntityLookup
from services.upload import load_uploaded_log, resolve_log_location
from shared.entrypoints import load_entrypoint
from shared.epochs import check_reducer
from shared.errors import SpecError
from shared.log import TaskResultLog
from shared.plan import (
    ResolvedDataset,
    ResolvedEvaluation,
    ResolvedModel,
    ResolvedStarMetric,
    ResolvedTask,
    ResolvedTaskSpec,
)
from shared.samples import MissingSampleField, Selection, dataset_format, iter_rows, select_samples
from shared.settings import get_settings
from shared.spec import (
    DatasetEntity,
    ModelEntity,
    RunFile,
    StarMetric,
    TaskEntity,
    TaskSpecification,
    did_you_mean,
    load_run_file,
    spec_error_from,
)
from workers.providers.mock import MOCK_MODELS
from workers.tasks import BUILTIN_TASKS, Task, load_task, task_class


@dataclass(frozen=True)
class ResolvedSpec:
    spec: ResolvedTaskSpec
    selection: Selection
    needs_input: bool
    needs_target: bool
    uploaded_log: TaskResultLog | None = None


@dataclass(frozen=True)
class ResolvedRunFile:
    path: Path
    run_file: RunFile
    evaluation: ResolvedEvaluation | None
    specs: list[ResolvedSpec]
    # Where each dataset defined in the file was found (relative paths resolved, inline rows written).
    dataset_paths: dict[str, str] = field(default_factory=dict)

    def entities_to_register(self) -> list[tuple[str, object]]:
        base = self.path.parent
        found: list[tuple[str, object]] = []
        for dataset in self.run_file.datasets:
            location = self.dataset_paths.get(dataset.key) or dataset_location(dataset, base)
            found.append(("dataset", dataset.model_copy(update={"path": location, "rows": None})))
        found += [("model", model) for model in self.run_file.models]
        found += [("task", task) for task in self.run_file.tasks]
        return found


def select_for(spec: ResolvedTaskSpec) -> ResolvedSpec:
    """Validate a specification's dataset against its task and select its samples."""
    task = load_task(spec.task, spec.dataset)
    selection = select_samples(spec.dataset, spec.num_samples, spec.subsampling, needs_input=task.needs_input,
                               needs_target=task.needs_target, required=task.required_fields())
    return ResolvedSpec(spec=spec, selection=selection, needs_input=task.needs_input,
                        needs_target=task.needs_target)


def absolute_path(path: str, base: Path) -> str:
    return path if path.startswith("s3://") else str((base / path).resolve())


def dataset_location(dataset: DatasetEntity, base: Path) -> str:
    """Where a dataset defined in a run file is read from: its path, or for inline `rows` a file
    named by their content under EVALFLEET_HOME (the same rows, the same file)."""
    if dataset.rows is None:
        return absolute_path(dataset.path, base)
    text = "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in dataset.rows)
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    target = (get_settings().home / "datasets" / f"inline-{digest}.jsonl").resolve()
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    return str(target)


def resolve_run_file(path: str | Path, lookup: EntityLookup, *, data_roots: list[Path] | None = None,
                     display_name: str | None = None, known: KnownKeys | None = None,
                     overrides: Overrides | None = None) -> ResolvedRunFile:
    """Resolve and validate a run file. `data_roots`: for run files from elsewhere (the HTTP API),
    the only directories of this machine its datasets may be read from (s3:// URLs, inline rows
    and registered datasets are always allowed); None allows any path. `display_name`: how errors
    name the file. `known(kind)`: registered keys, for "did you mean". `overrides`: command-line
    changes applied to the file before it is resolved (services.overrides)."""
    path = Path(path).resolve()
    run_file = load_run_file(path, display_name=display_name)
    if overrides is not None:
        run_file = overrides.apply(run_file, display_name or str(path))
    resolver = _Resolver(path, run_file, lookup, data_roots=data_roots, display_name=display_name, known=known)
    evaluation = run_file.evaluation
    specs = [resolver.task_specification(i, one) for i, listed in enumerate(evaluation.task_specifications)
             for one in listed.for_each_model()]
    resolved = ResolvedEvaluation(
        key=evaluation.key,
        display_name=evaluation.display_name,
        description=evaluation.description,
        long_description=evaluation.long_description,
        tags=evaluation.tags,
        cache_policy=evaluation.cache_policy,
        log_prompts=evaluation.log_prompts,
        fail_on_error=evaluation.fail_on_error,
        source_file=str(path),
        task_specifications=[s.spec for s in specs],
    )
    if overrides is not None:
        specs = overrides.apply_resolved(specs)
        resolved = resolved.model_copy(update={"task_specifications": [s.spec for s in specs]})
    return ResolvedRunFile(path=path, run_file=run_file, evaluation=resolved, specs=specs,
                           dataset_paths=resolver.dataset_paths)


def resolve_entities(path: str | Path, lookup: EntityLookup, known: KnownKeys | None = None) -> ResolvedRunFile | RunFile:
    """What `evalfleet add` checks in a file that may hold entities alone: each dataset readable,
    each model and task well formed, each task's dataset known; with an evaluation, all of it."""
    path = Path(path).resolve()
    run_file = load_run_file(path, needs_evaluation=False)
    if run_file.evaluation is not None:
        return resolve_run_file(path, lookup, known=known)
    resolver = _Resolver(path, run_file, lookup, known=known)
    for position, dataset in enumerate(run_file.datasets):
        resolved = resolver.dataset(dataset.key, None, field=f"datasets[{position}:{dataset.key}]")
        try:
            next(iter_rows(resolved.path), None)
        except SpecError as exc:
            raise SpecError(resolver.file, f"datasets[{position}:{dataset.key}].path", exc.message) from None
    for position, model in enumerate(run_file.models):
        resolver.model(model.key, None, field=f"models[{position}:{model.key}]")
    for position, task in enumerate(run_file.tasks):
        field = f"tasks[{position}:{task.key}]"
        resolver.task(task.key, {}, None, field=field)
        if task.dataset_key is not None:
            resolver.dataset(task.dataset_key, None, field=f"{field}.dataset_key")
    return run_file


KnownKeys = Callable[[str], list[str]]


class _Resolver:
    def __init__(self, path: Path, run_file: RunFile, lookup: EntityLookup, *, data_roots: list[Path] | None = None,
                 display_name: str | None = None, known: KnownKeys | None = None):
        self.known = known or (lambda kind: [])
        self.file = display_name or str(path)
        self.base = path.parent
        self.run_file = run_file
        self.lookup = lookup
        self.data_roots = None if data_roots is None else [root.resolve() for root in data_roots]
        self.dataset_paths: dict[str, str] = {}

    def _field(self, index: int | None, name: str) -> str:
        if index is None:
            return name
        spec = self.run_file.evaluation.task_specifications[index]
        label = f"{index}:{spec.key}" if spec.key else str(index)
        return f"evaluation.task_specifications[{label}].{name}"

    def _candidates(self, kind: str, in_file: list, extra: tuple[str, ...] = ()) -> list[str]:
        return [e.key for e in in_file] + self.known(kind) + list(extra)

    def task_specification(self, index: int, spec: TaskSpecification) -> ResolvedSpec:
        """The specification at `index` of the file (or, for `model_keys`, one model of it)."""
        evaluation = self.run_file.evaluation
        task, cls = self.task(spec.task_key, spec.task_config, index)
        model = None
        model_field = "model_keys" if evaluation.task_specifications[index].model_keys else "model_key"
        if cls.needs_model:
            if spec.model_key is None:
                raise SpecError(self.file, self._field(index, "model_key"),
                                f"task {spec.task_key!r} needs a model and none is given")
            model = self.model(spec.model_key, index, field=self._field(index, model_field))
        dataset_key = spec.dataset_key or self._task_dataset(spec.task_key)
        if dataset_key is None:
            raise SpecError(self.file, self._field(index, "dataset_key"), "a task specification needs a dataset: set "
                            "`dataset_key`, or give the task entity one")
        dataset = self.dataset(dataset_key, index,
                               field=self._field(index, "dataset_key" if spec.dataset_key else "task_key"))
        num_samples = spec.num_samples if spec.num_samples is not None else evaluation.num_samples
        subsampling = spec.subsampling or evaluation.subsampling
        star = self.star_metric(spec.star_metric or evaluation.star_metric, cls, task, index,
                                "star_metric" if spec.star_metric else None)
        judges = self.judges(cls, task, model, index)
        epochs, reducer = self.epochs(spec, cls, index)
        resolved = ResolvedTaskSpec(
            key=spec.key or spec.derived_key,
            display_name=spec.display_name or spec.key or spec.derived_key,
            task=task,
            model=model,
            dataset=dataset,
            num_samples=num_samples,
            subsampling=subsampling,
            task_result_log_path=spec.task_result_log_path,
            star_metric=star,
            judges=judges,
            epochs=epochs,
            epoch_reducer=reducer,
        )
        try:
            selected = select_for(resolved)
        except MissingSampleField as exc:
            raise SpecError(self.file, self._field(index, f"task_config.{exc.config_field}"), exc.message) from None
        uploaded = None
        if spec.task_result_log_path is not None:
            field = self._field(index, "task_result_log_path")
            if self.data_roots is not None and not spec.task_result_log_path.startswith("s3://"):
                raise SpecError(self.file, field, "a run file sent to the server uploads logs from s3:// URLs only")
            location = resolve_log_location(spec.task_result_log_path, self.base, self.file, field)
            uploaded = load_uploaded_log(location, resolved, selected.selection, needs_input=selected.needs_input,
                                         needs_target=selected.needs_target, file=self.file, field=field)
        return replace(selected, uploaded_log=uploaded)

    def _task_dataset(self, key: str) -> str | None:
        entity = self._entity("task", key, self.run_file.tasks)
        return entity.dataset_key if isinstance(entity, TaskEntity) else None

    def task(self, key: str, config: dict, index: int | None, *, field: str | None = None
             ) -> tuple[ResolvedTask, type[Task]]:
        field = field or self._field(index, "task_key")
        entity = self._entity("task", key, self.run_file.tasks)
        if entity is None:
            if key not in BUILTIN_TASKS:
                hint = did_you_mean(key, self._candidates("task", self.run_file.tasks, tuple(BUILTIN_TASKS)))
                raise SpecError(self.file, field, f"unknown task {key!r}{hint}: not defined in `tasks`, not registered "
                                f"(`evalfleet entities list`), and not built in ({', '.join(BUILTIN_TASKS)}; "
                                "`evalfleet tasks` lists them)")
            entity = TaskEntity(key=key, template=key)
        assert isinstance(entity, TaskEntity)
        merged = {**entity.config, **config}
        draft = ResolvedTask(key=key, template=entity.template, entrypoint=entity.entrypoint, config=merged)
        cls = task_class(draft, file=self.file, field=field if index is not None else f"{field}.template")
        try:
            validated = cls.validate_config(merged)
        except ValidationError as exc:
            prefix = (self._field(index, "task_config") if index is not None else f"{field}.config") + "."
            raise spec_error_from(exc, self.file, cls.config_model, merged, prefix=prefix) from None
        return draft.model_copy(update={"config": validated.model_dump(mode="json")}), cls

    def epochs(self, spec: TaskSpecification, cls: type[Task], index: int) -> tuple[int, str]:
        evaluation = self.run_file.evaluation
        epochs = spec.epochs or evaluation.epochs
        reducer = spec.epoch_reducer or evaluation.epoch_reducer
        field = self._field(index, "epochs") if spec.epochs else "evaluation.epochs"
        if epochs > 1 and not cls.needs_model:
            raise SpecError(self.file, field, "epochs repeat model calls; this task has no model")
        try:
            return epochs, check_reducer(reducer, epochs)
        except ValueError as exc:
            raise SpecError(self.file, self._field(index, "epoch_reducer") if spec.epoch_reducer
                            else "evaluation.epoch_reducer", str(exc)) from None

    def judges(self, cls: type[Task], task: ResolvedTask, model: ResolvedModel | None,
               index: int) -> dict[str, ResolvedModel]:
        """The judge models of the task's model-graded scorers, each resolved like any model."""
        from workers.judges import JudgeOptions

        scorers = cls(cls.validate_config(task.config), _placeholder_dataset()).scorers()
        judges = {}
        for position, scorer in enumerate(scorers):
            if not isinstance(scorer, JudgeOptions):
                continue
            field = self._field(index, f"task_config.scorers[{position}].judge_model")
            if scorer.judge_model is None:
                if model is None:
                    raise SpecError(self.file, field, f"{scorer.name} needs a judge model: this task has no model "
                                    "to default to")
                continue
            judges[scorer.judge_model] = self.model(scorer.judge_model, index, field=field)
        return judges

    def model(self, key: str, index: int | None, *, field: str | None = None) -> ResolvedModel:
        field = field or self._field(index, "model_key")
        entity = self._entity("model", key, self.run_file.models)
        if entity is None:
            provider, sep, name = key.partition("$")
            if not sep:
                hint = did_you_mean(key, self._candidates("model", self.run_file.models))
                raise SpecError(self.file, field, f"unknown model {key!r}{hint}: not defined in `models`, not "
                                "registered, and not of the form provider$name (e.g. openai$gpt-4.1-nano, "
                                "mock$target)")
            entity = ModelEntity.model_construct(key=key, provider=provider, name=name)
        assert isinstance(entity, ModelEntity)
        if entity.provider == "python":
            load_entrypoint(entity.name, file=self.file, field=field)
        if entity.provider == "openai" and entity.api_key_env and entity.api_key_env not in os.environ:
            self._missing_key(entity, index)
        if entity.provider == "mock" and entity.name not in MOCK_MODELS:
            raise SpecError(self.file, field, f"mock model {entity.name!r} does not exist"
                            f"{did_you_mean(entity.name, list(MOCK_MODELS))}; use one of {', '.join(MOCK_MODELS)}")
        generation = {k: getattr(entity, k) for k in ("temperature", "max_tokens", "top_p", "seed", "stop")}
        return ResolvedModel(
            key=entity.key, provider=entity.provider, name=entity.name, base_url=entity.base_url,
            api_key_env=entity.api_key_env, generation=generation, max_connections=entity.max_connections,
            timeout=entity.timeout, latency_ms=entity.latency_ms, pricing=entity.pricing,
            max_attempts=entity.max_attempts, retry_timeout=entity.retry_timeout,
            requests_per_minute=entity.requests_per_minute, queue=entity.queue,
        )

    def star_metric(self, star: StarMetric | None, cls: type[Task], task: ResolvedTask, index: int,
                    own_field: str | None) -> ResolvedStarMetric | None:
        """A star metric named against the task's results (`<scorer>/<metric>`, or `<scorer>` for its
        main metric); `own_field`: the specification's own field, else the evaluation's."""
        if star is None:
            return None
        field = self._field(index, own_field) if own_field else "evaluation.star_metric"
        metrics = load_task(task, _placeholder_dataset()).metrics() if cls else {}
        scorer, _, name = star.metric.partition("/")
        reported = [f"{label}/{metric}" for label, names in metrics.items() for metric in names]
        if scorer not in metrics:
            raise SpecError(self.file, f"{field}.metric", f"no scorer {scorer!r} in task {task.key!r}"
                            f"{did_you_mean(scorer, list(metrics))}; it reports: {', '.join(reported)}")
        name = name or next(m for m in metrics[scorer] if m != "stderr")
        if name not in metrics[scorer]:
            raise SpecError(self.file, f"{field}.metric", f"scorer {scorer!r} reports no metric {name!r}; it reports: "
                            f"{', '.join(reported)}")
        return ResolvedStarMetric(metric=f"{scorer}/{name}", scorer=scorer, name=name, threshold=star.threshold)

    def _missing_key(self, entity: ModelEntity, index: int) -> None:
        """Embedded, this process runs the samples: an unset key would fail every one of them. In a
        cluster the workers may hold keys the submitter lacks: a warning, and a worker without the
        variable fails those samples at once, naming it."""
        position = next((i for i, m in enumerate(self.run_file.models) if m.key == entity.key), None)
        field = (f"models[{position}:{entity.key}].api_key_env" if position is not None
                 else self._field(index, "model_key"))
        message = f"the environment variable {entity.api_key_env} is not set"
        if get_settings().embedded:
            raise SpecError(self.file, field, f"{message}, and the samples run in this process (embedded mode): "
                                              f"export {entity.api_key_env}=... or fix `api_key_env`")
        warnings.warn(f"{self.file}: field `{field}`: {message} here; the workers must have it, or its samples "
                      "fail", UserWarning, stacklevel=2)

    def dataset(self, key: str, index: int | None, *, field: str | None = None) -> ResolvedDataset:
        entity = self._entity("dataset", key, self.run_file.datasets)
        if entity is None:
            hint = did_you_mean(key, self._candidates("dataset", self.run_file.datasets))
            raise SpecError(self.file, field or self._field(index, "dataset_key"),
                            f"unknown dataset {key!r}{hint}: not defined in `datasets` and not registered")
        assert isinstance(entity, DatasetEntity)
        in_file = any(d.key == key for d in self.run_file.datasets)
        path = dataset_location(entity, self._base_for(entity)) if in_file else entity.path
        if in_file:
            self.dataset_paths[key] = path
        if in_file and entity.rows is None:
            position = next(i for i, d in enumerate(self.run_file.datasets) if d.key == key)
            field = f"datasets[{position}:{key}].path"
            if self.data_roots is not None and not path.startswith("s3://") and not any(
                    Path(path).is_relative_to(root) for root in self.data_roots):
                raise SpecError(self.file, field, f"{entity.path!r}: a path on this server must be under "
                                "EVALFLEET_DATA_ROOTS (relative paths are relative to them); use an s3:// URL, inline "
                                "`rows`, or a registered dataset")
            try:
                dataset_format(path)
            except SpecError as exc:
                raise SpecError(self.file, field, exc.message) from None
            if not path.startswith("s3://") and not Path(path).is_file():
                raise SpecError(self.file, field, f"dataset file not found: {path}")
        return ResolvedDataset(key=key, path=path, id_field=entity.id_field, input_field=entity.input_field,
                               target_field=entity.target_field)

    def _base_for(self, entity: DatasetEntity) -> Path:
        """What a relative dataset path is relative to: the run file's directory, or for a run file
        sent to the server, the first data root that holds the file."""
        if self.data_roots is None or entity.path is None or Path(entity.path).is_absolute():
            return self.base
        return next((root for root in self.data_roots if (root / entity.path).is_file()),
                    self.data_roots[0] if self.data_roots else self.base)

    def _entity(self, kind: str, key: str, in_file: list) -> object | None:
        for entity in in_file:
            if entity.key == key:
                return entity
        return self.lookup(kind, key)  # type: ignore[arg-type]


def _placeholder_dataset() -> ResolvedDataset:
    """Tasks report their metrics from their config alone; building one needs a dataset object."""
    return ResolvedDataset(key="-", path="-")
