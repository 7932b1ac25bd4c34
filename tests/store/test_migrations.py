"""The store's migrations form one line: features that add tables in parallel must chain their
revisions, or `arena db upgrade` (and every gateway's start-up) stops at "multiple heads"."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

import gateway.store

MIGRATIONS = Path(gateway.store.__file__).parent / "migrations"


def test_the_migrations_have_exactly_one_head():
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    heads = script.get_heads()
    assert len(heads) == 1, f"several heads: {heads}; set the newest revision's down_revision to the previous head"
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None and len({r.revision for r in revisions}) == len(revisions)
