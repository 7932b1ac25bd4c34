"""A registered instance asked to drain (stopped alone from the admin side): its runner hears it
at its next heartbeat, whichever gateway sharing the store answers it.

Revision ID: 0501_drain_requests
Revises: 0503_battle_side_recovery
"""

import sqlalchemy as sa
from alembic import op

revision = "0501_drain_requests"
down_revision = "0503_battle_side_recovery"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        batch.add_column(sa.Column("drain_requested_at", sa.Double, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        batch.drop_column("drain_requested_at")
