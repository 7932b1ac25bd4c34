"""The gateway's tables: API keys and rate windows, registrations, battles and votes.

A table that already exists is kept as it is: the SQLite files of earlier versions
(`gateway.sqlite3`, `arena.sqlite3`) had these tables, with these columns, without Alembic.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _create(name: str, *columns, **kw) -> None:
    if not sa.inspect(op.get_bind()).has_table(name):
        op.create_table(name, *columns, **kw)


def upgrade() -> None:
    _create("api_keys",
            sa.Column("key_id", sa.String(64), primary_key=True),
            sa.Column("name", sa.Text, nullable=False),
            sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
            sa.Column("prefix", sa.String(32), nullable=False),
            sa.Column("rpm", sa.Integer),
            sa.Column("created_at", sa.Double, nullable=False),
            sa.Column("revoked_at", sa.Double))
    _create("rate_windows",
            sa.Column("key_id", sa.String(64), nullable=False),
            sa.Column("window", sa.BigInteger, nullable=False),
            sa.Column("hits", sa.Integer, nullable=False),
            sa.PrimaryKeyConstraint("key_id", "window"))
    _create("registrations",
            sa.Column("instance_id", sa.String(200), primary_key=True),
            sa.Column("model", sa.Text, nullable=False),
            sa.Column("url", sa.Text, nullable=False),
            sa.Column("ttl_seconds", sa.Integer, nullable=False),
            sa.Column("registered_at", sa.Double, nullable=False),
            sa.Column("expires_at", sa.Double, nullable=False))
    if not sa.inspect(op.get_bind()).has_table("battles"):
        op.create_table("battles",
                        sa.Column("id", sa.String(64), primary_key=True),
                        sa.Column("created_at", sa.Double, nullable=False),
                        sa.Column("model_a", sa.Text, nullable=False),
                        sa.Column("model_b", sa.Text, nullable=False),
                        sa.Column("seed", sa.BigInteger, nullable=False),
                        sa.Column("request", sa.Text, nullable=False))
        op.create_index("battles_created", "battles", ["created_at"])
    _create("battle_sides",
            sa.Column("battle_id", sa.String(64), sa.ForeignKey("battles.id", ondelete="CASCADE"), nullable=False),
            sa.Column("side", sa.String(1), nullable=False),
            sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
            sa.Column("answer", sa.Text, nullable=False, server_default=""),
            sa.Column("ttft", sa.Double), sa.Column("total", sa.Double), sa.Column("tokens", sa.Integer),
            sa.Column("tokens_per_second", sa.Double),
            sa.Column("finish_reason", sa.Text), sa.Column("error", sa.Text),
            sa.PrimaryKeyConstraint("battle_id", "side"),
            sa.CheckConstraint("side IN ('a', 'b')", name="battle_sides_side"))
    _create("votes",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("battle_id", sa.String(64), nullable=False, unique=True),
            sa.Column("created_at", sa.Double, nullable=False),
            sa.Column("winner", sa.String(16), nullable=False),
            sa.Column("model_a", sa.Text, nullable=False),
            sa.Column("model_b", sa.Text, nullable=False),
            sa.Column("prompt", sa.Text, nullable=False),
            sa.Column("system_prompt", sa.Text, nullable=False, server_default=""),
            sa.Column("temperature", sa.Double), sa.Column("max_tokens", sa.Integer), sa.Column("seed", sa.BigInteger),
            sa.Column("answer_a", sa.Text, nullable=False), sa.Column("answer_b", sa.Text, nullable=False),
            sa.Column("status_a", sa.Text, nullable=False), sa.Column("status_b", sa.Text, nullable=False),
            sa.Column("ttft_a", sa.Double), sa.Column("ttft_b", sa.Double),
            sa.Column("total_a", sa.Double), sa.Column("total_b", sa.Double),
            sa.Column("tokens_a", sa.Integer), sa.Column("tokens_b", sa.Integer),
            sa.Column("tokens_per_second_a", sa.Double), sa.Column("tokens_per_second_b", sa.Double),
            sa.CheckConstraint("winner IN ('model_a', 'model_b', 'tie', 'both_bad')", name="votes_winner"))


def downgrade() -> None:
    for name in ("votes", "battle_sides", "battles", "registrations", "rate_windows", "api_keys"):
        op.drop_table(name)
