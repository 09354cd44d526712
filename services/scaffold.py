"""`evalfleet init`: a run file that explains itself and a small dataset, which run offline as
they are (a mock model), to edit into a real evaluation."""

from __future__ import annotations

import json
from pathlib import Path

RUN_FILE = """\
# An evalfleet run file. Run it with:  evalfleet run -f {run_file}
# Validate without running:            evalfleet run -f {run_file} --dry-run
# Every field is documented in the README ("The run file"); `evalfleet tasks` lists built-in tasks.

datasets:
  - key: arithmetic
    path: data/arithmetic.jsonl   # relative to this file; .jsonl, .json (a list) or .csv; or s3://...
    # id_field: id                # the defaults map these columns; other columns become metadata
    # input_field: input
    # target_field: target

models:
  - key: offline
    provider: mock                # mock: no network. `echo` answers with the prompt, `target` with the target
    name: target
    # For a real model:
    # provider: openai
    # name: gpt-4.1-nano
    # api_key_env: OPENAI_API_KEY  # the NAME of the variable that holds the key
    # pricing: {{input_per_million: 0.1, output_per_million: 0.4}}

evaluation:
  key: arithmetic-eval
  display_name: Arithmetic
  description: Small sums, answered by a mock model.
  # num_samples: 10               # per dataset; absent: every sample
  # subsampling: random           # head (the first N) or random (seeded: the same N every time)
  cache_policy: reuse             # reuse | update | no-cache
  star_metric:                    # the metric each task result passes or fails by
    metric: includes/accuracy
    success_threshold: 0.8
  task_specifications:
    - key: sums
      task_key: qa
      model_key: offline          # or several: model_keys: [offline, mock$echo] (a benchmark)
      dataset_key: arithmetic
      task_config:
        prompt_template: "What is {{input}}? Answer with the number only."
        scorers: [includes, numeric]
"""

ROWS = [{"id": f"sum-{a}-{b}", "input": f"{a} + {b}", "target": str(a + b)} for a, b in
        [(1, 1), (2, 3), (7, 5), (12, 30), (8, 9), (100, 23), (4, 4), (15, 27), (6, 7), (50, 50)]]


def write_scaffold(directory: Path, force: bool = False) -> list[Path]:
    """Write `evalfleet.yaml` and `data/arithmetic.jsonl` into `directory`; returns their paths."""
    run_file = directory / "evalfleet.yaml"
    dataset = directory / "data" / "arithmetic.jsonl"
    for path in (run_file, dataset):
        if path.exists() and not force:
            raise FileExistsError(str(path))
    dataset.parent.mkdir(parents=True, exist_ok=True)
    dataset.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    run_file.write_text(RUN_FILE.format(run_file=run_file), encoding="utf-8")
    return [run_file, dataset]
