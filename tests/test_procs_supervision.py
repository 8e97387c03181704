"""Loopback process supervision: children stop on request and never outlive the supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pairzero.procs import Child, Supervisor

pytestmark = pytest.mark.e2e  # starts processes or runs the channel emulator

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_output_is_logged_and_echoed(tmp_path: Path) -> None:
    lines: list[str] = []
    child = Child("echo", [sys.executable, "-c", "print('hello from child')"], tmp_path / "c.log", lines.append)
    with Supervisor() as sup:
        sup.start(child)
        assert child.wait(timeout=30) == 0
    assert "hello from child" in (tmp_path / "c.log").read_text()
    assert lines == ["hello from child"]


def test_stop_interrupts_then_kills_a_stubborn_child(tmp_path: Path) -> None:
    polite = Child("polite", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "p.log")
    stubborn_code = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    stubborn = Child("stubborn", [sys.executable, "-c", stubborn_code], tmp_path / "s.log")
    sup = Supervisor(grace_s=1.0)
    sup.start(polite)
    sup.start(stubborn)
    deadline = time.monotonic() + 20
    slog = tmp_path / "s.log"
    while not (slog.exists() and "ready" in slog.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    codes = sup.stop()
    assert codes["polite"] not in (None, 0)  # interrupted (KeyboardInterrupt -> 1)
    assert codes["stubborn"] == -signal.SIGKILL
    assert not _alive(polite.proc.pid) and not _alive(stubborn.proc.pid)  # type: ignore[union-attr]


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from pairzero.procs import Child, Supervisor
        sup = Supervisor()
        c = sup.start(Child("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"], Path({str(tmp_path / 'x.log')!r})))
        Path({str(pidfile)!r}).write_text(str(c.proc.pid))
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "supervisor never started its child"
        time.sleep(0.05)
    child_pid = int(pidfile.read_text())
    assert _alive(child_pid)
    parent.kill()  # SIGKILL: no cleanup code of the supervisor runs
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child_pid):
        assert time.monotonic() < deadline, "child outlived its killed supervisor (orphan)"
        time.sleep(0.05)
