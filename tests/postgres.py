"""A throwaway PostgreSQL cluster for tests: `initdb` + `pg_ctl` in a temporary folder, on a free
port of 127.0.0.1, removed afterwards. As root, the server runs as the unprivileged `nobody`
(PostgreSQL refuses to run as root). `scripts/install_postgres.sh` installs the server.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from shared.processes import free_port

PASSWORD = "arena-test-pw"  # a real password, so tests can check it never shows in messages


def _bin_dir() -> Path | None:
    for name in ("pg_ctl", "initdb"):
        found = shutil.which(name)
        if found:
            return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


class PostgresCluster:
    """One server; `url(db)` for a database of it; `stop()` / `start()` to test an outage."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="arena-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._user = "nobody" if os.geteuid() == 0 else None
        self._databases = 0
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._user:
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, self._user)
            shutil.chown(pwfile, self._user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
                  f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = "
                       f"'{self.root}'\nfsync = off\nmax_connections = 100\nshared_buffers = 32MB\n")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / tool), *args]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.root)
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stdout}{result.stderr}")
        return result

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def url(self, database: str = "postgres", *, driver: str = "postgresql") -> str:
        return f"{driver}://postgres:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        self._databases += 1
        name = f"arena_test_{self._databases}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        result = subprocess.run([str(self.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                                 "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", sql],
                                capture_output=True, text=True, timeout=60, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL server for the whole session (install it with scripts/install_postgres.sh)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.fail("PostgreSQL is not installed: run scripts/install_postgres.sh (make test does)")
    cluster = PostgresCluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """An empty store's URL: each test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture
async def database(database_url):
    """A migrated `Database` on SQLite, then on PostgreSQL."""
    from gateway.store import Database

    db = Database(database_url)
    await db.upgrade()
    yield db
    await db.dispose()
