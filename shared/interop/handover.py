"""Writing a handover directory for a log made elsewhere, in the layout `evalfleet export
--link-logs` writes: `<dir>/<evaluation-key>.yaml`, a run file whose one task specification
uploads `<dir>/task_results/<spec-key>/task_result_log.json`, and the dataset its samples came
from under `<dir>/datasets/`. Running the file re-creates the results with no model call.

The task specification recorded in the log is the one the run file resolves to (dataset path
made absolute, task config as its task validates it), which is what an upload is checked against."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from shared.log.models import LogHeader
from shared.log.writer import SampleSpool, write_task_result_log
from shared.plan import ResolvedDataset, ResolvedModel, ResolvedTaskSpec

# The layout of services/export.py (`linked_log_path`), which shared code cannot import; a test
# checks that the two agree.
HANDOVER_LOG_NAME = "task_result_log.json"
DATASETS_DIR = "datasets"


def handover_log_path(spec_key: str) -> str:
    return f"task_results/{spec_key}/{HANDOVER_LOG_NAME}"


def handover_dataset(output_dir: Path, key: str, id_field: str = "id", input_field: str = "input",
                     target_field: str = "target") -> ResolvedDataset:
    """The dataset as the handover's run file resolves it: its absolute path under the directory."""
    path = (output_dir.resolve() / DATASETS_DIR / f"{key}.jsonl").resolve()
    return ResolvedDataset(key=key, path=str(path), id_field=id_field, input_field=input_field,
                           target_field=target_field)


class DatasetWriter:
    """The dataset's rows as JSON lines, in a temporary file that `commit` moves into place, so an
    import that fails part way leaves no half-written dataset behind. A context manager."""

    def __init__(self, dataset: ResolvedDataset):
        self.dataset = dataset
        self.target = Path(dataset.path)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.target.name}.", dir=self.target.parent)
        self._out = os.fdopen(fd, "w", encoding="utf-8")

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._out.closed:
            self._out.close()
        Path(self._tmp).unlink(missing_ok=True)

    def add(self, sample_id: str, sample_input: Any, target: str | None, metadata: dict[str, Any]) -> None:
        row: dict[str, Any] = {self.dataset.id_field: sample_id}
        if sample_input is not None:
            row[self.dataset.input_field] = sample_input
        if target is not None:
            row[self.dataset.target_field] = target
        row.update(metadata)
        self._out.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")

    def commit(self) -> None:
        self._out.close()
        os.replace(self._tmp, self.target)


def write_handover(output_dir: Path, header: LogHeader, spool: SampleSpool, dataset: DatasetWriter,
                   long_description: str | None = None) -> Path:
    """Write the log, move the dataset into place, then write the run file (last, so a run file
    exists only beside a complete handover). Returns the run file's path."""
    spec = header.task_specification
    log_path = handover_log_path(spec.key)
    write_task_result_log(str(output_dir), log_path, header, spool)
    dataset.commit()
    document = {
        "datasets": [{"key": spec.dataset.key, "path": f"{DATASETS_DIR}/{Path(spec.dataset.path).name}",
                      "id_field": spec.dataset.id_field, "input_field": spec.dataset.input_field,
                      "target_field": spec.dataset.target_field}],
        "models": _model_entities(spec.model),
        "tasks": _task_entities(spec),
        "evaluation": _evaluation(header, log_path, long_description),
    }
    document = {section: body for section, body in document.items() if body}
    path = output_dir / f"{header.evaluation.key}.yaml"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=output_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        yaml.safe_dump(document, out, sort_keys=False, allow_unicode=True)
    os.replace(tmp, path)
    return path


def _model_entities(model: ResolvedModel | None) -> list[dict[str, Any]]:
    if model is None or "$" in model.key:
        return []  # `provider$name` needs no entity
    body = model.model_dump(exclude={"generation"}, exclude_none=True)
    body.update(model.generation.model_dump(exclude_none=True))
    return [body]


def _task_entities(spec: ResolvedTaskSpec) -> list[dict[str, Any]]:
    task = spec.task
    if task.template == task.key:
        return []  # a built-in used by its name
    source = {"template": task.template} if task.template else {"entrypoint": task.entrypoint}
    return [{"key": task.key, **source}]


def _evaluation(header: LogHeader, log_path: str, long_description: str | None) -> dict[str, Any]:
    evaluation = header.evaluation
    spec = header.task_specification
    body: dict[str, Any] = {"key": evaluation.key, "display_name": evaluation.display_name,
                            "cache_policy": evaluation.cache_policy}
    if evaluation.fail_on_error is not None:
        body["fail_on_error"] = evaluation.fail_on_error
    body["tags"] = evaluation.tags
    if evaluation.description:
        body["description"] = evaluation.description
    if long_description:
        body["long_description"] = long_description
    item: dict[str, Any] = {"key": spec.key, "display_name": spec.display_name, "task_key": spec.task.key,
                            "task_config": spec.task.config}
    if spec.model is not None:
        item["model_key"] = spec.model.key
    item.update({"dataset_key": spec.dataset.key, "subsampling": spec.subsampling, "task_result_log_path": log_path})
    if spec.star_metric is not None:
        item["star_metric"] = {"metric": spec.star_metric.metric, "success_threshold": spec.star_metric.threshold}
    body["task_specifications"] = [item]
    return body
