"""Export, the result store and the log schema."""

from __future__ import annotations

import json

import click

from services.cli.common import BadInput, EvalfleetError, apply_settings, fail, say, settings_options


@click.group()
def export() -> None:
    """Export results so they can be handed over and re-created elsewhere."""


@export.command(name="eval")
@click.argument("run_id", required=False)
@click.option("--id", "run_id_option", help="The run to export (the same as RUN_ID).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Directory to write into.")
@click.option("--link-logs", is_flag=True,
              help="Also write each task result log and point the run file at it (re-runs with no inference).")
@settings_options
def export_eval(run_id: str | None, run_id_option: str | None, output: str, link_logs: bool,
                **options: str | None) -> None:
    """Write OUTPUT/<evaluation-key>.yaml: a self-contained run file of a run (RUN_ID: an id or a
    unique prefix)."""
    from services.export import export_evaluation
    from services.results import resolve_run_id

    apply_settings(**options)
    if (run_id is None) == (run_id_option is None):
        raise BadInput("name the run once: `evalfleet export eval RUN_ID` (or --id RUN_ID)")
    try:
        path = export_evaluation(resolve_run_id(run_id or run_id_option), output, link_logs=link_logs)
    except EvalfleetError as exc:
        fail(exc)
    click.echo(str(path))


@export.command(name="parquet")
@click.option("--run", "run_id", help="Only this run (an id or a unique prefix).")
@click.option("--evaluation", help="Only the runs of this evaluation key.")
@click.option("--all", "everything", is_flag=True, help="Every run.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Directory to write into.")
@click.option("--json", "as_json", is_flag=True, help="Print the row counts as JSON.")
@settings_options
def export_parquet_command(run_id: str | None, evaluation: str | None, everything: bool, output: str, as_json: bool,
                           **options: str | None) -> None:
    """Write Parquet tables (runs, task_results, samples, scores) for SQL tools, streamed in bounded
    memory. `evalfleet query` reads them too (--parquet DIR)."""
    from services.analysis.tables import export_parquet
    from services.results import resolve_run_id

    apply_settings(**options)
    if sum(bool(x) for x in (run_id, evaluation, everything)) != 1:
        raise BadInput("choose exactly one of --run RUN_ID, --evaluation KEY and --all")
    try:
        counts = export_parquet(output, run_id=resolve_run_id(run_id) if run_id else None, evaluation=evaluation)
    except EvalfleetError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps(counts))
        return
    say(f"wrote {output}: " + ", ".join(f"{name} {count} rows" for name, count in counts.items()))


@click.group()
def store() -> None:
    """Maintain the result store (cached model outputs and scores)."""


@store.command()
@settings_options
def reindex(**options: str | None) -> None:
    """Rebuild the Redis index of the result store from its durable blobs."""
    from shared.result_store import result_store

    apply_settings(**options)
    cache = result_store(auto_reindex=False)
    if cache.redis is None:
        raise BadInput("no Redis configured (EVALFLEET_REDIS_URL, or a redis:// broker): nothing to index")
    say(f"indexed {cache.reindex()} cached results")


@click.command()
def schema() -> None:
    """Print the JSON Schema of the task result log."""
    from shared.log import task_result_log_schema

    click.echo(json.dumps(task_result_log_schema(), indent=2))


COMMANDS = [export, store, schema]
