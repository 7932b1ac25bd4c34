#!/usr/bin/env bash
# PostgreSQL for the store's tests (they create a throwaway cluster with initdb/pg_ctl), from
# Debian's packages. The gateway itself needs no server: without ARENA_DATABASE_URL it uses SQLite.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || command -v pg_ctl >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "PostgreSQL is missing and apt-get is not available: install PostgreSQL 15 by hand" >&2
    exit 1
fi
sudo_cmd=()
[[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
echo "Installing PostgreSQL from Debian's packages"
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# The test clusters are private: the package's own cluster need not run.
if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | while read -r version name _; do
        "${sudo_cmd[@]}" pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
    done
fi
