#!/usr/bin/env bash
# Start/stop a real Milvus 2.3 standalone server (PyPI `milvus`) on 127.0.0.1, storing its data in the
# S3 server started by s3.sh when that one is running (needed for bulk import from S3):
#   deploy/local/milvus.sh start|stop
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

start() {
  local port base s3args=()
  "$PY" -c "import milvus" 2>/dev/null || "$PY" -m pip install -q milvus 2>&1 | grep -v "^WARNING: Location" >&2 || true
  port=${MILVUS_PORT:-$(free_port)}  # a fixed port survives a restart (MILVUS_PORT)
  base="$STATE_DIR/milvus"
  rm -rf "$base"; mkdir -p "$base"
  [ -f "$ENV_FILE" ] && source "$ENV_FILE"
  if [ -n "${TEST_S3_ENDPOINT:-}" ]; then
    local hostport=${TEST_S3_ENDPOINT#http://}
    s3args=("${hostport%:*}" "${hostport##*:}" "$TEST_S3_BUCKET" "$TEST_S3_ACCESS_KEY" "$TEST_S3_SECRET_KEY")
  fi
  nohup "$PY" "$ROOT/deploy/local/milvus_server.py" "$base" "$port" "${s3args[@]}" > "$STATE_DIR/milvus.log" 2>&1 &
  echo $! > "$STATE_DIR/milvus.pid"
  local i
  for ((i = 0; i < 1500; i++)); do  # 300 s: a first start unpacks ~170 MB of binaries (slow on a busy machine)
    grep -q '^ready' "$STATE_DIR/milvus.log" 2>/dev/null && break
    kill -0 "$(cat "$STATE_DIR/milvus.pid")" 2>/dev/null || { log "milvus exited:"; tail -20 "$STATE_DIR/milvus.log" >&2; exit 1; }
    sleep 0.2
  done
  grep -q '^ready' "$STATE_DIR/milvus.log" || { log "milvus did not start in 300s"; exit 1; }
  set_env TEST_MILVUS_URI "http://127.0.0.1:$port"
  set_env TEST_MILVUS_STORAGE "$([ ${#s3args[@]} -gt 0 ] && echo s3 || echo local)"
  set_env MILVUS__URI "http://127.0.0.1:$port"
  log "milvus: http://127.0.0.1:$port (pid $(cat "$STATE_DIR/milvus.pid"))"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid milvus INT ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
