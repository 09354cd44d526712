"""epochs: a sample runs once per epoch, so a task result holds one row per (sample, epoch)

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sample_results") as batch_op:
        batch_op.add_column(sa.Column("epoch", sa.Integer(), nullable=False, server_default="1"))
        batch_op.drop_constraint("uq_sample_results_sample", type_="unique")
        batch_op.create_unique_constraint("uq_sample_results_sample_epoch", ["task_result_id", "sample_id", "epoch"])


def downgrade() -> None:
    with op.batch_alter_table("sample_results") as batch_op:
        batch_op.drop_constraint("uq_sample_results_sample_epoch", type_="unique")
        batch_op.create_unique_constraint("uq_sample_results_sample", ["task_result_id", "sample_id"])
        batch_op.drop_column("epoch")
