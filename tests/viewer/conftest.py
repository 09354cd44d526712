"""Fixtures for the viewer: the API's server fixtures, runs to look at, and a real headless
Chromium (Debian's, driven by Playwright through `executable_path`; `.ci/run` installs it)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.api import conftest as api  # noqa: E402
from tests.support.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402

pytest_runtest_makereport = api.pytest_runtest_makereport
sandbox = api.sandbox
cli = api.cli
server = api.server

@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


ARTIFACTS = REPO_ROOT / "test-artifacts" / "viewer"


@pytest.fixture
def page(browser, request: pytest.FixtureRequest) -> Iterator[Any]:  # noqa: ANN001
    """A fresh browser context and tab; a screenshot of it is saved under test-artifacts/ when the
    test failed, with the page's console messages beside it."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    console: list[str] = []
    tab.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    tab.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    yield tab
    if api._failed(request):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
        tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        (ARTIFACTS / f"{name}.console.txt").write_text("\n".join(console), encoding="utf-8")
        print(f"screenshot: {ARTIFACTS / name}.png; console:", *console, sep="\n")
    context.close()


ROWS = [{"id": f"q{i:02d}", "input": f"question {i}", "target": f"answer {i}", "weight": i} for i in range(60)]
# One row whose weight is not a number: its prompt cannot be made, so it fails.
ROWS[7] = {**ROWS[7], "weight": "heavy"}
PRICED_MODELS = [
    {"key": "cheap", "provider": "mock", "name": "target", "pricing": {"input_per_million": 1.0, "output_per_million": 2.0}},
    {"key": "pricey", "provider": "mock", "name": "echo", "pricing": {"input_per_million": 50.0, "output_per_million": 90.0}},
]


def write_viewer_run(root: Path) -> Path:
    """Two models over one dataset (a benchmark), a star metric, one failing sample."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "viewer.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    document = {
        "datasets": [{"key": "viewer-data", "path": "data/viewer.jsonl"}],
        "models": PRICED_MODELS,
        "evaluation": {
            "key": "viewer", "display_name": "Viewer", "fail_on_error": False, "tags": ["ui"],
            "star_metric": {"metric": "exact/accuracy", "success_threshold": 0.5},
            "task_specifications": [{
                "key": "qa", "task_key": "qa", "model_keys": ["cheap", "pricey"], "dataset_key": "viewer-data",
                "task_config": {"prompt_template": "Q: {input} (weight {weight:.1f})", "scorers": ["exact", "includes"]},
            }],
        },
    }
    path = root / "viewer.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path
