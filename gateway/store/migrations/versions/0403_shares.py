"""Read-only share links of voted battles and compare conversations.

Revision ID: 0403_shares
Revises: 0401_catalogue_overlay
"""

import sqlalchemy as sa
from alembic import op

revision = "0403_shares"
down_revision = "0401_catalogue_overlay"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("shares",
                    sa.Column("id", sa.String(64), primary_key=True),
                    sa.Column("kind", sa.String(16), nullable=False),
                    sa.Column("created_at", sa.Double, nullable=False),
                    sa.Column("battle_id", sa.String(64), unique=True),
                    sa.Column("body", sa.Text),
                    sa.Column("client", sa.Text),
                    sa.CheckConstraint("kind IN ('battle', 'compare')", name="shares_kind"))


def downgrade() -> None:
    op.drop_table("shares")
