"""The per-sample task: prompt, inference, scoring, record. A message carries the task result id,
the sample's position and the sample itself; everything else about the task specification is
loaded once per worker process and reused for every sample."""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from celery.exceptions import Reject
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from shared.cache_identity import InferenceIdentity, ScoreIdentity, model_identity, task_identity
from shared.db import CANCELLING, get_engine, now, runs, task_results
from shared.epochs import epoch_of
from shared.errors import EvalfleetError, StoreError
from shared.log import PromptRef, SampleError, SampleRecord, TokenUsage
from shared.outages import OutageBudgetExceeded, through_outages
from shared.plan import ResolvedTaskSpec
from shared.prompts import template_sha256
from shared.redact import scrub
from shared.result_store import CachedInference, CachedScores, StoreWrite, reset_result_store, result_store
from shared.samples import Prompt, Sample
from shared.settings import get_settings
from workers.app import SAMPLE_TASK, app, dispatch_aggregation
from workers.judges import Judges, judge_identities, recording, uses_judges
from workers.prompt_budget import prompt_budget, reset_prompt_budget
from workers.providers import Provider, ProviderError, provider_for, warm_up
from workers.results import ResultWriter
from workers.shutdown import stopping
from workers.tasks import Task, load_task
from workers.telemetry import SampleCounters, sample_counters

logger = logging.getLogger(__name__)
RECORD_RETRY_MAX_S = 60
# The `worker` of samples served whole from the result store at submission.
CACHE_WORKER = "result-store"


@dataclass(frozen=True)
class Execution:
    """What a worker needs to evaluate the samples of one task result, built once per process."""

    task_result_id: int
    run_id: str
    spec: ResolvedTaskSpec
    cache_policy: str
    task: Task
    provider: Provider | None
    identity: InferenceIdentity | None = None
    score_identity: ScoreIdentity = field(default_factory=lambda: ScoreIdentity({}))
    log_prompts: str = "full"
    # The hash and length of the task's prompt_template, computed once: templates can be
    # megabytes long.
    template_sha256: str | None = None
    template_chars: int = 0
    counters: SampleCounters = field(default_factory=lambda: sample_counters("", ""))

    def prompt_size(self, sample: dict[str, Any]) -> int:
        """About how many bytes a sample's prompt takes, before it is rendered."""
        text = sample.get("input")
        return self.template_chars + (len(text) if isinstance(text, str) else sum(
            len(str(message.get("content", ""))) for message in text or () if isinstance(message, dict)))

    @property
    def reads_cache(self) -> bool:
        return self.cache_policy == "reuse"

    @property
    def writes_cache(self) -> bool:
        return self.cache_policy in ("reuse", "update")


_executions: dict[int, Execution] = {}
_executions_lock = threading.Lock()
_build_lock = threading.Lock()
_writer: ResultWriter | None = None


def execution_for(task_result_id: int) -> Execution:
    execution = _executions.get(task_result_id)
    if execution is not None:
        return execution
    # One thread builds while the others wait: a worker's threads all receive their first sample
    # at once, and a hundred identical builds would delay every one of them.
    with _build_lock:
        execution = _executions.get(task_result_id)
        if execution is None:
            execution = _build_execution(task_result_id)
            with _executions_lock:
                if len(_executions) > 1024:
                    _executions.clear()
                _executions[task_result_id] = execution
        return execution


def lookup_execution(task_result_id: int) -> Execution:
    """What the submitter needs to look samples up in the result store: everything but the model's
    client, whose import alone costs more than looking up thousands of samples."""
    return _build_execution(task_result_id, with_provider=False)


def _build_execution(task_result_id: int, with_provider: bool = True) -> Execution:
    with get_engine().connect() as connection:
        row = connection.execute(
            select(task_results.c.plan, task_results.c.run_id, runs.c.plan.label("run_plan"))
            .join(runs, runs.c.id == task_results.c.run_id)
            .where(task_results.c.id == task_result_id)
        ).one()
    run_plan = json.loads(row.run_plan)
    return execution_of(ResolvedTaskSpec.model_validate_json(row.plan), run_plan["cache_policy"],
                        task_result_id=task_result_id, run_id=row.run_id, with_provider=with_provider,
                        log_prompts=run_plan.get("log_prompts", "full"))


def execution_of(spec: ResolvedTaskSpec, cache_policy: str, *, task_result_id: int = 0, run_id: str = "",
                 with_provider: bool = True, log_prompts: str = "full") -> Execution:
    """An execution of a resolved specification; with no task result (a dry run), for lookups."""
    task = load_task(spec.task, spec.dataset)
    task_part, scorer_part = task_identity(spec.task, task.scorer_config_fields)
    if uses_judges(task.scorers()):
        task.judges = Judges(spec)
        # A verdict depends on who judged: each judge model's identity is part of the score key.
        scorer_part = {**scorer_part, "judges": judge_identities(spec, task.scorers())}
    return Execution(
        task_result_id=task_result_id,
        run_id=run_id,
        spec=spec,
        cache_policy=cache_policy,
        task=task,
        provider=provider_for(spec.model) if spec.model and with_provider else None,
        identity=InferenceIdentity(model_identity(spec.model) if spec.model else {}, task_part),
        score_identity=ScoreIdentity(scorer_part),
        log_prompts=log_prompts,
        template_sha256=template_sha256(template) if isinstance(
            template := getattr(task.config, "prompt_template", None), str) else None,
        template_chars=len(template) if isinstance(template, str) else 0,
        counters=sample_counters(spec.task.key, spec.model.key if spec.model else ""),
    )


class Evaluated(NamedTuple):
    record: SampleRecord
    group_key: str | None
    store_write: StoreWrite | None = None


def evaluate_sample(execution: Execution, sample: Sample, position: int, worker: str | None,
                    checked: bool = False) -> Evaluated:
    """Run one sample through prompt, model and scorers; failures become the sample's error.
    `checked`: the submitter looked the sample up in the result store moments ago and found
    nothing, so it is not looked up again."""
    task = execution.task
    counters = execution.counters
    counters.started.inc()
    epoch = epoch_of(position, execution.spec.epochs)[1] if execution.spec is not None else 1
    started_at = now()
    prompt = output = None
    usage = None
    latency_ms = None
    model_calls = attempts = 0
    scores = {}
    judged: list = []
    error = None
    cached = False
    store_write = None
    try:
        if execution.provider is None:
            scores = task.score(sample, output)
        else:
            prompt, ikey, skey = _keys_for(execution, sample, position, epoch)
            if execution.reads_cache and not checked:
                counters.lookups.inc()
                hit, hit_scores = _lookup(ikey, skey)
            else:
                hit, hit_scores = None, None
            if hit is not None:
                counters.hits.inc()
                cached = True
                output, usage, latency_ms = hit.output, hit.usage, hit.latency_ms
            else:
                generated = execution.provider.generate(prompt, sample)
                model_calls, attempts = generated.calls, generated.attempts
                output = generated.text
                latency_ms = generated.latency_ms
                usage = TokenUsage(input_tokens=generated.input_tokens or 0,
                                   output_tokens=generated.output_tokens or 0)
            new_inference = None if hit else CachedInference(output=output, usage=usage, latency_ms=latency_ms)
            try:
                if hit_scores is not None:
                    scores = hit_scores.scores
                else:
                    with recording() as judged:
                        scores = task.score(sample, output)
            finally:
                # Saved even when scoring fails: the model call is paid for either way.
                if execution.writes_cache and (hit is None or (scores and hit_scores is None)):
                    # A score without a value (a judge's reply with no grade) is not kept: a re-run asks again.
                    keep = bool(scores) and all(score.value is not None for score in scores.values())
                    store_write = StoreWrite(ikey, hit or new_inference, skey,
                                             CachedScores(scores=scores) if keep else None, known=hit is not None)
    except ProviderError as exc:
        model_calls, attempts = exc.calls, exc.attempts
        error = SampleError(type=exc.type_name, message=scrub(str(exc)), status_code=exc.status_code,
                            attempts=exc.attempts)
    except Exception as exc:  # noqa: BLE001 - a task's own failure is recorded on the sample
        error = SampleError(type=type(exc).__name__, message=scrub(str(exc)),
                            traceback=scrub(traceback.format_exc(limit=8), limit=8000))
    counters.finished.inc()
    if error is not None:
        counters.errored.inc()
    record = SampleRecord(
        id=sample.id,
        position=position,
        epoch=epoch,
        input=sample.input,
        target=sample.target,
        metadata=sample.metadata,
        **logged_prompt(execution, sample, prompt),
        output=output,
        scores=scores if error is None else {},
        error=error,
        usage=usage,
        latency_ms=latency_ms,
        model_calls=model_calls,
        attempts=attempts,
        cached=cached,
        judges=judged,
        worker=worker,
        started_at=started_at,
        completed_at=now(),
    )
    return Evaluated(record, task.group_key(sample) if task.scores_population else None, store_write)


def cache_keys(execution: Execution, sample: Sample, epoch: int = 1) -> tuple[Prompt, str, str]:
    """The prompt a sample sends, and its inference and score keys (each epoch its own inference;
    the first keeps the keys of runs without epochs)."""
    prompt = execution.task.prompt(sample)
    ikey = execution.identity.key(prompt, sample, epoch - 1)
    return prompt, ikey, execution.score_identity.key(ikey)


# In the embedded process the feeder and the workers share memory: the keys the feeder computed
# to look a sample up are handed to the worker that runs it instead of being computed again
# (rendering the prompt and two hashes, a few percent of the process's CPU per sample). Keyed by
# (task result, position); a worker that finds nothing computes the keys itself, so the map may
# be cleared at any time (it is, past HANDED_OVER_MAX entries: samples fed and never run).
_handed_over: dict[tuple[int, int], tuple[Prompt, str, str]] = {}
HANDED_OVER_MAX = 200_000


def _hand_over(task_result_id: int, position: int, keys: tuple[Prompt, str, str]) -> None:
    if len(_handed_over) >= HANDED_OVER_MAX:
        _handed_over.clear()
    _handed_over[(task_result_id, position)] = keys


def _keys_for(execution: Execution, sample: Sample, position: int, epoch: int) -> tuple[Prompt, str, str]:
    keys = _handed_over.pop((execution.task_result_id, position), None)
    return keys if keys is not None else cache_keys(execution, sample, epoch)


def logged_prompt(execution: Execution, sample: Sample, prompt: Prompt | None) -> dict[str, Any]:
    """The record's `prompt` (when it differs from the input), or its `prompt_ref` when the
    evaluation logs prompts by reference and the prompt came from the task's template."""
    if prompt is None or prompt == sample.input:
        return {}
    if execution.log_prompts == "reference":
        reference = execution.task.prompt_reference(sample)
        if reference is not None:
            template, fields = reference
            digest = execution.template_sha256 if template is getattr(
                execution.task.config, "prompt_template", None) else template_sha256(template)
            return {"prompt_ref": PromptRef(template_sha256=digest, fields=fields)}
    return {"prompt": prompt}


MISSED = "missed"


def cached_samples(execution: Execution, samples: list[tuple[int, Sample]]) -> list[SampleRecord | str | None]:
    """For each (position, sample): its record when the result store holds both its output and its
    scores (and the policy reads the cache); MISSED when it holds nothing for it (the worker need
    not look again); else None (a worker must run it, and look it up). One store round trip."""
    if execution.spec.model is None or not execution.reads_cache:
        return [None] * len(samples)
    keyed: list[tuple[int, tuple[str, str, str]]] = []
    epochs = execution.spec.epochs
    for index, (position, sample) in enumerate(samples):
        try:
            keyed.append((index, cache_keys(execution, sample, epoch_of(position, epochs)[1])))
        except Exception:  # noqa: BLE001 - the worker will record why the prompt cannot be built
            continue
    try:
        found = result_store().lookup_many([(ikey, skey) for _, (_, ikey, skey) in keyed])
    except (StoreError, RedisError, ValueError) as exc:
        logger.warning("result store lookup failed; the workers will look again: %s", exc)
        return [None] * len(samples)
    records: list[SampleRecord | str | None] = [None] * len(samples)
    moment = now()
    execution.counters.lookups.inc(len(keyed))
    served = 0
    hand_over = get_settings().embedded
    for (index, keys), (hit, hit_scores) in zip(keyed, found, strict=True):
        prompt = keys[0]
        if hit is None:
            records[index] = MISSED
            if hand_over:
                _hand_over(execution.task_result_id, samples[index][0], keys)
        if hit is None or hit_scores is None:
            continue
        position, sample = samples[index]
        records[index] = SampleRecord(
            id=sample.id, position=position, epoch=epoch_of(position, epochs)[1], input=sample.input, target=sample.target, metadata=sample.metadata,
            **logged_prompt(execution, sample, prompt), output=hit.output, scores=hit_scores.scores,
            usage=hit.usage, latency_ms=hit.latency_ms, model_calls=0, cached=True, worker=CACHE_WORKER,
            started_at=moment, completed_at=moment,
        )
        served += 1
    # A hit without scores is counted by the worker that uses it, so hits add up to the logs' cache_hits.
    execution.counters.hits.inc(served)
    return records


_cancelled: dict[str, tuple[float, bool]] = {}
CANCEL_CHECK_S = 1.0


def run_cancelled(run_id: str) -> bool:
    """Whether a run is being cancelled, asked of the database at most once a second per process."""
    checked = _cancelled.get(run_id)
    if checked is not None and time.monotonic() - checked[0] < CANCEL_CHECK_S:
        return checked[1]
    with get_engine().connect() as connection:
        status = connection.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar_one_or_none()
    cancelled = status in (CANCELLING, "cancelled")
    _cancelled[run_id] = (time.monotonic(), cancelled)
    return cancelled


def _lookup(ikey: str, skey: str) -> tuple[CachedInference | None, CachedScores | None]:
    try:
        return result_store().lookup(ikey, skey)
    except (StoreError, RedisError, ValueError) as exc:
        # An unreachable store costs a model call, never the sample.
        logger.warning("result store lookup failed, treating as a miss: %s", exc)
        return None, None


def _save_all(writes: list[StoreWrite]) -> None:
    try:
        result_store().save_many(writes)
    except (StoreError, RedisError, OSError) as exc:
        logger.warning("result store write failed; %d samples are recorded but not cached: %s", len(writes), exc)


def unrunnable_sample(sample: Sample, position: int, exc: Exception, worker: str | None) -> Evaluated:
    moment = now()
    error = SampleError(type=type(exc).__name__, message=scrub(str(exc)))
    return Evaluated(SampleRecord(id=sample.id, position=position, input=sample.input, target=sample.target,
                                  metadata=sample.metadata, error=error, worker=worker, started_at=moment,
                                  completed_at=moment), None)


def result_writer() -> ResultWriter:
    global _writer
    with _executions_lock:
        if _writer is None:
            _writer = ResultWriter(
                get_engine(),
                get_settings().result_batch_size,
                on_claimed=lambda task_result_id: dispatch_aggregation(
                    task_result_id, execution_for(task_result_id).spec),
                before_commit=_save_all,
            )
        return _writer


def prepare_worker() -> None:
    """What a worker process sets up before its first sample, which would otherwise wait for it:
    the model client's modules, the database (opened and migrated on first use, alembic
    included) and the result store's packer. A database that is down now is only reported:
    samples retry until it is back."""
    warm_up()
    try:
        get_engine()
    except SQLAlchemyError as exc:
        logger.warning("the database is not reachable yet: %s", exc)
    try:
        # Packs what processes that stopped on this host left in their journals.
        result_store().start_packing()
    except Exception as exc:  # noqa: BLE001 - samples still run; the packer retries on its own
        logger.warning("the result store is not reachable yet: %s", exc)


def reset_worker_state() -> None:
    """Forget cached executions (tests switch databases within one process)."""
    global _writer
    with _executions_lock:
        _executions.clear()
        _writer = None
    _handed_over.clear()  # task result ids are only unique within one database
    reset_result_store()
    reset_prompt_budget()


@app.task(name=SAMPLE_TASK, bind=True, max_retries=None, Request="workers.delivery:SampleRequest")
def evaluate_sample_task(self, task_result_id: int, position: int, sample: dict, checked: bool = False) -> None:
    if stopping():
        # Not started yet and this worker is stopping: back to the broker for another worker.
        raise Reject("the worker is stopping", requeue=True)
    worker = self.request.hostname
    try:
        try:
            execution = through_outages(lambda: execution_for(task_result_id), "loading a task specification")
        except EvalfleetError as exc:
            # This worker cannot run the task (its code is not importable here): every sample says
            # so, so the run ends with the reason instead of waiting forever.
            evaluated = unrunnable_sample(Sample.model_validate(sample), position, exc, worker)
        else:
            if through_outages(lambda: run_cancelled(execution.run_id), "checking for cancellation"):
                return  # acknowledged and dropped: cancelling revokes every sample not yet started
            with prompt_budget().hold(execution.prompt_size(sample)):
                _record(task_result_id,
                        evaluate_sample(execution, Sample.model_validate(sample), position, worker, checked))
            return
        _record(task_result_id, evaluated)
    except OutageBudgetExceeded as exc:
        # Never acknowledged without a recorded result: hand the sample back to the broker.
        logger.warning("handing sample %s of task result %s back to the broker: %s", position, task_result_id, exc)
        raise Reject(str(exc), requeue=True) from None


def _record(task_result_id: int, evaluated: Evaluated) -> None:
    # Recorded means done: only then is the message acknowledged (late acknowledgement).
    through_outages(lambda: result_writer().record(task_result_id, *evaluated), "recording a result")
