"""Results as Parquet tables, streamed from the database in bounded memory (pyarrow, row groups
of BATCH rows): `runs`, `task_results`, `samples` and `scores` (one row per sample per scorer).
Their columns are TABLES below; `services.analysis.query` puts DuckDB views over them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select

from services.results import TaskResultView, task_results_of_run
from shared.db import get_engine, runs, sample_results, utc

BATCH = 20_000
TIME = pa.timestamp("us", tz="UTC")
TABLES: dict[str, pa.Schema] = {
    "runs": pa.schema([
        ("run_id", pa.string()), ("evaluation_key", pa.string()), ("display_name", pa.string()),
        ("status", pa.string()), ("created_at", TIME), ("finished_at", TIME), ("retry_of", pa.string()),
        ("tags", pa.list_(pa.string())), ("models", pa.list_(pa.string())),
    ]),
    "task_results": pa.schema([
        ("uuid", pa.string()), ("run_id", pa.string()), ("evaluation_key", pa.string()), ("spec_key", pa.string()),
        ("display_name", pa.string()), ("task", pa.string()), ("model_key", pa.string()), ("provider", pa.string()),
        ("model_name", pa.string()), ("dataset", pa.string()), ("status", pa.string()), ("samples", pa.int64()),
        ("done", pa.int64()), ("errors", pa.int64()), ("model_calls", pa.int64()), ("attempts", pa.int64()),
        ("cache_hits", pa.int64()), ("started_at", TIME), ("completed_at", TIME), ("duration_s", pa.float64()),
        ("star_metric", pa.string()), ("star_value", pa.float64()), ("pass_status", pa.bool_()),
        ("input_per_million", pa.float64()), ("output_per_million", pa.float64()), ("metrics", pa.string()),
    ]),
    "samples": pa.schema([
        ("run_id", pa.string()), ("task_result_uuid", pa.string()), ("spec_key", pa.string()),
        ("model_key", pa.string()), ("sample_id", pa.string()), ("epoch", pa.int64()), ("position", pa.int64()),
        ("input", pa.string()),
        ("target", pa.string()), ("output", pa.string()), ("error_type", pa.string()), ("error_message", pa.string()),
        ("latency_ms", pa.float64()), ("input_tokens", pa.int64()), ("output_tokens", pa.int64()),
        ("model_calls", pa.int64()), ("attempts", pa.int64()), ("cached", pa.bool_()), ("worker", pa.string()),
        ("started_at", TIME), ("completed_at", TIME), ("cost_usd", pa.float64()),
    ]),
    "scores": pa.schema([
        ("run_id", pa.string()), ("task_result_uuid", pa.string()), ("spec_key", pa.string()),
        ("model_key", pa.string()), ("sample_id", pa.string()), ("epoch", pa.int64()), ("scorer", pa.string()),
        ("value", pa.float64()),
        ("passed", pa.bool_()), ("answer", pa.string()), ("explanation", pa.string()),
    ]),
}


def selected_runs(run_id: str | None = None, evaluation: str | None = None) -> list[Any]:
    statement = select(runs).order_by(runs.c.created_at)
    if run_id is not None:
        statement = statement.where(runs.c.id == run_id)
    if evaluation is not None:
        statement = statement.where(runs.c.evaluation_key == evaluation)
    with get_engine().connect() as connection:
        return connection.execute(statement).all()


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return "\n".join(f"{m['role']}: {m['content']}" for m in value)


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _sample_rows(view: TaskResultView) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(sample row, score rows) of each recorded sample, from the bodies parsed as plain JSON."""
    pricing = view.spec.model.pricing if view.spec.model else None
    model = view.spec.model.key if view.spec.model else None
    sr = sample_results.c
    with get_engine().connect() as connection:
        result = connection.execution_options(yield_per=5000).execute(
            select(sr.body).where(sr.task_result_id == view.id).order_by(sr.position))
        for (body,) in result:
            sample = json.loads(body)
            usage = sample.get("usage") or {}
            error = sample.get("error") or {}
            cost = None
            if pricing is not None and usage and not sample.get("cached"):
                cost = pricing.cost_usd(usage.get("input_tokens", 0), usage.get("output_tokens", 0))
            common = {"run_id": view.run_id, "task_result_uuid": view.uuid, "spec_key": view.spec.key,
                      "model_key": model, "sample_id": sample["id"], "epoch": sample.get("epoch", 1)}
            row = {**common, "position": sample["position"], "input": _text(sample.get("input")),
                   "target": sample.get("target"), "output": sample.get("output"), "error_type": error.get("type"),
                   "error_message": error.get("message"), "latency_ms": sample.get("latency_ms"),
                   "input_tokens": usage.get("input_tokens"), "output_tokens": usage.get("output_tokens"),
                   "model_calls": sample.get("model_calls"), "attempts": sample.get("attempts"),
                   "cached": sample.get("cached"), "worker": sample.get("worker"),
                   "started_at": _time(sample.get("started_at")), "completed_at": _time(sample.get("completed_at")),
                   "cost_usd": cost}
            scores = [{**common, "scorer": label, "value": score.get("value"),
                       "passed": score.get("value") is not None and score["value"] >= 1.0,
                       "answer": score.get("answer"), "explanation": score.get("explanation")}
                      for label, score in (sample.get("scores") or {}).items()]
            yield row, scores


class _Writer:
    """A Parquet file written a row group at a time."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.schema = schema
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.rows: list[dict[str, Any]] = []
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            table = pa.Table.from_pylist(self.rows, schema=self.schema)
            self.writer.write_table(table)
            self.count += len(self.rows)
            self.rows = []

    def close(self) -> int:
        self.flush()
        self.writer.close()
        return self.count


def export_parquet(output: str | Path, *, run_id: str | None = None, evaluation: str | None = None,
                   on_progress=None) -> dict[str, int]:  # noqa: ANN001
    """Write `<output>/<table>.parquet` for the selected runs; returns the row count per table.
    `on_progress(samples_written)` is called as samples stream."""
    directory = Path(output)
    directory.mkdir(parents=True, exist_ok=True)
    writers = {name: _Writer(directory / f"{name}.parquet.tmp", schema) for name, schema in TABLES.items()}
    try:
        samples = 0
        for run in selected_runs(run_id, evaluation):
            views = task_results_of_run(run.id)
            writers["runs"].add({
                "run_id": run.id, "evaluation_key": run.evaluation_key, "display_name": run.display_name,
                "status": run.status, "created_at": utc(run.created_at), "finished_at": utc(run.finished_at),
                "retry_of": run.retry_of, "tags": views[0].tags if views else [],
                "models": sorted({v.spec.model.key for v in views if v.spec.model})})
            for view in views:
                writers["task_results"].add(_task_result_row(view))
                for row, scores in _sample_rows(view):
                    writers["samples"].add(row)
                    for score in scores:
                        writers["scores"].add(score)
                    samples += 1
                    if on_progress is not None and samples % 10_000 == 0:
                        on_progress(samples)
        counts = {name: writer.close() for name, writer in writers.items()}
    except BaseException:
        for name, writer in writers.items():
            writer.writer.close()
            (directory / f"{name}.parquet.tmp").unlink(missing_ok=True)
        raise
    for name in TABLES:
        (directory / f"{name}.parquet.tmp").replace(directory / f"{name}.parquet")
    return counts


def _task_result_row(view: TaskResultView) -> dict[str, Any]:
    model = view.spec.model
    pricing = model.pricing if model else None
    return {
        "uuid": view.uuid, "run_id": view.run_id, "evaluation_key": view.evaluation_key, "spec_key": view.spec.key,
        "display_name": view.spec.display_name, "task": view.spec.task.key, "model_key": model.key if model else None,
        "provider": model.provider if model else None, "model_name": model.name if model else None,
        "dataset": view.spec.dataset.key, "status": view.status, "samples": view.total, "done": view.done,
        "errors": view.errors, "model_calls": view.model_calls, "attempts": view.attempts,
        "cache_hits": view.cache_hits, "started_at": view.started_at, "completed_at": view.finished_at,
        "duration_s": (view.finished_at - view.started_at).total_seconds() if view.finished_at else None,
        "star_metric": view.star_metric.metric if view.star_metric else None,
        "star_value": view.star_metric.value if view.star_metric else None, "pass_status": view.pass_status,
        "input_per_million": pricing.input_per_million if pricing else None,
        "output_per_million": pricing.output_per_million if pricing else None,
        "metrics": json.dumps(view.metrics),
    }
