"""Run the embedded Milvus 2.3 standalone server (PyPI wheel `milvus`) until SIGINT/SIGTERM.

    python deploy/local/milvus_server.py BASE_DIR PORT [S3_HOST S3_PORT BUCKET ACCESS_KEY SECRET_KEY]

With S3 arguments Milvus stores its data in that S3 bucket (rootPath `files`), which is what bulk
import from S3 needs. Prints `ready` once the health endpoint answers. Stops its child server on a
signal, so stopping this wrapper by PID never orphans `milvus run standalone`.

Every port is free, not fixed: the wheel picks its coordinators' ports itself, but its embedded etcd
binds 2379/2380 unless told otherwise, so a second checkout's Milvus (another SERVICES_DIR) could not
start beside the first. Its etcd gets two free ports through an etcd config file (``ETCD_CONFIG_PATH``,
as Milvus' own standalone_embed.sh does), and the health endpoint a free one instead of 9091.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now (all held at once while chosen, so never the same twice)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def etcd_config(client_port: int, peer_port: int) -> str:
    """The embedded etcd's listen and advertise URLs (etcd's YAML config keys), loopback only."""
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return "\n".join(
        [
            "name: default",
            f"listen-client-urls: {client}",
            f"advertise-client-urls: {client}",
            f"listen-peer-urls: {peer}",
            f"initial-advertise-peer-urls: {peer}",
            f"initial-cluster: default={peer}",
            "",
        ]
    )


def main() -> None:
    from milvus import MilvusServer

    base, port, *s3 = sys.argv[1:]
    etcd_client, etcd_peer, health = free_ports(3)
    etcd_file = Path(base) / "embedEtcd.yaml"
    Path(base).mkdir(parents=True, exist_ok=True)
    etcd_file.write_text(etcd_config(etcd_client, etcd_peer))
    os.environ["ETCD_CONFIG_PATH"] = str(etcd_file)  # read by Milvus itself (the wheel passes its environment on)
    server = MilvusServer(wait_for_started=True, proxy_port=int(port), etcd_port=etcd_client)
    server.webservice_port = health  # the wheel starts its search for a free health port here
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
    print(f"etcd 127.0.0.1:{etcd_client} (peer {etcd_peer}), health 127.0.0.1:{server.webservice_port}", flush=True)
    print("ready", flush=True)
    assert server.server_proc is not None
    code = server.server_proc.wait()
    sys.exit(code)


if __name__ == "__main__":
    main()
