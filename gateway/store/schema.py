"""The tables of the gateway's store, as SQLAlchemy Core metadata (the migrations build the same)."""

from __future__ import annotations

from sqlalchemy import (BigInteger, CheckConstraint, Column, Double, ForeignKey, Index, Integer, MetaData,
                        PrimaryKeyConstraint, String, Table, Text)

metadata = MetaData()

api_keys = Table(
    "api_keys", metadata,
    Column("key_id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(32), nullable=False),
    Column("rpm", Integer),
    Column("created_at", Double, nullable=False),
    Column("revoked_at", Double),
)

# Requests per key and per minute window, shared by every gateway on the database.
rate_windows = Table(
    "rate_windows", metadata,
    Column("key_id", String(64), nullable=False),
    Column("window", BigInteger, nullable=False),
    Column("hits", Integer, nullable=False),
    PrimaryKeyConstraint("key_id", "window"),
)

registrations = Table(
    "registrations", metadata,
    Column("instance_id", String(200), primary_key=True),
    Column("model", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("ttl_seconds", Integer, nullable=False),
    Column("registered_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("secret_hash", String(64)),  # SHA-256 of the secret returned at registration (revision 0002)
    Column("drain_requested_at", Double),  # asked to drain alone (revision 0501): told at its next heartbeat
)

battles = Table(
    "battles", metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", Double, nullable=False),
    Column("model_a", Text, nullable=False),
    Column("model_b", Text, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("request", Text, nullable=False),  # JSON: messages, system prompt, sampling settings
    Column("token_hash", String(64)),  # SHA-256 of the battle token (revision 0101_arena)
    Column("client", Text),            # who opened it: key:<id> or addr:<address>
    Index("battles_created", "created_at"),
)

battle_sides = Table(
    "battle_sides", metadata,
    Column("battle_id", String(64), ForeignKey("battles.id", ondelete="CASCADE"), nullable=False),
    Column("side", String(1), nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("answer", Text, nullable=False, server_default=""),
    Column("ttft", Double), Column("total", Double), Column("tokens", Integer),
    Column("tokens_per_second", Double),
    Column("finish_reason", Text), Column("error", Text),
    # While streaming: when its gateway's lease ends (epoch s, on the store's clock), renewed while it streams.
    Column("alive_until", Double),
    # While a regeneration streams: the result it replaces (JSON), which comes back if it never ends.
    Column("replaced", Text),
    PrimaryKeyConstraint("battle_id", "side"),
    CheckConstraint("side IN ('a', 'b')", name="battle_sides_side"),
)

# The earlier turns of a multi-turn battle (the current one is in battle_sides).
battle_turns = Table(
    "battle_turns", metadata,
    Column("battle_id", String(64), ForeignKey("battles.id", ondelete="CASCADE"), nullable=False),
    Column("turn", Integer, nullable=False),
    Column("side", String(1), nullable=False),
    Column("prompt", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("answer", Text, nullable=False),
    Column("ttft", Double), Column("total", Double), Column("tokens", Integer),
    Column("tokens_per_second", Double),
    Column("finish_reason", Text), Column("error", Text),
    PrimaryKeyConstraint("battle_id", "turn", "side"),
)

votes = Table(
    "votes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("battle_id", String(64), nullable=False, unique=True),
    Column("created_at", Double, nullable=False),
    Column("winner", String(16), nullable=False),
    Column("model_a", Text, nullable=False),
    Column("model_b", Text, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("system_prompt", Text, nullable=False, server_default=""),
    Column("temperature", Double), Column("max_tokens", Integer), Column("seed", BigInteger),
    Column("answer_a", Text, nullable=False), Column("answer_b", Text, nullable=False),
    Column("status_a", Text, nullable=False), Column("status_b", Text, nullable=False),
    Column("ttft_a", Double), Column("ttft_b", Double), Column("total_a", Double), Column("total_b", Double),
    Column("tokens_a", Integer), Column("tokens_b", Integer),
    Column("tokens_per_second_a", Double), Column("tokens_per_second_b", Double),
    Column("turns", Text),       # JSON: every turn, both sides (revision 0101_arena)
    Column("categories", Text),  # JSON list, tagged at vote time
    Column("client", Text),
    CheckConstraint("winner IN ('model_a', 'model_b', 'tie', 'both_bad')", name="votes_winner"),
    Index("votes_client", "client"),
)

# Clients whose votes an admin left out of the ratings (a flood).
arena_excluded_clients = Table(
    "arena_excluded_clients", metadata,
    Column("client", String(200), primary_key=True),
    Column("excluded_at", Double, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
)

# Read-only permalinks (revision 0403_shares): a voted battle (by id) or a compare conversation
# (its JSON snapshot, as the browser sent it). The id is random and unguessable; `client` is who
# shared it, never shown.
shares = Table(
    "shares", metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("battle_id", String(64), unique=True),
    Column("body", Text),
    Column("client", Text),
    CheckConstraint("kind IN ('battle', 'compare')", name="shares_kind"),
)

# Sessions of the multi-model modes (discussion, council, roundtable): the transcript is JSON
# (settings, participants, every event but the tokens), written at the start and at the end.
mode_transcripts = Table(
    "mode_transcripts", metadata,
    Column("id", String(64), primary_key=True),
    Column("mode", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("finished_at", Double),
    Column("body", Text, nullable=False),
    Index("mode_transcripts_created", "created_at"),
)

# The admin side (revision 0301_admin): who did what, and when. `actor` is a fingerprint of the
# admin key (never the key); `detail` is JSON.
admin_audit = Table(
    "admin_audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Double, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=False, server_default=""),
    Column("detail", Text, nullable=False, server_default="{}"),
    Index("admin_audit_at", "at"),
)

# Use of each API key, summed in memory by every gateway and added here periodically.
api_key_usage = Table(
    "api_key_usage", metadata,
    Column("key_id", String(64), primary_key=True),
    Column("requests", BigInteger, nullable=False, server_default="0"),
    Column("last_used_at", Double),
)


def _analytics_table(name: str) -> Table:
    """Request analytics per period (a minute or an hour, as its start in epoch seconds), model and instance."""
    return Table(
        name, metadata,
        Column("period", BigInteger, nullable=False),
        Column("model", String(200), nullable=False),
        Column("instance", String(200), nullable=False),
        Column("requests", BigInteger, nullable=False),
        Column("errors", BigInteger, nullable=False),
        Column("prompt_tokens", BigInteger, nullable=False),
        Column("completion_tokens", BigInteger, nullable=False),
        Column("generation_seconds", Double, nullable=False),   # streaming time behind completion tokens
        Column("duration_seconds", Double, nullable=False),
        Column("ttft_seconds", Double, nullable=False), Column("ttft_count", BigInteger, nullable=False),
        Column("queue_seconds", Double, nullable=False), Column("queue_count", BigInteger, nullable=False),
        PrimaryKeyConstraint("period", "model", "instance"),
    )


analytics_minutes = _analytics_table("analytics_minutes")
analytics_hours = _analytics_table("analytics_hours")

# The runtime overlay of the catalogue (revision 0401_catalogue_overlay): one row per model
# added at runtime (`kind` "model": `spec` is its whole catalogue entry) or per catalogue model
# whose settings an admin changed (`kind` "override": `spec` holds the changed fields only).
catalogue_overlay = Table(
    "catalogue_overlay", metadata,
    Column("key", String(200), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("spec", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("updated_by", String(64), nullable=False, server_default=""),
    CheckConstraint("kind IN ('model', 'override')", name="catalogue_overlay_kind"),
)
