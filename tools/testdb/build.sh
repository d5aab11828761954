#!/usr/bin/env bash
# Installs (once) Debian's PostgreSQL server, which tests/db_servers.py runs on loopback for the sweep's Optuna storage.
#
# stdout: exactly one line, the directory holding initdb and postgres (e.g. /usr/lib/postgresql/15/bin), or nothing
# when PostgreSQL is missing and this user cannot install it (the tests that need it then skip). Progress goes to stderr.
# When PostgreSQL is present the script does nothing and returns in milliseconds.
#
# Debian's initdb is not on PATH (its pg_wrapper covers only the client programs), so the server is found in
# /usr/lib/postgresql/<major>/bin, the newest major first; an initdb on PATH counts too (another distribution's).
set -euo pipefail

log() { echo "build.sh: $*" >&2; }

postgres_bin_dir() {
  local dir
  while read -r dir; do
    if [[ -x "$dir/initdb" && -x "$dir/postgres" ]]; then
      echo "$dir"
      return 0
    fi
  done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r)
  local initdb
  initdb="$(command -v initdb 2>/dev/null)" || return 1
  dir="$(dirname "$(readlink -f "$initdb")")"
  [[ -x "$dir/postgres" ]] && echo "$dir"
}

# Fast path: nothing to do.
if dir="$(postgres_bin_dir)"; then
  echo "$dir"
  exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
  log "note: PostgreSQL is not installed and only root can install it (apt-get install postgresql);" \
      "the PostgreSQL storage tests will be skipped"
  exit 0
fi

# Serialise concurrent callers (e.g. several pytest-xdist workers): apt holds its own lock and would fail the loser.
TESTBIN="${RLKUBE_TESTBIN:-$HOME/.cache/rlkube/testbin}"
mkdir -p "$TESTBIN"
if command -v flock >/dev/null; then
  exec 9>"$TESTBIN/.install-postgresql.lock"
  flock 9
fi
if dir="$(postgres_bin_dir)"; then
  echo "$dir"
  exit 0
fi

started=$SECONDS
log "installing Debian's postgresql with apt (about a minute)"
# On a machine that runs systemd, the package also creates and starts its own cluster (15/main on port 5432);
# the tests never use it: each starts a server of its own in a scratch directory.
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends postgresql >&2
dir="$(postgres_bin_dir)" || { log "internal error: no initdb in /usr/lib/postgresql/*/bin after the install"; exit 1; }
log "done in $((SECONDS - started)) s"
echo "$dir"
