"""Registrations are bound to a per-registration secret (its SHA-256 is kept).

Revision ID: 0102_registration
Revises: 0101_arena
"""

import sqlalchemy as sa
from alembic import op

revision = "0102_registration"
down_revision = "0101_arena"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        batch.add_column(sa.Column("secret_hash", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        batch.drop_column("secret_hash")
