"""Battle sides a killed gateway left "streaming": until when the side's gateway holds it (its
lease, renewed while it streams, on the store's clock), and the result a regeneration replaced
(it comes back if the regeneration never finished).

Revision ID: 0503_battle_side_recovery
Revises: 0403_shares
"""

import sqlalchemy as sa
from alembic import op

revision = "0503_battle_side_recovery"
down_revision = "0403_shares"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("battle_sides") as table:
        table.add_column(sa.Column("alive_until", sa.Double))
        table.add_column(sa.Column("replaced", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("battle_sides") as table:
        table.drop_column("replaced")
        table.drop_column("alive_until")
