"""Alembic environment: migrations run on the connection `shared.db.migrate` passes in."""

from alembic import context

from shared.db import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
