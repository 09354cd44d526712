"""Results analysis commands: `results` (TrainLoop's results format), `benchmark` (models compared
by score, cost and latency), `summary` (trends across runs), `query` (SQL with DuckDB); `export
parquet` lives with the other exports."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click

from services.cli.common import BadInput, EvalfleetError, apply_settings, fail, say, settings_options
from services.cli.output import emit_table


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"${value:.4f}"


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@click.command()
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(["trainloop", "json"]), default="trainloop", show_default=True,
              help="trainloop: TrainLoop's results file; json: the same document on stdout only.")
@click.option("-o", "--output", type=click.Path(file_okay=False), default="data/results", show_default=True,
              help="Directory of the results file (evaluation_results_<timestamp>.json).")
@click.option("--details", type=click.Choice(["all", "failed", "none"]), default="all", show_default=True,
              help="Which samples each metric lists in `details`.")
@click.option("--json", "as_json", is_flag=True, help="Print the document (without details) on stdout.")
@settings_options
def results(run_id: str, fmt: str, output: str, details: str, as_json: bool, **options: str | None) -> None:
    """A run's results in TrainLoop's results format: one suite per task specification, one metric
    per scorer (passed, total, score = pass rate, per-sample details), overall scores and a summary."""
    from services.analysis.trainloop import results_document, write_results
    from services.results import resolve_run_id

    apply_settings(**options)
    try:
        run_id = resolve_run_id(run_id)
        if fmt == "json":
            write_results(run_id, sys.stdout, details)  # type: ignore[arg-type]
            return
        path, document = results_document(run_id, output, details)  # type: ignore[arg-type]
    except EvalfleetError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    say(f"wrote {path}")
    summary = document.get("summary")
    if summary:
        emit_table(["suite", "events", "overall score", "metrics"],
                   [[key, str(suite["events_processed"]), _score(suite["overall_score"]),
                     "; ".join(f"{name} {m['passed']}/{m['total']} = {_score(m['score'])}"
                               for name, m in suite["metrics"].items())] for key, suite in document["suites"].items()])
        say(f"overall score {_score(summary['overall_score'])}, pass rate {_score(summary['pass_rate'])} "
            f"({summary['total_passed']}/{summary['total_evaluated']})")
    else:
        say(f"the run failed: {document['error']['message']}")


def print_benchmark(document: dict) -> None:
    """The comparison table of one benchmark document."""
    rows = []
    for name, result in document["results"].items():
        cost, performance = result["cost_analysis"], result["performance"]
        p50 = performance["p50_response_time"]
        rows.append([name, _score(result["overall_score"]), _money(cost["total_cost"]),
                     "n/a" if cost["cost_per_score"] is None else f"${cost['cost_per_score']:.5f}",
                     "n/a" if p50 is None else f"{p50:.3f} s", str(performance["total_tokens"])])
    emit_table(["model", "score", "cost", "cost / point", "p50 latency", "tokens"], rows,
               title=f"benchmark {document['task']} ({document['total_samples']} samples)")
    best = document["comparison"]
    savings = best["cost_savings"]
    say(f"best overall: {best['best_overall']}; best value: {best['best_value'] or 'n/a (no pricing)'}"
        + (f" (saves {savings:.0%} of the cost)" if savings else ""))


@click.command()
@click.argument("run_id")
@click.option("-o", "--output", type=click.Path(file_okay=False), default="data/results", show_default=True,
              help="Directory of the benchmark file (benchmark_results_<timestamp>.json).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also draw score against cost (.png or .svg).")
@click.option("--json", "as_json", is_flag=True, help="Print the benchmark document(s) as JSON.")
@settings_options
def benchmark(run_id: str, output: str, plot: str | None, as_json: bool, **options: str | None) -> None:
    """Compare the models of a run that evaluated one task and dataset with several models: score,
    cost (from each model's pricing), latency, and the best overall and best value."""
    from services.analysis.benchmark import write_benchmarks
    from services.results import resolve_run_id

    apply_settings(**options)
    if plot and Path(plot).suffix.lower() not in (".png", ".svg"):
        raise BadInput(f"--plot {plot}: name a .png or .svg file")
    try:
        written = write_benchmarks(resolve_run_id(run_id), output)
    except EvalfleetError as exc:
        fail(exc)
    if plot:
        from services.analysis.charts import benchmark_chart

        for number, (_, document) in enumerate(written):
            target = plot if len(written) == 1 else str(Path(plot).with_stem(f"{Path(plot).stem}-{number + 1}"))
            say(f"drew {benchmark_chart(document, target)}")
    if as_json:
        click.echo(json.dumps([d for _, d in written] if len(written) > 1 else written[0][1], indent=2))
        return
    for path, document in written:
        print_benchmark(document)
        say(f"wrote {path}")


@click.command()
@click.option("--evaluation", help="The evaluation key (default: every evaluation with runs).")
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 3650), help="The window.")
@click.option("-o", "--output", type=click.Path(file_okay=False),
              help="Also write <output>/evaluation_summary.json (one evaluation) or <output>/<key>/... (several).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Draw scores over time (.png or .svg; one evaluation).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary document(s) as JSON.")
@settings_options
def summary(evaluation: str | None, days: int, output: str | None, plot: str | None, as_json: bool,
            **options: str | None) -> None:
    """Trends of an evaluation across its runs (TrainLoop's rolling summary): latest score, change,
    trend (improving, declining, stable: a change beyond ±0.01), per day and per metric."""
    from services.analysis.trends import evaluation_keys, write_summary
    from services.analysis.trends import summary as build

    apply_settings(**options)
    keys = [evaluation] if evaluation else evaluation_keys()
    if not keys:
        raise BadInput("no runs yet: nothing to summarise")
    if plot and len(keys) > 1:
        raise BadInput("--plot draws one evaluation: add --evaluation KEY")
    documents = {}
    for key in keys:
        try:
            documents[key] = build(key, days)
        except EvalfleetError as exc:
            if evaluation:
                fail(exc)
            say(f"{key}: {exc}")
    if output:
        for key, document in documents.items():
            directory = Path(output) / (key if len(keys) > 1 else "")
            directory.mkdir(parents=True, exist_ok=True)
            write_summary(document, directory / "evaluation_summary.json")
    if plot and documents:
        from services.analysis.charts import summary_chart

        say(f"drew {summary_chart(next(iter(documents.values())), plot)}")
    if as_json:
        click.echo(json.dumps(documents[keys[0]] if evaluation else documents, indent=2))
        return
    emit_table(["evaluation", "latest", "score", "change", "trend", "runs"],
               [[key, d["latest_evaluation"], _score(d["overall_score"]),
                 "n/a" if d["trending"]["score_change"] is None else f"{d['trending']['score_change']:+.3f}",
                 d["trending"]["trend"], str(d["runs_counted"])] for key, d in documents.items()])


@click.command()
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--parquet", type=click.Path(file_okay=False, exists=True),
              help="Query these Parquet files (`evalfleet export parquet`) instead of this installation's results.")
@settings_options
def query(sql: str, fmt: str, parquet: str | None, **options: str | None) -> None:
    """Run SQL (DuckDB) over the views runs, task_results, samples and scores.

    Example: evalfleet query "SELECT model_key, avg(CAST(passed AS INT)) FROM scores GROUP BY 1"
    """
    from services.analysis.query import run_query

    apply_settings(**options)
    try:
        columns, rows = run_query(sql, parquet)
    except EvalfleetError as exc:
        fail(exc)
    if fmt == "json":
        click.echo(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2, default=str))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        emit_table(columns, [["" if v is None else str(v) for v in row] for row in rows])


COMMANDS = [results, benchmark, summary, query]
