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

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

launch() {  # launch BIN DATA: start with the saved options, record the postmaster's PID
  as_postgres "$1/pg_ctl" -D "$2" -w -l "$2/server.log" start -o "$(cat "$STATE_DIR/pg-opts")" >/dev/null
  head -1 "$2/postmaster.pid" > "$STATE_DIR/postgres.pid"
}

restart() {  # restart [SECONDS]: a real outage for fault tests: stop, stay down SECONDS, start again
  local bin data="$STATE_DIR/pg-data"
  bin=$(pg_bin)
  as_postgres "$bin/pg_ctl" -D "$data" -w -m fast stop >/dev/null
  sleep "${1:-0}"
  launch "$bin" "$data"
  log "postgres restarted (pid $(cat "$STATE_DIR/postgres.pid"))"
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
  echo "-h 127.0.0.1 -p $port -k $data -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" > "$STATE_DIR/pg-opts"
  launch "$bin" "$data"
  wait_port "$port" 30 postgres
  set_env TEST_POSTGRES_DSN "postgresql://postgres@127.0.0.1:$port/postgres"
  set_env POSTGRES__DSN "postgresql://postgres@127.0.0.1:$port/postgres"
  set_env TEST_SERVICES_DIR "$STATE_DIR"
  log "postgres: postgresql://postgres@127.0.0.1:$port/postgres (pid $(cat "$STATE_DIR/postgres.pid"))"
}

case "${1:-}" in
  start) start ;;
  restart) restart "${2:-0}" ;;
  stop) stop_pid postgres INT ;;
  *) echo "usage: $0 start|stop|restart [SECONDS]" >&2; exit 2 ;;
esac
