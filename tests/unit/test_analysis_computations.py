"""The computations of results analysis: pass rates, best overall and best value (ties and the
tolerance), trend thresholds, costs with and without pricing, percentiles and the frontier."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.analysis.benchmark import ModelResult, comparison, percentile
from services.analysis.charts import frontier
from services.analysis.trainloop import MetricFold, passes
from services.analysis.trends import classify
from shared.log import SampleRecord, Score


def model(key: str, score: float | None, cost: float | None, tokens: int = 1000) -> ModelResult:
    view = SimpleNamespace(total=100, errors=0, uuid=f"u-{key}", spec=SimpleNamespace(key=key))
    return ModelResult(key=key, view=view, metrics={}, overall_score=score, total_cost=cost, total_tokens=tokens,
                       input_tokens=tokens, output_tokens=0, latencies_s=[0.5, 1.0])


def test_a_pass_is_a_score_that_reaches_one():
    assert passes(1.0) and passes(1.5) and not passes(0.5) and not passes(None)


def test_pass_rates_count_the_scored_samples_only():
    from datetime import UTC, datetime

    fold = MetricFold("includes")
    moment = datetime.now(UTC)
    for value in (1.0, 0.0, 1.0, None):
        sample = SampleRecord(id="x", position=0, input="i", target="t", scores={"includes": Score(value=value)},
                              started_at=moment, completed_at=moment)
        fold.add(sample, "none")
    assert (fold.passed, fold.total, fold.score) == (2, 3, pytest.approx(2 / 3))


def test_best_value_is_the_most_score_per_dollar_within_the_tolerance_of_the_best():
    models = [model("big", 0.90, 4.50), model("mini", 0.87, 0.30), model("tiny", 0.70, 0.01)]
    result = comparison(models, tolerance=0.05)
    assert (result["best_overall"], result["best_value"]) == ("big", "mini")
    assert result["cost_savings"] == pytest.approx(1 - 0.30 / 4.50)
    # With no tolerance only the best itself is "as good"; with a wide one the cheapest wins.
    assert comparison(models, tolerance=0.0)["best_value"] == "big"
    assert comparison(models, tolerance=0.25)["best_value"] == "tiny"


def test_a_tie_on_score_goes_to_the_cheaper_model_and_unpriced_models_are_no_value():
    models = [model("dear", 0.8, 2.0), model("cheap", 0.8, 1.0), model("unpriced", 0.8, None)]
    assert comparison(models)["best_overall"] == "cheap"
    only_unpriced = comparison([model("a", 0.9, None), model("b", 0.8, None)])
    assert (only_unpriced["best_overall"], only_unpriced["best_value"], only_unpriced["cost_savings"]) == ("a", None, None)


def test_costs_are_null_without_pricing_never_zero():
    document = model("free-of-pricing", 0.5, None).document()
    assert document["cost_analysis"] == {"total_cost": None, "cost_per_token": None, "cost_per_score": None}
    priced = model("priced", 0.85, 4.50, tokens=15_000).document()["cost_analysis"]
    assert priced["cost_per_token"] == pytest.approx(4.50 / 15_000)
    assert priced["cost_per_score"] == pytest.approx(4.50 / 85)  # TrainLoop's example: 0.053


@pytest.mark.parametrize(("change", "trend"), [(0.05, "improving"), (0.011, "improving"), (0.01, "stable"),
                                               (0.0, "stable"), (-0.01, "stable"), (-0.02, "declining"),
                                               (None, "stable")])
def test_trends_move_beyond_the_threshold(change, trend):
    assert classify(change) == trend


def test_nearest_rank_percentiles():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile([], 50)) == (50.0, 95.0, None)


def test_the_frontier_keeps_models_no_cheaper_model_beats():
    points = [("a", 1.0, 0.5), ("b", 2.0, 0.6), ("c", 3.0, 0.55), ("d", 0.5, 0.4)]
    assert [p[0] for p in frontier(points)] == ["d", "a", "b"]
