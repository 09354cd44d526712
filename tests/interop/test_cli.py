"""`evalfleet logs convert` and `evalfleet logs import`: the commands over shared.interop, with
their exit codes and `--json`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from services.cli import main

ROWS = [{"id": f"c{i}", "input": f"question {i}", "target": f"answer {i}"} for i in range(6)]


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_convert_then_import_with_the_commands(tmp_path, write_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evaluation = {"key": "cli-interop", "display_name": "CLI interop", "task_specifications": [
        {"key": "qa", "task_key": "qa", "model_key": "mock$target", "dataset_key": "data"}]}
    run = json.loads(cli("run", "-f", str(write_run(tmp_path, evaluation, rows=ROWS)), "--json").stdout)
    log = run["task_results"][0]["log_path"]
    converted = cli("logs", "convert", log, "--to", "inspect", "--format", "eval", "-o", str(tmp_path / "inspect"),
                    "--json")
    assert converted.exit_code == 0, converted.output
    [entry] = json.loads(converted.stdout)
    eval_path = Path(entry["path"])
    assert entry["source"] == log and eval_path.suffix == ".eval" and eval_path.exists()
    imported = cli("logs", "import", str(eval_path), "-o", str(tmp_path / "handover"), "--json")
    assert imported.exit_code == 0, imported.output
    run_file = json.loads(imported.stdout)[0]["run_file"]
    again = json.loads(cli("run", "-f", run_file, "--json").stdout)
    [task_result] = again["task_results"]
    assert (task_result["status"], task_result["model_calls"], task_result["samples"]) == ("success", 0, 6)


def test_converting_something_that_is_not_a_log_exits_2_naming_it(tmp_path):
    bad = tmp_path / "nope.json"
    bad.write_text("[1, 2, 3]")
    result = cli("logs", "convert", str(bad), "--to", "inspect", "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and str(bad) in result.output
    result = cli("logs", "import", str(bad), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and str(bad) in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
