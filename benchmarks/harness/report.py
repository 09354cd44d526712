"""benchmarks/results/latest.json (every figure) and latest.md (the table for the README)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.harness.system import RESULTS


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "samples/s":
        return f"{value:,.0f} samples/s" if value >= 100 else f"{value:,.1f} samples/s"
    if unit == "x":
        return f"{value:.1f}x"
    if unit == "% of ideal":
        return f"{value:.1f}% of ideal"
    if unit == "%":
        return f"{value:+.1f}%"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "ratio":
        return f"{value:.3f}"
    if unit in ("calls", "objects", "samples", "bytes"):
        return f"{value:,.0f} {unit}" if unit != "calls" else f"{value:,.0f}"
    if unit in ("s", "ms"):
        return f"{value:,.2f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{value} {unit}".strip()


def _other_load(runs: list[dict[str, Any]]) -> float | None:
    shares = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "other_share" in node and "machine_busy_cpu_s" in node:
                shares.append(node["other_share"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(runs)
    return statistics.median(shares) if shares else None


def _code_drift(versions: dict[str, Any]) -> list[str]:
    start, end = versions.get("evalfleet_git") or {}, versions.get("evalfleet_git_at_end") or {}
    if not end or (start.get("commit") == end.get("commit") and not end.get("tracked_changes")):
        return []
    return [f"- Note: the evalfleet working tree changed during the run (git {start.get('commit', '?')[:12]} at "
            f"the start, {end.get('commit', '?')[:12]} at the end"
            f"{', with uncommitted changes' if end.get('tracked_changes') else ''})."]


def write(document: dict[str, Any], results_dir: Path = RESULTS) -> tuple[Path, Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / "latest.json"
    json_path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    md_path = results_dir / "latest.md"
    md_path.write_text(markdown(document), encoding="utf-8")
    return json_path, md_path


def markdown(document: dict[str, Any]) -> str:
    machine, versions, harness = document["machine"], document["versions"], document["harness"]
    git = versions.get("evalfleet_git") or {}
    lines = [
        f"# evalfleet benchmarks ({'quick smoke check' if harness['quick'] else 'full run'})",
        "",
        f"- Date: {document['date']}; harness command: `{harness['command']}`; "
        f"{harness['repeats']} repeat(s) per figure, medians shown.",
        f"- Machine: {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['cpu_model']}, "
        f"Linux {machine['kernel']}.",
        f"- Versions: Python {versions['python']}, evalfleet {versions['evalfleet']} (git "
        f"{(git.get('commit') or '?')[:12]}{', with uncommitted changes' if git.get('tracked_changes') else ''}), "
        f"Celery {versions['celery']}, kombu {versions['kombu']}, Redis server {versions['redis_server']}, "
        f"redis-py {versions['redis_py']}, SQLAlchemy {versions['sqlalchemy']}, inspect-ai {versions['inspect_ai']}.",
        *_code_drift(versions),
        "",
        "| # | scenario | check | target | measured (median) | pass |",
        "|---|---|---|---|---|---|",
    ]
    inspect = document.get("inspect_reference")
    if inspect:
        figure = inspect.get("figures", {}).get("throughput_sps", {})
        measured = _fmt(figure.get("median"), "samples/s") if figure else "n/a"
        if inspect.get("error"):
            measured = "error: " + inspect["error"].splitlines()[0][:80]
        lines.append(f"| ref | Inspect AI {inspect['config'].get('inspect_ai', '')}, mockllm/model, "
                     f"{inspect['config']['samples']:,} samples | throughput | reference | {measured} | - |")
    for scenario in document["scenarios"]:
        title = scenario["title"]
        if scenario.get("error") and not any(c["median"] is not None for c in scenario["checks"]):
            message = scenario["error"].splitlines()[0][:120].replace("|", "/")
            lines.append(f"| {scenario['id']} | {title} | - | {scenario['targets']} | error: {message} | **ERROR** |")
            continue
        for check in scenario["checks"]:
            verdict = {True: "pass", False: "**FAIL**", None: "n/a"}[check["passed"]]
            measured = _fmt(check["median"], check["unit"])
            if check.get("note"):
                measured += f" ({check['note']})"
            lines.append(f"| {scenario['id']} | {title} | {check['name']} | {check['target']} | "
                         f"{measured.replace('|', '/')} | {verdict} |")
        if scenario.get("error"):
            lines.append(f"| {scenario['id']} | {title} | - | - | error: "
                         f"{scenario['error'].splitlines()[0][:120]} | **ERROR** |")
    if document.get("merged_runs"):
        lines += ["", "This table merges harness runs (`--merge`): " + "; ".join(
            f"{run['date']} `{run['command']}`" for run in document["merged_runs"]) + "."]
    lines += ["", "Per scenario: when it was measured, the evalfleet commit on disk when it started its processes, "
              "and the load from other programs during its measurements (median share of the machine's CPU, "
              "from /proc; high values mean the figures are pessimistic):", ""]
    for scenario in ([inspect] if inspect else []) + document["scenarios"]:
        share = _other_load(scenario.get("runs", []))
        shown = "n/a" if share is None else f"{share:.0%}"
        git = scenario.get("evalfleet_git") or {}
        if scenario["id"] == "ref":
            code = f"inspect-ai {scenario.get('config', {}).get('inspect_ai', '?')}"
        elif git.get("commit"):
            code = f"git {git['commit'][:12]}{' + uncommitted changes' if git.get('tracked_changes') else ''}"
        else:
            code = git.get("note") or "git n/a"
        lines.append(f"- {scenario['id']}: measured {scenario.get('measured_at') or document['date']}; {code}; "
                     f"other load {shown}; took {scenario.get('duration_s', 0):.0f} s")
    notes = [(s["id"], note) for s in document["scenarios"] for note in s.get("notes", [])]
    reference_load = _other_load(inspect.get("runs", [])) if inspect else None
    for scenario in document["scenarios"]:
        load = _other_load(scenario.get("runs", []))
        if scenario["id"] in ("1", "2") and reference_load is not None and load is not None \
                and reference_load - load > 0.15:
            notes.append((scenario["id"], f"the Inspect AI reference ran while other programs used {reference_load:.0%} "
                                          f"of the machine, this scenario at {load:.0%}: the ratio flatters evalfleet"))
    if notes:
        lines += ["", "Notes:", ""] + [f"- {key}: {note}" for key, note in notes]
    lines += ["", "Raw figures of every repeat: `benchmarks/results/latest.json`.", ""]
    return "\n".join(lines)
