"""Logs on S3 (moto server over HTTP) read through evalfleet's log API: a header-only read is one
ranged GET of the object's head, samples stream, `logs list` scans a prefix, and `retry` takes an
s3:// log URL."""

from __future__ import annotations

import json

import pytest
from store_helpers import write_jsonl, write_yaml

import evalfleet

pytestmark = pytest.mark.timeout(120)
ROWS = [{"id": f"q{i:03d}", "input": f"question {i}", "target": f"answer {i}"} for i in range(300)]


def _run_on_s3(tmp_path, cli, s3, key: str = "s3logs") -> dict:
    write_jsonl(tmp_path / "data.jsonl", ROWS)
    document = {"datasets": [{"key": "data", "path": "data.jsonl"}],
                "evaluation": {"key": key, "display_name": "On S3", "task_specifications": [
                    {"key": f"{key}-qa", "task_key": "qa", "model_key": "mock$target", "dataset_key": "data"}]}}
    path = write_yaml(tmp_path / f"{key}.yaml", document)
    return cli("run", "-f", path, "--json", "--log-dir", s3.url("evals/logs"), check=0).json()


def test_a_header_only_read_of_an_s3_log_is_one_ranged_get(tmp_path, cli, s3):
    report = _run_on_s3(tmp_path, cli, s3)
    url = report["task_results"][0]["log_path"]
    from shared.storage import store_for

    directory, _, _ = url.rpartition("/")
    client = store_for(directory).client
    gets: list[dict] = []
    key = url.removeprefix(f"s3://{s3.bucket}/")
    # Only the log's own reads: the process's result store shares the client and may read packs.
    client.meta.events.register("provide-client-params.s3.GetObject",
                                lambda params, **_: gets.append(dict(params)) if params.get("Key") == key else None)
    size = len(s3.get(url.removeprefix(f"s3://{s3.bucket}/")))
    header = evalfleet.read_log(url, header_only=True)
    assert (header.status, header.sample_count, header.samples) == ("success", 300, None)
    assert len(gets) == 1 and gets[0]["Range"] == "bytes=0-65535", gets
    assert size > 65536  # the log is larger than what was fetched
    gets.clear()
    assert [s.id for s in evalfleet.iter_samples(url)] == [r["id"] for r in ROWS]
    assert len(gets) == 1 and "Range" not in gets[0]


def test_logs_list_scans_an_s3_prefix_and_retry_takes_a_log_url(tmp_path, cli, s3):
    first = _run_on_s3(tmp_path, cli, s3, key="first")
    _run_on_s3(tmp_path, cli, s3, key="second")
    s3.put("evals/logs/readme.json", '{"not": "a log"}')
    listed = cli("logs", "list", "--log-dir", s3.url("evals/logs"), "--json", check=0).json()
    assert sorted(entry["spec_key"] for entry in listed) == ["first-qa", "second-qa"]
    assert all(entry["location"].startswith(f"s3://{s3.bucket}/evals/logs/") for entry in listed)
    url = first["task_results"][0]["log_path"]
    retried = cli("retry", url, "--json", "--log-dir", s3.url("evals/logs"), check=0).json()
    assert retried["retry_of"] == first["run_id"]
    [task_result] = retried["task_results"]
    assert (task_result["cache_hits"], task_result["model_calls"]) == (300, 0)
    info = json.loads(cli("logs", "info", task_result["log_path"], "--header-only", "--json", check=0).stdout)
    assert info["retry_of"] == first["run_id"]
