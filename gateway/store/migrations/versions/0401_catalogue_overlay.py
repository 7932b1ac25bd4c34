"""The runtime overlay of the catalogue: models added from the hub, settings changed by an admin.

Revision ID: 0401_catalogue_overlay
Revises: 0301_admin
"""

import sqlalchemy as sa
from alembic import op

revision = "0401_catalogue_overlay"
down_revision = "0301_admin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalogue_overlay",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False, server_default=""),
        sa.CheckConstraint("kind IN ('model', 'override')", name="catalogue_overlay_kind"))


def downgrade() -> None:
    op.drop_table("catalogue_overlay")
