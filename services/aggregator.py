"""The aggregator: once the last sample of a task specification is recorded, stream its sample
results out of the database (ordered, in batches) into the task result log, folding scores into
metrics on the way, then settle the task result and, when it was the last, the run.

Aggregation is owned: the process writing a log names itself in `task_results.aggregator` and
keeps `claimed_at` fresh while it works. A claim nobody took up, or whose owner stopped refreshing
it (it died), goes stale after STALE_CLAIM_S and is taken over (services.recovery). A log that
could not be stored (the S3 endpoint failing) releases the claim at once, so the waiting `run`,
`status` or `resume` tries again."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import traceback
import uuid
from collections import Counter
from datetime import timedelta

from sqlalchemy import case, func, or_, select, update

from shared.db import CANCELLING, FINAL_STATUSES, get_engine, now, runs, sample_results, task_results
from shared.epochs import reduce_scores
from shared.errors import StoreError
from shared.log import (
    ErrorCount,
    ErrorSummary,
    EvaluationHeader,
    LogError,
    LogHeader,
    LogStats,
    ModelUsage,
    SampleRecord,
    SampleSpool,
    Score,
    ScorerResult,
    StarMetricResult,
    finite_or_none,
    log_relpath,
    write_task_result_log,
)
from shared.metrics import MeanAccumulator
from shared.outages import OutageBudgetExceeded, is_outage, through_outages
from shared.plan import ResolvedEvaluation, ResolvedModel, ResolvedTaskSpec
from shared.settings import get_settings
from workers.app import AGGREGATE_TASK, app
from workers.tasks import load_task
from workers.telemetry import AGGREGATION_SECONDS

logger = logging.getLogger(__name__)
STREAM_BATCH = 500
# Bodies longer than this (characters) are read one at a time rather than in batches of
# STREAM_BATCH: a batch of samples with multi-megabyte prompts would otherwise be held at once.
LARGE_BODY = 64 * 1024
STALE_CLAIM_S = 60.0
CLAIM_REFRESH_S = 10.0
TOP_ERRORS = 5
# Distinct (type, message) pairs counted per log; more are folded into the counts they share.
MAX_DISTINCT_ERRORS = 10_000


class LostClaim(Exception):
    """Another process took this aggregation over (this one was taken for dead)."""


@app.task(name=AGGREGATE_TASK, ignore_result=True)
def aggregate_task(task_result_id: int) -> None:
    assemble_task_result_log(task_result_id)


def errors_exceed_budget(errors: int, total: int, fail_on_error: bool | float) -> bool:
    """Inspect's rule: true fails on any error, false never; below 1 a share, from 1 a count."""
    if fail_on_error is True:
        return errors > 0
    if fail_on_error is False:
        return False
    if fail_on_error < 1:
        return total > 0 and errors / total > fail_on_error
    return errors >= fail_on_error


class _Folder:
    """Metrics, token usage, counts and error kinds, folded in one sample at a time."""

    def __init__(self, metric_names: dict[str, tuple[str, ...]], spec: ResolvedTaskSpec):
        self.metric_names = metric_names
        self.accumulators = {label: MeanAccumulator() for label in metric_names}
        self.errors = 0
        self.error_kinds: Counter[tuple[str, str]] = Counter()
        self.model_calls = 0
        self.attempts = 0
        self.cache_hits = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.spec = spec
        # Judge calls by judge model key: [calls, input tokens, output tokens].
        self.judged: dict[str, list[int]] = {}
        self.unscored: Counter[str] = Counter()

    def add(self, record: SampleRecord, *, fold_scores: bool = True) -> None:
        """Counts, usage and errors of a record; its scores too unless they are folded reduced
        over the sample's epochs (`add_scores`)."""
        self.model_calls += record.model_calls
        self.attempts += record.attempts
        self.cache_hits += record.cached
        # Tokens (and so cost) count what this run paid for: not outputs served from the cache.
        if record.usage is not None and not record.cached:
            self.input_tokens += record.usage.input_tokens
            self.output_tokens += record.usage.output_tokens
        for judged in record.judges:
            counts = self.judged.setdefault(judged.model, [0, 0, 0])
            counts[0] += judged.calls
            counts[1] += judged.input_tokens
            counts[2] += judged.output_tokens
        if record.error is not None:
            self.errors += 1
            kind = (record.error.type, record.error.message[:300])
            if kind in self.error_kinds or len(self.error_kinds) < MAX_DISTINCT_ERRORS:
                self.error_kinds[kind] += 1
            return
        if fold_scores:
            self.add_scores(record.scores)

    def add_scores(self, scores: dict[str, Score]) -> None:
        for label, score in scores.items():
            if label in self.accumulators:
                if score.value is None:
                    self.unscored[label] += 1  # a scorer error (a judge reply without a grade)
                else:
                    self.accumulators[label].add(score.value)

    def results(self) -> dict[str, ScorerResult]:
        return {
            label: ScorerResult(metrics=acc.metrics(self.metric_names[label]), scored=acc.count,
                                errors=self.errors + self.unscored[label])
            for label, acc in self.accumulators.items()
        }

    def error_summary(self, task_error: str | None) -> ErrorSummary | None:
        if not self.errors and task_error is None:
            return None
        return ErrorSummary(
            samples_errored=self.errors, task_error=task_error,
            most_frequent=[ErrorCount(type=t, message=m, count=n) for (t, m), n in self.error_kinds.most_common(TOP_ERRORS)],
        )

    def model_usage(self) -> dict[str, ModelUsage]:
        """Calls, tokens and cost per model: the model under test, and each judge (so cost
        includes judging; a judge that is the model under test adds to its entry)."""
        usage: dict[str, ModelUsage] = {}

        def add(model: ResolvedModel | None, key: str, calls: int, input_tokens: int, output_tokens: int) -> None:
            entry = usage.setdefault(key, ModelUsage())
            entry.calls += calls
            entry.input_tokens += input_tokens
            entry.output_tokens += output_tokens
            if model is not None and model.pricing is not None:
                entry.cost_usd = model.pricing.cost_usd(entry.input_tokens, entry.output_tokens)

        if self.spec.model is not None:
            add(self.spec.model, self.spec.model.key, self.model_calls, self.input_tokens, self.output_tokens)
        for key, (calls, input_tokens, output_tokens) in self.judged.items():
            model = self.spec.judges.get(key) or (self.spec.model if self.spec.model and
                                                 self.spec.model.key == key else None)
            add(model, key, calls, input_tokens, output_tokens)
        return usage


def aggregator_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def take_aggregation(task_result_id: int, owner: str, *, stale_after_s: float | None = None) -> bool:
    """Become the process that writes this task result's log. A claim is taken when nobody owns it
    yet, or (with `stale_after_s`, for recovery) when its owner has not refreshed it for that long."""
    t = task_results.c
    if stale_after_s is None:
        free = t.aggregator.is_(None)
    else:
        free = or_(t.claimed_at.is_(None), t.claimed_at < now() - timedelta(seconds=stale_after_s))
    with get_engine().begin() as connection:
        return connection.execute(update(task_results).where(
            t.id == task_result_id, t.status == "aggregating", free,
        ).values(aggregator=owner, claimed_at=now())).rowcount == 1


def _refresh_claim(task_result_id: int, owner: str) -> None:
    t = task_results.c
    with get_engine().begin() as connection:
        if connection.execute(update(task_results).where(t.id == task_result_id, t.aggregator == owner)
                              .values(claimed_at=now())).rowcount != 1:
            raise LostClaim(f"task result {task_result_id} was taken over by another aggregator")


def release_aggregation(task_result_id: int, owner: str, reason: str) -> None:
    """Give a claim back at once (stale from now), so the next recovery pass writes the log."""
    t = task_results.c
    with get_engine().begin() as connection:
        connection.execute(update(task_results).where(t.id == task_result_id, t.aggregator == owner).values(
            aggregator=None, claimed_at=now() - timedelta(seconds=STALE_CLAIM_S * 2), error=reason))


def assemble_task_result_log(task_result_id: int, status: str | None = None, *,
                             stale_after_s: float | None = None) -> str | None:
    """Take the claim of a task result in `aggregating`, write its log and settle it. Returns the
    log's URI, or None when another process owns the claim or writing failed."""
    owner = aggregator_name()
    try:
        if not through_outages(lambda: take_aggregation(task_result_id, owner, stale_after_s=stale_after_s),
                               "claiming an aggregation"):
            return None
        return _assemble(task_result_id, owner, status)
    except OutageBudgetExceeded as exc:
        logger.warning("aggregation of task result %s put off: %s", task_result_id, exc)
        return None


def _evaluation_header(run_plan: str) -> EvaluationHeader:
    """What a log says of its evaluation; the rest of the run's plan is not kept."""
    evaluation = ResolvedEvaluation.model_validate_json(run_plan)
    return EvaluationHeader(key=evaluation.key, display_name=evaluation.display_name,
                            description=evaluation.description, tags=evaluation.tags,
                            cache_policy=evaluation.cache_policy, log_prompts=evaluation.log_prompts,
                            fail_on_error=evaluation.fail_on_error)


def _assemble(task_result_id: int, owner: str, status: str | None) -> str | None:
    began = time.monotonic()
    engine = get_engine()
    # The plans are read apart from the row and parsed at once, so their text (megabytes with a
    # large prompt template, twice: the run's and the task result's) is not held while samples stream.
    with engine.connect() as connection:
        row = connection.execute(
            select(*(column for column in task_results.c if column.name != "plan"), runs.c.retry_of)
            .join(runs, runs.c.id == task_results.c.run_id)
            .where(task_results.c.id == task_result_id)
        ).one()
        evaluation = _evaluation_header(connection.execute(
            select(runs.c.plan).where(runs.c.id == row.run_id)).scalar_one())
        spec = ResolvedTaskSpec.model_validate_json(connection.execute(
            select(task_results.c.plan).where(task_results.c.id == task_result_id)).scalar_one())
    try:
        task = load_task(spec.task, spec.dataset)
        folder = _Folder(task.metrics(), spec)
        duplicated = _duplicated_groups(task_result_id) if task.scores_population else set()
        with SampleSpool() as spool:
            refreshed = time.monotonic()
            small_body = case((func.length(sample_results.c.body) <= LARGE_BODY, sample_results.c.body), else_=None)
            statement = (select(sample_results.c.sample_id, small_body, sample_results.c.group_key,
                                sample_results.c.position)
                         .where(sample_results.c.task_result_id == task_result_id)
                         .order_by(sample_results.c.position))
            epochs = EpochGroup(spec, folder, spool)
            with engine.connect() as connection, engine.connect() as large_bodies:
                result = connection.execution_options(yield_per=STREAM_BATCH).execute(statement)
                for sample_id, body, group_key, position in result:
                    if body is None:
                        body = large_bodies.execute(select(sample_results.c.body).where(
                            sample_results.c.task_result_id == task_result_id,
                            sample_results.c.position == position)).scalar_one()
                    record = SampleRecord.model_validate_json(body)
                    if task.scores_population and record.error is None:
                        record.scores = task.score_in_population(record.scores, group_key in duplicated)
                        body = record.model_dump_json()
                    if spec.epochs == 1:
                        folder.add(record)
                        spool.add(sample_id, body)
                    else:
                        epochs.add(position, sample_id, record, body)
                    if time.monotonic() - refreshed > CLAIM_REFRESH_S:
                        _refresh_claim(task_result_id, owner)
                        refreshed = time.monotonic()
            epochs.flush()
            final_status = status or "success"
            error = None
            if status is None and errors_exceed_budget(folder.errors, row.total, evaluation.fail_on_error):
                final_status = "error"
                error = LogError(message=f"{folder.errors} of {row.total} samples failed, more than the "
                                         "evaluation's fail_on_error allows")
            completed_at = now()
            started_at = row.started_at if row.started_at.tzinfo else row.started_at.replace(tzinfo=completed_at.tzinfo)
            results = folder.results()
            summary = folder.error_summary(None)
            star = star_metric_result(spec, {label: r.metrics for label, r in results.items()})
            header = LogHeader(
                status=final_status, error=error, run_id=row.run_id, retry_of=row.retry_of,
                evaluation=evaluation,
                task_specification=spec, sample_count=row.total, samples_errored=folder.errors,
                subsampling=spec.subsampling, results=results, star_metric=star,
                stats=LogStats(started_at=started_at, completed_at=completed_at,
                               duration_s=(completed_at - started_at).total_seconds(),
                               model_calls=folder.model_calls, attempts=folder.attempts,
                               cache_hits=folder.cache_hits, model_usage=folder.model_usage()),
                error_summary=summary,
            )
            _refresh_claim(task_result_id, owner)
            uri = write_task_result_log(get_settings().log_dir, log_relpath(evaluation.key, row.run_id, spec.key),
                                        header, spool)
        metrics = finite_or_none({label: r.metrics for label, r in results.items()})
        through_outages(lambda: _settle(task_result_id, owner, row.run_id, final_status, uri, metrics,
                                        error.message if error else None, summary,
                                        star.pass_status if star else None), "settling a task result")
        AGGREGATION_SECONDS.labels(spec.task.key, final_status).observe(time.monotonic() - began)
        return uri
    except LostClaim as exc:
        logger.warning("%s", exc)
        return None
    except Exception as exc:  # noqa: BLE001 - the run must end with the reason, not hang
        if isinstance(exc, StoreError) or is_outage(exc):
            # Not the task's fault: leave it for the next recovery pass, which tries again.
            logger.warning("could not write the log of task result %s, will try again: %s", task_result_id, exc)
            try:
                release_aggregation(task_result_id, owner, f"writing the log failed, retrying: {exc}")
            except Exception:  # noqa: BLE001 - the claim goes stale by itself
                pass
            AGGREGATION_SECONDS.labels(spec.task.key, "failed").observe(time.monotonic() - began)
            return None
        logger.exception("aggregation of task result %s failed", task_result_id)
        message = f"aggregation failed: {exc}"
        _settle(task_result_id, owner, row.run_id, "error", None, None,
                f"{message}\n{traceback.format_exc(limit=5)}", ErrorSummary(task_error=message))
        AGGREGATION_SECONDS.labels(spec.task.key, "error").observe(time.monotonic() - began)
        return None


class EpochGroup:
    """The records of one sample's epochs (consecutive work positions), reduced to one score per
    scorer when the sample's last epoch comes by: the reduced scores go into the metrics and onto
    that last record (`reduced_scores`); every epoch's record goes into the log."""

    def __init__(self, spec: ResolvedTaskSpec, folder: _Folder, spool: SampleSpool):
        self.epochs, self.reducer = spec.epochs, spec.epoch_reducer
        self.folder, self.spool = folder, spool
        self.place: int | None = None
        self.records: list[tuple[str, SampleRecord, str]] = []

    def add(self, position: int, sample_id: str, record: SampleRecord, body: str) -> None:
        place = position // self.epochs
        if place != self.place:
            self.flush()
            self.place = place
        self.records.append((sample_id, record, body))

    def flush(self) -> None:
        if not self.records:
            return
        scored = [record.scores for _, record, _ in self.records if record.error is None]
        reduced = reduce_scores(self.reducer, scored) if scored else None
        if reduced:
            self.folder.add_scores(reduced)
        for index, (sample_id, record, body) in enumerate(self.records):
            self.folder.add(record, fold_scores=False)
            if index == len(self.records) - 1 and reduced is not None:
                body = record.model_copy(update={"reduced_scores": reduced}).model_dump_json()
            self.spool.add(sample_id, body)
        self.records = []


def _duplicated_groups(task_result_id: int) -> set[str]:
    sr = sample_results.c
    with get_engine().connect() as connection:
        return set(connection.execute(
            select(sr.group_key).where(sr.task_result_id == task_result_id, sr.group_key.is_not(None))
            .group_by(sr.group_key).having(func.count() > 1)
        ).scalars())


def star_metric_result(spec: ResolvedTaskSpec, metrics: dict[str, dict[str, float | None]]) -> StarMetricResult | None:
    star = spec.star_metric
    if star is None:
        return None
    value = star.value(metrics)
    return StarMetricResult(metric=star.metric, value=finite_or_none(value), threshold=star.threshold,
                            pass_status=star.passes(finite_or_none(metrics)))


def _settle(task_result_id: int, owner: str, run_id: str, status: str, log_path: str | None,
            metrics: dict | None, error: str | None, summary: ErrorSummary | None,
            pass_status: bool | None = None) -> None:
    t = task_results.c
    with get_engine().begin() as connection:
        connection.execute(update(task_results).where(
            t.id == task_result_id, t.status == "aggregating", or_(t.aggregator == owner, t.aggregator.is_(None)),
        ).values(
            status=status, log_path=log_path, completed_at=now(), error=error,
            metrics=None if metrics is None else json.dumps(metrics),
            error_summary=None if summary is None else summary.model_dump_json(), pass_status=pass_status,
        ))
    settle_run(run_id)


def settle_run(run_id: str) -> None:
    """Mark the run finished once every task result is: error if any failed, cancelled if any was."""
    with get_engine().begin() as connection:
        statuses = connection.execute(
            select(task_results.c.status).where(task_results.c.run_id == run_id)).scalars().all()
        if any(s not in FINAL_STATUSES for s in statuses):
            return
        status = "cancelled" if "cancelled" in statuses else "error" if "error" in statuses else "success"
        connection.execute(update(runs).where(runs.c.id == run_id, runs.c.status.in_(("running", CANCELLING)))
                           .values(status=status, finished_at=now()))


__all__ = ["aggregate_task", "assemble_task_result_log", "errors_exceed_budget", "settle_run", "take_aggregation"]
