"""Run by the Inspect venv's python (inspect-ai only): writes Inspect logs with Inspect's own
`write_eval_log`, from EvalLog objects built here, as an Inspect run would leave them (a `.eval`
with zstd members, and a `.json`). Prints one JSON document: each log's path and what the test
should find in it once imported.

    python write_inspect_logs.py OUTPUT_DIR
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

from inspect_ai.log import (
    EvalConfig,
    EvalDataset,
    EvalError,
    EvalLog,
    EvalMetric,
    EvalPlan,
    EvalPlanStep,
    EvalResults,
    EvalSample,
    EvalScore,
    EvalSpec,
    EvalStats,
    write_eval_log,
)
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageUser,
    GenerateConfig,
    ModelOutput,
    ModelUsage,
)
from inspect_ai.scorer import Score, value_to_float

MODEL = "openai/gpt-4o-mini"
CREATED = "2025-03-04T05:06:07+00:00"
# (id, input, target, output, scores {scorer: value}, metadata, error message)
SAMPLES = [
    (1, "What is 1+1?", "2", "2", {"match": "C", "includes": "C", "judge": 0.75}, {"topic": "arithmetic"}, None),
    ("chat", [("system", "Answer in one word."), ("user", "Is water wet?")], ["yes", "y"], "yes",
     {"match": "P", "includes": "I", "judge": 0.5}, {}, None),
    (3, "Capital of France?", "Paris", "Lyon", {"match": "I", "includes": "I", "judge": 0.0},
     {"id": "kept-as-inspect_id", "topic": "geography"}, None),
    (4, "A question the model never answered", "x", "", {}, {}, "model timed out"),
]
SCORERS = ("match", "includes", "judge")


def sample(sample_id, text, target, completion, scores, metadata, error) -> EvalSample:  # noqa: ANN001
    messages = ([ChatMessageUser(content=text)] if isinstance(text, str) else
                [ChatMessageSystem(content=c) if r == "system" else ChatMessageUser(content=c) for r, c in text])
    reply = ChatMessageAssistant(content=completion, model=MODEL, source="generate")
    usage = ModelUsage(input_tokens=7, output_tokens=1, total_tokens=8)
    output = (ModelOutput(model=MODEL, choices=[ChatCompletionChoice(message=reply, stop_reason="stop")],
                          completion=completion, usage=usage) if error is None else ModelOutput(model=MODEL))
    return EvalSample(
        id=sample_id, epoch=1, input=text if isinstance(text, str) else messages, target=target,
        messages=[*messages, reply] if error is None else messages, output=output,
        scores={name: Score(value=value, answer=completion, explanation=f"{name} on {completion!r}")
                for name, value in scores.items()} or None,
        metadata=metadata, model_usage={MODEL: usage} if error is None else {},
        started_at="2025-03-04T05:06:07.100000+00:00", completed_at="2025-03-04T05:06:08.200000+00:00",
        total_time=1.1,
        error=EvalError(message=error, traceback=f"Traceback (most recent call last):\nTimeoutError: {error}",
                        traceback_ansi="") if error else None,
    )


def metrics(name: str) -> dict[str, EvalMetric]:
    """Inspect's accuracy and stderr over the samples that have this score."""
    values = [value_to_float()(s[4][name]) for s in SAMPLES if name in s[4]]
    stderr = statistics.stdev(values) / math.sqrt(len(values))
    return {"accuracy": EvalMetric(name="accuracy", value=statistics.fmean(values)),
            "stderr": EvalMetric(name="stderr", value=stderr)}


def log(task: str, generate_config: GenerateConfig, version: int = 2) -> EvalLog:
    samples = [sample(*s) for s in SAMPLES]
    return EvalLog(
        version=version, status="success",
        eval=EvalSpec(eval_id=f"{task}-eval", run_id=f"{task}-run", created=CREATED, task=task,
                      task_id=f"{task}-id", dataset=EvalDataset(name="quiz", samples=len(samples),
                                                               sample_ids=[s.id for s in samples]),
                      model=MODEL, model_generate_config=generate_config,
                      config=EvalConfig(epochs=1, fail_on_error=0.5)),
        plan=EvalPlan(steps=[EvalPlanStep(solver="generate")]),
        results=EvalResults(total_samples=len(samples), completed_samples=len(samples) - 1,
                            scores=[EvalScore(name=n, scorer=n, metrics=metrics(n)) for n in SCORERS]),
        stats=EvalStats(started_at=CREATED, completed_at="2025-03-04T05:06:09+00:00",
                        model_usage={MODEL: ModelUsage(input_tokens=21, output_tokens=3, total_tokens=24)}),
        samples=samples,
    )


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    written = {
        # A temperature makes the imported model an entity of the run file; none, `openai$<name>`.
        "eval": out / "2025-03-04T05-06-07-00-00_quiz-eval_A1.eval",
        "json": out / "2025-03-04T05-06-07-00-00_quiz-json_A2.json",
        "version_99": out / "2025-03-04T05-06-07-00-00_quiz-v99_A3.json",
    }
    write_eval_log(log("quiz_eval", GenerateConfig(temperature=0.0)), str(written["eval"]))
    write_eval_log(log("quiz_json", GenerateConfig()), str(written["json"]), format="json")
    write_eval_log(log("quiz_v99", GenerateConfig(), version=99), str(written["version_99"]), format="json")
    expected = {
        "scorers": list(SCORERS),
        "samples": [{"id": str(s[0]), "target": s[2], "output": s[3] if s[6] is None else None,
                     "scores": {name: value_to_float()(value) for name, value in s[4].items()}, "error": s[6],
                     "metadata": s[5]} for s in SAMPLES],
        "metrics": {name: {k: m.value for k, m in metrics(name).items()} for name in SCORERS},
    }
    print(json.dumps({"paths": {k: str(v) for k, v in written.items()}, "expected": expected}))


if __name__ == "__main__":
    main()
