"""Failures shown where users look (the table, `run --json`, `status --json`), counters that only
count what happened (model calls are answered requests; attempts include unanswered ones), a
worker lacking a key variable, and data read as written (chat messages keep their roles)."""

from __future__ import annotations

import socket

import pytest

from tests.faults.conftest import fake_openai_model, logs_of, rows, run_file

pytestmark = pytest.mark.services


def test_every_sample_failing_shows_why_in_the_table_and_the_json(sandbox, fake_openai, cli):
    sandbox.monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-1234")
    fake_openai.configure(prompt_faults={"": "404"})
    path = run_file(sandbox.root, "notfound", rows(5), models=[fake_openai_model(fake_openai)])
    table = cli("run", "-f", str(path), env={"COLUMNS": "200"})
    assert table.returncode == 1, str(table)
    assert "all 5 samples failed" in table.stdout and "NotFoundError" in table.stdout, table.stdout
    report = cli("run", "-f", str(path), "--json").json()
    [task_result] = report["task_results"]
    summary = task_result["error_summary"]
    assert summary["samples_errored"] == 5
    [top] = summary["most_frequent"]
    assert (top["type"], top["count"]) == ("NotFoundError", 5)
    assert "sk-test-secret-value-1234" not in top["message"]
    status = cli("status", report["run_id"], "--json").json()
    assert status["task_results"][0]["error_summary"] == summary
    [log] = logs_of(report).values()
    assert log["error_summary"]["most_frequent"][0]["count"] == 5


def test_attempts_that_got_no_answer_are_not_counted_as_model_calls(sandbox, cli):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    model = {"key": "offline", "provider": "openai", "name": "m", "base_url": f"http://127.0.0.1:{port}/v1",
             "api_key_env": "FAKE_OPENAI_KEY", "max_attempts": 3, "retry_timeout": 30, "timeout": 2}
    sandbox.monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test")
    path = run_file(sandbox.root, "offline", rows(5), models=[model])
    report = cli("run", "-f", str(path), "--json").json()
    [task_result] = report["task_results"]
    assert (task_result["model_calls"], task_result["attempts"], task_result["errors"]) == (0, 15, 5)
    [log] = logs_of(report).values()
    assert (log["stats"]["model_calls"], log["stats"]["attempts"]) == (0, 15)
    assert all(s["model_calls"] == 0 and s["attempts"] == 3 for s in log["samples"])
    assert log["stats"]["model_usage"]["offline"]["calls"] == 0


def test_rate_limited_attempts_count_as_calls_and_attempts(sandbox, fake_openai, cli):
    sandbox.monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test")
    fake_openai.configure(fail_first={"fault": "429", "count": 1}, retry_after=0.01)
    path = run_file(sandbox.root, "limited", rows(4), models=[fake_openai_model(fake_openai)])
    [task_result] = cli("run", "-f", str(path), "--json").json()["task_results"]
    assert (task_result["model_calls"], task_result["attempts"], task_result["errors"]) == (8, 8, 0)


def test_a_worker_without_the_key_variable_fails_its_samples_at_once_naming_it(redis_cluster, workers,
                                                                              fake_openai, background):
    path = run_file(redis_cluster.root, "nokey", rows(4), models=[fake_openai_model(fake_openai)])
    workers.start(1, concurrency=2, env={"FAKE_OPENAI_KEY": None})
    run = background.start("run", "-f", str(path), "--json", env={"FAKE_OPENAI_KEY": None})
    result = run.wait(timeout=60)
    assert result.returncode == 1, str(result)
    assert "FAKE_OPENAI_KEY" in result.stderr  # the submitter warned
    [log] = logs_of(result.json()).values()
    for sample in log["samples"]:
        assert sample["error"]["type"] == "MissingAPIKey"
        assert "FAKE_OPENAI_KEY" in sample["error"]["message"]
        assert sample["attempts"] == 0
    assert fake_openai.stats()["requests"] == 0


def test_an_unset_key_variable_is_refused_before_an_embedded_run(sandbox, fake_openai, cli):
    path = run_file(sandbox.root, "nokeyembedded", rows(2), models=[fake_openai_model(fake_openai)])
    result = cli("run", "-f", str(path), env={"FAKE_OPENAI_KEY": None})
    assert result.returncode == 2, str(result)
    assert "models[0:fake].api_key_env" in result.stderr and "FAKE_OPENAI_KEY" in result.stderr
    assert not (sandbox.root / "logs").exists()


def test_chat_message_inputs_reach_the_model_with_their_roles(sandbox, fake_openai, cli):
    sandbox.monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test")
    conversation = [{"role": "system", "content": "You answer with one word."},
                    {"role": "user", "content": "Capital of France?"}]
    data = [{"id": "c1", "input": conversation, "target": "Capital"},
            {"id": "t1", "input": "plain text", "target": "plain"}]
    path = run_file(sandbox.root, "chat", data, models=[fake_openai_model(fake_openai)])
    # The run file's template is "{input} | {target}": it applies to the last user message only.
    report = cli("run", "-f", str(path), "--json").json()
    assert report["status"] == "success", report
    bodies = {entry["prompt"]: entry["body"] for entry in fake_openai.requests_log()}
    sent = bodies["Capital of France? | Capital"]["messages"]
    assert sent == [conversation[0], {"role": "user", "content": "Capital of France? | Capital"}]
    assert bodies["plain text | plain"]["messages"] == [{"role": "user", "content": "plain text | plain"}]
    [log] = logs_of(report).values()
    chat = next(s for s in log["samples"] if s["id"] == "c1")
    assert chat["input"] == conversation
    assert chat["prompt"] == sent


def test_a_csv_with_a_byte_order_mark_keeps_its_ids(sandbox, cli):
    (sandbox.root / "data").mkdir(exist_ok=True)
    (sandbox.root / "data" / "bom.csv").write_bytes("\ufeffid,input,target\nq1,one,one\nq2,two,two\n".encode())
    document = {
        "datasets": [{"key": "bom", "path": "data/bom.csv"}],
        "evaluation": {"key": "bom", "display_name": "BOM", "task_specifications": [
            {"key": "bom-qa", "task_key": "qa", "model_key": "mock$target", "dataset_key": "bom"}]},
    }
    import yaml

    (sandbox.root / "bom.yaml").write_text(yaml.safe_dump(document))
    [log] = logs_of(cli("run", "-f", str(sandbox.root / "bom.yaml"), "--json").json()).values()
    assert log["sample_ids"] == ["q1", "q2"]
    assert all(s["metadata"] == {} for s in log["samples"])


def test_chat_messages_are_part_of_the_cache_identity():
    from shared.cache_identity import inference_key
    from shared.samples import ChatMessage, Sample

    def key(system: str) -> str:
        messages = [ChatMessage(role="system", content=system), ChatMessage(role="user", content="hi")]
        return inference_key({}, {}, messages, Sample(id="a", input=messages))

    assert key("Be brief.") != key("Be verbose.")
    assert key("Be brief.") == key("Be brief.")

