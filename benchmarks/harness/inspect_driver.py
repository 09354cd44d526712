"""The Inspect AI side of the comparison, run by the harness with the interpreter of its own
virtual environment (benchmarks/.work/inspect-venv), never with evalfleet's: standard library and
inspect-ai only.

    python inspect_driver.py DATASET.jsonl LOG_DIR

Same dataset, same prompt (the sample's input, sent as is by `generate()`), an includes-style
scorer (`includes()`), model `mockllm/model`, display `none`. Offline, Inspect's token counting
(tiktoken's o200k_base) tries to download its encoding; it is replaced here by a character-based
estimate (4 characters a token), which does not change the work being compared. Prints one JSON
document on the last line of stdout."""

from __future__ import annotations

import json
import sys
import time


def _estimate(text: str) -> int:
    return max(1, len(text) // 4)


def _peak_rss_kb() -> int:
    """VmHWM: the peak of this process image (ru_maxrss would include the forking parent's)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def patch_token_counting() -> None:
    import inspect_ai.model._model as model_module
    import inspect_ai.model._tokens as tokens_module

    async def count_text_tokens(self, text: str) -> int:  # noqa: ANN001
        return _estimate(text)

    tokens_module.count_text_tokens = _estimate
    model_module.count_text_tokens = _estimate
    model_module.ModelAPI.count_text_tokens = count_text_tokens


def main() -> None:
    dataset_path, log_dir = sys.argv[1], sys.argv[2]
    patch_token_counting()
    from importlib.metadata import version

    from inspect_ai import Task, eval
    from inspect_ai.dataset import json_dataset
    from inspect_ai.scorer import includes
    from inspect_ai.solver import generate

    started = time.perf_counter()
    task = Task(dataset=json_dataset(dataset_path), solver=[generate()], scorer=includes(), name="bench_qa")
    logs = eval(task, model="mockllm/model", display="none", log_dir=log_dir)
    wall = time.perf_counter() - started
    log = logs[0]
    samples = log.results.total_samples if log.results else None
    completed = log.results.completed_samples if log.results else None
    print()
    print(json.dumps({
        "wall_s": wall,
        "status": log.status,
        "error": str(log.error.message) if log.error else None,
        "samples": samples,
        "completed_samples": completed,
        "log_started_at": log.stats.started_at,
        "log_completed_at": log.stats.completed_at,
        "log_location": log.location,
        "inspect_ai": version("inspect-ai"),
        "peak_rss_kb": _peak_rss_kb(),
    }))


if __name__ == "__main__":
    main()
