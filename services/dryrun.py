"""What a run would do, without doing it (`run --dry-run`): per task specification the samples
selected, how many the result store already holds (output and scores), the model calls left to
make, and an estimate of their cost from the model's pricing. Nothing is registered or submitted.

Tokens are estimated: input as a quarter of the prompt's characters, output as the model's
`max_tokens` when set, else the mean output of the cached samples, else OUTPUT_TOKENS_GUESS."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel

from services.resolver import ResolvedRunFile, ResolvedSpec
from shared.epochs import epoch_of
from shared.samples import chunks, iter_selected, with_epochs

OUTPUT_TOKENS_GUESS = 100
LOOKUP_BATCH = 200


class SpecPlan(BaseModel):
    key: str
    display_name: str
    model: str | None
    samples: int
    cached: int
    model_calls: int
    uploaded: bool
    estimated_input_tokens: int
    estimated_output_tokens: int
    estimated_cost_usd: float | None
    output_tokens_from: str


def _prompt_chars(prompt: Any) -> int:
    return len(prompt) if isinstance(prompt, str) else sum(len(m.content) for m in prompt)


def plan_spec(item: ResolvedSpec, cache_policy: str) -> SpecPlan:
    from shared.log import SampleRecord
    from workers.sample import cache_keys, cached_samples, execution_of

    spec = item.spec
    base = {"key": spec.key, "display_name": spec.display_name, "model": spec.model.key if spec.model else None,
            "samples": item.selection.total * spec.epochs}
    if item.uploaded_log is not None or spec.model is None:
        return SpecPlan(**base, cached=0, model_calls=0, uploaded=item.uploaded_log is not None,
                        estimated_input_tokens=0, estimated_output_tokens=0, estimated_cost_usd=None if spec.model is None
                        or spec.model.pricing is None else 0.0, output_tokens_from="-")
    execution = execution_of(spec, cache_policy, with_provider=False)
    cached = calls = input_chars = 0
    cached_output_tokens = []
    selected = with_epochs(iter_selected(spec.dataset, item.selection, needs_input=item.needs_input,
                                         needs_target=item.needs_target), spec.epochs)
    for chunk in chunks(selected, LOOKUP_BATCH):
        records = cached_samples(execution, chunk)
        for (position, sample), record in zip(chunk, records, strict=True):
            if isinstance(record, SampleRecord):
                cached += 1
                if record.usage is not None:
                    cached_output_tokens.append(record.usage.output_tokens)
                continue
            calls += 1
            try:
                input_chars += _prompt_chars(cache_keys(execution, sample, epoch_of(position, spec.epochs)[1])[0])
            except Exception:  # noqa: BLE001 - a prompt the run would record as the sample's error
                pass
    if spec.model.generation.max_tokens:
        per_output, source = spec.model.generation.max_tokens, "max_tokens (an upper bound)"
    elif cached_output_tokens:
        per_output = round(sum(cached_output_tokens) / len(cached_output_tokens))
        source = f"the mean of {len(cached_output_tokens)} cached outputs"
    else:
        per_output, source = OUTPUT_TOKENS_GUESS, f"a guess of {OUTPUT_TOKENS_GUESS} per call"
    input_tokens, output_tokens = math.ceil(input_chars / 4), per_output * calls
    pricing = spec.model.pricing
    cost = None if pricing is None else pricing.cost_usd(input_tokens, output_tokens)
    return SpecPlan(**base, cached=cached, model_calls=calls, uploaded=False, estimated_input_tokens=input_tokens,
                    estimated_output_tokens=output_tokens, estimated_cost_usd=cost, output_tokens_from=source)


def plan_run(resolved: ResolvedRunFile) -> list[SpecPlan]:
    return [plan_spec(item, resolved.evaluation.cache_policy) for item in resolved.specs]
