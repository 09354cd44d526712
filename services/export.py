"""Exporting a finished evaluation as a self-contained run file: the entities it used, then the
evaluation, with datasets copied beside it. With linked logs, each task specification points at
its task result log, so running the file elsewhere re-creates the results with no inference."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from shared.db import get_engine, runs, task_results
from shared.errors import EvalfleetError, RunNotFound
from shared.log import read_task_result_log
from shared.plan import ResolvedDataset, ResolvedEvaluation, ResolvedModel, ResolvedTaskSpec
from shared.storage import store_for

LINKED_LOG_NAME = "task_result_log.json"


def linked_log_path(spec_key: str) -> str:
    return f"task_results/{spec_key}/{LINKED_LOG_NAME}"


def export_evaluation(run_id: str, output: str | Path, link_logs: bool = False) -> Path:
    """Write `<output>/<evaluation-key>.yaml` (and datasets, and logs with `link_logs`)."""
    output = Path(output)
    with get_engine().connect() as connection:
        run = connection.execute(select(runs.c.plan, runs.c.status).where(runs.c.id == run_id)).one_or_none()
        if run is None:
            raise RunNotFound(run_id)
        rows = connection.execute(select(task_results.c.spec_key, task_results.c.log_path)
                                  .where(task_results.c.run_id == run_id)
                                  .order_by(task_results.c.position)).all()
    evaluation = ResolvedEvaluation.model_validate_json(run.plan)
    log_paths = {row.spec_key: row.log_path for row in rows}
    if link_logs:
        missing = [key for key, path in log_paths.items() if not path]
        if missing:
            raise EvalfleetError(f"run {run_id} has no task result log for {', '.join(missing)} "
                                 f"(status {run.status}); export it without --link-logs")
    output.mkdir(parents=True, exist_ok=True)
    datasets = {spec.dataset.key: spec.dataset for spec in evaluation.task_specifications}
    document: dict[str, Any] = {
        "datasets": [_export_dataset(dataset, output) for dataset in datasets.values()],
        "models": _export_models(evaluation.task_specifications),
        "tasks": _export_tasks(evaluation.task_specifications),
        "evaluation": _export_evaluation(evaluation, link_logs),
    }
    if link_logs:
        for spec in evaluation.task_specifications:
            target = output / linked_log_path(spec.key)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = log_paths[spec.key]
            directory, _, name = source.rpartition("/")
            with store_for(directory).open(name) as handle, open(target, "wb") as out:
                shutil.copyfileobj(handle, out)
            read_task_result_log(str(target))  # refuse to hand over a log that does not validate
    document = {k: v for k, v in document.items() if v}
    path = output / f"{evaluation.key}.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)
    return path


def _export_dataset(dataset: ResolvedDataset, output: Path) -> dict[str, Any]:
    path = dataset.path
    if not path.startswith("s3://"):
        relative = f"datasets/{dataset.key}{Path(path).suffix}"
        (output / "datasets").mkdir(exist_ok=True)
        shutil.copyfile(path, output / relative)
        path = relative
    return {"key": dataset.key, "path": path, "id_field": dataset.id_field,
            "input_field": dataset.input_field, "target_field": dataset.target_field}


def _export_models(specs: list[ResolvedTaskSpec]) -> list[dict[str, Any]]:
    models: dict[str, ResolvedModel] = {s.model.key: s.model for s in specs if s.model is not None}
    exported = []
    for model in models.values():
        if "$" in model.key:
            continue  # `provider$name` needs no entity
        body = model.model_dump(exclude={"generation"}, exclude_none=True)
        body.update(model.generation.model_dump(exclude_none=True))
        exported.append(body)
    return exported


def _export_tasks(specs: list[ResolvedTaskSpec]) -> list[dict[str, Any]]:
    # Task configs are exported fully resolved on each specification, so entities carry no config.
    tasks = {}
    for spec in specs:
        task = spec.task
        if task.template == task.key:
            continue  # a built-in used by name
        tasks[task.key] = {"key": task.key, **({"template": task.template} if task.template else
                                               {"entrypoint": task.entrypoint})}
    return list(tasks.values())


def _export_evaluation(evaluation: ResolvedEvaluation, link_logs: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": evaluation.key,
        "display_name": evaluation.display_name,
        "cache_policy": evaluation.cache_policy,
        "fail_on_error": evaluation.fail_on_error,
        "tags": evaluation.tags,
    }
    for optional in ("description", "long_description"):
        if getattr(evaluation, optional):
            body[optional] = getattr(evaluation, optional)
    body["task_specifications"] = []
    for spec in evaluation.task_specifications:
        item: dict[str, Any] = {"key": spec.key, "display_name": spec.display_name, "task_key": spec.task.key,
                                "task_config": spec.task.config}
        if spec.model is not None:
            item["model_key"] = spec.model.key
        item["dataset_key"] = spec.dataset.key
        if spec.num_samples is not None:
            item["num_samples"] = spec.num_samples
        item["subsampling"] = spec.subsampling
        if link_logs:
            item["task_result_log_path"] = linked_log_path(spec.key)
        body["task_specifications"].append(item)
    return body


__all__ = ["export_evaluation", "linked_log_path"]
