"""Models for the `python` provider in tests: `provider: python, name: python_models:<function>`.
Importable because pytest puts tests/ on sys.path (rootdir conftest, no __init__.py)."""

from __future__ import annotations


def answer_target(sample) -> str:  # noqa: ANN001 - a shared.samples.Sample
    """Always right: answers with the sample's target."""
    return f"The answer is {sample.target}."


def always_fail(sample) -> str:  # noqa: ANN001
    raise RuntimeError(f"model is down (sample {sample.id})")


def fail_most(sample) -> str:  # noqa: ANN001
    """Fails every sample whose id does not end in 0."""
    if not sample.id.endswith("0"):
        raise RuntimeError(f"model is down (sample {sample.id})")
    return sample.target or ""


def fail_on_marker(sample) -> str:  # noqa: ANN001
    """Fails samples whose input contains "fail", unless EVALFLEET_MODEL_FAILS=never (a retry once
    the cause is fixed)."""
    import os

    if "fail" in str(sample.input) and os.environ.get("EVALFLEET_MODEL_FAILS") != "never":
        raise RuntimeError(f"model is down (sample {sample.id})")
    return sample.target or ""


def sleep_metadata_ms(sample) -> str:  # noqa: ANN001
    """Takes `metadata.ms` milliseconds, then answers with the target: known latencies."""
    import time

    time.sleep(int(sample.metadata["ms"]) / 1000)
    return sample.target or ""
