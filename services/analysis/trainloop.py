"""A run's results in TrainLoop's results format (`evaluation_results_<timestamp>.json`): one suite
per task specification, one metric per scorer (passed, total, score = pass rate, details per
sample), overall scores and a summary; TrainLoop's error shape for runs that failed.

A sample passes a scorer when its score reaches the scorer's pass value (1.0: right, for every
built-in scorer; a judge's partial credit does not pass). `total` counts the samples the scorer
scored (failed samples are counted in the suite's `errors`). Details stream into temporary files
while the counts are folded, so a million-sample run is written in bounded memory."""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

from services.results import TaskResultView, iter_samples_of, run_views
from shared.log import SampleRecord

PASS_VALUE = 1.0
TRUNCATE_CHARS = 200
Details = Literal["all", "failed", "none"]


def results_file_name(moment: datetime, kind: str = "evaluation_results") -> str:
    return f"{kind}_{moment:%Y-%m-%d_%H-%M-%S}.json"


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def truncate(text: Any) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str):
        text = "\n".join(f"{m.role}: {m.content}" for m in text)
    return text if len(text) <= TRUNCATE_CHARS else text[: TRUNCATE_CHARS - 1] + "…"


def verdict(sample: SampleRecord, label: str) -> str:
    score = sample.scores[label]
    if score.explanation:
        return score.explanation
    return f"answer {score.answer!r} against target {sample.target!r}: {'pass' if passes(score.value) else 'fail'}"


def passes(value: float | None) -> bool:
    return value is not None and value >= PASS_VALUE


@dataclass
class MetricFold:
    label: str
    passed: int = 0
    total: int = 0
    details: IO[str] | None = None
    written: int = 0

    def add(self, sample: SampleRecord, keep: Details) -> None:
        score = sample.scores.get(self.label)
        if score is None or score.value is None:
            return
        self.total += 1
        ok = passes(score.value)
        self.passed += ok
        if self.details is not None and (keep == "all" or (keep == "failed" and not ok)):
            detail = {"event_id": sample.id, "passed": ok, "input": truncate(sample.input),
                      "output": truncate(sample.output), "verdict": verdict(sample, self.label),
                      "metadata": {"position": sample.position, "score": score.value}}
            self.details.write(("," if self.written else "") + json.dumps(detail, ensure_ascii=False))
            self.written += 1

    @property
    def score(self) -> float | None:
        return self.passed / self.total if self.total else None


@dataclass
class SuiteFold:
    view: TaskResultView
    metrics: list[MetricFold] = field(default_factory=list)
    errors: int = 0

    @property
    def overall_score(self) -> float | None:
        scores = [m.score for m in self.metrics if m.score is not None]
        return sum(scores) / len(scores) if scores else None


def _scorer_labels(view: TaskResultView) -> list[str]:
    from workers.tasks import load_task

    return list(load_task(view.spec.task, view.spec.dataset).metrics())


def fold_suite(view: TaskResultView, keep: Details, stack: ExitStack) -> SuiteFold:
    suite = SuiteFold(view)
    for label in _scorer_labels(view):
        details = stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8")) if keep != "none" else None
        suite.metrics.append(MetricFold(label, details=details))
    for sample in iter_samples_of(view):
        if sample.error is not None:
            suite.errors += 1
            continue
        for metric in suite.metrics:
            metric.add(sample, keep)
    return suite


def _duration(view: TaskResultView) -> float | None:
    if view.finished_at is None:
        return None
    return round((view.finished_at - view.started_at).total_seconds(), 3)


def write_results(run_id: str, out: IO[str], keep: Details = "all") -> dict[str, Any]:
    """Write the results document of a run to `out`; returns it without the details (what
    `--json` prints is the file itself). A failed run gets TrainLoop's error shape."""
    views = run_views(run_id)
    with ExitStack() as stack:
        suites = [fold_suite(view, keep, stack) for view in views]
        started = min(v.queued_at for v in views)
        finished = [v.finished_at for v in views if v.finished_at is not None]
        duration = round((max(finished) - started).total_seconds(), 3) if len(finished) == len(views) else None
        failed = [s for s in suites if s.view.status in ("error", "cancelled")]
        head = {"timestamp": iso(started), "duration": duration, "total_events": sum(s.view.done for s in suites)}
        if failed:
            document = _error_document(head, suites, failed)
            out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
            return document
        summary = _summary(suites)
        out.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "suites": {')
        for number, suite in enumerate(suites):
            out.write(("," if number else "") + json.dumps(suite.view.spec.key) + ": ")
            _write_suite(out, suite)
        out.write('}, "summary": ' + json.dumps(summary))
        configuration = _configuration(views)
        out.write(', "configuration": ' + json.dumps(configuration, ensure_ascii=False) + "}\n")
        return {**head, "suites": {s.view.spec.key: _suite_document(s) for s in suites}, "summary": summary,
                "configuration": configuration}


def _suite_document(suite: SuiteFold) -> dict[str, Any]:
    return {
        "events_processed": suite.view.done,
        "metrics": {m.label: {"passed": m.passed, "total": m.total, "score": m.score} for m in suite.metrics},
        "overall_score": suite.overall_score, "tags": suite.view.tags, "duration": _duration(suite.view),
        "errors": suite.errors, "status": suite.view.phase,
    }


def _write_suite(out: IO[str], suite: SuiteFold) -> None:
    document = _suite_document(suite)
    metrics = document.pop("metrics")
    out.write('{"events_processed": ' + json.dumps(document.pop("events_processed")) + ', "metrics": {')
    for number, metric in enumerate(suite.metrics):
        fields = json.dumps(metrics[metric.label])[:-1]
        out.write(("," if number else "") + json.dumps(metric.label) + ": " + fields + ', "details": [')
        if metric.details is not None:
            metric.details.flush()
            metric.details.seek(0)
            shutil.copyfileobj(metric.details, out, 1024 * 1024)
        out.write("]}")
    out.write("}, " + json.dumps(document, ensure_ascii=False)[1:])


def _summary(suites: list[SuiteFold]) -> dict[str, Any]:
    scores = [s.overall_score for s in suites if s.overall_score is not None]
    passed = sum(m.passed for s in suites for m in s.metrics)
    evaluated = sum(m.total for s in suites for m in s.metrics)
    return {"total_suites": len(suites), "overall_score": sum(scores) / len(scores) if scores else None,
            "total_metrics": sum(len(s.metrics) for s in suites), "total_passed": passed,
            "total_evaluated": evaluated, "pass_rate": passed / evaluated if evaluated else None}


def _configuration(views: list[TaskResultView]) -> dict[str, Any]:
    first = views[0]
    return {"run_id": first.run_id, "evaluation": first.evaluation_key, "retry_of": first.retry_of,
            "models": sorted({v.spec.model.key for v in views if v.spec.model}),
            "task_specifications": [v.spec.key for v in views]}


def _error_document(head: dict[str, Any], suites: list[SuiteFold], failed: list[SuiteFold]) -> dict[str, Any]:
    first = failed[0]
    message = first.view.error_description or f"task specification {first.view.spec.key} was {first.view.status}"
    error_type = ("Cancelled" if first.view.status == "cancelled" else
                  first.view.error_summary.most_frequent[0].type if first.view.error_summary and
                  first.view.error_summary.most_frequent else "EvaluationError")
    return {
        **head, "status": "error",
        "error": {"type": error_type, "message": message,
                  "details": {"suite": first.view.spec.key, "run_id": first.view.run_id,
                              "failed_suites": [s.view.spec.key for s in failed]}},
        "partial_results": {"suites": {
            s.view.spec.key: {**_suite_document(s), "status": "failed" if s in failed else "completed",
                              **({"error": s.view.error_description or s.view.status} if s in failed else {})}
            for s in suites}},
    }


def results_document(run_id: str, output_dir: str | Path, keep: Details = "all") -> tuple[Path, dict[str, Any]]:
    """Write `<output_dir>/evaluation_results_<timestamp>.json` (timestamp: the run's submission)."""
    views = run_views(run_id)
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / results_file_name(min(v.queued_at for v in views))
    tmp = target.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        document = write_results(run_id, out, keep)
    tmp.replace(target)
    return target, document


__all__ = ["Details", "results_document", "results_file_name", "write_results"]
