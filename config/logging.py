"""structlog setup: JSON lines for machines, coloured text for people, both on stderr.

``auto`` picks text on a terminal and JSON otherwise, so CI logs and log shippers get one JSON
object per line while a person at a terminal gets readable lines. Context variables (run_id, task,
correlation_id) are merged into every line.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

from config.settings import LoggingSettings

_SECRET_KEYS = ("password", "secret", "token", "dsn", "access_key", "secret_key")


def _redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Last line of defence: a secret passed as a plain string is never written out."""
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS) and event[key] is not None:
            event[key] = "**********"
    return event


class _StderrLogger:
    """Prints to whatever ``sys.stderr`` is at the time of the call.

    Why not PrintLoggerFactory(file=sys.stderr): that binds the stream of the moment logging was
    configured, and a caller that swaps stderr for a while (typer's CliRunner, a test harness) closes
    that stream afterwards: every later log line then raised "I/O operation on closed file".
    A stderr that cannot be written (the terminal was closed) loses the line, never the run.
    """

    def msg(self, message: str) -> None:
        try:
            print(message, file=sys.stderr, flush=True)
        except OSError:  # a hung-up terminal (EIO) or a closed pipe: a log line is not worth the run
            pass

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def quiet_foreign_output() -> None:
    """Settle, at their source, lines other libraries would print on every run that are not the user's.

    gRPC (under pymilvus) logs "Other threads are currently calling into gRPC, skipping fork() handlers"
    whenever the process forks while a channel is busy (pgserver runs pg_ctl as its own OS user: a
    fork, not a vfork). Those fork handlers only serve a child that goes on using gRPC; ours exec at
    once or come from a forkserver started fresh, so fork support is switched off rather than the log
    level raised (which would hide gRPC's real errors too). It must happen before gRPC is imported,
    which is why every entry point configures logging first. An explicit setting wins.
    """
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


def configure_logging(settings: LoggingSettings | None = None, *, force_format: str | None = None) -> None:
    quiet_foreign_output()
    settings = settings or LoggingSettings()
    fmt = force_format or settings.format
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    level = getattr(logging, settings.level)
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info if fmt == "json" else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *args: _StderrLogger(),
        cache_logger_on_first_use=False,
    )
