"""The admin side: audit log, API key usage, request analytics by minute and by hour.

Revision ID: 0301_admin
Revises: 0201_modes
"""

import sqlalchemy as sa
from alembic import op

revision = "0301_admin"
down_revision = "0201_modes"
branch_labels = None
depends_on = None


def _analytics(name: str) -> None:
    op.create_table(
        name,
        sa.Column("period", sa.BigInteger, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("instance", sa.String(200), nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("generation_seconds", sa.Double, nullable=False),
        sa.Column("duration_seconds", sa.Double, nullable=False),
        sa.Column("ttft_seconds", sa.Double, nullable=False), sa.Column("ttft_count", sa.BigInteger, nullable=False),
        sa.Column("queue_seconds", sa.Double, nullable=False), sa.Column("queue_count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("period", "model", "instance"))


def upgrade() -> None:
    op.create_table(
        "admin_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text, nullable=False, server_default=""),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"))
    op.create_index("admin_audit_at", "admin_audit", ["at"])
    op.create_table(
        "api_key_usage",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_used_at", sa.Double))
    _analytics("analytics_minutes")
    _analytics("analytics_hours")


def downgrade() -> None:
    op.drop_table("analytics_hours")
    op.drop_table("analytics_minutes")
    op.drop_table("api_key_usage")
    op.drop_index("admin_audit_at", "admin_audit")
    op.drop_table("admin_audit")
