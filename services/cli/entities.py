"""Registering datasets, models and tasks: `evalfleet add`."""

from __future__ import annotations

import click

from services.cli.common import EvalfleetError, apply_settings, fail, say, settings_options


@click.command()
@click.option("-f", "--file", "path", required=True, type=click.Path(dir_okay=False), help="The run file (YAML).")
@settings_options
def add(path: str, **options: str | None) -> None:
    """Validate a run file and register its datasets, models and tasks without running anything."""
    from services.submitter import add_entities

    apply_settings(**options)
    try:
        resolved = add_entities(path)
    except EvalfleetError as exc:
        fail(exc)
    registered = resolved.entities_to_register()
    say(f"valid: {len(resolved.specs)} task specifications, "
              f"{sum(s.selection.total for s in resolved.specs)} samples; registered {len(registered)} entities")
    for kind, entity in registered:
        click.echo(f"{kind}\t{entity.key}")  # type: ignore[attr-defined]


COMMANDS = [add]
