"""sample columns for analysis and browsing: latency, tokens, cached, and the primary score (the
star metric's scorer, else the task's first), so summaries, sorting and filtering by outcome need
no parsing of sample bodies

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sample_results") as batch_op:
        batch_op.add_column(sa.Column("score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("latency_ms", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("input_tokens", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("output_tokens", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("cached", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sample_results") as batch_op:
        for name in ("cached", "output_tokens", "input_tokens", "latency_ms", "score"):
            batch_op.drop_column(name)
