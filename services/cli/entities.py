"""Entities and what is built in: `add` (register datasets, models and tasks), `entities list |
show | remove`, `tasks` (built-in tasks and scorers with their config fields), and `init` (a
commented run file and a small dataset to start from)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from services.cli.common import BadInput, EvalfleetError, apply_settings, fail, say, settings_options
from services.cli.output import emit_table

KINDS = ["dataset", "model", "task"]


@click.command()
@click.option("-f", "--file", "path", required=True, type=click.Path(dir_okay=False),
              help="A run file, or a file of entities alone (datasets, models, tasks).")
@click.option("--json", "as_json", is_flag=True, help="Print what happened to each entity as JSON.")
@settings_options
def add(path: str, as_json: bool, **options: str | None) -> None:
    """Validate a file and register its datasets, models and tasks without running anything.

    A changed definition under a registered key becomes a new version (the older stays: runs
    record the version they used); an identical one is left unchanged."""
    from services.submitter import add_entities

    apply_settings(**options)
    try:
        changes = add_entities(path)
    except EvalfleetError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps([{"kind": k, "key": key, "change": c, "version": v} for k, key, c, v in changes], indent=2))
        return
    for kind, key, change, version in changes:
        shown = f"updated (v{version})" if change == "updated" else change
        click.echo(f"{kind}\t{key}\t{shown}")
    say(f"{len(changes)} entities: {sum(c == 'created' for _, _, c, _ in changes)} created, "
        f"{sum(c == 'updated' for _, _, c, _ in changes)} updated, "
        f"{sum(c == 'unchanged' for _, _, c, _ in changes)} unchanged")


@click.group()
def entities() -> None:
    """Registered datasets, models and tasks."""


@entities.command(name="list")
@click.option("--kind", type=click.Choice(KINDS), help="Only this kind.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (with each definition).")
@settings_options
def list_entities_command(kind: str | None, as_json: bool, **options: str | None) -> None:
    """Every registered entity, at its current version."""
    from services.registry import list_entities

    apply_settings(**options)
    found = list_entities(kind)  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps([e.model_dump(mode="json") for e in found], indent=2))
        return
    emit_table(["kind", "key", "version", "registered", "definition"],
               [[e.kind, e.key, f"v{e.version} (of {e.versions})", f"{e.registered_at:%Y-%m-%d %H:%M}",
                 _summary(e.kind, e.definition)] for e in found])
    if not found:
        say("nothing registered: `evalfleet add -f FILE` registers a file's datasets, models and tasks")


def _summary(kind: str, definition: dict) -> str:
    if kind == "dataset":
        return definition.get("path") or "inline rows"
    if kind == "model":
        return f"{definition['provider']}${definition['name']}"
    source = definition.get("template") or definition.get("entrypoint")
    return source + (f" on {definition['dataset_key']}" if definition.get("dataset_key") else "")


@entities.command()
@click.argument("key")
@click.option("--kind", type=click.Choice(KINDS), help="When the key names entities of several kinds.")
@click.option("--version", type=click.IntRange(1), help="An older version (default: the current one).")
@settings_options
def show(key: str, kind: str | None, version: int | None, **options: str | None) -> None:
    """One entity's definition (JSON)."""
    from services.registry import show_entity

    apply_settings(**options)
    try:
        record = show_entity(key, kind, version)  # type: ignore[arg-type]
    except EvalfleetError as exc:
        raise BadInput(str(exc)) from None
    click.echo(json.dumps(record.model_dump(mode="json"), indent=2))


@entities.command()
@click.argument("key")
@click.option("--kind", type=click.Choice(KINDS), help="When the key names entities of several kinds.")
@settings_options
def remove(key: str, kind: str | None, **options: str | None) -> None:
    """Unregister an entity (every version). Runs that used it keep what they recorded."""
    from services.registry import remove_entity

    apply_settings(**options)
    try:
        found_kind, versions = remove_entity(key, kind)  # type: ignore[arg-type]
    except EvalfleetError as exc:
        raise BadInput(str(exc)) from None
    say(f"removed {found_kind} {key} ({versions} version{'s' if versions != 1 else ''})")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
def tasks(as_json: bool) -> None:
    """Built-in tasks and scorers, with their config fields, types and defaults."""
    from services.catalogue import catalogue

    found = catalogue()
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for kind in ("tasks", "scorers"):
        rows = []
        for name, entry in found[kind].items():
            fields = "; ".join(f"{f['name']}: {f['type']}" + (f" = {json.dumps(f['default'])}" if "default" in f else
                                                                " (required)") for f in entry["fields"])
            rows.append([name, entry["description"], fields or "-"] +
                        ([", ".join(entry["metrics"])] if kind == "tasks" else []))
        emit_table(["task", "what", "config fields", "metrics"] if kind == "tasks" else ["scorer", "what", "options"],
                   rows, title=f"built-in {kind}")


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
def init(directory: str, force: bool) -> None:
    """Write a commented run file (evalfleet.yaml) and a small dataset that run offline as they are:
    `evalfleet run -f DIRECTORY/evalfleet.yaml`."""
    from services.scaffold import write_scaffold

    try:
        written = write_scaffold(Path(directory), force=force)
    except FileExistsError as exc:
        raise BadInput(f"{exc.args[0]} exists: pass --force to overwrite it") from None
    for path in written:
        click.echo(str(path))
    say(f"next: evalfleet run -f {Path(directory) / 'evalfleet.yaml'}")


COMMANDS = [add, entities, tasks, init]
