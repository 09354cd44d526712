"""Run by the Inspect venv's python (inspect-ai only): reads logs with Inspect's own API and prints
what it found as one JSON document, for the test to compare with the evalfleet logs they came
from. A log Inspect refuses makes this exit non-zero with Inspect's error.

    python read_inspect_logs.py LOG_DIR LOG [LOG...]

Per log: `read_eval_log` (full, and header only), the sample summaries of a `.eval` (what the
viewer lists), and for the directory `list_eval_logs`."""

from __future__ import annotations

import json
import math
import sys

from inspect_ai.log import list_eval_logs, read_eval_log, read_eval_log_sample_summaries


def number(value: float | int | None) -> float | int | str | None:
    """NaN as the text "NaN", so the document stays strict JSON."""
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def content(value: object) -> object:
    if isinstance(value, str):
        return value
    return [{"role": m.role, "content": m.text} for m in value]  # type: ignore[attr-defined]


def describe(path: str) -> dict:
    log = read_eval_log(path)
    header = read_eval_log(path, header_only=True)
    assert header.samples is None
    scores = header.results.scores if header.results else []
    found = {
        "status": log.status, "header_status": header.status, "task": log.eval.task, "task_id": log.eval.task_id,
        "run_id": log.eval.run_id, "model": log.eval.model, "sample_count": len(log.samples or []),
        "dataset_sample_ids": log.eval.dataset.sample_ids,
        "epochs": log.eval.config.epochs, "epochs_reducer": log.eval.config.epochs_reducer,
        "metadata": log.eval.metadata,
        "metrics": {s.name: {k: number(m.value) for k, m in s.metrics.items()} for s in scores},
        "total_samples": header.results.total_samples if header.results else None,
        "completed_samples": header.results.completed_samples if header.results else None,
        "error": log.error.message if log.error else None,
        "headline": header.results.headline.model_dump() if header.results and header.results.headline else None,
        "samples": [{
            "id": s.id, "epoch": s.epoch, "input": content(s.input), "target": s.target,
            "output": s.output.completion, "messages": [m.role for m in s.messages],
            "scores": {k: {"value": number(v.value), "answer": v.answer} for k, v in (s.scores or {}).items()},
            "error": s.error.message if s.error else None, "metadata": s.metadata,
            "total_time": s.total_time,
        } for s in log.samples or []],
    }
    if path.endswith(".eval"):
        found["summaries"] = [{"id": s.id, "completed": s.completed, "error": s.error}
                              for s in read_eval_log_sample_summaries(path)]
    return found


def main() -> None:
    log_dir, paths = sys.argv[1], sys.argv[2:]
    listed = [{"name": info.name, "task": info.task, "task_id": info.task_id} for info in list_eval_logs(log_dir)]
    print(json.dumps({"logs": {path: describe(path) for path in paths}, "listed": listed}))


if __name__ == "__main__":
    main()
