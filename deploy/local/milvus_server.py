"""Run the embedded Milvus 2.3 standalone server (PyPI wheel `milvus`) until SIGINT/SIGTERM.

    python deploy/local/milvus_server.py BASE_DIR PORT [S3_HOST S3_PORT BUCKET ACCESS_KEY SECRET_KEY]

With S3 arguments Milvus stores its data in that S3 bucket (rootPath `files`), which is what bulk
import from S3 needs. Prints `ready` once the health endpoint answers. Stops its child server on a
signal, so stopping this wrapper by PID never orphans `milvus run standalone`.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from milvus import MilvusServer


def main() -> None:
    base, port, *s3 = sys.argv[1:]
    server = MilvusServer(wait_for_started=True, proxy_port=int(port))
    server.show_startup_banner = False
    server.set_base_dir(base)
    if s3:
        host, s3_port, bucket, key, secret = s3
        for k, v in {
            "common.storageType": "minio",
            "minio.address": host,
            "minio.port": int(s3_port),
            "minio.accessKeyID": key,
            "minio.secretAccessKey": secret,
            "minio.bucketName": bucket,
            "minio.rootPath": "files",
            "minio.useSSL": "false",
        }.items():
            server.config.set(k, v)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.stop()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    server.start()
    print("ready", flush=True)
    assert server.server_proc is not None
    code = server.server_proc.wait()
    sys.exit(code)


if __name__ == "__main__":
    main()
