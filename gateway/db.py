"""The gateway's SQLite file (API keys, registrations): one connection per store, WAL mode,
so several gateway processes and `arena keys` can share it."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


class SqliteDatabase:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=10000")

    def execute(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def execute_count(self, sql: str, params: tuple = ()) -> int:
        """Run a write; return the number of rows it changed."""
        with self._lock:
            return self._conn.execute(sql, params).rowcount

    def script(self, sql: str) -> None:
        with self._lock:
            self._conn.executescript(sql)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
