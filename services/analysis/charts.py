"""Charts (matplotlib, rendered without a display): a benchmark's score against cost per model
with the best-value frontier, and an evaluation's scores over time per task specification."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt  # noqa: E402

FIGURE_SIZE = (8, 5)
DPI = 120


def frontier(points: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """The models no other beats on both counts (cheaper and at least as good), by cost."""
    kept = []
    for name, cost, score in sorted(points, key=lambda p: (p[1], -p[2])):
        if not kept or score > kept[-1][2]:
            kept.append((name, cost, score))
    return kept


def benchmark_chart(document: dict[str, Any], path: str | Path) -> Path:
    """Score (y) against total cost (x) per model; unpriced models are listed, not placed."""
    points, unpriced = [], []
    for name, result in document["results"].items():
        cost, score = result["cost_analysis"]["total_cost"], result["overall_score"]
        if score is None:
            continue
        (points if cost is not None else unpriced).append((name, cost, score))
    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    for name, cost, score in points:
        axes.scatter(cost, score, s=60, zorder=3)
        axes.annotate(name, (cost, score), textcoords="offset points", xytext=(6, 6), fontsize=9)
    line = frontier(points)
    if len(line) > 1:
        axes.plot([p[1] for p in line], [p[2] for p in line], linestyle="--", color="grey", label="best-value frontier")
        axes.legend(loc="lower right")
    best = document["comparison"]
    axes.set_title(f"{document.get('task', 'benchmark')}: best overall {best['best_overall']}, "
                   f"best value {best['best_value']}", fontsize=10)
    axes.set_xlabel("total cost (USD)")
    axes.set_ylabel("overall score")
    axes.grid(True, alpha=0.3)
    if unpriced:
        axes.text(0.01, 0.01, "no pricing: " + ", ".join(f"{n} ({s:.3f})" for n, _, s in unpriced),
                  transform=axes.transAxes, fontsize=8)
    return _save(figure, path)


def summary_chart(document: dict[str, Any], path: str | Path) -> Path:
    """Each task specification's score over the days of the window."""
    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    for key, series in document["task_specifications"].items():
        points = [(date.fromisoformat(p["date"]), p["score"]) for p in series["scores"] if p["score"] is not None]
        if points:
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
    axes.set_title(f"{document['evaluation']}: {document['trending']['trend']} "
                   f"({document['trending']['score_change'] or 0:+.3f})", fontsize=10)
    axes.set_xlabel("date")
    axes.set_ylabel("score")
    axes.grid(True, alpha=0.3)
    if document["task_specifications"]:
        axes.legend(loc="best", fontsize=8)
    figure.autofmt_xdate()
    return _save(figure, path)


def _save(figure, path: str | Path) -> Path:  # noqa: ANN001
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(target, dpi=DPI, format=target.suffix.lstrip(".") or "png")
    plt.close(figure)
    return target
