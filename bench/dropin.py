"""Shadowed writes side by side: a bare MilvusClient, ours (vectors shadowed, and ``ignore_vector``) and
pymilvus-pg's ``MilvusPGClient`` (both ways), on the same Milvus and PostgreSQL in the same run.

The workload (bench/dropin_workload.py, one process per client): ``--inserts`` rows inserted (110k: 100k rows are left to compare), then
``--upserts`` of them upserted and ``--deletes`` deleted, ``--batch`` rows per call, a ``--dim`` float
vector, a VarChar and a double per row; then, for the shadowing clients, one full comparison of the
collection with its shadow (ours: ``compare.validate``; theirs: ``entity_compare(full_scan=True)``).
pymilvus-pg runs from its own virtualenv (``--pymilvus-pg-python``; else bench/.venvs/pymilvus-pg, made
with ``pymilvus-pg==0.1.4`` from PyPI on first use, skipped with a note if that fails). Prints rows/s per client and
the ratios: ours / pymilvus-pg (same ``ignore_vector``), ours / bare, and ours / the floor: a bare
MilvusClient's writes while another process raw-COPYs the same rows into PostgreSQL. On two cores the
Milvus server, PostgreSQL and the client share the CPU, so a shadowed write cannot beat that floor
however well it overlaps the two calls.

    python bench/dropin.py [--inserts 110000 --upserts 10000 --deletes 10000 --dim 128] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CLIENTS = ("bare", "ours", "ours-novec", "pymilvus-pg", "pymilvus-pg-novec")


def their_python(given: str | None) -> str | None:
    if given:
        return given
    venv = ROOT / ".venvs" / "pymilvus-pg"  # beside milvus-ingest's (bench/generation.py), git-ignored
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "pymilvus-pg==0.1.4"], capture_output=True, text=True)
        if done.returncode:
            print(f"note: could not install pymilvus-pg ({done.stderr.strip()[-200:]}): its rows are skipped")
            return None
    return str(python)


def one(python: str, client: str, a: argparse.Namespace, tmp: Path) -> dict[str, float]:
    argv = [python, str(ROOT / "dropin_workload.py"), "--client", client, "--uri", a.uri, "--dsn", a.dsn]
    argv += ["--tracker", str(tmp / f"tracker-{client}"), "--validate"]
    for flag in ("inserts", "upserts", "deletes", "dim", "batch"):
        argv += [f"--{flag}", str(getattr(a, flag))]
    env = {**os.environ, "LOGURU_LEVEL": "WARNING", "LOGGING__LEVEL": "WARNING", "PYMILVUS_PG_LOG_DIR": str(tmp / "logs")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp)
    if done.returncode:
        raise SystemExit(f"{client} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def floor(client: str, a: argparse.Namespace, tmp: Path) -> dict[str, float]:
    """A bare MilvusClient's writes while another process raw-COPYs the same rows into PostgreSQL."""
    argv = [sys.executable, str(ROOT / "dropin_workload.py"), "--client", f"pg-load{'-novec' if 'novec' in client else ''}"]
    argv += ["--uri", a.uri, "--dsn", a.dsn, "--tracker", str(tmp / "unused")]
    for flag in ("inserts", "upserts", "deletes", "dim", "batch"):
        argv += [f"--{flag}", str(getattr(a, flag))]
    load = subprocess.Popen(argv, stdout=subprocess.DEVNULL, cwd=tmp)
    try:
        return one(sys.executable, "bare", a, tmp)
    finally:
        load.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uri", default=os.environ.get("TEST_MILVUS_URI"), help="Milvus server [TEST_MILVUS_URI]")
    ap.add_argument("--dsn", default=os.environ.get("TEST_POSTGRES_DSN"), help="PostgreSQL [TEST_POSTGRES_DSN]")
    ap.add_argument("--inserts", type=int, default=110_000, help="rows inserted (less --deletes: the compared rows)")
    ap.add_argument("--upserts", type=int, default=10_000)
    ap.add_argument("--deletes", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=1, help="rounds (medians)")
    ap.add_argument("--pymilvus-pg-python", default=None, help="python of a virtualenv with pymilvus-pg installed")
    a = ap.parse_args()
    if not (a.uri and a.dsn):
        raise SystemExit("give --uri and --dsn (or start deploy/local/services.sh and source its env file)")
    theirs = their_python(a.pymilvus_pg_python)
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in (*CLIENTS, "floor", "floor-novec")}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.repeat):
            for client in CLIENTS:
                python = theirs if client.startswith("pymilvus-pg") else sys.executable
                if python is not None:
                    runs[client].append(one(python, client, a, Path(tmp)))
            for client in ("floor", "floor-novec"):
                runs[client].append(floor(client, a, Path(tmp)))
    rows = a.inserts + a.upserts + a.deletes
    writes = {c: statistics.median(sum(v for k, v in r.items() if k != "validate") for r in rs) for c, rs in runs.items() if rs}
    checks = {c: statistics.median(r["validate"] for r in rs) for c, rs in runs.items() if rs and "validate" in rs[0]}
    print(f"{rows:,} row writes ({a.inserts:,} inserts, {a.upserts:,} upserts, {a.deletes:,} deletes), {a.dim}-d, batch {a.batch}")
    for c, s in writes.items():
        check = f", full comparison {checks[c]:.2f} s" if c in checks else ""
        print(f"  {c:<18} {rows / s:>10,.0f} rows/s ({s:.2f} s){check}")
    for ours, theirs_ in (("ours", "pymilvus-pg"), ("ours-novec", "pymilvus-pg-novec")):
        if ours in writes and theirs_ in writes:
            print(f"  writes {ours} / {theirs_}: {writes[theirs_] / writes[ours]:.2f}x", end="")
            if ours in checks and theirs_ in checks:
                print(f"; comparison {checks[theirs_] / checks[ours]:.2f}x faster", end="")
            print()
    for ours, fl in (("ours", "floor"), ("ours-novec", "floor-novec")):
        print(
            f"  writes {ours} / bare MilvusClient: {writes['bare'] / writes[ours]:.2f}x; / the floor (bare while PostgreSQL "
            f"COPYs the same rows in another process): {writes[fl] / writes[ours]:.2f}x"
        )


if __name__ == "__main__":
    main()
