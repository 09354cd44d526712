"""Debian's Chromium, headless, for the viewer's tests and benchmark (Playwright drives it by
`executable_path`; no browser is ever downloaded). `.ci/run` installs it when missing."""

from __future__ import annotations

import shutil

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("Chromium is not installed: `apt-get install chromium` (.ci/run does it)")
    return found
