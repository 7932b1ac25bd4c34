"""The arena's trust: battle tokens and clients, multi-turn battles, excluded clients.

- `battles.token_hash` (SHA-256 of the token handed to the client that opened the battle: only
  it may stream, follow up and vote) and `battles.client` (API key or address of that client);
- `battle_turns`: the earlier turns of a multi-turn battle, both sides (the current turn stays
  in `battle_sides`);
- `votes.turns` (JSON: every turn, both answers), `votes.categories` (JSON, tagged at vote time),
  `votes.client`;
- `arena_excluded_clients`: clients whose votes an admin left out of the ratings.

Revision ID: 0101_arena
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0101_arena"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("battles") as batch:
        batch.add_column(sa.Column("token_hash", sa.String(64)))
        batch.add_column(sa.Column("client", sa.Text))
    with op.batch_alter_table("votes") as batch:
        batch.add_column(sa.Column("turns", sa.Text))
        batch.add_column(sa.Column("categories", sa.Text))
        batch.add_column(sa.Column("client", sa.Text))
    op.create_index("votes_client", "votes", ["client"])
    op.create_table("battle_turns",
                    sa.Column("battle_id", sa.String(64), sa.ForeignKey("battles.id", ondelete="CASCADE"),
                              nullable=False),
                    sa.Column("turn", sa.Integer, nullable=False),
                    sa.Column("side", sa.String(1), nullable=False),
                    sa.Column("prompt", sa.Text, nullable=False),
                    sa.Column("status", sa.String(16), nullable=False),
                    sa.Column("answer", sa.Text, nullable=False),
                    sa.Column("ttft", sa.Double), sa.Column("total", sa.Double), sa.Column("tokens", sa.Integer),
                    sa.Column("tokens_per_second", sa.Double),
                    sa.Column("finish_reason", sa.Text), sa.Column("error", sa.Text),
                    sa.PrimaryKeyConstraint("battle_id", "turn", "side"))
    op.create_table("arena_excluded_clients",
                    sa.Column("client", sa.String(200), primary_key=True),
                    sa.Column("excluded_at", sa.Double, nullable=False),
                    sa.Column("reason", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_table("arena_excluded_clients")
    op.drop_table("battle_turns")
    op.drop_index("votes_client", "votes")
    with op.batch_alter_table("votes") as batch:
        for name in ("client", "categories", "turns"):
            batch.drop_column(name)
    with op.batch_alter_table("battles") as batch:
        batch.drop_column("client")
        batch.drop_column("token_hash")
