"""One logging format for every pAirZero process (AP, edge nodes, channel, CLI)."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def setup_logging(level: str = "INFO", process: str | None = None) -> None:
    """Configure the root logger once per process; ``process`` tags every line (e.g. ``node2``)."""
    level = level.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"--log-level: {level!r} is not one of {', '.join(LOG_LEVELS)}")
    fmt = LOG_FORMAT if process is None else LOG_FORMAT.replace("%(name)s", f"[{process}] %(name)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
