"""packed result store: the durable index of packs and of the pack holding each inference key's
current entry

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "store_packs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(120), nullable=False, unique=True),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "store_entries",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("pack_id", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("written_at", sa.BigInteger(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_store_entries_pack_id", "store_entries", ["pack_id"])


def downgrade() -> None:
    op.drop_index("ix_store_entries_pack_id", "store_entries")
    op.drop_table("store_entries")
    op.drop_table("store_packs")
