"""Run files, datasets and log readers shared by the result-reuse tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

# Six samples; the fake server echoes the prompt "Q: <input>", so `includes` and `regex Q: (\w+)`
# are right on the even samples (target == input) and wrong on the odd ones: accuracy 0.5.
QA_ROWS: list[dict[str, Any]] = [
    {"id": f"p{i}", "input": word, "target": word if i % 2 == 0 else "nope", "topic": f"t{i % 3}"}
    for i, word in enumerate(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"])
]
PROMPT_TEMPLATE = "Q: {input}"


def forget_process_state() -> None:
    """Drop everything this process cached about a database, a store or the settings, as if the
    next CLI invocation were a new process."""
    from shared import storage
    from shared.db import dispose_engines
    from shared.result_store import reset_result_store
    from shared.settings import reset_settings
    from workers.app import configure_app
    from workers.limits import reset_limiters
    from workers.sample import reset_worker_state

    dispose_engines()
    reset_worker_state()
    reset_result_store()
    storage._s3_stores.clear()
    reset_limiters()
    reset_settings()
    configure_app()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_yaml(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def openai_model(base_url: str, key: str = "fake-gpt", **fields: Any) -> dict[str, Any]:
    """A model on the fake server: one attempt and a short timeout, so an unreachable endpoint
    fails a sample at once instead of retrying."""
    return {"key": key, "provider": "openai", "name": "fake-gpt-1", "base_url": base_url, "max_attempts": 1,
            "timeout": 10, **fields}


def qa_spec(model_key: str, *, key: str = "qa", dataset_key: str = "qa-data", scorers: list[Any] | None = None,
            prompt_template: str = PROMPT_TEMPLATE, **fields: Any) -> dict[str, Any]:
    return {"key": key, "task_key": "qa", "model_key": model_key, "dataset_key": dataset_key,
            "task_config": {"prompt_template": prompt_template, "scorers": scorers or ["includes"]}, **fields}


def run_document(specs: list[dict[str, Any]], *, key: str = "reuse", policy: str = "reuse",
                 models: list[dict[str, Any]] | None = None, datasets: list[dict[str, Any]] | None = None,
                 **evaluation: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"datasets": datasets or [{"key": "qa-data", "path": "qa.jsonl"}]}
    if models:
        document["models"] = models
    document["evaluation"] = {"key": key, "display_name": f"Result reuse {key}", "cache_policy": policy,
                              "task_specifications": specs, **evaluation}
    return document


def write_qa_run(directory: Path, base_url: str, *, name: str = "run.yaml", policy: str = "reuse",
                 scorers: list[Any] | None = None, prompt_template: str = PROMPT_TEMPLATE,
                 rows: list[dict[str, Any]] | None = None, key: str = "reuse", **model_fields: Any) -> Path:
    """`<directory>/<name>`: one `qa` specification on the fake server over `qa.jsonl`."""
    write_jsonl(directory / "qa.jsonl", QA_ROWS if rows is None else rows)
    document = run_document([qa_spec("fake-gpt", scorers=scorers, prompt_template=prompt_template)], key=key,
                            policy=policy, models=[openai_model(base_url, **model_fields)])
    return write_yaml(directory / name, document)


def model_requests(server: Any) -> int:
    """Chat completion requests the fake OpenAI server received so far."""
    return server.stats()["requests"]


HANDOVER = "handover"
LINKED = "task_results/{key}/task_result_log.json"
UNIQUE_SPEC = {"key": "unique", "task_key": "uniqueness", "dataset_key": "qa-data", "task_config": {"field": "target"}}
MOCK_MODEL = {"key": "mocky", "provider": "mock", "name": "target", "temperature": 0.0}


def write_handover_source(directory: Path, model: dict[str, Any], *, policy: str = "reuse") -> Path:
    """`<directory>/handover.yaml`: a `qa` specification on `model` and a `uniqueness` check
    (duplicated targets: mean 0.5), over the same dataset."""
    write_jsonl(directory / "qa.jsonl", QA_ROWS)
    document = run_document([qa_spec(model["key"], scorers=["includes", "exact"]), UNIQUE_SPEC],
                            key=HANDOVER, policy=policy, models=[model], tags=["handover"],
                            description="handed over between installations")
    return write_yaml(directory / f"{HANDOVER}.yaml", document)


def task_result(report: dict[str, Any], key: str) -> dict[str, Any]:
    found = [t for t in report["task_results"] if t["key"] == key]
    assert len(found) == 1, report
    return found[0]


def read_log(location: str) -> dict[str, Any]:
    """A task result log (path or s3:// URL) as JSON, after validating it against the schema."""
    from shared.log import read_task_result_log

    read_task_result_log(location)  # raises when the log does not validate
    if location.startswith("s3://"):
        import boto3

        bucket, _, key = location[len("s3://"):].partition("/")
        return json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    return json.loads(Path(location).read_text(encoding="utf-8"))


def log_of(report: dict[str, Any], key: str) -> dict[str, Any]:
    result = task_result(report, key)
    assert result["log_path"], report
    return read_log(result["log_path"])


def sample_view(log: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What a sample's result is, independent of how it was obtained."""
    return [(s["id"], s["position"], s["input"], s["target"], s["output"],
             json.dumps(s["scores"], sort_keys=True), s["error"]) for s in log["samples"]]


def table_counts() -> dict[str, int]:
    """Rows in each table of the database the current settings name."""
    from sqlalchemy import func, select

    from shared.db import entities, get_engine, runs, sample_results, task_results

    with get_engine().connect() as connection:
        return {table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
                for table in (runs, task_results, sample_results, entities)}


UPLOAD_FIELD = "task_result_log_path"


def assert_rejected(result: Any, run_file: Path, before: dict[str, int], spec_field: str | None = None) -> str:
    """Exit 2, one line on stderr naming the run file and the `task_result_log_path` field, and
    nothing registered or submitted. Returns the line."""
    assert result.exit_code == 2, str(result)
    lines = result.error_lines()
    assert len(lines) == 1, f"expected one line on stderr:\n{result.stderr}"
    line = lines[0]
    assert str(run_file.resolve()) in line, line
    assert (spec_field or UPLOAD_FIELD) in line, line
    assert result.stdout.strip() == "", result.stdout
    assert table_counts() == before, "a rejected run file must register and submit nothing"
    return line


def packed_keys_on_s3(s3: Any, prefix: str) -> set[str]:
    """Inference keys held by the result store packs under an S3 prefix (read with the pack format)."""
    from shared import packs

    found: set[str] = set()
    for key in s3.keys(prefix):
        if key.endswith(".pack"):
            found |= set(packs.entries_of(s3.get(key)))
    return found
