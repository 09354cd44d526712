"""judge cost: what a sample's model-graded scorers cost (their judge models' pricing), so that a
task result's cost includes judging without reading the samples' bodies

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sample_results") as batch_op:
        batch_op.add_column(sa.Column("judge_cost_usd", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sample_results") as batch_op:
        batch_op.drop_column("judge_cost_usd")
