"""Epoch reducers against hand-computed values, pass_at_k against counting every draw of k epochs,
reducer names checked against the epochs, and work positions."""

from __future__ import annotations

import itertools

import pytest

from shared.epochs import check_reducer, epoch_of, pass_at_k, reduce_scores, reducer, work_position
from shared.log import Score
from shared.samples import Sample, with_epochs


@pytest.mark.parametrize(("name", "values", "expected"), [
    ("mean", [1.0, 0.0, 1.0, 1.0], 0.75),
    ("median", [0.0, 0.5, 1.0, 1.0], 0.75),
    ("median", [0.2, 0.9, 0.4], 0.4),
    ("max", [0.0, 0.5, 0.25], 0.5),
    ("mode", [0.5, 1.0, 0.5, 1.0, 0.0], 0.5),  # a tie: the first value seen
    ("mode", [0.0, 1.0, 1.0], 1.0),
    ("at_least_2", [1.0, 0.0, 1.0], 1.0),
    ("at_least_3", [1.0, 0.0, 1.0], 0.0),
    ("at_least_1", [0.5, 0.0], 0.0),  # partial credit is not correct
    ("pass_at_1", [1.0, 0.0, 0.0, 0.0], 0.25),
    ("pass_at_2", [1.0, 0.0, 0.0, 0.0], 0.5),
    ("pass_at_2", [1.0, 1.0, 0.0, 0.0], 1 - 1 / 6),
    ("pass_at_3", [0.0, 0.0, 0.0], 0.0),
    ("pass_at_1", [1.0, 1.0, 1.0], 1.0),
])
def test_reducers_match_hand_computed_values(name, values, expected):
    assert reducer(check_reducer(name, len(values)))(values) == pytest.approx(expected)


@pytest.mark.parametrize(("n", "k"), [(5, 1), (5, 2), (5, 3), (6, 4), (8, 8)])
def test_pass_at_k_is_the_chance_a_draw_of_k_epochs_holds_a_correct_one(n, k):
    for correct in range(n + 1):
        outcomes = [True] * correct + [False] * (n - correct)
        draws = list(itertools.combinations(range(n), k))
        expected = sum(any(outcomes[i] for i in draw) for draw in draws) / len(draws)
        assert pass_at_k(n, correct, k) == pytest.approx(expected)


def test_reducer_names_are_checked_against_the_epochs():
    assert check_reducer("pass_at_3", 3) == "pass_at_3"
    with pytest.raises(ValueError, match="needs at least 4 epochs"):
        check_reducer("at_least_4", 3)
    with pytest.raises(ValueError, match="unknown epoch reducer"):
        check_reducer("average", 3)
    with pytest.raises(ValueError, match="unknown epoch reducer"):
        check_reducer("pass_at_0", 3)


def test_scores_reduce_per_scorer_over_the_epochs_that_scored():
    epochs = [{"exact": Score(value=1.0), "judge": Score(value=None)},
              {"exact": Score(value=0.0), "judge": Score(value=0.5)},
              {"exact": Score(value=1.0)}]
    reduced = reduce_scores("mean", epochs)
    assert reduced["exact"].value == pytest.approx(2 / 3)
    assert reduced["judge"].value == 0.5 and reduced["judge"].explanation == "mean over 1 of 3 epochs"
    assert reduce_scores("max", [{"x": Score(value=None)}])["x"].value is None


def test_work_positions_enumerate_each_sample_once_per_epoch():
    samples = [(0, Sample(id="a")), (1, Sample(id="b"))]
    assert [(p, s.id) for p, s in with_epochs(samples, 3)] == [(0, "a"), (1, "a"), (2, "a"), (3, "b"), (4, "b"),
                                                                (5, "b")]
    assert list(with_epochs(samples, 1)) == samples
    assert [epoch_of(p, 3) for p in range(6)] == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    assert all(work_position(*epoch_of(p, 4), 4) == p for p in range(20))
