"""Export and upload: `evalfleet export eval --id RUN --output DIR [--link-logs]` writes a
self-contained run file; with linked logs, running it elsewhere re-creates the results with no
inference, and the uploaded samples join that installation's result store. A linked log is
accepted only when it validates, matches its specification and stays inside the run file's
directory; otherwise the run file is bad input (exit 2, one line naming the file and the field)
and nothing is registered or submitted."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from store_helpers import (
    HANDOVER,
    LINKED,
    QA_ROWS,
    assert_rejected,
    forget_process_state,
    log_of,
    model_requests,
    openai_model,
    read_log,
    sample_view,
    table_counts,
    task_result,
    write_handover_source,
    write_yaml,
)

from shared.log import TaskResultLog
from shared.spec import load_run_file

pytestmark = pytest.mark.timeout(120)
N = len(QA_ROWS)
def use_fresh_installation(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new home (so an empty database and result store) and log directory."""
    root.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("EVALFLEET_HOME", str(root / "home"))
    monkeypatch.setenv("EVALFLEET_LOG_DIR", str(root / "logs"))
    monkeypatch.chdir(root)
    forget_process_state()
    assert table_counts() == {"runs": 0, "task_results": 0, "sample_results": 0, "entities": 0}


def port_is_closed(url: str) -> bool:
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def by_key(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["key"]: t for t in report["task_results"]}


# -- the round trip ------------------------------------------------------------------------------


def test_linked_logs_recreate_the_run_on_a_fresh_installation_with_the_endpoint_unreachable(
        tmp_path, cli, fake_llm, monkeypatch):
    source = write_handover_source(tmp_path / "source", openai_model(fake_llm.base_url, temperature=0.0, seed=3))
    report = cli("run", "-f", source, "--json", check=0).json()
    assert report["status"] == "success", report
    assert model_requests(fake_llm) == N
    source_logs = {key: log_of(report, key) for key in ("qa", "unique")}

    out = tmp_path / "export"
    exported = cli("export", "eval", "--id", report["run_id"], "--output", out, "--link-logs", check=0)
    run_file = out / f"{HANDOVER}.yaml"
    assert exported.stdout.strip() == str(run_file)
    document = yaml.safe_load(run_file.read_text(encoding="utf-8"))
    specs = {spec["key"]: spec for spec in document["evaluation"]["task_specifications"]}
    assert set(specs) == {"qa", "unique"}
    for key, spec in specs.items():
        assert spec["task_result_log_path"] == LINKED.format(key=key)
        linked = out / spec["task_result_log_path"]
        TaskResultLog.model_validate_json(linked.read_bytes())
        assert linked.read_bytes() == Path(task_result(report, key)["log_path"]).read_bytes()
    assert [d["path"] for d in document["datasets"]] == ["datasets/qa-data.jsonl"]
    assert (out / "datasets" / "qa-data.jsonl").read_text() == (tmp_path / "source" / "qa.jsonl").read_text()

    # Elsewhere: an empty installation, and the model endpoint is gone.
    fake_llm.stop()
    assert port_is_closed(fake_llm.base_url)
    use_fresh_installation(tmp_path / "fresh", monkeypatch)

    added = cli("add", "-f", run_file, check=0)
    assert {"dataset\tqa-data\tcreated", "model\tfake-gpt\tcreated"} <= set(added.stdout.splitlines()), added
    assert table_counts()["runs"] == 0

    uploaded = cli("run", "-f", run_file, "--json", check=0).json()
    assert uploaded["status"] == "success", uploaded
    assert uploaded["run_id"] != report["run_id"]
    for key, result in by_key(uploaded).items():
        original = task_result(report, key)
        assert (result["samples"], result["done"], result["errors"]) == (original["samples"], N, 0)
        assert result["metrics"] == original["metrics"]
        assert result["model_calls"] == 0
        assert result["log_path"].startswith(str(tmp_path / "fresh" / "logs"))
        log = read_log(result["log_path"])
        assert sample_view(log) == sample_view(source_logs[key])
        assert log["results"] == source_logs[key]["results"]
        assert all(s["model_calls"] == 0 for s in log["samples"])
        assert log["run_id"] == uploaded["run_id"]
    assert by_key(uploaded)["qa"]["metrics"]["includes"]["accuracy"] == pytest.approx(0.5)
    assert by_key(uploaded)["unique"]["metrics"]["uniqueness"]["mean"] == pytest.approx(0.5)

    # The uploaded outputs joined this installation's cache: the original file needs no model.
    again = cli("run", "-f", source, "--json", check=0).json()
    assert again["status"] == "success", again
    qa = task_result(again, "qa")
    assert (qa["model_calls"], qa["cache_hits"], qa["errors"]) == (0, N, 0)
    assert qa["metrics"] == task_result(report, "qa")["metrics"]
    assert sample_view(log_of(again, "qa")) == sample_view(source_logs["qa"])
    assert model_requests(fake_llm) == N


def test_an_upload_with_no_cache_does_not_join_the_cache(tmp_path, cli, fake_llm, monkeypatch):
    source = write_handover_source(tmp_path / "source", openai_model(fake_llm.base_url))
    report = cli("run", "-f", source, "--json", check=0).json()
    out = tmp_path / "export"
    cli("export", "eval", "--id", report["run_id"], "--output", out, "--link-logs", check=0)
    run_file = out / f"{HANDOVER}.yaml"
    document = yaml.safe_load(run_file.read_text())
    document["evaluation"]["cache_policy"] = "no-cache"
    write_yaml(run_file, document)

    use_fresh_installation(tmp_path / "fresh", monkeypatch)
    before = model_requests(fake_llm)
    uploaded = cli("run", "-f", run_file, "--json", check=0).json()
    assert uploaded["status"] == "success" and model_requests(fake_llm) == before
    assert task_result(uploaded, "qa")["metrics"] == task_result(report, "qa")["metrics"]

    again = cli("run", "-f", source, "--json", check=0).json()
    assert task_result(again, "qa")["model_calls"] == N
    assert model_requests(fake_llm) - before == N


def test_export_without_linked_logs_is_a_plain_valid_run_file(tmp_path, cli, fake_llm):
    source = write_handover_source(tmp_path / "source", openai_model(fake_llm.base_url, max_tokens=32))
    report = cli("run", "-f", source, "--json", check=0).json()
    out = tmp_path / "export"
    exported = cli("export", "eval", "--id", report["run_id"], "--output", out, check=0)
    run_file = Path(exported.stdout.strip())
    assert run_file == out / f"{HANDOVER}.yaml"
    assert "task_result_log_path" not in run_file.read_text(encoding="utf-8")
    assert not (out / "task_results").exists()
    parsed = load_run_file(run_file)
    assert all(spec.task_result_log_path is None for spec in parsed.evaluation.task_specifications)
    assert parsed.evaluation.cache_policy == "reuse" and parsed.evaluation.tags == ["handover"]
    assert [m.max_tokens for m in parsed.models] == [32]

    cli("add", "-f", run_file, check=0)
    before = model_requests(fake_llm)
    rerun = cli("run", "-f", run_file, "--json", check=0).json()
    assert rerun["status"] == "success", rerun
    assert model_requests(fake_llm) == before  # same identity as the source: served by the cache
    for key, result in by_key(rerun).items():
        assert result["metrics"] == task_result(report, key)["metrics"]
    assert task_result(rerun, "qa")["cache_hits"] == N


def scores_match_outputs(log: dict[str, Any]) -> list[tuple[str, str, float, float]]:
    """Samples whose `includes` score is not the one their output earns: (id, output, score, due)."""
    wrong = []
    for sample in log["samples"]:
        due = float(sample["target"].lower() in sample["output"].lower())
        if sample["scores"]["includes"]["value"] != due:
            wrong.append((sample["id"], sample["output"], sample["scores"]["includes"]["value"], due))
    return wrong


def test_an_upload_never_attaches_its_scores_to_another_cached_output(tmp_path, cli, fake_llm, monkeypatch):
    source = write_handover_source(tmp_path / "source", openai_model(fake_llm.base_url, temperature=1.0))
    report = cli("run", "-f", source, "--json", check=0).json()
    out = tmp_path / "export"
    cli("export", "eval", "--id", report["run_id"], "--output", out, "--link-logs", check=0)
    assert scores_match_outputs(log_of(report, "qa")) == []

    # Elsewhere the same model (same identity) once answered differently, and that was cached.
    use_fresh_installation(tmp_path / "fresh", monkeypatch)
    fake_llm.configure(reply="fixed", answer="something else")
    own = cli("run", "-f", source, "--json", check=0).json()
    assert task_result(own, "qa")["model_calls"] == N
    assert scores_match_outputs(log_of(own, "qa")) == []

    uploaded = cli("run", "-f", out / f"{HANDOVER}.yaml", "--json", check=0).json()
    assert scores_match_outputs(log_of(uploaded, "qa")) == []

    again = cli("run", "-f", source, "--json", check=0).json()
    assert task_result(again, "qa")["model_calls"] == 0
    assert scores_match_outputs(log_of(again, "qa")) == [], "the cache paired an output with foreign scores"


# -- rejected uploads ------------------------------------------------------------------------------


def edit_yaml(run_file: Path, change) -> None:  # noqa: ANN001
    document = yaml.safe_load(run_file.read_text())
    change(document)
    write_yaml(run_file, document)


def qa_spec_of(document: dict[str, Any]) -> dict[str, Any]:
    return document["evaluation"]["task_specifications"][0]


def edit_log(run_file: Path, change) -> None:  # noqa: ANN001
    path = run_file.parent / LINKED.format(key="qa")
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def rename_last_sample(log: dict[str, Any]) -> None:
    log["sample_ids"][-1] = "p-renamed"
    log["samples"][-1]["id"] = "p-renamed"


def move_log_outside(run_file: Path) -> Path:
    """Move the qa log out of the run file's directory; returns where it went."""
    outside = run_file.parent.parent / "outside"
    outside.mkdir()
    target = outside / "task_result_log.json"
    shutil.move(run_file.parent / LINKED.format(key="qa"), target)
    return target


def set_log_path(run_file: Path, value: str) -> None:
    edit_yaml(run_file, lambda d: qa_spec_of(d).update(task_result_log_path=value))


def symlink_file(run_file: Path) -> None:
    target = move_log_outside(run_file)
    os.symlink(target, run_file.parent / LINKED.format(key="qa"))


def symlink_directory(run_file: Path) -> None:
    outside = run_file.parent.parent / "outside-results"
    shutil.move(run_file.parent / "task_results", outside)
    os.symlink(outside, run_file.parent / "task_results", target_is_directory=True)


def add_dataset_copy(document: dict[str, Any]) -> None:
    document["datasets"].append({**document["datasets"][0], "key": "qa-copy"})
    qa_spec_of(document)["dataset_key"] = "qa-copy"


REJECTIONS = {
    # the log fails schema validation
    "schema: a required field removed": lambda f: edit_log(f, lambda log: log.pop("stats")),
    "schema: a field of the wrong type": lambda f: edit_log(f, lambda log: log.update(sample_count="six")),
    "schema: a sample field of the wrong type": lambda f: edit_log(
        f, lambda log: log["samples"][0].update(model_calls="one")),
    "schema: an unknown field": lambda f: edit_log(f, lambda log: log.update(surprise=True)),
    "schema: not JSON": lambda f: (f.parent / LINKED.format(key="qa")).write_text('{"version": 1, "samp'),
    # the log does not match its specification
    "task config differs": lambda f: edit_yaml(
        f, lambda d: qa_spec_of(d)["task_config"].update(prompt_template="Other: {input}")),
    "scorer config differs": lambda f: edit_yaml(
        f, lambda d: qa_spec_of(d)["task_config"].update(scorers=[{"name": "exact"}])),
    "model differs": lambda f: edit_yaml(f, lambda d: qa_spec_of(d).update(model_key="mock$echo")),
    "dataset differs": lambda f: edit_yaml(f, add_dataset_copy),
    "sample ids differ": lambda f: edit_log(f, rename_last_sample),
    "fewer samples selected": lambda f: edit_yaml(f, lambda d: qa_spec_of(d).update(num_samples=3)),
    # the log is not inside the run file's directory
    "../ escape": lambda f: (move_log_outside(f), set_log_path(f, "../outside/task_result_log.json")),
    "../ inside a longer path": lambda f: (
        move_log_outside(f), set_log_path(f, "task_results/qa/../../../outside/task_result_log.json")),
    "absolute path outside": lambda f: set_log_path(f, str(move_log_outside(f))),
    "absolute path inside": lambda f: set_log_path(f, str(f.parent / LINKED.format(key="qa"))),
    "symlinked file pointing outside": symlink_file,
    "symlinked directory pointing outside": symlink_directory,
    "a URL of another scheme": lambda f: set_log_path(f, "file:///etc/hostname"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_a_bad_linked_log_is_rejected_and_nothing_is_submitted(case: str, handover: Path, cli):
    REJECTIONS[case](handover)
    before = table_counts()
    result = cli("run", "-f", handover, "--json")
    assert_rejected(result, handover, before, "evaluation.task_specifications[0:qa].task_result_log_path")


def test_add_rejects_a_bad_linked_log_and_registers_nothing(handover: Path, cli):
    edit_log(handover, lambda log: log.pop("samples"))
    before = table_counts()
    assert before["entities"] == 0
    assert_rejected(cli("add", "-f", handover), handover, before)


def test_the_untouched_export_is_accepted(handover: Path, cli):
    """The baseline of the rejections above: the same copy, unchanged, runs."""
    report = cli("run", "-f", handover, "--json", check=0).json()
    assert report["status"] == "success", report
    assert all(t["model_calls"] == 0 and t["done"] == N for t in report["task_results"])


@pytest.mark.parametrize("change", [{"temperature": 0.9}, {"base_url": "http://elsewhere.example/v1"}],
                         ids=["temperature", "base_url"])
def test_a_log_from_a_model_with_other_identity_settings_is_rejected(change: dict[str, Any], handover: Path, cli):
    edit_yaml(handover, lambda d: d["models"][0].update(change))
    before = table_counts()
    assert_rejected(cli("run", "-f", handover, "--json"), handover, before,
                    "evaluation.task_specifications[0:qa].task_result_log_path")
