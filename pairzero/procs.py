"""Supervision of the processes of a loopback run: start, watch, stop cleanly, leave no orphans.

Every child is started in its own session (so a Ctrl-C in the terminal reaches only the
supervisor, which then stops the children in order) and with ``PR_SET_PDEATHSIG`` so that the
kernel ends it if the supervisor itself dies (killed, crashed): no orphan keeps a port or a CPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> object | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved once in the parent: dlopen between fork and exec can deadlock in a threaded parent.
_PRCTL = _load_prctl()


def _die_with_parent() -> None:  # runs in the child between fork and exec: no allocation
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)  # type: ignore[operator]


@dataclass
class Child:
    """One supervised process; its output goes to a log file, optionally echoed line by line."""

    name: str
    argv: Sequence[str]
    log_path: Path
    echo: Callable[[str], None] | None = None
    proc: subprocess.Popen[bytes] | None = None
    _pump: threading.Thread | None = field(default=None, repr=False)

    def start(self, env: dict[str, str] | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            list(self.argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env=env,
        )
        self._pump = threading.Thread(target=self._copy_output, name=f"pump-{self.name}", daemon=True)
        self._pump.start()
        log.debug("started %s (pid %d): %s", self.name, self.proc.pid, " ".join(self.argv))

    def _copy_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        out: IO[bytes] = self.proc.stdout
        with open(self.log_path, "ab") as f:
            for raw in iter(out.readline, b""):
                f.write(raw)
                f.flush()
                if self.echo is not None:
                    try:
                        self.echo(raw.decode(errors="replace").rstrip("\n"))
                    except Exception:  # e.g. a closed terminal pipe: keep draining into the log
                        self.echo = None

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float | None = None) -> int | None:
        if self.proc is None:
            return None
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if self._pump is not None:
            self._pump.join(timeout=5.0)
        return rc


class Supervisor:
    """A group of children stopped together: SIGINT first, SIGKILL after a grace period."""

    def __init__(self, grace_s: float = 10.0) -> None:
        self.children: list[Child] = []
        self.grace_s = grace_s

    def start(self, child: Child, env: dict[str, str] | None = None) -> Child:
        child.start(env)
        self.children.append(child)
        return child

    def stop(self, children: Sequence[Child] | None = None) -> dict[str, int | None]:
        """Stop the given children (default all), newest first; returns their exit codes."""
        targets = list(children if children is not None else self.children)
        for c in reversed(targets):
            c.signal(signal.SIGINT)
        deadline = time.monotonic() + self.grace_s
        codes: dict[str, int | None] = {}
        for c in reversed(targets):
            codes[c.name] = c.wait(timeout=max(0.0, deadline - time.monotonic()))
            if codes[c.name] is None:
                log.warning("%s did not stop within %.0f s; killing it", c.name, self.grace_s)
                c.signal(signal.SIGKILL)
                codes[c.name] = c.wait(timeout=5.0)
        return codes

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
