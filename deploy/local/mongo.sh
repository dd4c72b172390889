#!/usr/bin/env bash
# Start/stop SecantusDB, a MongoDB-wire-protocol server, on 127.0.0.1 (in memory):
#   deploy/local/mongo.sh start|stop
# SecantusDB is GPL-2.0: it lives in its own venv under the state dir and is never a project dependency.
# MONGO_STORAGE=PATH keeps the data on disk instead (survives a stop/start of the same state dir).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
SECANTUS_VERSION=${SECANTUS_VERSION:-0.7.0b3}
MONGO_VENV="$STATE_DIR/secantus-venv"

install_secantus() {
  [ -x "$MONGO_VENV/bin/secantusd-py" ] && return 0
  log "mongo: installing secantusdb==$SECANTUS_VERSION into its own venv ($MONGO_VENV)"
  "$PY" -m venv "$MONGO_VENV"
  "$MONGO_VENV/bin/pip" install -q "secantusdb==$SECANTUS_VERSION" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  [ -x "$MONGO_VENV/bin/secantusd-py" ] || { log "mongo: secantusdb did not install"; exit 1; }
}

start() {
  local port
  install_secantus
  port=${MONGO_PORT:-$(free_port)}
  nohup "$MONGO_VENV/bin/secantusd-py" --host 127.0.0.1 --port "$port" --storage-path "${MONGO_STORAGE:-:memory:}" \
    --log-level WARNING > "$STATE_DIR/mongo.log" 2>&1 &
  echo $! > "$STATE_DIR/mongo.pid"
  echo "$port" > "$STATE_DIR/mongo.port"
  wait_port "$port" 60 mongo
  set_env TEST_MONGO_URI "mongodb://127.0.0.1:$port/?directConnection=true"
  set_env MONGODB__CONNECTION_STRING "mongodb://127.0.0.1:$port/?directConnection=true"
  set_env TEST_SECANTUSD "$MONGO_VENV/bin/secantusd-py"  # for tests that stop and restart their own server
  log "mongo: mongodb://127.0.0.1:$port/?directConnection=true (secantusdb, pid $(cat "$STATE_DIR/mongo.pid"))"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid mongo ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
