"""The work: generated question-answering datasets and the run files over them.

Every row is `{"id", "input", "target"}`, and the input contains the target, so the `includes`
scorer is correct both for `mock$target` (answers the target) and for the fake OpenAI server
(echoes the prompt). Inspect AI reads the same files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from benchmarks.harness.system import WORK


def dataset(count: int, prefix: str = "s") -> Path:
    """`.work/data/<prefix>-<count>.jsonl`, written once and reused."""
    path = WORK / "data" / f"{prefix}-{count}.jsonl"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(json.dumps({"id": f"{prefix}{i:07d}", "input": f"Repeat exactly: answer-{prefix}-{i}",
                                     "target": f"answer-{prefix}-{i}"}) + "\n")
    tmp.replace(path)
    return path


def run_file(directory: Path, name: str, data: Path, *, model_key: str = "mock$target",
             models: list[dict[str, Any]] | None = None, cache_policy: str = "no-cache") -> Path:
    """One `qa` task specification (scorer `includes`) over `data`."""
    document: dict[str, Any] = {"datasets": [{"key": f"{name}-data", "path": str(data)}]}
    if models:
        document["models"] = models
    document["evaluation"] = {
        "key": name,
        "display_name": f"Benchmark {name}",
        "cache_policy": cache_policy,
        "task_specifications": [
            {"key": f"{name}-qa", "task_key": "qa", "model_key": model_key, "dataset_key": f"{name}-data",
             "task_config": {"scorers": ["includes"]}},
        ],
    }
    path = directory / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def openai_model(base_url: str, max_connections: int, key: str = "fake-openai") -> dict[str, Any]:
    return {"key": key, "provider": "openai", "name": "fake-model", "base_url": base_url,
            "api_key_env": "EVALFLEET_BENCH_OPENAI_KEY", "max_connections": max_connections, "timeout": 60,
            "max_attempts": 3}
