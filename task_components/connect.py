"""How components reach the stores they share: Milvus (server or Lite) and the shadow PostgreSQL.

Several components talk to the same store (create, import and verify to Milvus; shadow and verify to
PostgreSQL), so where a store is lives here, beside the contracts, not in one component's task module.
With nothing configured the embedded defaults apply: Milvus Lite and a PostgreSQL in the run directory.
The clients themselves are built in ``clients``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import structlog

from config.settings import Settings
from dag_orchestrator.context import PipelineContext
from dag_orchestrator.diskspace import free_bytes, human, naming_enospc, space_note
from dag_orchestrator.locks import LockHeld, PathLock, resource_lock
from dag_orchestrator.watchdog import alive, read_users, split_alive, watchdog_script
from task_components.clients import MilvusTarget, kafka_admin, milvus_client

__all__ = [
    "CollectionBusyError",
    "EmbeddedServerError",
    "count_rows",
    "embedded_dsn",
    "ensure_loaded",
    "guard_collection",
    "shadow_dsn",
]

_embedded: dict[str, Any] = {}


def ensure_loaded(client: Any, collection: str) -> None:
    """Load a released collection (Milvus Lite reopened by another process starts released)."""
    if str(client.get_load_state(collection).get("state")) != "Loaded":
        client.load_collection(collection)


def count_rows(client: Any, collection: str) -> int:
    if not client.list_indexes(collection):  # cannot be loaded (Milvus 2.3): the flushed count instead
        client.flush(collection)
        return int(client.get_collection_stats(collection).get("row_count", 0))
    ensure_loaded(client, collection)
    reply = client.query(collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(reply[0]["count(*)"])


def count_at(target: MilvusTarget, collection: str) -> int:
    """``count_rows`` with a client of its own (opened and closed here)."""
    client = milvus_client(target)
    try:
        return count_rows(client, collection)
    finally:
        client.close()


# One lock for everything this process does with pgserver. pgserver's own lock is an fcntl lock held
# per process: a second thread of ours (two runs of one daemon, two shadow tasks, each in a worker
# thread) would enter it at once, and its release would drop the lock for every other process too.
_embedded_lock = threading.RLock()
_pgserver_module: ModuleType | None = None


def _pgserver() -> ModuleType:
    """pgserver, imported without platformdirs' XDG_RUNTIME_DIR warning (ours to settle, not the user's).

    pgserver asks platformdirs where its lock file lives while its class body runs; with no
    XDG_RUNTIME_DIR (a container, sudo, cron) that falls back to /tmp/runtime-UID, which is fine for a
    lock, but warns on every run. Setting the variable instead would move the lock for this process
    only, and processes that disagree on the lock would not exclude each other: so silence, not change.
    The filter is set once, around the first import only: ``catch_warnings`` swaps the process-wide
    filter list, which other threads would see half-changed if every call did it.
    """
    global _pgserver_module
    if _pgserver_module is None:
        with _embedded_lock:
            if _pgserver_module is None:
                from platformdirs.api import RuntimeDirWarning

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeDirWarning)
                    import pgserver
                commands = getattr(pgserver, "_commands", None)
                if commands is not None and getattr(commands, "subprocess", None) is subprocess:
                    commands.subprocess = _OwnSession()
                _pgserver_module = pgserver
    return _pgserver_module


class _OwnSession:
    """``subprocess`` as pgserver's command runner sees it: each command (initdb, pg_ctl) in its own session.

    A closed terminal hangs up the run's whole process group. initdb treats SIGHUP as "abort": caught
    half-way through creating the data directory it leaves one that neither it nor pgserver can use
    again, so the run could not be resumed. The run itself is what the hangup is for; it stops (or
    leaves to its watchdog) the server it started.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        kwargs.setdefault("start_new_session", True)
        user = kwargs.pop("user", None)
        if user is not None and SETPRIV is not None and args and isinstance(args[0], list | tuple):
            # as another user through setpriv, not ``user=``: with ``user=`` CPython must fork() (not vfork()),
            # and a fork() of a process whose threads are inside gRPC, Arrow or a Milvus Lite client runs
            # their fork handlers in a half-copied child: pg_ctl was seen dying of SIGSEGV right there
            switch = [SETPRIV, f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
            args = ([*switch, *args[0]], *args[1:])
        elif user is not None:
            kwargs["user"] = user
        return subprocess.run(*args, **kwargs)  # pgserver passes check=True itself


SETPRIV = shutil.which("setpriv")  # util-linux: on every Debian; elsewhere ``user=`` as before


@contextlib.contextmanager
def _server_lock() -> Iterator[None]:
    """The lock pgserver's users hold while they register, start, unregister and stop a server.

    pgserver's own object (an fcntl lock, held per process: a second lock object on the same file
    would exclude nothing, and closing it would drop the first one's lock), taken only under this
    process' thread lock, so one thread of ours at a time holds it.
    """
    with _embedded_lock, _pgserver().PostgresServer._lock:
        yield


def forget_dead_handles(data: Path) -> list[int]:
    """Drop processes that died without saying so (a SIGKILL) from pgserver's list of users.

    pgserver stops the server when the last process using it exits, judged by the pids recorded in
    ``.handle_pids.json``. A killed process never removes its pid, so without this every later process
    thinks another still uses the server and leaves it running: the server would outlive every run.
    The list is edited under pgserver's own lock, as pgserver edits it, so a process registering at the
    same moment is not lost; a list caught half-written is left alone.
    """
    handles = data / ".handle_pids.json"
    with _server_lock():
        users = read_users(handles)
        if not users:
            return []
        live, dead = split_alive(users)
        if dead:
            handles.write_text(json.dumps(live))
    return dead


def _watchdog_running(pid_file: Path, pgdata: Path) -> bool:
    """The pid in ``pid_file`` is this server's watchdog: alive, and its command line says so.

    A pid alone is not enough: after a reboot (or enough processes) the number belongs to someone
    else, and the server would go unwatched with nothing said.
    """
    try:
        pid = int(pid_file.read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    args = [a.decode(errors="replace") for a in argv]
    return alive(pid) and watchdog_script() in args and str(pgdata / ".handle_pids.json") in args


def _start_watchdog(base: Path, pgdata: Path) -> None:
    """One detached watcher per embedded server: it stops the server once every user is dead.

    See ``dag_orchestrator.watchdog``. Its pid is kept in ``<base>/watchdog.pid`` so a second user of
    the same server does not start a second one. It gets no inherited descriptor (a caller reading our
    stderr to its end would otherwise wait for the watcher), its own session (a terminal hangup does
    not reach it) and no parent of ours (it detaches: nothing to reap). What it says, and any failure
    to start (an import error included), goes to ``<base>/watchdog.log``; a failed start is warned about.
    The caller holds ``_server_lock``.
    """
    pid_file = base / "watchdog.pid"
    if _watchdog_running(pid_file, pgdata):
        return
    with naming_enospc(base / "watchdog.log"), open(base / "watchdog.log", "ab") as log:
        starter = subprocess.run(
            [
                sys.executable,
                "-I",
                watchdog_script(),
                "--detach",
                str(pid_file),
                str(pgdata / ".handle_pids.json"),
                str(_pgserver().PostgresServer.lock_path),
                str(pgdata / "postmaster.pid"),
                str(base / STARTING),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            check=False,
        )
    if starter.returncode != 0:  # the server runs on unwatched: said, not fatal (a resume still stops it)
        structlog.get_logger("task_components.connect").warning(
            "the embedded PostgreSQL's watchdog did not start; a killed run may leave the server running",
            log=str(base / "watchdog.log"),
            exit_status=starter.returncode,
        )


STARTING = "starting.json"  # pids of processes starting the server, not yet in its list of users


def _starting(base: Path, *, add: bool) -> None:
    """Record (or drop) this process as starting the server; the caller holds ``_server_lock``."""
    file = base / STARTING
    pids = [p for p in (read_users(file) or []) if p != os.getpid()]
    with naming_enospc(file):
        file.write_text(json.dumps([*pids, os.getpid()] if add else pids))


def embedded_dsn(run_dir: Path) -> str:
    """Start (or reuse) a PostgreSQL in ``<run dir>/postgres``; it stops when its last user process exits.

    "Exits" includes dying by SIGKILL: a watchdog (``_start_watchdog``) stops it within seconds then.
    Callers run in worker threads: the whole check-start-register is one thread at a time, so two
    runs of one process never start two servers (or two watchdogs) for one directory.
    """
    key = str(run_dir.resolve())
    with _embedded_lock:
        if key not in _embedded:
            pgserver = _pgserver()
            base = run_dir.resolve() / "postgres"
            data = base / "data"
            with naming_enospc(base, "creating"):
                base.mkdir(parents=True, exist_ok=True)
            base.chmod(0o755)  # pgserver runs PostgreSQL as its own OS user, which must traverse this
            # the data directory itself belongs to pgserver: PostgreSQL refuses one that is not 0700/0750
            forget_dead_handles(data)
            with _server_lock():  # watched before it starts: a kill during initdb or pg_ctl strands nothing
                _starting(base, add=True)
                _start_watchdog(base, data)
            try:
                _embedded[key] = pgserver.get_server(str(data), cleanup_mode="stop")
            except subprocess.CalledProcessError as exc:
                raise EmbeddedServerError(_why_not_started(data, exc)) from None
            finally:
                with _server_lock():  # registered as a user by now, or not starting any more
                    _starting(base, add=False)
        return str(_embedded[key].get_uri())


class EmbeddedServerError(RuntimeError):
    """The run directory's PostgreSQL could not be initialised or started; the message says why if known."""


def _why_not_started(data: Path, exc: subprocess.CalledProcessError) -> str:
    """initdb and pg_ctl fail with exit status 1 whatever the cause: look for a full disk first."""
    program = Path(str(exc.cmd[0])).name if isinstance(exc.cmd, list | tuple) and exc.cmd else "PostgreSQL"
    log = ""
    with contextlib.suppress(OSError):
        log = (data / "log").read_text(errors="replace")[-4000:]
    usage = free_bytes(data)
    if "No space left on device" in log or (usage is not None and usage[0] < _PG_MIN_FREE):
        return (
            f"embedded PostgreSQL: {program} failed in {data}: no space left on device ({space_note(data)}"
            f" after its cleanup; PostgreSQL needs about {human(_PG_MIN_FREE)} to start)"
        )
    tail = log.strip().splitlines()[-3:]
    return f"embedded PostgreSQL: {program} failed in {data} (exit status {exc.returncode})" + (
        f": {' | '.join(tail)}" if tail else f"; its log is {data / 'log'}"
    )


_PG_MIN_FREE = 64 * 1024 * 1024  # initdb writes about 40 MB; with less free, a full disk is the cause


async def shadow_dsn(settings: Settings, run_dir: Path | None) -> tuple[str, bool]:
    if settings.postgres.dsn is not None:
        return settings.postgres.dsn.get_secret_value(), False
    if run_dir is None:
        raise ValueError("POSTGRES__DSN is not set and the run has no run directory for an embedded PostgreSQL")
    return await anyio.to_thread.run_sync(embedded_dsn, Path(run_dir)), True


_guards: dict[tuple[str, str, str], tuple[str, PathLock]] = {}


def guard_collection(ctx: PipelineContext, target: MilvusTarget, collection: str) -> None:
    """Hold the collection for this run until it ends; another live run loading it is refused, named.

    Without it, a second run dropping or loading the same collection makes the first fail with an
    unrelated-looking Milvus error (or doubles its rows). Tasks of one run share the guard.
    """
    key = (target.uri, target.db_name, collection)
    held = _guards.get(key)
    if held is not None and held[0] == ctx.run_id:
        return
    lock = resource_lock(f"collection {collection!r} at {target.uri}", *key)
    try:
        lock.acquire(run_id=ctx.run_id, run_dir=str(ctx.run_dir or ""))
    except LockHeld as exc:
        raise CollectionBusyError(f"{exc}: another run is loading it; wait for it or use another collection") from None
    _guards[key] = (ctx.run_id, lock)

    def release() -> None:
        if _guards.get(key, (None,))[0] == ctx.run_id:
            del _guards[key]
        lock.release()

    ctx.services.on_close(release)


class CollectionBusyError(RuntimeError):
    """Another live run holds the collection."""


async def ensure_topics(settings: Settings, topics: str | list[str], partitions: int) -> None:
    """Create missing topics with ``partitions`` partitions (a broker's auto-created ones get its default)."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    wanted = [topics] if isinstance(topics, str) else list(dict.fromkeys(topics))
    admin = kafka_admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        for topic in wanted:
            if topic not in existing:
                try:
                    await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
                except TopicAlreadyExistsError:
                    pass
    finally:
        await admin.close()


def missing(check: Callable[[Settings], object], settings: Settings) -> str | None:
    """What a connection helper (``kafka_options``, ``mongo_uri``) finds missing, for ``settings_problem``."""
    try:
        check(settings)
    except ValueError as exc:
        return str(exc)
    return None
