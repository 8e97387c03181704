"""`pairzero loopback` supervises the AP: an AP that crashes is restarted on its run directory
and the run still commits every round exactly once, with every node bit-identical to the AP;
an AP that stops for a reason it states (status 1, e.g. a dead channel) is not restarted and
the run fails with that reason. Real processes, baseband PHY (no GNU Radio), tiny config."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pairzero.config import config_to_dict, load_config
from pairzero.launch import ap_crashed
from pairzero.metrics import read_metrics
from tests.e2e_util import free_port_block, replay_hash, round_log

pytestmark = pytest.mark.e2e  # starts processes or runs the channel emulator

PY = [sys.executable, "-m", "pairzero.cli"]
REPO = Path(__file__).resolve().parent.parent


def _config(tmp_path: Path, rounds: int, *extra: str) -> Path:
    port = free_port_block(2)
    cfg = load_config(None, [
        "radio.mode=baseband", f"run.rounds={rounds}", "task.eval_every=1000000",
        f"network.control_port={port}", f"network.sample_port_base={port + 1}",
        "network.ready_timeout_s=5.0", "network.heartbeat_s=0.5", "network.start_timeout_s=60",
        "network.curve=false", "output.plots=false", "zo.threads=1", "nodes.count=2",
        "task.batch_size=16", f"output.dir={tmp_path / 'runs'}", *extra,
    ])
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return path


def _launch(cfg: Path, tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp_path / "loopback.out"
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([*PY, "loopback", "--config", str(cfg), *args], cwd=REPO,
                            stdout=out.open("wb"), stderr=subprocess.STDOUT, env=env)
    return proc, out


def _wait(cond, timeout: float, what: str, proc: subprocess.Popen[bytes], out: Path):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert proc.poll() is None, f"{what}: loopback exited: {out.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {out.read_text()[-3000:]}"
        time.sleep(0.05)


def _run_dir(tmp_path: Path) -> Path | None:
    dirs = [d for d in (tmp_path / "runs").glob("*-loopback-*") if d.is_dir()]
    return dirs[0] if dirs else None


def _committed(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return sum(1 for r in read_metrics(path) if "g_hat" in r) if path.exists() else 0


def _ap_pid(run_dir: Path) -> int | None:
    log = run_dir / "logs" / "ap.log"
    m = re.search(r"\(pid (\d+)\): listening", log.read_text()) if log.exists() else None
    return int(m.group(1)) if m else None


@pytest.mark.parametrize(("status", "crashed"), [
    (0, False), (1, False), (2, False), (130, False), (-9, True), (-11, True), (70, True), (137, True),
])
def test_only_a_crashed_ap_counts_for_a_restart(status: int, crashed: bool) -> None:
    assert ap_crashed(status) is crashed


def test_loopback_restarts_a_killed_ap_and_commits_every_round_once(tmp_path: Path) -> None:
    # Prepare
    rounds = 120
    cfg = _config(tmp_path, rounds)
    proc, out = _launch(cfg, tmp_path)
    try:
        run_dir = _wait(lambda: _run_dir(tmp_path), 60, "the run directory", proc, out)
        pid = _wait(lambda: _ap_pid(run_dir), 120, "the AP's pid", proc, out)
        _wait(lambda: _committed(run_dir) >= 5, 120, "5 rounds", proc, out)
        # Execute: SIGKILL the AP mid-run (as the OOM killer would)
        os.kill(pid, signal.SIGKILL)
        at_kill = _committed(run_dir)
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    text = out.read_text()
    # Assert: restarted once, with a line saying so, and the run finished
    assert proc.returncode == 0, text[-3000:]
    assert "the AP was killed by SIGKILL; restarting it on" in text and "attempt 1 of 3" in text
    assert "resuming experiment" in (run_dir / "logs" / "ap.log").read_text()
    assert at_kill < rounds - 10, "the AP was killed too late to test a resume"
    # Every round 0..T-1 committed exactly once, in the log and in the metrics
    con = sqlite3.connect(run_dir / "rounds.sqlite")
    ts = [t for (t,) in con.execute("SELECT t FROM rounds ORDER BY t")]
    con.close()
    assert ts == list(range(rounds))
    assert [r.t for r in round_log(run_dir)] == list(range(rounds))
    rows = [r["round"] for r in read_metrics(run_dir / "metrics.jsonl") if "g_hat" in r]
    assert sorted(rows) == list(range(1, rounds + 1)), "a metrics row is missing or repeated"
    # Nodes bit-identical to the AP's model and to a replay of the log
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] is True and summary["rounds_committed"] == rounds
    hashes = {json.loads((run_dir / "nodes" / f"edge{k}.json").read_text())["model_hash"]
              for k in range(2)}
    assert hashes == {summary["model_hash"]} == {replay_hash(run_dir)}


def test_loopback_with_no_node_ever_present_fails_with_the_reason_and_no_restart(
        tmp_path: Path) -> None:
    # Prepare: every node below the truncation threshold: no node is ever in a round (as with
    # a dead channel); 2 empty rounds in a row stop the run
    cfg = _config(tmp_path, 50, "channel.truncation_threshold=1e9", "network.max_empty_rounds=2")
    # Execute
    proc, out = _launch(cfg, tmp_path)
    try:
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.read_text()
    run_dir = _run_dir(tmp_path)
    assert run_dir is not None
    # Assert: status 1, the reason in one line, no restart, summary with the counts
    assert proc.returncode == 1, text[-3000:]
    reason = [ln for ln in text.splitlines() if ln.startswith("pairzero ap: run stopped")]
    assert len(reason) == 1 and "2 consecutive rounds (0..1) had no node present" in reason[0]
    assert "restarting" not in text and "Traceback" not in text
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] is False and summary["rounds_committed"] == 2
    assert (summary["empty_rounds"], summary["partial_rounds"]) == (2, 0)
    assert "network.max_empty_rounds" in summary["stop_reason"]


def _pid_of(role: str, run_dir: Path) -> int | None:
    """Pid of the ``pairzero <role>`` process working on ``run_dir`` (Linux /proc)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pairzero.cli" in argv and role.encode() in argv and any(
                str(run_dir).encode() in a for a in argv):
            return int(proc.name)
    return None


def _present_rounds(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return sum(1 for r in read_metrics(path) if r.get("active")) if path.exists() else 0


def test_loopback_with_the_channel_emulator_killed_fails_with_the_reason(tmp_path: Path) -> None:
    # Prepare: the GNU Radio loopback (emulator process), one node, a short READY deadline
    # (privacy off: its warm-up would need max_empty_rounds >= 5)
    cfg = _config(tmp_path, 40, "radio.mode=loopback", "nodes.count=1", "privacy.enabled=false",
                  "network.ready_timeout_s=1.0", "network.max_empty_rounds=3")
    proc, out = _launch(cfg, tmp_path)
    try:
        run_dir = _wait(lambda: _run_dir(tmp_path), 60, "the run directory", proc, out)
        _wait(lambda: _present_rounds(run_dir) >= 1, 120, "a round with the node", proc, out)
        # Execute: kill the channel emulator for good
        pid = _pid_of("channel", run_dir)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    text = out.read_text()
    # Assert: the run fails with the reason in one line instead of finishing with no-op rounds
    assert proc.returncode == 1, text[-3000:]
    reason = [ln for ln in text.splitlines() if ln.startswith("pairzero ap: run stopped")]
    assert len(reason) == 1 and "3 consecutive rounds" in reason[0], text[-3000:]
    assert "channel emulator or the radio link down" in reason[0]
    assert "restarting" not in text
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] is False and summary["rounds_committed"] < 40
    assert summary["empty_rounds"] >= 3
