"""Streaming metrics: each scorer's values fold into an accumulator one sample at a time, so
aggregation needs memory for the metrics, never for the samples."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class MeanAccumulator:
    """Mean and its standard error (sample standard deviation / sqrt(n)), as Inspect reports them."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.total_sq += value * value

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    @property
    def stderr(self) -> float:
        if self.count < 2:
            return math.nan
        variance = (self.total_sq - self.total * self.total / self.count) / (self.count - 1)
        return math.sqrt(max(variance, 0.0) / self.count)

    def metrics(self, names: tuple[str, ...]) -> dict[str, float]:
        values = {"accuracy": self.mean, "mean": self.mean, "stderr": self.stderr}
        return {name: values[name] for name in names}
