"""results API: a UUID per task result (the API's evaluation_run_uuid), its pass status and model
key, run tags for filtering, and API tokens (only their hashes)

Revision ID: 0004
Revises: 0003
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_results") as batch_op:
        batch_op.add_column(sa.Column("uuid", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("pass_status", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("model_key", sa.String(length=250), nullable=True))
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("tags", sa.Text(), nullable=True))
    connection = op.get_bind()
    task_results = sa.table("task_results", sa.column("id", sa.Integer), sa.column("uuid", sa.String))
    for (row_id,) in connection.execute(sa.select(task_results.c.id)).all():
        connection.execute(task_results.update().where(task_results.c.id == row_id).values(uuid=str(uuid.uuid4())))
    op.create_index("ix_task_results_uuid", "task_results", ["uuid"], unique=True)
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=250), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hash", name="uq_tokens_hash"),
    )


def downgrade() -> None:
    op.drop_table("tokens")
    op.drop_index("ix_task_results_uuid", table_name="task_results")
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("tags")
    with op.batch_alter_table("task_results") as batch_op:
        batch_op.drop_column("model_key")
        batch_op.drop_column("pass_status")
        batch_op.drop_column("uuid")
