"""Streaming metrics: each scorer's values fold into an accumulator one sample at a time, so
aggregation needs memory for the metrics, never for the samples."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class MeanAccumulator:
    """Mean and its standard error (sample standard deviation / sqrt(n)), as Inspect reports them."""

    count: int = 0
    running_mean: float = 0.0
    squared_deviations: float = 0.0  # Welford's M2: stable where a sum of squares cancels

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.running_mean
        self.running_mean += delta / self.count
        self.squared_deviations += delta * (value - self.running_mean)

    @property
    def mean(self) -> float:
        return self.running_mean if self.count else math.nan

    @property
    def stderr(self) -> float:
        if self.count < 2:
            return math.nan
        return math.sqrt(self.squared_deviations / (self.count - 1) / self.count)

    def metrics(self, names: tuple[str, ...]) -> dict[str, float]:
        values = {"accuracy": self.mean, "mean": self.mean, "stderr": self.stderr}
        return {name: values[name] for name in names}
