"""Inspect -> evalfleet: `import_inspect_log` reads an Inspect log into a handover directory (a run
file, the dataset of its samples and a task result log, see `shared.interop.handover`) that
`evalfleet run -f` uploads with no model call.

A log that `convert_to_inspect` wrote gets its task specification back from its metadata. Any
other becomes a `qa` task: each Inspect scorer is named after the built-in scorer closest to it
(`exact` and `includes` as themselves, `pattern` as `regex`, `match` with `numeric` as `numeric`,
`match` and anything else as `includes`, qa's default), which only matters when the samples are
scored again: the scores themselves are Inspect's. The model is `openai$<name>` for Inspect's
`openai/<name>` and `openai$<provider>/<name>` for any other, the spelling of OpenAI-compatible
gateways; generation settings or an endpoint make it a model entity."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.interop.handover import DatasetWriter, handover_dataset, handover_log_path, write_handover
from shared.interop.inspect.format import METADATA_KEY, Document, parse_time, short_id
from shared.interop.inspect.reader import InspectLogFile
from shared.interop.inspect.samples import sample_record
from shared.log.models import (
    ErrorCount,
    ErrorSummary,
    EvaluationHeader,
    LogHeader,
    LogStats,
    ModelUsage,
    SampleRecord,
    ScorerResult,
    StarMetricResult,
)
from shared.log.models import LogError as LogErrorRecord
from shared.log.reader import LogError
from shared.log.writer import SampleSpool
from shared.metrics import MeanAccumulator
from shared.plan import ResolvedModel, ResolvedTask, ResolvedTaskSpec
from shared.spec import KEY_PATTERN, GenerationSettings

# `qa`'s scorers and metrics, as its config validates them (`qa` lives with the workers, which
# shared code does not import; the import tests run the handover through `evalfleet run`).
QA_TEMPLATE = "qa"
QA_PROMPT_TEMPLATE = "{input}"
QA_METRICS = ("accuracy", "stderr")
INCLUDES = {"name": "includes"}
COMPUTED_METRICS = ("accuracy", "mean", "stderr")  # what shared.metrics.MeanAccumulator computes
ERROR_KINDS_SHOWN = 5  # the most frequent errors an error summary lists, as the aggregator's do
# Distinct (type, message) pairs counted, as the aggregator counts them: memory stays bounded
# when every message differs.
MAX_ERROR_KINDS = 10_000


def import_inspect_log(path: str, output_dir: str) -> Path:
    """Read the Inspect log at `path` (`.eval` or `.json`, log version 1 or 2) into a handover
    directory at `output_dir`; returns the run file's path. Bad input (not an Inspect log,
    truncated, another version) is a `LogError` naming the file; nothing is left in `output_dir`."""
    source = Path(path)
    output = Path(output_dir)
    with InspectLogFile.open(source) as log:
        importer = Importer(log, output)
        try:
            with SampleSpool() as spool, DatasetWriter(importer.dataset) as dataset:
                for raw in log.samples():
                    record = importer.add(raw)
                    spool.add(record.id, record.model_dump_json())
                    dataset.add(record.id, _plain(record.input), record.target, record.metadata)
                if not importer.count:
                    raise LogError(str(source), "the log has no samples (written without them, or header only): "
                                                "there is nothing to hand over")
                return write_handover(output, importer.log_header(), spool, dataset, importer.long_description())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise LogError(str(source), f"a sample evalfleet cannot hold: {where}: {first['msg']}") from None


class Importer:
    """The evalfleet form of one Inspect log: its task specification, then each sample as a record,
    folding the log's results, statistics and errors on the way."""

    def __init__(self, log: InspectLogFile, output: Path):
        self.path = log.path
        self.inspect = log.header
        self.eval: Document = log.header["eval"]
        self.original = _original_spec(log.header)
        created = parse_time(self.eval["created"])
        assert created is not None  # checked on opening
        stats = log.header.get("stats") or {}
        self.started_at = parse_time(stats.get("started_at")) or created
        self.completed_at = parse_time(stats.get("completed_at"))
        self.model = self.original.model if self.original else model_from_inspect(
            self.eval["model"], self.eval.get("model_base_url"), self.eval.get("model_generate_config") or {})
        self.scorers: dict[str, tuple[str, Document]] = {}  # Inspect score name -> (evalfleet label, qa scorer)
        known = _inspect_scorers(log.header)
        if self.original is None:
            # A scorer named like the built-in that stands in for it keeps its name; the others
            # take the next free one (`includes-2`).
            known.sort(key=lambda item: qa_scorer_for(*item)["name"] != item[0].rsplit("/", 1)[-1])
        for name, options in known:
            self.label_for(name, options)
        if self.original is not None:
            dataset = self.original.dataset
            self.dataset = handover_dataset(output, dataset.key, dataset.id_field, dataset.input_field,
                                            dataset.target_field)
        else:
            self.dataset = handover_dataset(output, _key((self.eval.get("dataset") or {}).get("name")
                                                         or self.eval["task"]))
        self.count = self.samples_errored = 0
        self.errors: Counter[tuple[str, str]] = Counter()
        self.accumulators: dict[str, MeanAccumulator] = {}
        self.model_calls = self.attempts = self.cache_hits = self.input_tokens = self.output_tokens = 0
        self.last_completed: datetime | None = None

    def label_for(self, name: str, options: Document | None = None) -> str:
        """The evalfleet label of an Inspect score, fixed when the name is first seen: labels follow
        the order of the `qa` config's scorers, where a name used twice becomes `name-2`."""
        if name in self.scorers:
            return self.scorers[name][0]
        if self.original is not None:
            label, scorer = name, {}
        else:
            scorer = qa_scorer_for(name, options or {})
            used = sum(1 for _, existing in self.scorers.values() if existing["name"] == scorer["name"])
            label = scorer["name"] if not used else f"{scorer['name']}-{used + 1}"
        self.scorers[name] = (label, scorer)
        return label

    def add(self, raw: Document) -> SampleRecord:
        record = sample_record(raw, self.count, self.label_for, from_evalfleet=self.original is not None,
                               reserved={self.dataset.id_field, self.dataset.input_field, self.dataset.target_field},
                               default_time=self.started_at)
        self.count += 1
        self.model_calls += record.model_calls
        self.attempts += record.attempts
        self.cache_hits += record.cached
        if record.usage is not None:
            self.input_tokens += record.usage.input_tokens
            self.output_tokens += record.usage.output_tokens
        if self.last_completed is None or record.completed_at > self.last_completed:
            self.last_completed = record.completed_at
        if record.error is not None:
            self.samples_errored += 1
            kind = (record.error.type, record.error.message[:300])
            if kind in self.errors or len(self.errors) < MAX_ERROR_KINDS:
                self.errors[kind] += 1
        else:
            for label, score in record.scores.items():
                accumulator = self.accumulators.setdefault(label, MeanAccumulator())
                if score.value is not None:
                    accumulator.add(score.value)
        return record

    def spec(self) -> ResolvedTaskSpec:
        """The task specification the handover's run file resolves to."""
        if self.original is not None:
            key = self.original.key
            return self.original.model_copy(update={"dataset": self.dataset, "num_samples": None, "subsampling": "head",
                                                  "task_result_log_path": handover_log_path(key)})
        key = _key(self.eval["task"])
        scorers = [scorer for _, scorer in self.scorers.values()] or [INCLUDES]
        task = ResolvedTask(key=key, template=QA_TEMPLATE, config={"prompt_template": QA_PROMPT_TEMPLATE,
                                                                   "scorers": scorers})
        return ResolvedTaskSpec(key=key, display_name=self.eval.get("task_display_name") or self.eval["task"],
                                task=task, model=self.model, dataset=self.dataset, num_samples=None,
                                subsampling="head", task_result_log_path=handover_log_path(key))

    def log_header(self) -> LogHeader:
        error = self.inspect.get("error")
        completed = self.completed_at or self.last_completed or self.started_at
        results = {}
        for label, _ in self.scorers.values():
            accumulator = self.accumulators.get(label, MeanAccumulator())
            results[label] = ScorerResult(metrics=accumulator.metrics(self._metric_names(label)),
                                          scored=accumulator.count, errors=self.samples_errored)
        usage = {}
        if self.model is not None:
            usage[self.model.key] = ModelUsage(calls=self.model_calls, input_tokens=self.input_tokens,
                                               output_tokens=self.output_tokens, cost_usd=self._cost())
        task_error = error.get("message") if isinstance(error, dict) else None
        summary = None
        if self.samples_errored or task_error:
            summary = ErrorSummary(samples_errored=self.samples_errored, task_error=task_error, most_frequent=[
                ErrorCount(type=kind, message=message, count=count)
                for (kind, message), count in self.errors.most_common(ERROR_KINDS_SHOWN)])
        return LogHeader(
            status=self.inspect.get("status", "started"),
            error=LogErrorRecord(message=str(error.get("message") or ""), traceback=error.get("traceback") or None)
            if isinstance(error, dict) else None,
            run_id=self.eval.get("run_id") or self.eval.get("eval_id") or short_id(f"run:{self.path.name}"),
            retry_of=self.original_metadata.get("retry_of"), evaluation=self._evaluation(),
            task_specification=self.spec(), sample_count=self.count, samples_errored=self.samples_errored,
            subsampling="head", results=results, star_metric=self._star_metric(results),
            stats=LogStats(started_at=self.started_at, completed_at=completed,
                           duration_s=max((completed - self.started_at).total_seconds(), 0.0),
                           model_calls=self.model_calls, attempts=self.attempts, cache_hits=self.cache_hits,
                           model_usage=usage),
            error_summary=summary,
        )

    def _star_metric(self, results: dict[str, ScorerResult]) -> StarMetricResult | None:
        star = self.original.star_metric if self.original is not None else None
        if star is None:
            return None
        metrics = {label: result.metrics for label, result in results.items()}
        return StarMetricResult(metric=star.metric, value=star.value(metrics), threshold=star.threshold,
                                pass_status=star.passes(metrics))

    @property
    def original_metadata(self) -> Document:
        return self.eval["metadata"][METADATA_KEY] if self.original is not None else {}

    def _metric_names(self, label: str) -> tuple[str, ...]:
        """`qa`'s metrics; for a log from evalfleet, those its results had (that evalfleet computes)."""
        if self.original is None:
            return QA_METRICS
        for score in (self.inspect.get("results") or {}).get("scores") or []:
            if isinstance(score, dict) and score.get("name") == label:
                return tuple(m for m in (score.get("metrics") or {}) if m in COMPUTED_METRICS) or QA_METRICS
        return QA_METRICS

    def _cost(self) -> float | None:
        usage = ((self.inspect.get("stats") or {}).get("model_usage") or {}).values()
        costs = [u["total_cost"] for u in usage if isinstance(u, dict) and isinstance(u.get("total_cost"), int | float)]
        return sum(costs) if costs else None

    def _evaluation(self) -> EvaluationHeader:
        fail_on_error = (self.eval.get("config") or {}).get("fail_on_error")
        tags = [t for t in self.eval.get("tags") or [] if isinstance(t, str)]
        if self.original is not None:
            meta = self.original_metadata
            return EvaluationHeader(key=meta["evaluation_key"], display_name=meta["evaluation_display_name"],
                                    description=meta.get("evaluation_description"), tags=tags,
                                    cache_policy=meta.get("cache_policy", "reuse"),
                                    fail_on_error=meta.get("fail_on_error", fail_on_error))
        task = self.eval["task"]
        return EvaluationHeader(
            key=_key(task), display_name=self.eval.get("task_display_name") or task, tags=tags,
            description=f"Imported from the Inspect AI log {self.path.name} (task {task}, model {self.eval['model']}).",
            # The same meaning in both; Inspect fails on any error unless told otherwise.
            fail_on_error=fail_on_error if isinstance(fail_on_error, bool | int | float) else True)

    def long_description(self) -> str | None:
        """How Inspect's scorers were named, when any was renamed."""
        renamed = [f"`{name}` as `{label}`" for name, (label, _) in self.scorers.items() if name != label]
        if not renamed:
            return None
        return ("The scores are Inspect's; each Inspect scorer is named after the built-in scorer that stands in "
                f"for it when the samples are scored again: {', '.join(renamed)}.")


def _original_spec(header: Document) -> ResolvedTaskSpec | None:
    """The task specification of a log `convert_to_inspect` wrote, if its scores are still those of
    that specification (no scorer added since)."""
    meta = (header["eval"].get("metadata") or {}).get(METADATA_KEY)
    if not isinstance(meta, dict) or not {"task_specification", "evaluation_key", "evaluation_display_name"} <= set(meta):
        return None
    try:
        spec = ResolvedTaskSpec.model_validate(meta["task_specification"])
    except ValidationError:
        return None
    if not {name for name, _ in _inspect_scorers(header)} <= set(meta.get("scorer_labels") or []):
        return None
    return spec


def _inspect_scorers(header: Document) -> list[tuple[str, Document]]:
    """The score names the header knows of, in order, each with its scorer's options if recorded."""
    options: dict[str, Document] = {}
    for scorer in header["eval"].get("scorers") or []:
        if isinstance(scorer, dict) and isinstance(scorer.get("name"), str):
            options[scorer["name"]] = scorer.get("options") or {}
    found: dict[str, Document] = {}
    for score in (header.get("results") or {}).get("scores") or []:
        if isinstance(score, dict) and isinstance(score.get("name"), str):
            scorer = score.get("scorer") or score["name"]
            found.setdefault(score["name"], options.get(scorer, options.get(score["name"], {})))
    for name, scorer_options in options.items():
        found.setdefault(name, scorer_options)
    return list(found.items())


def qa_scorer_for(name: str, options: Document) -> Document:
    """The built-in `qa` scorer (its config, as `qa` validates it) closest to an Inspect scorer."""
    base = name.rsplit("/", 1)[-1]
    if base in ("exact", "includes"):
        return {"name": base}
    if base == "pattern" and isinstance(options.get("pattern"), str):
        return {"name": "regex", "pattern": options["pattern"]}
    if base == "match" and options.get("numeric") is True:
        return {"name": "numeric", "tolerance": 0.0}
    return dict(INCLUDES)


def model_from_inspect(name: str, base_url: str | None, generate_config: Document) -> ResolvedModel:
    """evalfleet's model for Inspect's `provider/name` (see the module docstring)."""
    provider, _, model_name = name.partition("/")
    evalfleet_name = model_name if provider == "openai" and model_name else name
    settings: dict[str, Any] = {}
    for field, inspect_field in (("temperature", "temperature"), ("max_tokens", "max_tokens"), ("top_p", "top_p"),
                                 ("seed", "seed"), ("stop", "stop_seqs")):
        value = generate_config.get(inspect_field)
        if value is None:
            continue
        try:  # a value evalfleet refuses (a temperature of 3, say) is left out rather than an error
            GenerationSettings.model_validate({field: value})
        except ValidationError:
            continue
        settings[field] = value
    plain = not settings and not base_url and re.fullmatch(r"[^\s$]+", evalfleet_name)
    return ResolvedModel(key=f"openai${evalfleet_name}" if plain else _key(name), provider="openai",
                         name=evalfleet_name, base_url=base_url or None, generation=GenerationSettings(**settings))


def _key(text: str) -> str:
    """An evalfleet key (`[a-zA-Z0-9_-]`, at most 250 characters) from any name."""
    key = re.sub(r"[^a-zA-Z0-9_\-]", "-", text)[:250]
    return key if re.fullmatch(KEY_PATTERN, key) else "inspect"


def _plain(value: Any) -> Any:
    return [m.model_dump() for m in value] if isinstance(value, list) else value
