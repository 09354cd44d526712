"""Scenario 10: the results API on a 1,000,000-sample task result in PostgreSQL (100,000 with
--quick). `results?page=N&per_page=100` latency (p50, p99) at the first, middle and last page,
measured by a client sending one request at a time; then sustained requests per second with 50
concurrent connections (wrk) against `evalfleet serve --workers 2`.

The samples are written straight into the database with COPY (what a finished run leaves there),
so the scenario measures reading, not running."""

from __future__ import annotations

import io
import json
import shutil
import statistics
import subprocess
import time
import uuid
from datetime import UTC, datetime

from benchmarks.harness.cluster import Place, evalfleet_command
from benchmarks.harness.measurement import Check, Context, Result, quiet_before_measuring
from benchmarks.harness.system import CHILDREN, WORK, Deadline, log

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "evalfleet_bench_api"
PER_PAGE = 100
REQUESTS_PER_PAGE = 200
WRK_CONNECTIONS, WRK_THREADS, WRK_SECONDS = 50, 2, 15


def _fresh_database() -> str:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{DATABASE}"')
    return f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"


def _load(url: str, samples: int) -> str:
    """A finished run with one task result of `samples` samples; returns its UUID."""
    import psycopg

    from shared.db import get_engine
    from shared.log import SampleRecord, Score, TokenUsage
    from shared.plan import ResolvedDataset, ResolvedEvaluation, ResolvedModel, ResolvedTask, ResolvedTaskSpec

    get_engine(url)  # migrated to the newest schema
    spec = ResolvedTaskSpec(key="big-qa", display_name="Big QA",
                            task=ResolvedTask(key="qa", template="qa", config={"prompt_template": "{input}",
                                                                              "scorers": [{"name": "includes"}]}),
                            model=ResolvedModel(key="mock$target", provider="mock", name="target"),
                            dataset=ResolvedDataset(key="big", path="/data/big.jsonl"))
    evaluation = ResolvedEvaluation(key="big", display_name="Big", task_specifications=[spec])
    moment = datetime.now(UTC)
    task_uuid = str(uuid.uuid4())
    run_id = uuid.uuid4().hex
    with psycopg.connect(url) as connection:
        connection.execute("INSERT INTO runs (id, evaluation_key, display_name, status, plan, created_at, finished_at) "
                           "VALUES (%s, 'big', 'Big', 'success', %s, %s, %s)",
                           (run_id, evaluation.model_dump_json(), moment, moment))
        task_result_id = connection.execute(
            "INSERT INTO task_results (run_id, position, spec_key, plan, total, done, errors, model_calls, attempts, "
            "cache_hits, status, metrics, started_at, completed_at, uuid, model_key) VALUES (%s, 0, 'big-qa', %s, %s, "
            "%s, 0, %s, %s, 0, 'success', %s, %s, %s, %s, 'mock$target') RETURNING id",
            (run_id, spec.model_dump_json(), samples, samples, samples, samples,
             json.dumps({"includes": {"accuracy": 1.0, "stderr": 0.0}}), moment, moment, task_uuid)).fetchone()[0]
        with connection.cursor().copy("COPY sample_results (task_result_id, sample_id, position, is_error, score, "
                                      "latency_ms, cached, body) FROM STDIN") as copy:
            buffer = io.StringIO()
            for i in range(samples):
                # One in ten wrong, one in a thousand failed, latencies spread: what the viewer filters by.
                value, latency = (0.0 if i % 10 == 3 else 1.0), 100 + (i * 7919) % 900
                failed = i % 1000 == 7
                record = SampleRecord(id=f"s{i:07d}", position=i, input=f"Repeat exactly: answer-{i}",
                                      target=f"answer-{i}", output=f"answer-{i}",
                                      scores={"includes": Score(value=value, answer=f"answer-{i}")},
                                      usage=TokenUsage(input_tokens=3, output_tokens=1), latency_ms=latency,
                                      model_calls=1, attempts=1, worker="bench@host", started_at=moment,
                                      completed_at=moment)
                body = record.model_dump_json().replace("\\", "\\\\")
                score = "\\N" if failed else value
                buffer.write(f"{task_result_id}\t{record.id}\t{i}\t{'t' if failed else 'f'}\t{score}\t{latency}\tf\t"
                             f"{body}\n")
                if i % 20_000 == 19_999:
                    copy.write(buffer.getvalue())
                    buffer = io.StringIO()
            copy.write(buffer.getvalue())
        connection.execute("ANALYZE sample_results")
    return task_uuid


def _latencies(base: str, token: str, path: str, count: int) -> list[float]:
    import httpx

    out = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        client.get(path).raise_for_status()  # the first request warms the connection, not measured
        for _ in range(count):
            started = time.perf_counter()
            answer = client.get(path)
            out.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 200 or len(answer.json()["prompts"]) == 0:
                raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:300]}")
    return out


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def scenario_10(ctx: Context, result: Result) -> None:
    samples = ctx.size(1_000_000, 100_000)
    pages = samples // PER_PAGE
    result.config.update({"samples": samples, "per_page": PER_PAGE, "database": "PostgreSQL (local)",
                          "requests_per_page_position": REQUESTS_PER_PAGE, "server": "evalfleet serve --workers 2",
                          "load": f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s on the middle page",
                          "rate_limit": "raised out of the way (EVALFLEET_API_RATE_LIMIT=100000000)"})
    checks = {name: Check(f"results?page={label}&per_page={PER_PAGE}: p99 latency", "< 50 ms", "ms")
              for name, label in (("first", "1"), ("middle", f"{pages // 2:,}"), ("last", f"{pages:,}"))}
    rps = Check(f"sustained requests/s, {WRK_CONNECTIONS} connections, 2 server workers (middle page)", "reported",
                "requests/s")
    viewer = Check("the viewer's filtered, searched and sorted sample pages: worst p99", "reported", "ms")
    paint = Check("viewer in Chromium: samples page first paint (median of repeats)", "< 1,000 ms", "ms")
    change = Check("viewer in Chromium: page change, next page (median of repeats)", "< 1,000 ms", "ms")
    result.checks += [*checks.values(), rps, viewer, paint, change]
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk")
    deadline = Deadline(ctx.budget(900 + samples / 2000), "scenario 10")
    database = _fresh_database()
    started = time.monotonic()
    task_uuid = _load(database, samples)
    log(f"  loaded {samples:,} samples into PostgreSQL in {time.monotonic() - started:.0f} s")
    place = Place.fresh(WORK / "s10", ctx.redis.url, EVALFLEET_DATABASE_URL=database,
                        EVALFLEET_API_RATE_LIMIT="100000000")
    token = json.loads(subprocess.run(evalfleet_command() + ["token", "create", "--name", "bench", "--json"],
                                      env=place.env(), cwd=place.root, capture_output=True, text=True,
                                      check=True).stdout)["token"]
    port = 18000 + ctx.redis.db
    server = CHILDREN.start("serve", evalfleet_command() + ["serve", "--port", str(port), "--workers", "2",
                                                             "--log-level", "warning"],
                            env=place.env(), cwd=place.root, log_path=place.root / "serve.log")
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base, server, deadline)
        path = f"/v2/gen-ai/evaluation_runs/{task_uuid}/results"
        for repeat in range(1, ctx.repeats + 1):
            quiet = quiet_before_measuring(ctx)
            for name, page in (("first", 1), ("middle", pages // 2), ("last", pages)):
                values = _latencies(base, token, f"{path}?page={page}&per_page={PER_PAGE}", REQUESTS_PER_PAGE)
                checks[name].runs.append(round(_p(values, 99), 2))
                result.runs.append({"repeat": repeat, "page": name, "p50_ms": round(_p(values, 50), 2),
                                    "p99_ms": round(_p(values, 99), 2), "quiet_wait": quiet})
                log(f"    s10-r{repeat} {name} page: p50 {_p(values, 50):.1f} ms, p99 {_p(values, 99):.1f} ms")
            deadline.remaining()
            wrk = subprocess.run(["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s", "--latency",
                                  "-H", f"Authorization: Bearer {token}",
                                  f"{base}{path}?page={pages // 2}&per_page={PER_PAGE}"],
                                 capture_output=True, text=True, timeout=WRK_SECONDS + 60)
            figures = _wrk_figures(wrk.stdout)
            rps.runs.append(figures["requests_per_s"])
            result.runs.append({"repeat": repeat, "wrk": figures})
            worst = 0.0
            for query in VIEWER_QUERIES:
                values = _latencies(base, token, f"{path}?{query.format(middle=pages // 2)}", VIEWER_REQUESTS)
                worst = max(worst, _p(values, 99))
                result.runs.append({"repeat": repeat, "viewer_query": query, "p50_ms": round(_p(values, 50), 1),
                                    "p99_ms": round(_p(values, 99), 1)})
                log(f"    s10-r{repeat} {query}: p50 {_p(values, 50):.0f} ms, p99 {_p(values, 99):.0f} ms")
            viewer.runs.append(round(worst, 1))
            first_paint, page_change = _browser_timings(base, token, task_uuid)
            paint.runs.append(first_paint)
            change.runs.append(page_change)
            result.runs.append({"repeat": repeat, "browser_first_paint_ms": first_paint,
                                "browser_page_change_ms": page_change})
            log(f"    s10-r{repeat} viewer in Chromium: first paint {first_paint:.0f} ms, next page {page_change:.0f} ms")
            log(f"    s10-r{repeat} wrk: {figures['requests_per_s']:.0f} requests/s, p50 {figures.get('p50')}, "
                f"p99 {figures.get('p99')}, non-2xx {figures['non_2xx']}")
    finally:
        CHILDREN.stop(server, timeout=20)
    for check in checks.values():
        check.settle(lambda v: v < 50)
    p50 = {r["page"]: r["p50_ms"] for r in result.runs if "page" in r}
    checks["first"].note = "p50: " + ", ".join(f"{k} {v:.1f} ms" for k, v in p50.items())
    rps.settle(lambda v: True)
    viewer.settle(lambda v: True)
    paint.settle(lambda v: v < 1000)
    change.settle(lambda v: v < 1000)
    viewer.note = "; ".join(f"{r['viewer_query']}: p50 {r['p50_ms']} ms" for r in result.runs
                            if "viewer_query" in r and r["repeat"] == 1)


# What the viewer asks of a 10^6-sample task result: outcome filters, sorts at any depth, search.
VIEWER_QUERIES = ("outcome=incorrect&per_page=50", "outcome=error&per_page=50", "sort=-latency&per_page=50",
                  "sort=score&page={middle}&per_page=50", "search=s0999&per_page=50")
VIEWER_REQUESTS = 20


def _browser_timings(base: str, token: str, task_uuid: str) -> tuple[float, float]:
    """In Debian's headless Chromium, signed in with the token's session cookie: from navigation to
    the samples page until its rows are on screen, then from a click on Next until the next
    page's rows are."""
    from playwright.sync_api import sync_playwright

    from tests.support.browser import CHROMIUM_ARGS, chromium_path

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.add_cookies([{"name": "evalfleet_session", "value": token, "url": base}])
            page = context.new_page()
            page.goto(f"{base}/ui/static/app.js")  # the script cached, as for a user who opened the viewer
            started = time.perf_counter()
            page.goto(f"{base}/ui/#/samples/{task_uuid}")
            page.wait_for_selector("table#samples tbody tr[data-position='0']", timeout=30_000)
            first_paint = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            page.click("text=Next ›")
            page.wait_for_selector("table#samples tbody tr[data-position='50']", timeout=30_000)
            page_change = (time.perf_counter() - started) * 1000
        finally:
            browser.close()
    return round(first_paint, 1), round(page_change, 1)


def _wait_up(base: str, server, deadline: Deadline) -> None:  # noqa: ANN001
    import httpx

    while True:
        deadline.remaining()
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if not server.alive():
            raise RuntimeError(f"evalfleet serve exited:\n{server.tail()}")
        time.sleep(0.2)


def _wrk_figures(output: str) -> dict:
    figures: dict = {"non_2xx": 0}
    for line in output.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            figures["requests_per_s"] = float(words[1])
        elif words and words[0] in ("50%", "99%"):
            figures["p" + words[0].rstrip("%")] = words[1]
        elif "Non-2xx" in line:
            figures["non_2xx"] = int(words[-1])
    if "requests_per_s" not in figures or figures["non_2xx"]:
        raise RuntimeError(f"wrk: {output[-1500:]}")
    return figures


SCENARIOS = {
    "10": ("Results API paging (1,000,000 samples in PostgreSQL; 100,000 with --quick)",
           "p99 < 50 ms at the first, middle and last page; requests/s reported", scenario_10),
}
