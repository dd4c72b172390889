#!/usr/bin/env bash
# Start/stop a moto S3 server on 127.0.0.1 (in-memory) and create the test bucket:
#   deploy/local/s3.sh start|stop
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
BUCKET=${S3_TEST_BUCKET:-pipeline-test}

start() {
  local port
  port=$(free_port)
  [ -x "$ROOT/.venv/bin/moto_server" ] || "$PY" -m pip install -q "moto[server]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  nohup "$ROOT/.venv/bin/moto_server" -H 127.0.0.1 -p "$port" > "$STATE_DIR/s3.log" 2>&1 &
  echo $! > "$STATE_DIR/s3.pid"
  wait_port "$port" 30 s3
  "$PY" - "$port" "$BUCKET" <<'PYEOF'
import sys, boto3
port, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
s3.create_bucket(Bucket=bucket)
PYEOF
  set_env TEST_S3_ENDPOINT "http://127.0.0.1:$port"
  set_env TEST_S3_BUCKET "$BUCKET"
  set_env TEST_S3_ACCESS_KEY test
  set_env TEST_S3_SECRET_KEY test
  set_env S3__ENDPOINT_URL "http://127.0.0.1:$port"  # the program's own settings (config/settings.py)
  set_env S3__BUCKET "$BUCKET"
  set_env S3__ACCESS_KEY test
  set_env S3__SECRET_KEY test
  log "s3: http://127.0.0.1:$port bucket $BUCKET (pid $(cat "$STATE_DIR/s3.pid"))"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid s3 ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
