#!/usr/bin/env bash
# Start or stop every real local service the integration tests use, without Docker.
#   deploy/local/services.sh start   -> writes URIs to $SERVICES_DIR/services.env (source it): TEST_* for the
#                                       tests, and the program's own settings (KAFKA__BOOTSTRAP_SERVERS,
#                                       MONGODB__CONNECTION_STRING, POSTGRES__DSN, MILVUS__URI, S3__*), so
#                                       `set -a; source FILE` points run-pipeline at these services
#   deploy/local/services.sh stop    -> stops only the processes these scripts started, by PID
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
HERE="$(dirname "${BASH_SOURCE[0]}")"
SERVICES=(${SERVICES:-postgres s3 milvus kafka mongo})

case "${1:-}" in
  start)
    rm -f "$ENV_FILE"
    for s in "${SERVICES[@]}"; do bash "$HERE/$s.sh" start; done
    echo "$ENV_FILE"
    ;;
  stop)
    for s in "${SERVICES[@]}"; do bash "$HERE/$s.sh" stop || true; done
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
