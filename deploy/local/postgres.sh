#!/usr/bin/env bash
# Start/stop a throwaway PostgreSQL on 127.0.0.1 for tests: deploy/local/postgres.sh start|stop
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && { echo "$d"; return; }; done
  log "PostgreSQL not found; installing Debian's postgresql"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && { echo "$d"; return; }; done
  log "could not install PostgreSQL"; exit 1
}

start() {
  local bin port data as
  bin=$(pg_bin)
  port=${POSTGRES_PORT:-$(free_port)}
  data="$STATE_DIR/pg-data"
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  as=(runuser -u postgres --)
  [ "$(id -u)" = 0 ] || as=()
  rm -rf "$data"; mkdir -p "$data"; chown postgres: "$data" 2>/dev/null || true
  "${as[@]}" "$bin/initdb" -D "$data" --auth=trust -U postgres >/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$data" -w -l "$data/server.log" start \
    -o "-h 127.0.0.1 -p $port -k $data -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >/dev/null
  head -1 "$data/postmaster.pid" > "$STATE_DIR/postgres.pid"
  wait_port "$port" 30 postgres
  set_env TEST_POSTGRES_DSN "postgresql://postgres@127.0.0.1:$port/postgres"
  log "postgres: postgresql://postgres@127.0.0.1:$port/postgres (pid $(cat "$STATE_DIR/postgres.pid"))"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid postgres INT ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
