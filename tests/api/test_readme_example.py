"""The README's results-API example, run as printed (in a copy of the examples, so nothing lands
in the repository): every curl answers 200 with the documented shapes."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.services
REPO = Path(__file__).resolve().parents[2]


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- readme-api-example -->\n```sh\n(.*?)```", text, re.S)
    assert match, "the README lost its results-API example"
    return match.group(1)


def test_the_readme_api_example_works_as_printed(tmp_path, sandbox):
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.fail("port 8000, which the README's example uses, is taken on this machine")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    script = "set -e\n" + readme_block().replace("curl -s ", "curl -sf ")
    script = script.replace("curl -sf http://127.0.0.1:8000/v2/gen-ai/evaluation_runs/$UUID -H",
                            "curl -sf -o run.json http://127.0.0.1:8000/v2/gen-ai/evaluation_runs/$UUID -H")
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=sandbox.env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = json.loads((tmp_path / "run.json").read_text())["evaluation_run"]
    assert run["run_name"] == "capitals-qa" and run["status"] in ("EVALUATION_RUN_SUCCESSFUL",
                                                                   "EVALUATION_RUN_RUNNING_DATASET")
    assert json.loads((tmp_path / "capitals-qa.json").read_text())["sample_count"] == 20
