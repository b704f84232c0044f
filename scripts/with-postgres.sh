#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL server on loopback.
# Installs the Debian server package when no server binary is found, starts a fresh
# cluster in a temporary directory on a free port, exports CALBRIDGE_TEST_POSTGRES_URL,
# runs the command and always stops the server again.
set -euo pipefail

find_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

BINDIR=$(find_bindir || true)
if [ -z "$BINDIR" ]; then
  echo "with-postgres: installing the PostgreSQL server (apt)" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq postgresql >/dev/null
  BINDIR=$(find_bindir)
fi

WORK=$(mktemp -d /tmp/calbridge-pg.XXXXXX)
RUNAS=()
if [ "$(id -u)" -eq 0 ]; then
  # initdb refuses to run as root: use the postgres system user (created by the package)
  id postgres >/dev/null 2>&1 || useradd --system --home "$WORK" postgres
  chown -R postgres "$WORK"
  RUNAS=(runuser -u postgres --)
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')

cleanup() {
  "${RUNAS[@]}" "$BINDIR/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

"${RUNAS[@]}" "$BINDIR/initdb" -D "$WORK/data" -U calbridge --auth=trust -E UTF8 >/dev/null
"${RUNAS[@]}" "$BINDIR/pg_ctl" -D "$WORK/data" -l "$WORK/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $WORK -c fsync=off -c max_connections=200" start >/dev/null
"${RUNAS[@]}" "$BINDIR/createdb" -h 127.0.0.1 -p "$PORT" -U calbridge calbridge_test

export CALBRIDGE_TEST_POSTGRES_URL="postgresql+psycopg://calbridge@127.0.0.1:$PORT/calbridge_test"
export CALBRIDGE_PG_BINDIR="$BINDIR"
echo "with-postgres: PostgreSQL on 127.0.0.1:$PORT" >&2
set +e
"$@"
rc=$?
set -e
exit $rc
