# Shared helpers for the local (Docker-less) service scripts. Sourced, not run.
# Every service: started in the background, waited on until it answers, its PID written to
# $STATE_DIR/NAME.pid, its URI written to $STATE_DIR/services.env; stopped by that PID only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# One state directory per checkout: two clones on one machine never share data dirs or PID files.
STATE_DIR="${SERVICES_DIR:-${TMPDIR:-/tmp}/dag-pipeline-services-$(printf '%s' "$ROOT" | md5sum | cut -c1-8)}"
ENV_FILE="$STATE_DIR/services.env"
PY="${PY:-$ROOT/.venv/bin/python}"
mkdir -p "$STATE_DIR"
chmod 755 "$STATE_DIR"

log() { printf '[services] %s\n' "$*" >&2; }

free_port() {
  "$PY" - <<'PYEOF'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PYEOF
}

wait_port() {  # wait_port PORT SECONDS NAME
  local port=$1 secs=$2 name=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    if "$PY" -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$port)))" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  log "$name did not answer on 127.0.0.1:$port within ${secs}s"; return 1
}

set_env() {  # set_env KEY VALUE: replace KEY in the env file
  touch "$ENV_FILE"
  grep -v "^export $1=" "$ENV_FILE" > "$ENV_FILE.tmp" || true
  echo "export $1='$2'" >> "$ENV_FILE.tmp"
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

stop_pid() {  # stop_pid NAME [SIGNAL]: stop the process we started, by its PID file
  local pidfile="$STATE_DIR/$1.pid" sig=${2:-TERM} pid i
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { log "$1 (pid $pid) did not stop, killing"; kill -KILL "$pid" 2>/dev/null || true; }
  fi
  rm -f "$pidfile"
  log "stopped $1"
}
