"""User scorers for tests (`entrypoint: python_scorers:<name>`), allowed only through
EVALFLEET_ALLOWED_MODULES=python_scorers."""

from __future__ import annotations

import asyncio

from shared.log import Score


def length_at_most(output, sample, options):
    """A bool: the output is at most `options["max"]` characters."""
    return len(output) <= options.get("max", 10)


async def echoes_target(output, sample, options):
    """Async, a Score: the output repeats the sample's target."""
    await asyncio.sleep(0)
    hit = bool(sample.target) and sample.target in output
    return Score(value=float(hit), answer=output, explanation=f"looked for {sample.target!r}")


def half(output, sample, options):
    return 0.5


def not_a_score(output, sample, options):
    return "yes"


NOT_CALLABLE = 3
