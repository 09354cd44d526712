"""Export, the result store and the log schema."""

from __future__ import annotations

import json

import click

from services.cli.common import BadInput, EvalfleetError, apply_settings, fail, say, settings_options
from services.cli.output import progress_bar


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


def _open_store():  # noqa: ANN202
    from shared.result_store import result_store

    return result_store(auto_reindex=False)


@store.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@settings_options
def reindex(as_json: bool, **options: str | None) -> None:
    """Rebuild the store's indexes (the database's, and Redis's when there is one) from its packs.
    Entries of processes that stopped before packing them are packed first."""
    from shared.store_upkeep import pack_names
    from shared.store_upkeep import reindex as rebuild

    apply_settings(**options)
    cache = _open_store()
    with progress_bar("reindexing packs", total=len(pack_names(cache)), enabled=not as_json) as advance:
        count = rebuild(cache, on_pack=advance)
    if as_json:
        click.echo(json.dumps({"entries": count}))
        return
    say(f"indexed {count} cached results")


@store.command()
@click.option("--min-dead", type=click.FloatRange(0.01, 1.0), default=0.5, show_default=True,
              help="Rewrite packs in which at least this fraction of entries was superseded.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@settings_options
def compact(min_dead: float, as_json: bool, **options: str | None) -> None:
    """Rewrite the current entries of mostly superseded (or small) packs into full packs and
    delete the old ones. Safe while runs are going on."""
    from dataclasses import asdict

    from shared.store_upkeep import compact as compact_store

    apply_settings(**options)
    done = compact_store(_open_store(), min_dead=min_dead)
    if as_json:
        click.echo(json.dumps(asdict(done)))
        return
    say(f"packs {done.packs_before} -> {done.packs_after} ({done.packs_deleted} deleted, {done.entries_moved} "
        f"entries moved), bytes {done.bytes_before} -> {done.bytes_after}")


@store.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@settings_options
def migrate(as_json: bool, **options: str | None) -> None:
    """Pack a store written with one file per entry (`results/`), then delete those files."""
    from shared.store_upkeep import migrate as migrate_store

    apply_settings(**options)
    with progress_bar("packing entries", total=None, enabled=not as_json) as advance:
        count = migrate_store(_open_store(), on_entry=advance)
    if as_json:
        click.echo(json.dumps({"entries": count}))
        return
    say(f"packed {count} entries")


@store.command(name="stats")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@settings_options
def store_stats(as_json: bool, **options: str | None) -> None:
    """Packs, entries and bytes of the result store."""
    from dataclasses import asdict

    from shared.store_upkeep import stats

    apply_settings(**options)
    figures = stats(_open_store())
    if as_json:
        click.echo(json.dumps(asdict(figures)))
        return
    for name, value in asdict(figures).items():
        click.echo(f"{name.replace('_', ' ')}: {value}")


@click.command()
def schema() -> None:
    """Print the JSON Schema of the task result log."""
    from shared.log import task_result_log_schema

    click.echo(json.dumps(task_result_log_schema(), indent=2))


COMMANDS = [export, store, schema]
