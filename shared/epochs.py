"""Epochs: every sample run N times, each epoch its own inference (the epoch is part of its cache
key), and each scorer's values over the epochs reduced to one score per sample, over which the
task's metrics are computed.

Work positions: a task result of S samples and N epochs has S x N units of work, the unit at
position `p` being epoch `p % N + 1` of the sample at place `p // N` in the selection. Messages,
records, recovery and paging all speak of work positions; with one epoch they are the sample
positions they always were.

Reducers (`epoch_reducer`): `mean` (default), `median`, `max`, `mode`, `at_least_<k>` (1 when at
least k epochs are correct, else 0) and `pass_at_<k>` (the unbiased estimator of the chance that
at least one of k epochs drawn from the n run is correct: 1 - C(n - c, k) / C(n, k), c correct).
An epoch is correct when its value is at least 1."""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Callable

from shared.log.models import Score

REDUCER_NAMES = ("mean", "median", "max", "mode", "at_least_<k>", "pass_at_<k>")
_K_REDUCER = re.compile(r"^(at_least|pass_at)_([1-9]\d*)$")


def epoch_of(position: int, epochs: int) -> tuple[int, int]:
    """(the sample's place in the selection, its epoch from 1) of a work position."""
    return position // epochs, position % epochs + 1


def work_position(place: int, epoch: int, epochs: int) -> int:
    return place * epochs + epoch - 1


def check_reducer(name: str, epochs: int) -> str:
    """The reducer's name, or ValueError saying why it is not one (k above the epochs included)."""
    if name in ("mean", "median", "max", "mode"):
        return name
    match = _K_REDUCER.match(name)
    if match is None:
        raise ValueError(f"unknown epoch reducer {name!r}; use one of {', '.join(REDUCER_NAMES)}")
    if int(match.group(2)) > epochs:
        raise ValueError(f"{name} needs at least {match.group(2)} epochs; epochs is {epochs}")
    return name


def _correct(value: float) -> bool:
    return value >= 1.0


def pass_at_k(n: int, correct: int, k: int) -> float:
    if n - correct < k:
        return 1.0
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def _mode(values: list[float]) -> float:
    counts = Counter(values)
    top = max(counts.values())
    return next(value for value in values if counts[value] == top)  # ties: the first seen


def reducer(name: str) -> Callable[[list[float]], float]:
    simple: dict[str, Callable[[list[float]], float]] = {
        "mean": statistics.fmean, "median": statistics.median, "max": max, "mode": _mode}
    if name in simple:
        return simple[name]
    kind, k = _K_REDUCER.match(name).groups()
    k = int(k)
    if kind == "at_least":
        return lambda values: float(sum(map(_correct, values)) >= k)
    return lambda values: pass_at_k(len(values), sum(map(_correct, values)), k)


def reduce_scores(name: str, epochs_scores: list[dict[str, Score]]) -> dict[str, Score]:
    """One score per scorer label over the epochs that scored it (epochs without a value are
    left out; a label no epoch scored has no value)."""
    reduce = reducer(name)
    labels = list(dict.fromkeys(label for scores in epochs_scores for label in scores))
    reduced = {}
    for label in labels:
        values = [scores[label].value for scores in epochs_scores
                  if label in scores and scores[label].value is not None]
        reduced[label] = Score(value=reduce(values) if values else None, answer=None,
                               explanation=f"{name} over {len(values)} of {len(epochs_scores)} epochs")
    return reduced
