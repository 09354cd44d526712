"""entity versions: registering a changed definition under a key adds a version (the older ones
stay); removing an entity marks its versions removed

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("entities", recreate="always") as batch_op:
        batch_op.drop_constraint("uq_entities_kind_key", type_="unique")
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_unique_constraint("uq_entities_kind_key_version", ["kind", "key", "version"])


def downgrade() -> None:
    with op.batch_alter_table("entities", recreate="always") as batch_op:
        batch_op.drop_constraint("uq_entities_kind_key_version", type_="unique")
        batch_op.drop_column("removed_at")
        batch_op.drop_column("version")
        batch_op.create_unique_constraint("uq_entities_kind_key", ["kind", "key"])
