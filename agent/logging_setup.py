"""Logs go to the console (INFO by default) and to a rotating file (DEBUG, with tracebacks)."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from rich.logging import RichHandler

_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"


class _UtcFormatter(logging.Formatter):
    import time as _time

    converter = _time.gmtime


def _no_library_tracebacks(record: logging.LogRecord) -> bool:
    """Console filter: hivemind's own tracebacks (e.g. a peer vanishing mid-round, or its helper processes
    stopping at shutdown) are expected events for us, handled and reported in one line by the agent; the
    full record still goes to the log file."""
    return not (record.name.startswith("hivemind") and record.exc_info)


def setup_logging(
    level: str = "INFO",
    file: Path | None = None,
    *,
    console: bool = True,
    max_bytes: int = 5_000_000,
    backups: int = 3,
) -> None:
    """Configure the ``hypergpu`` logger tree (idempotent).

    Args:
        level: console level name (DEBUG, INFO, WARNING, ERROR).
        file: rotating log file (always at DEBUG); None for none.
        console: also log to stderr (off when a TUI owns the terminal).
        max_bytes, backups: rotation size in bytes and number of old files kept.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_hypergpu", False):
            root.removeHandler(handler)
    root.setLevel(logging.DEBUG)
    if console:
        stream = RichHandler(show_path=False, rich_tracebacks=False, log_time_format="%H:%M:%S")
        stream.setLevel(level)
        stream.addFilter(_no_library_tracebacks)
        stream._hypergpu = True  # type: ignore[attr-defined]
        root.addHandler(stream)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        rotating = logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups)
        rotating.setLevel(logging.DEBUG)
        rotating.setFormatter(_UtcFormatter(_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
        rotating._hypergpu = True  # type: ignore[attr-defined]
        root.addHandler(rotating)
    # hivemind logs through its own handler; route it into ours and quiet its chatter on the console.
    from hivemind.utils.logging import use_hivemind_log_handler

    use_hivemind_log_handler("nowhere")
    hivemind_logger = logging.getLogger("hivemind")
    hivemind_logger.propagate = True
    hivemind_logger.setLevel(logging.INFO if level == "DEBUG" else logging.WARNING)
