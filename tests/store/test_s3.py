"""S3 (a moto server, reached through AWS_ENDPOINT_URL) for the three things evalfleet keeps there:
task result logs (`--log-dir s3://bucket/prefix`), the result store (EVALFLEET_STORE_URL) and
datasets (`path: s3://bucket/key`); and the rule that an uploaded log may come from S3 only under
the configured log dir or store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from store_helpers import (
    LINKED,
    QA_ROWS,
    UNIQUE_SPEC,
    assert_rejected,
    model_requests,
    openai_model,
    packed_keys_on_s3,
    qa_spec,
    read_log,
    run_document,
    sample_view,
    table_counts,
    task_result,
    write_jsonl,
    write_qa_run,
    write_yaml,
)

from shared.log import TaskResultLog

pytestmark = pytest.mark.timeout(120)
N = len(QA_ROWS)


def two_spec_run(directory: Path, base_url: str, dataset_path: str = "qa.jsonl", key: str = "ons3") -> Path:
    if not dataset_path.startswith("s3://"):
        write_jsonl(directory / dataset_path, QA_ROWS)
    document = run_document([qa_spec("fake-gpt"), UNIQUE_SPEC], key=key, models=[openai_model(base_url)],
                            datasets=[{"key": "qa-data", "path": dataset_path}])
    return write_yaml(directory / f"{key}.yaml", document)


def strict_json(raw: bytes) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-JSON constant {constant} in a log")

    return json.loads(raw, parse_constant=refuse)


def test_logs_written_to_s3_are_readable_with_plain_boto3(tmp_path, cli, fake_llm, s3):
    log_dir = s3.url("evals/logs")
    path = two_spec_run(tmp_path, fake_llm.base_url)
    report = cli("run", "-f", path, "--json", "--log-dir", log_dir, check=0).json()
    assert report["status"] == "success", report
    run_id = report["run_id"]

    expected = {f"evals/logs/ons3/{run_id}/{key}.json" for key in ("qa", "unique")}
    assert set(s3.keys("evals/logs/")) == expected
    for result in report["task_results"]:
        assert result["log_path"] == s3.url(f"evals/logs/ons3/{run_id}/{result['key']}.json")
        raw = s3.get(f"evals/logs/ons3/{run_id}/{result['key']}.json")
        log = TaskResultLog.model_validate_json(raw)
        document = strict_json(raw)
        assert log.run_id == run_id and log.status == "success"
        assert log.sample_ids == [row["id"] for row in QA_ROWS]
        assert [s.id for s in log.samples] == log.sample_ids
        assert {label: r.metrics for label, r in log.results.items()} == result["metrics"]
        assert document["task_specification"]["key"] == result["key"]
    assert not (tmp_path / "logs").exists()  # nothing went to the local default

    # An export reads the logs back from S3 and copies them beside the run file.
    out = tmp_path / "export"
    cli("export", "eval", "--id", run_id, "--output", out, "--link-logs", "--log-dir", log_dir, check=0)
    for key in ("qa", "unique"):
        assert (out / "task_results" / key / "task_result_log.json").read_bytes() == s3.get(
            f"evals/logs/ons3/{run_id}/{key}.json")


def test_the_result_store_on_s3_serves_a_second_run(tmp_path, cli, fake_llm, s3, monkeypatch):
    monkeypatch.setenv("EVALFLEET_STORE_URL", s3.url("cache/store"))
    path = write_qa_run(tmp_path, fake_llm.base_url)

    first = task_result(cli("run", "-f", path, "--json", check=0).json(), "qa")
    assert model_requests(fake_llm) == N and first["model_calls"] == N
    stored = s3.keys("cache/store/")
    assert len(packed_keys_on_s3(s3, "cache/store/")) == N, stored
    assert len(stored) == 1, stored  # one pack, not one object per sample
    assert re.fullmatch(r"cache/store/packs/[0-9]{20}-[\w.-]+\.pack", stored[0]), stored
    assert not (tmp_path / ".evalfleet" / "store").exists()

    second = task_result(cli("run", "-f", path, "--json", check=0).json(), "qa")
    assert model_requests(fake_llm) == N
    assert (second["model_calls"], second["cache_hits"]) == (0, N)
    assert second["metrics"] == first["metrics"]

    # The cache is the bucket: without its objects the model is asked again.
    for key in stored:
        s3.client.delete_object(Bucket=s3.bucket, Key=key)
    third = task_result(cli("run", "-f", path, "--json", check=0).json(), "qa")
    assert model_requests(fake_llm) == 2 * N and third["model_calls"] == N


def test_a_dataset_on_s3(tmp_path, cli, fake_llm, s3):
    dataset = s3.put("datasets/qa.jsonl", "".join(json.dumps(row) + "\n" for row in QA_ROWS))
    path = two_spec_run(tmp_path, fake_llm.base_url, dataset_path=dataset)
    report = cli("run", "-f", path, "--json", check=0).json()
    assert report["status"] == "success", report
    qa, unique = task_result(report, "qa"), task_result(report, "unique")
    assert (qa["samples"], qa["done"], qa["errors"], qa["model_calls"]) == (N, N, 0, N)
    assert qa["metrics"]["includes"]["accuracy"] == pytest.approx(0.5)
    assert unique["metrics"]["uniqueness"]["mean"] == pytest.approx(0.5)
    log = read_log(qa["log_path"])
    assert [(s["id"], s["input"], s["target"]) for s in log["samples"]] == [
        (r["id"], r["input"], r["target"]) for r in QA_ROWS]
    assert log["task_specification"]["dataset"]["path"] == dataset
    assert model_requests(fake_llm) == N

    # Exported, the dataset stays where it is.
    out = tmp_path / "export"
    cli("export", "eval", "--id", report["run_id"], "--output", out, check=0)
    exported = yaml.safe_load((out / "ons3.yaml").read_text())
    assert [d["path"] for d in exported["datasets"]] == [dataset]


# -- uploads from S3 -------------------------------------------------------------------------------


def put_linked_log(handover: Path, s3, key: str, bucket: str | None = None) -> str:  # noqa: ANN001
    """Put the export's qa log at `key` on S3 and point the run file's qa specification at it."""
    raw = (handover.parent / LINKED.format(key="qa")).read_bytes()
    target = bucket or s3.bucket
    s3.client.put_object(Bucket=target, Key=key, Body=raw)
    url = f"s3://{target}/{key}"
    document = yaml.safe_load(handover.read_text())
    document["evaluation"]["task_specifications"][0]["task_result_log_path"] = url
    write_yaml(handover, document)
    return url


def test_a_log_on_s3_under_the_log_dir_or_store_is_accepted(handover, cli, s3, monkeypatch):
    source = read_log(str(handover.parent / LINKED.format(key="qa")))
    url = put_linked_log(handover, s3, "runs/handover/from-elsewhere/qa.json")
    report = cli("run", "-f", handover, "--json", "--log-dir", s3.url("runs"), check=0).json()
    qa = task_result(report, "qa")
    assert (qa["model_calls"], qa["done"], qa["errors"]) == (0, N, 0)
    uploaded = read_log(qa["log_path"])
    assert qa["log_path"].startswith(s3.url("runs/handover/"))
    assert sample_view(uploaded) == sample_view(source)
    assert {k: r["metrics"] for k, r in uploaded["results"].items()} == qa["metrics"]

    monkeypatch.setenv("EVALFLEET_STORE_URL", s3.url("store"))
    url = put_linked_log(handover, s3, "store/handover/qa.json")
    report = cli("run", "-f", handover, "--json", check=0).json()  # local log dir: trusted as the store
    qa = task_result(report, "qa")
    assert (qa["model_calls"], qa["done"]) == (0, N)
    assert sample_view(read_log(qa["log_path"])) == sample_view(source)
    assert url.startswith(s3.url("store/"))
    assert len(packed_keys_on_s3(s3, "store/packs/")) == N  # joined the store


@pytest.mark.parametrize("where", ["elsewhere in the bucket", "a sibling prefix", "another bucket",
                                   "no S3 location configured"])
def test_a_log_on_s3_outside_the_log_dir_and_store_is_rejected(where, handover, cli, s3):
    log_dir: str | None = s3.url("runs")
    if where == "elsewhere in the bucket":
        url = put_linked_log(handover, s3, "private/qa.json")
    elif where == "a sibling prefix":
        url = put_linked_log(handover, s3, "runs-elsewhere/qa.json")
    elif where == "another bucket":
        other = f"{s3.bucket}-other"
        s3.client.create_bucket(Bucket=other)
        url = put_linked_log(handover, s3, "runs/qa.json", bucket=other)
    else:
        url, log_dir = put_linked_log(handover, s3, "runs/qa.json"), None
    before = table_counts()
    args = ["run", "-f", handover, "--json"] + (["--log-dir", log_dir] if log_dir else [])
    line = assert_rejected(cli(*args), handover, before, "evaluation.task_specifications[0:qa].task_result_log_path")
    assert url in line
