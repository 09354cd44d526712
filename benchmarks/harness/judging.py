"""Scenario 16: a judged evaluation. Two workers x -c 50 (concurrency 100 in all) on Redis; the
model under test and the judge are two model names on the fake server, both at 200 ms per
request; each sample makes one call to each, in sequence, so the ideal is 100 / 0.4 s = 250
samples/s."""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks.harness import workload
from benchmarks.harness.cluster import Workers
from benchmarks.harness.measurement import (
    Check,
    Context,
    Result,
    evalfleet_run,
    latency_budget,
    latency_setup,
    median,
    quiet_before_measuring,
)
from benchmarks.harness.system import Deadline

JUDGE_NAME = "fake-judge"
WARM_UP = 500  # samples run once before the measured repeats, on the same workers


def scenario_16(ctx: Context, result: Result) -> None:
    samples = ctx.size(2_000, 500)
    latency_ms, workers, concurrency, max_connections = 200, 2, 50, 200
    ideal = workers * concurrency / (2 * latency_ms / 1000)
    result.config.update({"samples": samples, "latency_ms": f"{latency_ms} (model under test and judge)",
                          "workers": workers, "worker_concurrency": concurrency, "max_connections": max_connections,
                          "scorer": "model_graded_qa", "cache_policy": "no-cache", "ideal_sps": ideal,
                          "warm_up_samples": WARM_UP})
    efficiency = Check(f"efficiency (throughput / ideal {ideal:.0f}/s)", ">= 80%", "% of ideal")
    result.checks.append(efficiency)
    deadline = Deadline(ctx.budget(180 + ctx.repeats * latency_budget(samples, ideal)), "scenario 16")
    place, server = latency_setup(ctx, "s16", latency_ms)
    rates = []
    with server:
        server.configure(model_answers={JUDGE_NAME: {"": "The submission meets the criterion.\nGRADE: C"}})
        under_test = workload.openai_model(server.base_url, max_connections)
        judge = {**workload.openai_model(server.base_url, max_connections, key="fake-judge"), "name": JUDGE_NAME}

        def judged_run_file(name: str, data: Path) -> Path:
            run_file = workload.run_file(place.root, name, data, model_key="fake-openai", models=[under_test, judge])
            document = yaml.safe_load(run_file.read_text())
            document["evaluation"]["task_specifications"][0]["task_config"]["scorers"] = [
                {"name": "model_graded_qa", "judge_model": "fake-judge"}]
            run_file.write_text(yaml.safe_dump(document, sort_keys=False))
            return run_file

        run_file = judged_run_file("s16", workload.dataset(samples))
        with Workers(place, workers, concurrency, deadline):
            # Workers in a cluster are long-lived: the figure is theirs, not that of a process's
            # first minute (clients, pools and threads created on first use). The warm-up's own
            # figure is kept in the result.
            warm = evalfleet_run(place, judged_run_file("s16-warmup", workload.dataset(WARM_UP, prefix="w")), WARM_UP,
                                 name="s16-warm-up", timeout=deadline.remaining())
            result.figures["warm_up_run"] = {"samples": WARM_UP, "throughput_sps": warm["throughput_sps"],
                                             "efficiency_pct": round(100 * warm["throughput_sps"] / ideal, 1)}
            for repeat in range(1, ctx.repeats + 1):
                quiet = quiet_before_measuring(ctx)
                server.reset()
                run = evalfleet_run(place, run_file, samples, name=f"s16-r{repeat}",
                                    timeout=min(deadline.remaining(), ctx.budget(latency_budget(samples, ideal))))
                stats = server.stats()
                if stats["models"].get(JUDGE_NAME) != samples:
                    raise RuntimeError(f"the judge answered {stats['models']} requests, expected {samples}")
                run.update(repeat=repeat, quiet_wait=quiet, server_models=stats["models"],
                           efficiency_pct=round(100 * run["throughput_sps"] / ideal, 1))
                result.runs.append(run)
                rates.append(run["throughput_sps"])
                efficiency.runs.append(run["efficiency_pct"])
    efficiency.note = f"median {median(rates):.0f} samples/s of ideal {ideal:.0f}"
    efficiency.settle(lambda v: v >= 80)


SCENARIOS = {
    "16": ("Judged evaluation (model_graded_qa; both models 200 ms, 2 workers x -c 50)",
           ">= 80% of the ideal set by the two calls in sequence", scenario_16),
}
