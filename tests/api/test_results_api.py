"""The results API against a real `evalfleet serve` process and real workers, on SQLite and on
PostgreSQL: DigitalOcean's field names and types, paging arithmetic and links, the star metric
and pass status, submission (and its errors) and cancel over HTTP, tokens (401/403, revoked,
hashed at rest), request budgets, and the log download."""

from __future__ import annotations

import time

import pytest
import yaml

pytestmark = pytest.mark.services
ROWS = [{"id": f"s{i:02d}", "input": f"question {i}", "target": f"answer {i}"} for i in range(23)]


def run_file(rows: list[dict] | None = None, *, latency_ms: int = 0, key: str = "api-eval",
             star: dict | None = None) -> str:
    document = {
        "datasets": [{"key": "inline", "rows": rows or ROWS}],
        "models": [{"key": "m", "provider": "mock", "name": "target", "latency_ms": latency_ms}],
        "evaluation": {"key": key, "display_name": "API evaluation", "description": "Over HTTP.",
                       "star_metric": star or {"metric": "includes/accuracy", "success_threshold": 0.9},
                       "task_specifications": [
                           {"key": "qa", "display_name": "QA", "task_key": "qa", "model_key": "m",
                            "dataset_key": "inline", "task_config": {"scorers": ["includes", "exact"]}}]},
    }
    return yaml.safe_dump(document)


def wait_for(server, uuid: str, status: str = "EVALUATION_RUN_SUCCESSFUL", timeout: float = 90) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        run = server.get(f"/v2/gen-ai/evaluation_runs/{uuid}").json()["evaluation_run"]
        if run["status"] == status:
            return run
        assert time.monotonic() < deadline, f"evaluation run {uuid} still {run['status']}"
        time.sleep(0.2)


@pytest.fixture(params=["sqlite", "postgresql"])
def cluster_server(request, sandbox, redis_url, sqlite_url, workers, server):  # noqa: ANN001, ANN201
    database = sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    sandbox.use_broker(redis_url, database)
    workers.start(1, concurrency=4)
    return server()


def test_submit_follow_and_page_through_results_in_the_digitalocean_shape(cluster_server):
    server = cluster_server
    created = server.post("/v2/gen-ai/evaluation_runs", content=run_file(), headers={"Content-Type": "application/yaml"})
    assert created.status_code == 200, created.text
    body = created.json()
    [uuid] = body["evaluation_run_uuids"]
    assert len(body["run_id"]) == 32
    run = wait_for(server, uuid)
    assert run["evaluation_run_uuid"] == uuid and run["run_id"] == body["run_id"]
    assert (run["run_name"], run["test_case_name"], run["agent_name"]) == ("QA", "API evaluation", "m")
    assert run["queued_at"].endswith("Z") and run["finished_at"] and run["started_at"]
    assert run["pass_status"] is True
    assert run["star_metric_result"] == {
        "metric_name": "includes/accuracy", "metric_value_type": "METRIC_VALUE_TYPE_PERCENTAGE", "number_value": 100.0,
        "string_value": None, "reasoning": None, "error_description": None,
        "status": "EVALUATION_METRIC_RESULT_STATUS_COMPLETED"}
    by_name = {m["metric_name"]: m for m in run["run_level_metric_results"]}
    assert set(by_name) == {"includes/accuracy", "includes/stderr", "exact/accuracy", "exact/stderr"}
    assert by_name["exact/stderr"]["metric_value_type"] == "METRIC_VALUE_TYPE_NUMBER"
    assert (run["total_samples"], run["completed_samples"], run["errored_samples"]) == (23, 23, 0)

    results = f"/v2/gen-ai/evaluation_runs/{uuid}/results"
    first = server.get(results, params={"page": 1, "per_page": 10})
    assert first.status_code == 200
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(first.headers)
    page = first.json()
    assert set(page) == {"evaluation_run", "prompts", "links", "meta"}
    assert page["meta"] == {"page": 1, "pages": 3, "total": 23}
    links = page["links"]["pages"]
    assert links["first"].endswith(f"{results}?page=1&per_page=10") and links["first"].startswith("http://127.0.0.1")
    assert links["last"].endswith("page=3&per_page=10") and links["next"].endswith("page=2&per_page=10")
    assert links["previous"] is None
    prompt = page["prompts"][0]
    assert (prompt["prompt_id"], prompt["sample_id"], prompt["input"], prompt["ground_truth"], prompt["output"]) == (
        0, "s00", "question 0", "answer 0", "answer 0")
    assert isinstance(prompt["input_tokens"], str) and int(prompt["input_tokens"]) == 2
    assert isinstance(prompt["output_tokens"], str)
    includes = next(r for r in prompt["prompt_level_metric_results"] if r["metric_name"] == "includes")
    assert (includes["number_value"], includes["string_value"]) == (1.0, "answer 0")
    assert [p["prompt_id"] for p in page["prompts"]] == list(range(10))

    middle = server.get(results, params={"page": 2, "per_page": 10}).json()
    assert [p["prompt_id"] for p in middle["prompts"]] == list(range(10, 20))
    assert middle["links"]["pages"]["previous"].endswith("page=1&per_page=10")
    assert middle["links"]["pages"]["next"].endswith("page=3&per_page=10")
    last = server.get(results, params={"page": 3, "per_page": 10}).json()
    assert [p["prompt_id"] for p in last["prompts"]] == [20, 21, 22] and last["links"]["pages"]["next"] is None
    beyond = server.get(results, params={"page": 9, "per_page": 10}).json()
    assert beyond["prompts"] == [] and beyond["meta"] == {"page": 9, "pages": 3, "total": 23}
    assert beyond["links"]["pages"]["previous"].endswith("page=3&per_page=10")
    default = server.get(results).json()
    assert len(default["prompts"]) == 23 and default["meta"]["pages"] == 1  # per_page 50

    single = server.get(f"{results}/7").json()["prompt"]
    assert (single["prompt_id"], single["sample_id"]) == (7, "s07")
    missing = server.get(f"{results}/23")
    assert missing.status_code == 404 and set(missing.json()) >= {"id", "message"}

    listed = server.get("/v2/gen-ai/evaluation_runs", params={"status": "successful"}).json()
    assert [r["evaluation_run_uuid"] for r in listed["evaluation_runs"]] == [uuid]
    assert server.get("/v2/gen-ai/evaluation_runs", params={"status": "EVALUATION_RUN_FAILED"}).json()[
        "evaluation_runs"] == []
    assert server.get("/v2/gen-ai/evaluation_runs", params={"evaluation_key": "other"}).json()["meta"]["total"] == 0

    log = server.get(f"/v2/gen-ai/evaluation_runs/{uuid}/log")
    assert log.status_code == 200 and log.headers["content-type"].startswith("application/json")
    document = log.json()
    assert document["version"] == 2 and len(document["samples"]) == 23
    assert server.get("/ready").json()["checks"] == {"database": "ok", "broker": "ok"}


@pytest.mark.parametrize(("params", "parameter"), [
    ({"page": 0}, "`page`"), ({"page": "x"}, "`page`"), ({"per_page": 1001}, "`per_page`"),
    ({"per_page": 0}, "`per_page`"), ({"status": "finished"}, "`status`"),
])
def test_bad_paging_parameters_are_a_422_naming_the_parameter(sandbox, server, params, parameter):
    api = server()
    answer = api.get("/v2/gen-ai/evaluation_runs", params=params)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["id"] == "unprocessable_entity" and parameter in body["message"], body


def test_submission_errors_are_one_line_naming_the_field(sandbox, server, tmp_path):
    api = server()
    bad = yaml.safe_load(run_file())
    bad["evaluation"]["task_specifications"][0]["task_config"]["scorer"] = ["exact"]
    answer = api.post("/v2/gen-ai/evaluation_runs", content=yaml.safe_dump(bad))
    assert answer.status_code == 422
    assert answer.json()["message"].startswith("run file: field `evaluation.task_specifications[0:qa].task_config.scorer`")
    local = yaml.safe_load(run_file())
    (tmp_path / "secret.jsonl").write_text('{"id": "a", "input": "x", "target": "y"}\n')
    local["datasets"] = [{"key": "inline", "path": str(tmp_path / "secret.jsonl")}]
    answer = api.post("/v2/gen-ai/evaluation_runs", content=yaml.safe_dump(local))
    assert answer.status_code == 422 and "EVALFLEET_DATA_ROOTS" in answer.json()["message"]
    assert api.post("/v2/gen-ai/evaluation_runs", content=b"").status_code == 400
    assert api.post("/v2/gen-ai/evaluation_runs", content=b"{not yaml: [").status_code == 422
    assert api.get("/v2/gen-ai/evaluation_runs").json()["meta"]["total"] == 0  # nothing was submitted


def test_tokens_scopes_revocation_and_hashing(sandbox, server, cli):
    api = server()
    path = "/v2/gen-ai/evaluation_runs"
    assert api.get(path, token=None).status_code == 401
    assert api.get(path, token="efk_not-a-real-token").status_code == 401
    assert api.get(path, token="read").status_code == 200
    assert api.post(path, token="read", content=run_file()).status_code == 403
    assert api.get("/v2/gen-ai/tokens", token="submit").status_code == 403
    made = api.post("/v2/gen-ai/tokens", token="admin", json={"name": "ci", "scope": "read"})
    assert made.status_code == 200, made.text
    fresh = made.json()["token"]
    assert api.get(path, token=fresh).status_code == 200
    listed = api.get("/v2/gen-ai/tokens", token="admin").json()["tokens"]
    assert {t["name"] for t in listed} >= {"ci", "test-read"} and all("token" not in t for t in listed)
    assert api.request("DELETE", f"/v2/gen-ai/tokens/{made.json()['info']['id']}", token="admin").status_code == 200
    assert api.get(path, token=fresh).status_code == 401
    cli("token", "revoke", "test-read", check=0)
    assert api.get(path, token="read").status_code == 401
    # At rest only hashes: no token appears in the database file or the server's log.
    from sqlalchemy import select

    from shared.db import get_engine, tokens

    with get_engine().connect() as connection:
        stored = [tuple(row) for row in connection.execute(select(tokens))]
    for secret in list(api.tokens.values()) + [fresh]:
        assert all(secret not in str(row) for row in stored)
        assert secret not in api.log()


def test_requests_past_the_budget_get_429_with_rate_limit_headers(sandbox, server):
    api = server(env={"EVALFLEET_API_RATE_LIMIT": "5"})
    answers = [api.get("/v2/gen-ai/evaluation_runs") for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert answers[0].headers["ratelimit-limit"] == "5" and answers[4].headers["ratelimit-remaining"] == "0"
    assert answers[5].json()["id"] == "too_many_requests" and int(answers[5].headers["retry-after"]) >= 1
    # The budget is per token: another token still has its own.
    assert api.get("/v2/gen-ai/evaluation_runs", token="submit").status_code == 200


def test_cancel_over_http_and_the_log_before_it_exists(sandbox, redis_url, sqlite_url, workers, server):
    sandbox.use_broker(redis_url, sqlite_url)
    workers.start(1, concurrency=2)
    api = server()
    rows = [{"id": f"c{i:03d}", "input": f"q{i}", "target": f"a{i}"} for i in range(200)]
    [uuid] = api.post("/v2/gen-ai/evaluation_runs", content=run_file(rows, latency_ms=100)).json()[
        "evaluation_run_uuids"]
    wait_for(api, uuid, "EVALUATION_RUN_RUNNING_DATASET")
    early = api.get(f"/v2/gen-ai/evaluation_runs/{uuid}/log")
    assert early.status_code == 409 and early.json()["id"] == "conflict"
    assert api.post(f"/v2/gen-ai/evaluation_runs/{uuid}/cancel", token="read").status_code == 403
    cancelling = api.post(f"/v2/gen-ai/evaluation_runs/{uuid}/cancel").json()["evaluation_run"]
    assert cancelling["status"] in ("EVALUATION_RUN_CANCELLING", "EVALUATION_RUN_CANCELLED")
    run = wait_for(api, uuid, "EVALUATION_RUN_CANCELLED")
    assert 0 < run["completed_samples"] < 200
    assert api.get(f"/v2/gen-ai/evaluation_runs/{uuid}/log").json()["status"] == "cancelled"


def test_serve_refuses_no_auth_off_loopback(sandbox, cli):
    refused = cli("serve", "--host", "0.0.0.0", "--no-auth")
    assert refused.returncode == 2 and "loopback" in refused.stderr


def test_an_embedded_server_runs_what_is_submitted_in_process(sandbox, server):
    api = server("--no-auth", tokens=False)
    created = api.post("/v2/gen-ai/evaluation_runs", token=None, content=run_file(key="embedded"))
    assert created.status_code == 200, created.text
    run = wait_for(api, created.json()["evaluation_run_uuids"][0])
    assert run["pass_status"] is True
    assert api.get("/ready", token=None).json()["checks"] == {"database": "ok", "broker": "embedded"}
