"""Metrics (shared/metrics.py) and the error budget of a task result (services/aggregator.py)."""

from __future__ import annotations

import math
import statistics

import pytest

from services.aggregator import errors_exceed_budget
from shared.metrics import MeanAccumulator


def accumulate(values):
    acc = MeanAccumulator()
    for value in values:
        acc.add(value)
    return acc


@pytest.mark.parametrize("values", [[1, 0, 1, 1], [0.0, 0.0, 1.0], [1] * 19 + [0], [0.25, 0.5, 0.75, 1.0, 0.1]])
def test_accuracy_and_mean_are_the_mean_of_the_scores(values):
    metrics = accumulate(values).metrics(("accuracy", "mean"))
    assert metrics["accuracy"] == pytest.approx(statistics.fmean(values))
    assert metrics["mean"] == pytest.approx(statistics.fmean(values))


@pytest.mark.parametrize("values", [[1, 0, 1, 1], [0.0, 0.0, 1.0], [1] * 19 + [0], [0.25, 0.5, 0.75, 1.0, 0.1]])
def test_stderr_is_the_sample_standard_deviation_over_root_n(values):
    expected = statistics.stdev(values) / math.sqrt(len(values))
    assert accumulate(values).metrics(("stderr",))["stderr"] == pytest.approx(expected)


def test_stderr_of_identical_scores_is_zero():
    assert accumulate([1.0] * 50).stderr == 0.0
    assert accumulate([0.1] * 7).stderr == pytest.approx(0.0, abs=1e-6)


def test_stderr_of_a_single_score_is_undefined():
    acc = accumulate([1.0])
    assert acc.mean == 1.0
    assert math.isnan(acc.stderr)


def test_no_scores_have_no_mean():
    acc = MeanAccumulator()
    assert math.isnan(acc.mean) and math.isnan(acc.stderr)


def test_metrics_reports_only_the_names_asked_for():
    assert list(accumulate([1, 0]).metrics(("accuracy", "stderr"))) == ["accuracy", "stderr"]
    assert list(accumulate([1, 0]).metrics(("mean", "stderr"))) == ["mean", "stderr"]


@pytest.mark.parametrize(
    ("errors", "total", "fail_on_error", "fails"),
    [(0, 10, True, False), (1, 10, True, True), (10, 10, False, False), (1, 10, 0.1, False), (2, 10, 0.1, True),
     (0, 0, 0.1, False), (2, 10, 3, False), (3, 10, 3, True), (1, 10, 0, True), (0, 10, 0, False),
     (1, 10, 1.0, True)],
)
def test_fail_on_error_rules(errors, total, fail_on_error, fails):
    assert errors_exceed_budget(errors, total, fail_on_error) is fails
