"""Transcripts of the multi-model modes (discussion, council, roundtable).

Revision ID: 0201_modes
Revises: 0102_registration
"""

import sqlalchemy as sa
from alembic import op

revision = "0201_modes"
down_revision = "0102_registration"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("mode_transcripts",
                    sa.Column("id", sa.String(64), primary_key=True),
                    sa.Column("mode", sa.String(16), nullable=False),
                    sa.Column("status", sa.String(16), nullable=False),
                    sa.Column("created_at", sa.Double, nullable=False),
                    sa.Column("finished_at", sa.Double),
                    sa.Column("body", sa.Text, nullable=False))
    op.create_index("mode_transcripts_created", "mode_transcripts", ["created_at"])


def downgrade() -> None:
    op.drop_index("mode_transcripts_created", table_name="mode_transcripts")
    op.drop_table("mode_transcripts")
