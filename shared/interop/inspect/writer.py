"""evalfleet -> Inspect: `convert_to_inspect` writes one task result log as an Inspect log, the
header from evalfleet's header and each sample as Inspect's `EvalSample`, streamed from the log
one sample at a time."""

from __future__ import annotations

import math
import os
import tempfile
import textwrap
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from shared.interop.inspect.format import (
    HEADER_MEMBER,
    LOG_VERSION,
    METADATA_KEY,
    START_MEMBER,
    SUMMARIES_MEMBER,
    ArraySpool,
    Document,
    dumps,
    inspect_model_name,
    log_file_stem,
    sample_member,
    short_id,
    streamed,
    utc,
    write_document,
)
from shared.interop.zipstream import ZipWriter
from shared.log.models import LogHeader, SampleRecord, Score
from shared.log.reader import iter_samples, read_log_header
from shared.plan import ResolvedModel
from shared.prompts import prompt_of
from shared.samples import ChatMessage
from shared.storage import process_umask

# Inspect's thinning of sample summaries (inspect_ai/log/_util.py): long text is cut so that the
# summaries of a large log stay quick to load in the viewer.
SUMMARY_TEXT_LIMIT = 5120
SUMMARY_FIELD_WIDTH = 1024


def convert_to_inspect(location: str, output_dir: str, fmt: Literal["eval", "json"] = "eval") -> str:
    """Write the evalfleet log at `location` (a path or s3:// URL) as an Inspect log in the local
    directory `output_dir`; returns its path. The name is Inspect's `<created>_<task>_<id>`, with a
    task id derived from the run id and the specification's key: converting again rewrites the
    same file. A log that is not readable is a `LogError` naming it."""
    if fmt not in ("eval", "json"):
        raise ValueError(f"unknown Inspect log format {fmt!r}: use 'eval' or 'json'")
    header = read_log_header(location)
    log = InspectLog(header)
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{log.file_stem()}.{fmt}"
    # Written beside its final name and renamed: a reader (or `inspect log list`, which lists any
    # `.eval`) never meets half a log.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~process_umask())  # mkstemp makes the file private; a log is made like any other file
        os.close(fd)
        with ArraySpool() as ids, ArraySpool(b",\n") as spooled:
            if fmt == "eval":
                _write_eval(Path(tmp), log, location, ids, spooled)
            else:
                _write_json(Path(tmp), log, location, ids, spooled)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return str(path)


def _write_eval(path: Path, log: InspectLog, location: str, ids: ArraySpool, summaries: ArraySpool) -> None:
    with ZipWriter(path, modified=log.header.stats.completed_at.timestamp()) as archive:
        for record in iter_samples(location):
            sample = log.sample(record)
            archive.write(sample_member(record.id, record.epoch), dumps(sample))
            if record.epoch == 1:  # Inspect lists each sample once, whatever its epochs
                ids.add(dumps(record.id))
            summaries.add(dumps(log.summary(sample)))
        # The journal's start record and the header hold every sample id, and the summaries grow
        # with the samples: streamed from their spools after the samples (Inspect too writes the
        # header last).
        streams = {"ids": ids.write_array}
        with archive.open(START_MEMBER) as member:
            write_document(member.write, {"version": LOG_VERSION, "eval": log.eval_spec(), "plan": log.plan()},
                           streams)
        with archive.open(SUMMARIES_MEMBER) as member:
            summaries.write_array(member.write)
        with archive.open(HEADER_MEMBER) as member:
            write_document(member.write, log.log_header(), streams)


def _write_json(path: Path, log: InspectLog, location: str, ids: ArraySpool, samples: ArraySpool) -> None:
    for record in iter_samples(location):
        samples.add(dumps(log.sample(record)))
        if record.epoch == 1:
            ids.add(dumps(record.id))
    # Everything before `samples`: Inspect's header-only reader stops at that key.
    document = {**log.log_header(), "samples": streamed("samples")}
    with open(path, "wb") as out:
        write_document(out.write, document, {
            "ids": ids.write_array,
            "samples": lambda write: samples.write_array(write, opening=b"[\n", closing=b"\n]"),
        })
        out.write(b"\n")


class InspectLog:
    """The Inspect form of one evalfleet log: the parts of its header, and each sample."""

    def __init__(self, header: LogHeader):
        self.header = header
        self.spec = header.task_specification
        self.model = inspect_model_name(self.spec.model)
        self.created = utc(header.stats.started_at)
        self.task_id = short_id(f"task:{header.run_id}:{self.spec.key}")
        self.eval_id = short_id(f"eval:{header.run_id}:{self.spec.key}")

    def file_stem(self) -> str:
        return log_file_stem(self.created, self.spec.task.key, self.task_id)

    def eval_spec(self) -> Document:
        header, spec = self.header, self.spec
        evaluation = header.evaluation
        body: Document = {
            "eval_id": self.eval_id, "run_id": header.run_id, "created": self.created.isoformat(timespec="seconds"),
            "task": spec.task.key, "task_id": self.task_id, "task_version": 0,
            "task_display_name": spec.display_name, "task_attribs": {},
            # A task's config is what Inspect calls its arguments.
            "task_args": spec.task.config, "task_args_passed": spec.task.config, "solver_args_passed": {},
            "tags": evaluation.tags,
            "dataset": {"name": spec.dataset.key, "location": spec.dataset.path,
                        "samples": header.sample_count // spec.epochs,
                        "sample_ids": streamed("ids")},
            "model": self.model, "model_generate_config": _generate_config(spec.model),
        }
        if spec.model is not None and spec.model.base_url:
            body["model_base_url"] = spec.model.base_url
        config: Document = {"epochs": spec.epochs, "log_samples": True}
        if spec.epochs > 1:
            config["epochs_reducer"] = [spec.epoch_reducer]
        if spec.num_samples is not None:
            config["limit"] = spec.num_samples
        if evaluation.fail_on_error is not None:
            config["fail_on_error"] = evaluation.fail_on_error  # the same meaning in both
        installed = _evalfleet_version()
        body.update({"model_args": {}, "config": config, "packages": {"evalfleet": installed} if installed else {},
                     "metadata": {METADATA_KEY: self.metadata()}})
        return body

    def metadata(self) -> Document:
        """evalfleet's part of the log that Inspect has no field for; `import_inspect_log` reads
        the task specification back from it."""
        header = self.header
        return {
            "evaluation_key": header.evaluation.key, "evaluation_display_name": header.evaluation.display_name,
            "evaluation_description": header.evaluation.description, "spec_key": self.spec.key,
            "run_id": header.run_id, "retry_of": header.retry_of, "cache_policy": header.evaluation.cache_policy,
            "fail_on_error": header.evaluation.fail_on_error, "subsampling": header.subsampling,
            "scorer_labels": list(header.results), "log_version": header.version,
            "task_specification": self.spec.model_dump(mode="json"),
            "error_summary": header.error_summary.model_dump(mode="json") if header.error_summary else None,
            "star_metric": header.star_metric.model_dump(mode="json") if header.star_metric else None,
        }

    def plan(self) -> Document:
        task = self.spec.task
        solver = f"evalfleet/{task.template or task.entrypoint}"
        return {"name": "plan", "steps": [{"solver": solver, "params": {}, "params_passed": {}}], "config": {}}

    def log_header(self) -> Document:
        """Inspect's header, in its field order (`EvalLog`): samples, when there are any, follow."""
        header = self.header
        body: Document = {"version": LOG_VERSION, "status": header.status, "eval": self.eval_spec(),
                          "plan": self.plan()}
        if header.results:
            body["results"] = self.results()
        usage = list(header.stats.model_usage.values())  # one model per task specification
        costs = [u.cost_usd for u in usage if u.cost_usd is not None]
        body["stats"] = {
            "started_at": self.created.isoformat(timespec="seconds"),
            "completed_at": utc(header.stats.completed_at).isoformat(timespec="seconds"),
            "model_usage": {self.model: _usage(sum(u.input_tokens for u in usage), sum(u.output_tokens for u in usage),
                                               sum(costs) if costs else None)} if usage else {},
            "role_usage": {}, "connection_limit_history": [],
        }
        if header.status == "error":
            body["error"] = self.error()
        # Inspect recomputes the top-level tags and metadata from `eval`'s on reading.
        body.update({"invalidated": False, "tags": header.evaluation.tags,
                     "metadata": {METADATA_KEY: self.metadata()}})
        return body

    def results(self) -> Document:
        header = self.header
        scores = []
        for label, result in header.results.items():
            scores.append({
                "name": label, "scorer": label, "scored_samples": result.scored,
                "unscored_samples": max(header.sample_count - result.scored, 0), "params": {},
                # An undefined metric (evalfleet's null) is NaN for Inspect, whose metric values are numbers.
                "metrics": {name: {"name": name, "value": math.nan if value is None else value, "params": {}}
                            for name, value in result.metrics.items()},
            })
        results: Document = {"total_samples": header.sample_count,
                             "completed_samples": header.sample_count - header.samples_errored, "scores": scores}
        star = self.spec.star_metric
        if star is not None:
            # The metric a task result is judged by is what Inspect's viewer shows first.
            results["headline"] = {"scorer": star.scorer, "score": star.scorer, "metric": star.name}
        return results

    def error(self) -> Document:
        header = self.header
        if header.error is not None:
            return {"message": header.error.message, "traceback": header.error.traceback or "", "traceback_ansi": ""}
        summary = header.error_summary
        message = (summary.task_error if summary and summary.task_error
                   else f"{header.samples_errored} of {header.sample_count} samples failed")
        return {"message": message, "traceback": "", "traceback_ansi": ""}

    def sample(self, record: SampleRecord) -> Document:
        """The sample as Inspect's `EvalSample`, in its field order."""
        # Inspect has no prompts by reference: one logged as `prompt_ref` is rendered again here.
        sent = prompt_of(record, self.header)
        messages = _messages(sent if sent is not None else "")
        output: Document = {"model": self.model, "choices": [], "completion": ""}
        if record.output is not None:
            reply = {"content": record.output, "source": "generate", "role": "assistant", "model": self.model}
            messages.append(reply)
            output.update({"choices": [{"message": reply, "stop_reason": "stop"}], "completion": record.output})
        if record.usage is not None:
            output["usage"] = _usage(record.usage.input_tokens, record.usage.output_tokens)
        if record.latency_ms is not None:
            output["time"] = record.latency_ms / 1000
        sample: Document = {
            "id": record.id, "epoch": record.epoch, "input": _input(record.input),
            "target": record.target if record.target is not None else "",
            "messages": messages, "output": output,
        }
        if record.scores:
            sample["scores"] = {label: _score(score) for label, score in record.scores.items()}
        sample.update({"metadata": {**record.metadata, METADATA_KEY: _sample_extras(record)}, "store": {},
                       "events": [], "model_usage": {self.model: output["usage"]} if "usage" in output else {}})
        started, completed = utc(record.started_at), utc(record.completed_at)
        sample.update({"role_usage": {}, "started_at": started.isoformat(), "completed_at": completed.isoformat(),
                       "total_time": round((completed - started).total_seconds(), 3)})
        if record.error is not None:
            # Inspect's EvalError has a traceback, always: the exception's line when there is none.
            sample["error"] = {"message": record.error.message,
                               "traceback": record.error.traceback or f"{record.error.type}: {record.error.message}",
                               "traceback_ansi": ""}
        sample["attachments"] = {}
        return sample

    def summary(self, sample: Document) -> Document:
        """The sample's row in `summaries.json` (`EvalSampleSummary`), thinned as Inspect thins it."""
        row: Document = {"id": sample["id"], "epoch": sample["epoch"], "input": _thin_input(sample["input"]),
                         "target": _truncate(sample["target"]), "metadata": _thin_metadata(sample["metadata"])}
        if "scores" in sample:
            row["scores"] = {label: {**score, **{part: _thin_text(score[part]) for part in ("answer", "explanation")
                                                 if part in score}} for label, score in sample["scores"].items()}
        row.update({key: sample[key] for key in ("model_usage", "role_usage", "started_at", "completed_at",
                                                 "total_time")})
        if "error" in sample:
            row["error"] = sample["error"]["message"]
        # The viewer takes a summary whose sample is not completed for one still running.
        row.update({"retries": 0, "completed": True, "message_count": len(sample["messages"])})
        return row


def _sample_extras(record: SampleRecord) -> Document:
    """A sample's evalfleet fields that Inspect has no place for, under `metadata.evalfleet`."""
    extras: Document = {"position": record.position, "prompt": _plain_prompt(record.prompt),
                        "latency_ms": record.latency_ms, "cached": record.cached, "worker": record.worker,
                        "model_calls": record.model_calls, "attempts": record.attempts}
    # Inspect's input and target are never absent (empty instead): say when evalfleet's were.
    if record.input is None:
        extras["input"] = None
    if record.target is None:
        extras["target"] = None
    if record.error is not None:
        extras["error"] = record.error.model_dump(mode="json", exclude={"message", "traceback"})
        if record.error.traceback is None:
            extras["error"]["traceback"] = None
    return extras


def _generate_config(model: ResolvedModel | None) -> Document:
    if model is None:
        return {}
    settings = model.generation
    config: Document = {"timeout": math.ceil(model.timeout), "max_connections": model.max_connections}
    for name in ("max_tokens", "top_p", "temperature"):
        if getattr(settings, name) is not None:
            config[name] = getattr(settings, name)
    if settings.stop is not None:
        config["stop_seqs"] = settings.stop
    if settings.seed is not None:
        config["seed"] = settings.seed
    return config


def _input(value: str | list[ChatMessage] | None) -> str | list[Document]:
    if value is None:
        return ""
    return value if isinstance(value, str) else _messages(value)


def _messages(prompt: str | list[ChatMessage]) -> list[Document]:
    """Inspect's ChatMessage shapes, as sent (`source: input`)."""
    if isinstance(prompt, str):
        return [{"content": prompt, "source": "input", "role": "user"}]
    messages = []
    for message in prompt:
        if message.role == "developer":
            # Inspect has no `developer` role: it is the system role of OpenAI's newer models.
            messages.append({"content": message.content, "source": "input",
                             "metadata": {"evalfleet_role": "developer"}, "role": "system"})
        else:
            messages.append({"content": message.content, "source": "input", "role": message.role})
    return messages


def _score(score: Score) -> Document:
    body: Document = {"value": math.nan if score.value is None else score.value}
    if score.answer is not None:
        body["answer"] = score.answer
    if score.explanation is not None:
        body["explanation"] = score.explanation
    body["history"] = []
    return body


def _usage(input_tokens: int, output_tokens: int, cost: float | None = None) -> Document:
    usage: Document = {"input_tokens": input_tokens, "output_tokens": output_tokens,
                       "total_tokens": input_tokens + output_tokens}
    if cost is not None:
        usage["total_cost"] = cost
    return usage


def _plain_prompt(prompt: str | list[ChatMessage] | None) -> Any:
    return [m.model_dump() for m in prompt] if isinstance(prompt, list) else prompt


def _truncate(text: Any) -> Any:
    if isinstance(text, str) and len(text) > SUMMARY_TEXT_LIMIT:
        return text[:SUMMARY_TEXT_LIMIT] + "...\n(content truncated)"
    return text


def _thin_text(text: str) -> str:
    """As Inspect's thin_text: whitespace collapsed, then shortened to the width on a word boundary."""
    collapsed = " ".join(text[:SUMMARY_FIELD_WIDTH * 8].split())
    if len(collapsed) <= SUMMARY_FIELD_WIDTH:
        return collapsed  # what textwrap.shorten returns, without its cost on every short text
    return textwrap.shorten(collapsed, width=SUMMARY_FIELD_WIDTH, placeholder="...")


def _thin_input(value: str | list[Document]) -> str | list[Document]:
    if isinstance(value, str):
        return _truncate(value)
    return [{**message, "content": _truncate(message["content"])} for message in value]


def _thin_metadata(metadata: Document) -> Document:
    thinned: Document = {}
    for key, value in metadata.items():
        if isinstance(value, str):
            thinned[key] = _thin_text(value)
        elif value is None or isinstance(value, int | float | bool) or len(dumps(value)) <= SUMMARY_FIELD_WIDTH:
            thinned[key] = value
        else:
            thinned[key] = "Key removed from summary (> 1k)"
    return thinned


def _evalfleet_version() -> str | None:
    try:
        return version("evalfleet")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return None
