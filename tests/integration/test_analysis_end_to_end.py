"""Results analysis end to end: a benchmark of three models (three fake OpenAI servers with their
own accuracy and latency, priced differently) run by real workers, checked against the samples;
TrainLoop-format files queried by DuckDB with the reference's documented query; Parquet tables
read by pyarrow and DuckDB; trends over five runs whose scores the test controls; charts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.conftest import write_run_file

pytestmark = pytest.mark.services
ROWS = [{"id": f"b{i:02d}", "input": f"question {i}", "target": f"answer {i}"} for i in range(20)]
# model key -> (latency ms, wrong answers, pricing per million tokens in/out)
MODELS = {"premium": (120, 0, (10.0, 30.0)), "standard": (60, 1, (1.0, 3.0)), "budget": (10, 8, (0.1, 0.2))}
REFERENCE_QUERY = """SELECT
timestamp,
summary.overall_score,
summary.total_suites,
summary.pass_rate
FROM 'data/results/evaluation_*.json'
ORDER BY timestamp DESC
LIMIT 10;"""


@pytest.fixture
def three_servers():
    servers = {}
    try:
        for key, (latency, wrong, _) in MODELS.items():
            # Echo answers right (the prompt holds the target); `answers` makes some wrong.
            answers = {f"question {i} | answer {i}": "no idea" for i in range(wrong)}
            servers[key] = FakeOpenAIServer().start()
            servers[key].configure(latency_ms=latency, answers=answers)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _benchmark_file(root: Path, servers) -> Path:  # noqa: ANN001
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    models = [{"key": key, "provider": "openai", "name": f"fake-{key}", "base_url": servers[key].base_url,
               "api_key_env": "FAKE_OPENAI_KEY", "pricing": {"input_per_million": price[0],
                                                             "output_per_million": price[1]}}
              for key, (_, _, price) in MODELS.items()]
    return write_run_file(root / "bench.yaml", {
        "datasets": [{"key": "bench", "path": "data/bench.jsonl"}], "models": models,
        "evaluation": {"key": "bench", "display_name": "Benchmark", "cache_policy": "no-cache",
                       "task_specifications": [{"key": "qa", "task_key": "qa", "model_keys": list(MODELS),
                                                "dataset_key": "bench",
                                                "task_config": {"prompt_template": "{input} | {target}"}}]}})


def test_a_benchmark_of_three_models_matches_its_samples(redis_cluster, workers, three_servers, cli, tmp_path):
    redis_cluster.setenv("FAKE_OPENAI_KEY", "sk-test")
    workers.start(1, concurrency=8)
    run = cli("run", "-f", str(_benchmark_file(redis_cluster.root, three_servers)), "--json", check=0).json()
    document = cli("benchmark", run["run_id"][:8], "--json", "-o", str(tmp_path / "out"), check=0).json()
    assert document["type"] == "benchmark" and document["providers"] == list(MODELS)
    for task_result in run["task_results"]:
        key = task_result["key"].removeprefix("qa-")
        log = json.loads(Path(task_result["log_path"]).read_text())
        result = document["results"][key]
        right = sum(s["scores"]["includes"]["value"] == 1.0 for s in log["samples"])
        assert result["metrics"]["includes"] == {"passed": right, "total": 20, "score": right / 20}
        assert right == 20 - MODELS[key][1]
        tokens_in = sum(s["usage"]["input_tokens"] for s in log["samples"])
        tokens_out = sum(s["usage"]["output_tokens"] for s in log["samples"])
        price_in, price_out = MODELS[key][2]
        assert result["cost_analysis"]["total_cost"] == pytest.approx((tokens_in * price_in + tokens_out * price_out) / 1e6)
        latencies = sorted(s["latency_ms"] / 1000 for s in log["samples"])
        assert result["performance"]["avg_response_time"] == pytest.approx(sum(latencies) / 20)
        assert result["performance"]["avg_response_time"] >= MODELS[key][0] / 1000
        assert result["performance"]["total_tokens"] == tokens_in + tokens_out
    comparison = document["comparison"]
    # premium scores 1.0; standard 0.95 is within the 0.05 tolerance and ten times cheaper; budget is not.
    assert (comparison["best_overall"], comparison["best_value"]) == ("premium", "standard")
    costs = {key: document["results"][key]["cost_analysis"]["total_cost"] for key in ("premium", "standard")}
    assert comparison["cost_savings"] == pytest.approx(1 - costs["standard"] / costs["premium"])
    plot = tmp_path / "bench.png"
    cli("benchmark", run["run_id"], "--plot", str(plot), "-o", str(tmp_path / "out"), check=0)
    _assert_a_real_chart(plot)


def _assert_a_real_chart(path: Path) -> None:
    import matplotlib.image

    pixels = matplotlib.image.imread(str(path))
    height, width = pixels.shape[:2]
    assert width >= 600 and height >= 400, (width, height)
    assert float(pixels.std()) > 0.01, "the chart is blank"


def test_trainloop_files_answer_the_reference_duckdb_query_and_parquet_reads_back(sandbox, cli, tmp_path):
    import duckdb
    import pyarrow.parquet as pq

    (sandbox.root / "data").mkdir()
    (sandbox.root / "data" / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    document = {"datasets": [{"key": "d", "path": "data/d.jsonl"}],
                "evaluation": {"key": "tl", "display_name": "TrainLoop", "tags": ["geo"], "task_specifications": [
                    {"key": "echo", "task_key": "qa", "model_key": "mock$echo", "dataset_key": "d",
                     "task_config": {"scorers": ["includes", "exact"]}},
                    {"key": "target", "task_key": "qa", "model_key": "mock$target", "dataset_key": "d"}]}}
    path = write_run_file(sandbox.root / "tl.yaml", document)
    for _ in range(2):
        run = cli("run", "-f", str(path), "--json", check=0).json()
        assert cli("results", run["run_id"], "-o", "data/results", check=0).returncode == 0
    files = sorted((sandbox.root / "data" / "results").glob("evaluation_results_*.json"))
    written = json.loads(files[-1].read_text())
    assert set(written) == {"timestamp", "duration", "total_events", "suites", "summary", "configuration"}
    echo = written["suites"]["echo"]
    assert echo["metrics"]["exact"] == {"passed": 0, "total": 20, "score": 0.0, "details": echo["metrics"]["exact"]["details"]}
    assert echo["metrics"]["includes"]["score"] == 0.0  # "question i" holds no "answer i"
    detail = written["suites"]["target"]["metrics"]["includes"]["details"][0]
    assert set(detail) >= {"event_id", "passed", "input", "output", "verdict"} and detail["passed"] is True
    assert written["summary"] == {"total_suites": 2, "overall_score": pytest.approx((0.0 + 1.0) / 2),
                                  "total_metrics": 3, "total_passed": 20, "total_evaluated": 60,
                                  "pass_rate": pytest.approx(20 / 60)}
    rows = duckdb.connect().execute(REFERENCE_QUERY.replace("data/results",
                                                            str(sandbox.root / "data" / "results"))).fetchall()
    assert len(rows) == 2 and rows[0][1] == pytest.approx(0.5) and rows[0][2] == 2

    out = tmp_path / "parquet"
    counts = cli("export", "parquet", "--all", "-o", str(out), "--json", check=0).json()
    assert counts == {"runs": 2, "task_results": 4, "samples": 80, "scores": 120}
    samples = pq.read_table(out / "samples.parquet")
    assert {"run_id", "task_result_uuid", "sample_id", "input", "output", "latency_ms", "cost_usd"} <= set(
        samples.column_names)
    scores = duckdb.connect().execute(f"SELECT scorer, sum(CAST(passed AS INT)) FROM read_parquet('{out}/scores.parquet')"
                                      " GROUP BY 1 ORDER BY 1").fetchall()
    assert scores == [("exact", 0), ("includes", 40)]
    answer = cli("query", "SELECT model_key, avg(CAST(passed AS DOUBLE)) AS rate FROM scores GROUP BY 1 ORDER BY 1",
                 "--format", "json", check=0).json()
    assert answer == [{"model_key": "mock$echo", "rate": 0.0}, {"model_key": "mock$target", "rate": 1.0}]
    bad = cli("query", "SELECT nope FROM scores")
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_trends_over_five_runs_whose_scores_are_set(sandbox, cli, tmp_path):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from shared.db import get_engine, runs

    (sandbox.root / "data").mkdir()
    document = {"datasets": [{"key": "d", "path": "data/d.jsonl"}],
                "evaluation": {"key": "trend", "display_name": "Trend", "task_specifications": [
                    {"key": "qa", "task_key": "qa", "model_key": "mock$echo", "dataset_key": "d"}]}}
    path = write_run_file(sandbox.root / "trend.yaml", document)
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    # mock$echo answers with the input: `right` of 10 inputs hold their target, so the scores are
    # 0.5, 0.6, 0.7, 0.8, 0.9 on five days.
    for day, right in enumerate((5, 6, 7, 8, 9)):
        rows = [{"id": f"t{i}", "input": f"answer-{i} it is" if i < right else "no idea", "target": f"answer-{i}"}
                for i in range(10)]
        (sandbox.root / "data" / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        run = cli("run", "-f", str(path), "--json", check=0).json()
        with get_engine().begin() as connection:
            connection.execute(update(runs).where(runs.c.id == run["run_id"]).values(
                created_at=today - timedelta(days=4 - day)))
    summary = cli("summary", "--evaluation", "trend", "--json", check=0).json()
    assert [p["date"] for p in summary["trending"]["last_7_days"]] == [
        (today - timedelta(days=4 - d)).date().isoformat() for d in range(5)]
    assert [p["score"] for p in summary["trending"]["last_7_days"]] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9])
    assert summary["trending"]["score_change"] == pytest.approx(0.4)
    assert (summary["trending"]["trend"], summary["overall_score"]) == ("improving", pytest.approx(0.9))
    assert summary["runs_counted"] == 5
    plot = tmp_path / "trend.svg"
    cli("summary", "--evaluation", "trend", "--plot", str(plot), "-o", str(tmp_path / "summary"), check=0)
    assert plot.read_text().startswith("<?xml") and (tmp_path / "summary" / "evaluation_summary.json").exists()


def test_model_keys_fan_one_task_over_several_models(sandbox, cli):
    (sandbox.root / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:3]))
    document = {"datasets": [{"key": "d", "path": "d.jsonl"}],
                "evaluation": {"key": "fan", "display_name": "Fan", "task_specifications": [
                    {"key": "qa", "task_key": "qa", "model_keys": ["mock$target", "mock$echo"], "dataset_key": "d"}]}}
    report = cli("run", "-f", str(write_run_file(sandbox.root / "fan.yaml", document)), "--json").json()
    assert [t["key"] for t in report["task_results"]] == ["qa-mock-target", "qa-mock-echo"]
    twice = {**document, "evaluation": {**document["evaluation"], "task_specifications": [
        {"key": "qa", "task_key": "qa", "model_key": "mock$echo", "model_keys": ["mock$target"], "dataset_key": "d"}]}}
    refused = cli("run", "-f", str(write_run_file(sandbox.root / "twice.yaml", twice)))
    assert refused.returncode == 2 and "model_keys" in refused.stderr

