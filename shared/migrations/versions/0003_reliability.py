"""reliability: attempts beside model calls, aggregation ownership, progress times, error
columns for summaries, and the worker heartbeat table

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_results") as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("error_summary", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("aggregator", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("sample_results") as batch_op:
        batch_op.add_column(sa.Column("error_type", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("error_message", sa.String(length=300), nullable=True))
    op.create_table(
        "workers",
        sa.Column("name", sa.String(length=250), nullable=False),
        sa.Column("hostname", sa.String(length=250), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", sa.Text(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("active", sa.Integer(), nullable=False),
        sa.Column("holding", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_workers_last_seen", "workers", ["last_seen"])


def downgrade() -> None:
    op.drop_index("ix_workers_last_seen", table_name="workers")
    op.drop_table("workers")
    with op.batch_alter_table("sample_results") as batch_op:
        batch_op.drop_column("error_message")
        batch_op.drop_column("error_type")
    with op.batch_alter_table("task_results") as batch_op:
        batch_op.drop_column("progress_at")
        batch_op.drop_column("aggregator")
        batch_op.drop_column("error_summary")
        batch_op.drop_column("attempts")
