"""Cache identity: what makes two model outputs interchangeable, as a canonical hash.

An inference result is identified by everything that can change the model's output: the model
(provider, name, endpoint and generation settings; not its key, credentials, timeouts or price),
the task (its template or entrypoint and its config other than scorer config), the prompt
actually sent, the sample (id, input, target, metadata) and the epoch. Scores are identified by
the inference identity plus the scorer config.

Canonical form: JSON with sorted keys, no insignificant whitespace, UTF-8, then SHA-256 (hex).
`IDENTITY_VERSION` is part of every hash; bumping it invalidates every cached result."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shared.plan import ResolvedModel, ResolvedTask
from shared.samples import Prompt, Sample

IDENTITY_VERSION = 1


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_hash(value: Any) -> str:
    return hashlib.sha256(_canonical(value)).hexdigest()


def _canonical(value: Any) -> bytes:
    # `encode` is the C encoder; `iterencode` (chunks) would be the pure-Python one, several times
    # slower for the small documents of every sample.
    return _ENCODER.encode(value).encode("utf-8")


def model_identity(model: ResolvedModel) -> dict[str, Any]:
    return {
        "provider": model.provider,
        "name": model.name,
        "base_url": (model.base_url or "").rstrip("/"),
        "generation": model.generation.model_dump(exclude_none=True),
    }


def task_identity(task: ResolvedTask, scorer_fields: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the task without its scorer config, the scorer config)."""
    inference_part = {k: v for k, v in task.config.items() if k not in scorer_fields}
    scorer_part = {k: v for k, v in task.config.items() if k in scorer_fields}
    source = {"template": task.template, "entrypoint": task.entrypoint}
    return {**source, "config": inference_part}, {**source, "config": scorer_part}


class InferenceIdentity:
    """The model and task parts of inference keys, encoded once per task specification: a task's
    config (a prompt template of megabytes, say) is not re-encoded for every sample. Keys are
    the canonical hash of {"epoch", "model", "prompt", "sample", "task", "v"}, fed in key order."""

    def __init__(self, model: dict[str, Any], task: dict[str, Any]):
        self._model = _canonical(model)
        self._task = _canonical(task)

    def key(self, prompt: Prompt, sample: Sample, epoch: int = 0) -> str:
        hasher = hashlib.sha256(b'{"epoch":' + _canonical(epoch) + b',"model":' + self._model + b',"prompt":')
        # Text as it always was; a conversation as its list of {role, content} messages.
        hasher.update(_canonical(prompt if isinstance(prompt, str) else [message.model_dump() for message in prompt]))
        hasher.update(b',"sample":' + _canonical(sample.model_dump(mode="json")))
        hasher.update(b',"task":' + self._task + b',"v":' + _canonical(IDENTITY_VERSION) + b"}")
        return hasher.hexdigest()


def inference_key(model: dict[str, Any], task: dict[str, Any], prompt: Prompt, sample: Sample, epoch: int = 0) -> str:
    return InferenceIdentity(model, task).key(prompt, sample, epoch)


class ScoreIdentity:
    """The scorer part of score keys, encoded once per task specification. A key is the canonical
    hash of {"inference", "scorer", "v"}, fed in key order (an inference key is hex: it encodes
    as itself)."""

    def __init__(self, scorer: dict[str, Any]):
        self._suffix = b'","scorer":' + _canonical(scorer) + b',"v":' + _canonical(IDENTITY_VERSION) + b"}"

    def key(self, inference: str) -> str:
        return hashlib.sha256(b'{"inference":' + _canonical(inference)[:-1] + self._suffix).hexdigest()


def score_key(inference: str, scorer: dict[str, Any]) -> str:
    return ScoreIdentity(scorer).key(inference)
