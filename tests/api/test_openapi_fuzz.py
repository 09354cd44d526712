"""The committed OpenAPI document is the application's, and a property-based fuzz run over it
(schemathesis, against a real server) finds no 500 and no response outside its schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.services
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_committed_openapi_document_is_the_generated_one():
    from services.api.app import create_app

    assert json.loads(OPENAPI.read_text()) == create_app(no_auth=False).openapi(), (
        "docs/openapi.json is stale: regenerate it (see the README's results API section)")


def test_a_fuzz_run_over_the_openapi_document_finds_no_server_error(sandbox, server):
    api = server()
    rows = [{"id": f"f{i}", "input": f"q{i}", "target": f"a{i}"} for i in range(12)]
    document = {"datasets": [{"key": "d", "rows": rows}],
                "evaluation": {"key": "fuzzed", "display_name": "Fuzzed", "task_specifications": [
                    {"key": "qa", "task_key": "qa", "model_key": "mock$target", "dataset_key": "d"}]}}
    assert api.post("/v2/gen-ai/evaluation_runs", content=yaml.safe_dump(document)).status_code == 200
    schemathesis = Path(sys.executable).parent / "schemathesis"
    done = subprocess.run(
        [str(schemathesis), "run", str(OPENAPI), "--url", api.base, "--header",
         f"Authorization: Bearer {api.tokens['submit']}",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
         "--max-examples", "25", "--workers", "1", "--phases", "examples,coverage,fuzzing", "--seed", "20261129"],
        capture_output=True, text=True, timeout=240, cwd=sandbox.root)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
