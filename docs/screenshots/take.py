"""Screenshots of the viewer's pages for the README: `python docs/screenshots/take.py` (Chromium
installed). Runs an example evaluation twice in a scratch directory, serves it with --no-auth on
loopback and photographs each page into docs/screenshots/."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from tests.support.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402
from tests.viewer.conftest import write_viewer_run  # noqa: E402


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        env = {**os.environ, "EVALFLEET_HOME": str(root / "home"), "EVALFLEET_LOG_DIR": str(root / "logs")}
        path = write_viewer_run(root)
        reports = [json.loads(subprocess.run(["evalfleet", "run", "-f", str(path), "--json"], cwd=root, env=env,
                                             capture_output=True, text=True, check=False).stdout) for _ in range(2)]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = subprocess.Popen(["evalfleet", "serve", "--no-auth", "--port", str(port), "--log-level", "warning"],
                                  cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            run = reports[0]
            cheap, pricey = (next(t["uuid"] for t in run["task_results"] if t["model"] == m) for m in ("cheap", "pricey"))
            pages = {
                "runs": "/ui/#/",
                "run": f"/ui/#/run/{run['run_id']}",
                "samples": f"/ui/#/samples/{cheap}?sort=-score",
                "sample": f"/ui/#/sample/{cheap}/3",
                "compare": f"/ui/#/compare?uuid={cheap}&uuid={pricey}&which=first_right",
                "trends": "/ui/#/trends/viewer",
            }
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1366, "height": 820})
                for name, url in pages.items():
                    page.goto(base + url)
                    page.wait_for_selector("main h1")
                    page.wait_for_timeout(800)
                    page.screenshot(path=str(HERE / f"{name}.png"))
                    print(HERE / f"{name}.png")
                browser.close()
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
