#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the tests (tests/conftest.py, .ci/run).
#   .ci/postgres.sh start DIR PORT   -> prints the SQLAlchemy URL of database 'steadyflow'
#   .ci/postgres.sh stop DIR
# Installs Debian's postgresql package when no server binaries are on the machine.
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?data folder}
find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
bin=$(find_bin)
if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
  echo "installing postgresql (Debian package)" >&2
  (apt-get install -y -q postgresql || { apt-get update -q && apt-get install -y -q postgresql; }) >&2
  bin=$(find_bin)
fi
as=()
if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi   # PostgreSQL refuses to run as root
case "$cmd" in
  start)
    port=${3:?port}
    mkdir -p "$dir"; chmod 755 "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U steadyflow --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >&2
    "${as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U steadyflow steadyflow
    echo "postgresql+psycopg://steadyflow@127.0.0.1:$port/steadyflow"
    ;;
  stop)
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    ;;
esac
