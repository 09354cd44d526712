"""The viewer in a real headless Chromium against a real `evalfleet serve`: signing in once with a
token kept in an HttpOnly, SameSite=Strict cookie (never visible to the page), the runs list with
its filters, a run with its metrics, downloads and benchmark chart, samples filtered, searched,
sorted and paged, one sample in full, a comparison of two models, an evaluation's trend, and
signing out."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.viewer.conftest import ROWS, write_viewer_run

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def viewer(sandbox, cli, server):  # noqa: ANN001, ANN201
    """A server over two runs of the same evaluation (trends need two points)."""
    path = write_viewer_run(sandbox.root)
    first = cli("run", "-f", str(path), "--json", check=0).json()
    second = cli("run", "-f", str(path), "--json", check=0).json()
    served = server()
    return served, first, second


def sign_in(page, served, scope: str = "read") -> None:  # noqa: ANN001
    page.goto(served.base + "/ui/")
    page.wait_for_url(re.compile(r"#/login"))
    page.fill("#token", served.tokens[scope])
    page.click("form.login button[type=submit]")
    page.wait_for_selector("table#runs tbody tr")


def test_sign_in_keeps_the_token_out_of_reach_of_the_page(viewer, page):
    served, _first, _second = viewer
    page.goto(served.base + "/ui/")
    page.wait_for_url(re.compile(r"#/login"))
    page.fill("#token", "efk_not-a-real-token")
    page.click("form.login button[type=submit]")
    page.wait_for_selector("[role=alert]")
    assert "not valid" in page.inner_text("[role=alert]")
    visited: list[str] = []
    page.on("framenavigated", lambda frame: visited.append(frame.url))
    sign_in(page, served)
    assert page.title() == "Runs · evalfleet"
    assert visited and not any(served.tokens["read"] in url for url in visited)  # never in a URL
    [cookie] = [c for c in page.context.cookies() if c["name"] == "evalfleet_session"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""
    assert served.tokens["read"] not in page.content()
    # The same cookie reads the API; without it the API refuses.
    assert httpx.get(served.base + "/v2/gen-ai/runs", cookies={"evalfleet_session": cookie["value"]}).status_code == 200
    assert httpx.get(served.base + "/v2/gen-ai/runs").status_code == 401
    headers = httpx.get(served.base + "/ui/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    page.click("#logout button")
    page.wait_for_url(re.compile(r"#/login"))
    assert not [c for c in page.context.cookies() if c["name"] == "evalfleet_session"]


def test_runs_list_filters_and_a_run_with_metrics_downloads_and_benchmark(viewer, page):
    served, first, second = viewer
    sign_in(page, served)
    rows = page.locator("table#runs tbody tr")
    assert rows.count() == 2
    assert [rows.nth(i).get_attribute("data-run") for i in range(2)] == [second["run_id"], first["run_id"]]
    assert "1 of 2 passed" in rows.first.inner_text()  # the star metric: cheap passes, pricey does not
    page.fill("input[name=evaluation_key]", "nothing-like-this")
    page.click("form.filters button[type=submit]")
    page.wait_for_selector("table#runs tbody:empty", state="attached")
    page.goto(served.base + "/ui/#/?model=pricey&tag=ui")
    page.wait_for_selector("table#runs tbody tr")
    assert page.locator("table#runs tbody tr").count() == 2

    page.click(f"a[href='#/run/{first['run_id']}']")
    page.wait_for_selector("table#task-results tbody tr")
    table = page.inner_text("table#task-results")
    assert "cheap" in table and "pricey" in table and "±" in table
    cheap = next(t for t in first["task_results"] if t["model"] == "cheap")
    row = page.locator(f"tr[data-uuid='{cheap['uuid']}']")
    assert "60 / 60" in row.inner_text()
    assert "1×" in row.inner_text() and "KeyError" not in row.inner_text()  # the failing sample's error, summarised
    log_link = row.locator("a", has_text="log").first.get_attribute("href")
    downloaded = httpx.get(served.base + log_link, cookies=_session(page))
    assert downloaded.status_code == 200 and downloaded.json()["run_id"] == first["run_id"]
    inspect = httpx.get(served.base + row.locator("a", has_text="Inspect").get_attribute("href"), cookies=_session(page))
    assert inspect.status_code == 200 and inspect.content[:2] == b"PK"  # an .eval is a zip archive
    # The benchmark: both models plotted against cost, with the best-value frontier.
    page.wait_for_selector("section.benchmark svg circle.model")
    assert page.locator("section.benchmark svg circle.model").count() == 2
    assert page.locator("section.benchmark polyline.frontier").get_attribute("points")
    assert "best value: cheap" in page.inner_text("section.benchmark")


def _session(page) -> dict[str, str]:  # noqa: ANN001
    return {c["name"]: c["value"] for c in page.context.cookies() if c["name"] == "evalfleet_session"}


def test_samples_filter_search_sort_page_and_one_sample_in_full(viewer, page):
    served, first, _second = viewer
    cheap = next(t for t in first["task_results"] if t["model"] == "cheap")
    sign_in(page, served)
    page.goto(served.base + f"/ui/#/samples/{cheap['uuid']}")
    page.wait_for_selector("table#samples tbody tr")
    assert page.locator("table#samples tbody tr").count() == 50
    assert "page 1 of 2 (60)" in page.inner_text(".pager")
    page.click("text=Next ›")
    page.wait_for_url(re.compile(r"page=2"))
    page.wait_for_selector("table#samples tbody tr[data-position='59']")
    assert page.locator("table#samples tbody tr").count() == 10
    page.select_option("select[name=outcome]", "error")
    page.click("form.filters button[type=submit]")
    page.wait_for_selector("table#samples tbody tr[data-position='7']")
    assert page.locator("table#samples tbody tr").count() == 1
    page.select_option("select[name=outcome]", "")
    page.fill("input[name=search]", "question 2")  # question 2, 20..29
    page.click("form.filters button[type=submit]")
    expect(page.locator("table#samples tbody tr")).to_have_count(11)
    page.fill("input[name=search]", "")
    page.select_option("select[name=sort]", "-score")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"sort=-score"))
    page.wait_for_selector("table#samples tbody tr")
    assert page.locator("table#samples tbody tr td:nth-child(4)").first.inner_text() == "correct"
    page.click("text=Next ›")
    page.wait_for_selector("table#samples tbody tr[data-position='7']")  # the failed sample sorts last
    assert page.locator("table#samples tbody tr td:nth-child(4)").last.inner_text() == "error"

    page.goto(served.base + f"/ui/#/sample/{cheap['uuid']}/3")
    page.wait_for_selector("pre#prompt")
    assert page.inner_text("pre#prompt") == "Q: question 3 (weight 3.0)"
    assert page.inner_text("pre#output") == "answer 3"
    assert "exact" in page.inner_text("table#scores") and "1.000" in page.inner_text("table#scores")
    page.goto(served.base + f"/ui/#/sample/{cheap['uuid']}/7")
    page.wait_for_selector("#sample-error")
    assert "ValueError" in page.inner_text("#sample-error")


def test_compare_two_models_and_the_trend_of_an_evaluation(viewer, page):
    served, first, _second = viewer
    sign_in(page, served)
    page.goto(served.base + f"/ui/#/run/{first['run_id']}")
    page.wait_for_selector("table#task-results tbody tr")
    for box in page.locator("table#task-results input[type=checkbox]").all():
        box.check()
    page.click("text=Compare selected")
    page.wait_for_selector("table#matrix tbody tr")
    assert page.locator("table#matrix tbody tr").count() == 50 and "Samples (60)" in page.inner_text("main")
    deltas = page.inner_text("table#deltas")
    assert "exact/accuracy" in deltas and "±" in deltas and "-1.000" in deltas
    page.select_option("select[name=which]", "first_right")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"which=first_right"))
    page.wait_for_selector("text=Samples (59)")
    assert "cheap" in page.inner_text("table#sides") and "$" in page.inner_text("table#sides")

    page.goto(served.base + "/ui/#/trends/viewer")
    page.wait_for_selector("svg.chart circle.point")
    # One point per run for each of the two task specifications in the score chart.
    assert page.locator("svg[aria-label='score over runs'] circle.point").count() == 4
    assert "runs\n2" in page.inner_text(".cards")


def test_pages_put_data_in_as_text_never_as_html(sandbox, cli, server, page):
    rows = [{"id": "<img src=x onerror=alert(1)>", "input": "<script>window.hacked=1</script>", "target": "t"}]
    (sandbox.root / "xss.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    (sandbox.root / "xss.yaml").write_text(
        "datasets: [{key: xss, path: xss.jsonl}]\nevaluation:\n  key: xss\n  task_specifications:\n"
        "    - {key: x, task_key: qa, model_key: mock$echo, dataset_key: xss}\n")
    report = cli("run", "-f", str(sandbox.root / "xss.yaml"), "--json", check=0).json()
    served = server()
    sign_in(page, served)
    page.goto(served.base + f"/ui/#/samples/{report['task_results'][0]['uuid']}")
    page.wait_for_selector("table#samples tbody tr")
    assert "<script>window.hacked=1</script>" in page.inner_text("table#samples")
    assert page.evaluate("window.hacked") is None
    assert page.locator("table#samples img").count() == 0
    assert len(ROWS) == 60


def test_tables_work_from_the_keyboard_and_every_control_has_a_label(viewer, page):
    served, first, second = viewer
    sign_in(page, served)
    for _ in range(40):  # Tab until the focus reaches the runs table's first link
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('table#runs') !== null"):
            break
    else:
        raise AssertionError("the runs table cannot be reached with the keyboard")
    assert page.evaluate("document.activeElement.tagName") == "A"
    page.keyboard.press("Enter")
    page.wait_for_selector("table#task-results tbody tr")
    assert page.title().startswith("Viewer ")
    unlabelled = page.evaluate("""[...document.querySelectorAll('input, select')].filter((control) =>
        !control.closest('label') && !control.getAttribute('aria-label') &&
        !(control.id && document.querySelector(`label[for="${control.id}"]`))).length""")
    assert unlabelled == 0


def test_cancel_from_the_page_and_no_cross_site_action_with_the_session(sandbox, server, page):
    served = server(env={"EVALFLEET_CONCURRENCY": "2"})
    run_file = {"datasets": [{"key": "slow", "rows": [{"id": f"s{i}", "input": f"q{i}", "target": "a"}
                                                      for i in range(400)]}],
                "models": [{"key": "slow", "provider": "mock", "name": "target", "latency_ms": 500}],
                "evaluation": {"key": "slow", "task_specifications": [
                    {"key": "s", "task_key": "qa", "model_key": "slow", "dataset_key": "slow"}]}}
    answer = served.post("/v2/gen-ai/evaluation_runs", json=run_file)
    assert answer.status_code == 200, answer.text
    created = answer.json()
    uuid = created["evaluation_run_uuids"][0]
    sign_in(page, served, "submit")
    session = _session(page)
    # The session cookie sent from another site, or with no sign of where it comes from: refused.
    for headers in ({"origin": "http://evil.example"}, {}):
        refused = httpx.post(served.base + f"/v2/gen-ai/evaluation_runs/{uuid}/cancel", cookies=session,
                             headers=headers)
        assert refused.status_code == 403 and "cross-site" in refused.json()["message"]
    page.goto(served.base + f"/ui/#/run/{created['run_id']}")
    page.click("#cancel")
    expect(page.locator("main .cards")).to_contain_text(re.compile("cancel"))
    status = served.get(f"/v2/gen-ai/evaluation_runs/{uuid}").json()["evaluation_run"]["status"]
    assert status in ("EVALUATION_RUN_CANCELLING", "EVALUATION_RUN_CANCELLED")
