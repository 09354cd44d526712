"""Run files as the reference documents them and a CLI that explains itself: the reference's own
examples run after their entities are added (kept verbatim), versioned entities, command-line
overrides and the dry run, messages that lead to the fix, run-id prefixes, `init` and `tasks`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from services.cli import main
from shared.settings import reset_settings
from tests.fakes.openai_server import FakeOpenAIServer

# The two evaluation examples of the reference (AI GO!'s "Evaluations" page), as printed there.
HP_TRIVIA = '''
evaluation:
  key: "hp-trivia-evaluation"
  display_name: "Harry Potter Trivia evaluation"
  task_specifications:
    - key: "hp-trivia-gpt-4-1-nano"
      task_key: "hp-trivia"
      display_name: "Harry Potter Trivia OpenAI GPT-4.1 Nano"
      task_config:
        config_key: []
      model_key: "openai$gpt-4-1-nano"
'''
DATA_QUALITY = '''
evaluation:
  display_name: "Data Quality"
  key: "data-quality"
  tags: ["Data Quality", "Uniqueness", "Completeness"]
  task_specifications:
    - key: "uniqueness-task-hello-dataset"
      task_key: "uniqueness-task"
      task_config:
        field: "content"
      dataset_key: "hello-dataset"
      display_name: "Sample Uniqueness in Hello Dataset"
    - key: "completeness-task-hello-dataset"
      task_key: "completeness-task"
      task_config:
        field: "content"
      dataset_key: "hello-dataset"
      display_name: "Sample Completeness in Hello Dataset"
'''
TRIVIA = [{"id": "q1", "question": "Who is the headmaster of Hogwarts?", "answer": "Dumbledore"},
          {"id": "q2", "question": "What house is Harry in?", "answer": "Gryffindor"}]


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_reference_examples_run_once_their_entities_are_added(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALFLEET_ALLOWED_MODULES", "python_tasks")
    reset_settings()
    write(tmp_path / "trivia.jsonl", "".join(json.dumps(r) + "\n" for r in TRIVIA))
    write(tmp_path / "hello.jsonl", "".join(json.dumps({"id": i, "content": c}) + "\n"
                                            for i, c in enumerate(["hello", "world", "hello", ""])))
    entities = write(tmp_path / "entities.yaml", yaml.safe_dump({
        "datasets": [{"key": "hp-trivia-questions", "path": "trivia.jsonl", "input_field": "question",
                      "target_field": "answer"},
                     {"key": "hello-dataset", "path": "hello.jsonl"}],
        "tasks": [{"key": "hp-trivia", "entrypoint": "python_tasks:TriviaTask", "dataset_key": "hp-trivia-questions"},
                  {"key": "uniqueness-task", "template": "uniqueness", "config": {"field": "content"}},
                  {"key": "completeness-task", "template": "completeness", "config": {"field": "content"}}],
    }))
    added = cli("add", "-f", str(entities))
    assert added.exit_code == 0, added.output
    assert sorted(line.split("\t")[2] for line in added.stdout.splitlines()) == ["created"] * 5
    with FakeOpenAIServer() as server:
        server.configure(answers={"Who is the headmaster of Hogwarts?": "Albus Dumbledore",
                                  "What house is Harry in?": "Gryffindor"})
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        trivia = cli("run", "-f", str(write(tmp_path / "hp.yaml", HP_TRIVIA)), "--json")
        assert trivia.exit_code == 0, trivia.output
        [task_result] = json.loads(trivia.stdout)["task_results"]
        assert (task_result["status"], task_result["samples"], task_result["model_calls"]) == ("success", 2, 2)
        assert task_result["metrics"]["includes"]["accuracy"] == 1.0
    quality = cli("run", "-f", str(write(tmp_path / "dq.yaml", DATA_QUALITY)), "--json")
    assert quality.exit_code == 0, quality.output
    metrics = {t["key"]: t["metrics"] for t in json.loads(quality.stdout)["task_results"]}
    assert metrics["uniqueness-task-hello-dataset"]["uniqueness"]["mean"] == 0.5
    assert metrics["completeness-task-hello-dataset"]["completeness"]["mean"] == 0.75
    listed = json.loads(cli("entities", "list", "--json").stdout)
    assert {(e["kind"], e["key"]) for e in listed} >= {("task", "hp-trivia"), ("dataset", "hello-dataset")}


def test_a_changed_entity_becomes_a_new_version_and_runs_keep_the_one_they_used(tmp_path, write_dataset_file):
    write_dataset_file(tmp_path / "twenty.jsonl", [{"id": f"a{i}", "input": "x", "target": "y"} for i in range(20)])
    write_dataset_file(tmp_path / "three.jsonl", [{"id": f"b{i}", "input": "x", "target": "y"} for i in range(3)])
    first = write(tmp_path / "v1.yaml", yaml.safe_dump({"datasets": [{"key": "capitals", "path": "twenty.jsonl"}]}))
    second = write(tmp_path / "v2.yaml", yaml.safe_dump({"datasets": [{"key": "capitals", "path": "three.jsonl"}]}))
    assert cli("add", "-f", str(first)).stdout.split("\t")[2].strip() == "created"
    assert cli("add", "-f", str(first)).stdout.split("\t")[2].strip() == "unchanged"
    evaluation = write(tmp_path / "eval.yaml", yaml.safe_dump({"evaluation": {"key": "caps", "task_specifications": [
        {"key": "qa", "task_key": "qa", "model_key": "mock$target", "dataset_key": "capitals"}]}}))
    before = json.loads(cli("run", "-f", str(evaluation), "--json").stdout)
    assert before["task_results"][0]["samples"] == 20
    assert cli("add", "-f", str(second)).stdout.split("\t")[2].strip() == "updated (v2)"
    after = json.loads(cli("run", "-f", str(evaluation), "--json").stdout)
    assert after["task_results"][0]["samples"] == 3
    shown = json.loads(cli("entities", "show", "capitals", "--version", "1").stdout)
    assert (shown["version"], shown["versions"], shown["definition"]["path"]) == (1, 2, str(tmp_path / "twenty.jsonl"))
    from sqlalchemy import select

    from shared.db import get_engine, runs

    with get_engine().connect() as connection:
        plans = dict(connection.execute(select(runs.c.id, runs.c.plan)).all())
    assert json.loads(plans[before["run_id"]])["entity_versions"] == {"dataset:capitals": 1}
    assert json.loads(plans[after["run_id"]])["entity_versions"] == {"dataset:capitals": 2}
    assert cli("entities", "remove", "capitals").exit_code == 0
    gone = cli("run", "-f", str(evaluation))
    assert gone.exit_code == 2 and "unknown dataset 'capitals'" in gone.output


@pytest.fixture
def quickstart(tmp_path) -> Path:
    source = Path(__file__).resolve().parents[2] / "examples"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "capitals.jsonl").write_text((source / "data" / "capitals.jsonl").read_text())
    return write(tmp_path / "quickstart.yaml", (source / "quickstart.yaml").read_text())


def test_overrides_change_the_run_without_editing_the_file(quickstart):
    report = json.loads(cli("run", "-f", str(quickstart), "--json", "--num-samples", "5", "--subsampling", "random",
                            "--model", "mock$echo", "-T", "prompt_template={input}", "--spec", "capitals-qa",
                            "--cache-policy", "no-cache", "--max-connections", "3").stdout)
    [task_result] = report["task_results"]
    assert (task_result["key"], task_result["samples"], task_result["model_calls"]) == ("capitals-qa", 5, 5)
    log = json.loads(Path(task_result["log_path"]).read_text())
    spec = log["task_specification"]
    assert (spec["model"]["key"], spec["model"]["max_connections"], spec["subsampling"]) == ("mock$echo", 3, "random")
    assert spec["task"]["config"]["prompt_template"] == "{input}"
    assert log["evaluation"]["cache_policy"] == "no-cache"
    assert all(s["output"] == s["input"] for s in log["samples"])


@pytest.mark.parametrize(("args", "said"), [
    (["--spec", "capitals-qq"], "did you mean 'capitals-qa'"),
    (["-T", "promt_template=x"], "-T promt_template"),
    (["--model", "openai/gpt-4.1-nano"], "write 'openai$gpt-4.1-nano'"),
    (["--num-samples", "0"], "--num-samples"),
])
def test_bad_overrides_are_one_line_naming_the_option(quickstart, args, said):
    result = cli("run", "-f", str(quickstart), *args)
    assert result.exit_code == 2, result.output
    assert said in result.output and "Traceback" not in result.output
    assert not (quickstart.parent / "logs").exists()


def test_the_dry_run_figures_match_the_run_that_follows(quickstart):
    first = json.loads(cli("run", "-f", str(quickstart), "--json", "--num-samples", "8").stdout)
    assert first["task_results"][0]["model_calls"] == 8
    plan = json.loads(cli("run", "-f", str(quickstart), "--dry-run", "--json", "--num-samples", "12").stdout)
    qa = next(p for p in plan["task_specifications"] if p["key"] == "capitals-qa")
    assert (qa["samples"], qa["cached"], qa["model_calls"]) == (12, 8, 4)
    assert qa["estimated_input_tokens"] > 0 and qa["estimated_cost_usd"] is None  # mock: no pricing
    assert json.loads(cli("list", "--json").stdout)[0]["run_id"] == first["run_id"]  # nothing submitted
    second = json.loads(cli("run", "-f", str(quickstart), "--json", "--num-samples", "12").stdout)
    [qa_result] = [t for t in second["task_results"] if t["key"] == "capitals-qa"]
    assert (qa_result["model_calls"], qa_result["cache_hits"]) == (4, 8)


@pytest.mark.parametrize(("edit", "said"), [
    (lambda d: d["evaluation"]["task_specifications"][0].update(task_key="qq"), "did you mean 'qa'"),
    (lambda d: d["evaluation"]["task_specifications"][0]["task_config"].update(scorers=["exakt"]),
     "did you mean 'exact'"),
    (lambda d: d["evaluation"]["task_specifications"][0].update(task_confg={}), "did you mean 'task_config'"),
    (lambda d: d["evaluation"]["task_specifications"][0].update(model_key="opneai$gpt-4.1"),
     "unknown provider 'opneai'; did you mean 'openai'"),
    (lambda d: d["evaluation"]["task_specifications"][0].update(model_key="openai/gpt-4.1-nano"),
     "write 'openai$gpt-4.1-nano'"),
    (lambda d: d["evaluation"].update(subsampling="rand"), "did you mean 'random'"),
    (lambda d: d["datasets"][0].update(input_field="country"), "its fields: id, input, target, region"),
])
def test_messages_lead_to_the_fix(quickstart, edit, said):
    document = yaml.safe_load(quickstart.read_text())
    edit(document)
    quickstart.write_text(yaml.safe_dump(document))
    result = cli("run", "-f", str(quickstart))
    assert result.exit_code == 2
    assert said in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_run_ids_accept_unique_prefixes_and_ambiguous_ones_list_the_candidates(quickstart):
    report = json.loads(cli("run", "-f", str(quickstart), "--json").stdout)
    status = cli("status", report["run_id"][:6], "--json")
    assert status.exit_code == 0 and json.loads(status.stdout)["run_id"] == report["run_id"]
    from shared.db import get_engine, now, runs

    with get_engine().begin() as connection:
        for suffix in ("01", "02"):
            connection.execute(runs.insert().values(id="abcdef" + suffix * 13, evaluation_key="x", display_name="x",
                                                    status="success", plan="{}", created_at=now()))
    ambiguous = cli("status", "abcdef")
    assert ambiguous.exit_code == 2 and "ambiguous" in ambiguous.output
    assert "abcdef0101" in ambiguous.output and "abcdef0202" in ambiguous.output
    assert cli("status", "abc").exit_code == 2  # shorter than 6: not taken as a prefix
    exported = cli("export", "eval", report["run_id"][:8], "-o", str(quickstart.parent / "out"))
    assert exported.exit_code == 0, exported.output


def test_init_writes_a_run_file_that_runs_offline_and_tasks_lists_the_built_ins(tmp_path):
    assert cli("init", str(tmp_path / "start")).exit_code == 0
    run = cli("run", "-f", str(tmp_path / "start" / "evalfleet.yaml"), "--json")
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["task_results"][0]["pass_status"] is True
    assert cli("init", str(tmp_path / "start")).exit_code == 2  # nothing overwritten without --force
    catalogue = json.loads(cli("tasks", "--json").stdout)
    qa_fields = {f["name"]: f for f in catalogue["tasks"]["qa"]["fields"]}
    assert qa_fields["prompt_template"]["default"] == "{input}"
    assert catalogue["scorers"]["numeric"]["fields"] == [
        {"name": "tolerance", "type": "float", "default": 0.0, "description": "Largest absolute difference counted correct."}]


def test_a_file_of_entities_alone_is_checked_and_added_not_run(tmp_path):
    bad = write(tmp_path / "bad.yaml", yaml.safe_dump({"tasks": [{"key": "t", "template": "qq"}]}))
    result = cli("add", "-f", str(bad))
    assert result.exit_code == 2 and "tasks[0:t]" in result.output and "did you mean 'qa'" in result.output
    alone = write(tmp_path / "models.yaml", yaml.safe_dump({"models": [{"key": "m", "provider": "mock",
                                                                        "name": "echo"}]}))
    assert cli("add", "-f", str(alone)).exit_code == 0
    refused = cli("run", "-f", str(alone))
    assert refused.exit_code == 2 and "evalfleet add -f" in refused.output
