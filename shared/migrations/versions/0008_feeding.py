"""feeding: how far each task result's samples were enqueued, and which process feeds a run
(its heartbeat), so a run's samples go out a window at a time and a dead feeder is replaced

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_results") as batch_op:
        batch_op.add_column(sa.Column("enqueued", sa.Integer(), nullable=True))
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("feeder", sa.String(250), nullable=True))
        batch_op.add_column(sa.Column("fed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("fed_at")
        batch_op.drop_column("feeder")
    with op.batch_alter_table("task_results") as batch_op:
        batch_op.drop_column("enqueued")
