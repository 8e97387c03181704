"""Fault tolerance with real processes and the real ZO trainer (baseband PHY, for speed).

* an edge node killed mid-run: the rounds complete without it, a fresh process of it rejoins,
  replays the round log it missed and ends bit-identical to the others;
* the AP killed (SIGKILL) and restarted on the same run directory: it resumes from its round
  log at the next round, no round lost or repeated, and the nodes end on the replayed model.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pairzero.config import config_to_dict, load_config
from pairzero.metrics import read_metrics
from pairzero.protocol.keys import generate_keys
from tests.e2e_util import free_port_block, replay_hash, round_log

pytestmark = pytest.mark.e2e  # starts processes or runs the channel emulator

ROUNDS = 200
PY = [sys.executable, "-m", "pairzero.cli"]


def _config(tmp_path: Path) -> Path:
    port = free_port_block(2)
    generate_keys(tmp_path / "keys", 3)
    cfg = load_config(None, [
        "radio.mode=baseband", f"run.rounds={ROUNDS}", "task.eval_every=1000",
        f"network.control_port={port}", f"network.sample_port_base={port + 1}",
        "network.ready_timeout_s=10.0", "network.heartbeat_s=1.0", "network.start_timeout_s=60",
        f"network.keys_dir={tmp_path / 'keys'}", "output.plots=false", "zo.threads=1",
        "task.batch_size=32", "nodes.count=3",
    ])
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return path


def _start(role: list[str], cfg: Path, run_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.Popen([*PY, *role, "--config", str(cfg), "--run-dir", str(run_dir)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)


def _rounds_done(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [r for r in read_metrics(path) if "g_hat" in r] if path.exists() else []


def _wait(cond, timeout: float, what: str, alive: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert alive.poll() is None, f"{what}: the AP exited ({alive.returncode}): {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _finish(procs: list[subprocess.Popen[bytes]], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            raise


def _node_reports(run_dir: Path) -> list[dict]:
    return [json.loads((run_dir / "nodes" / f"edge{k}.json").read_text()) for k in range(3)]


def test_killed_node_rejoins_and_catches_up_bit_identically(tmp_path: Path) -> None:
    # Prepare
    cfg, run_dir, logs = _config(tmp_path), tmp_path / "run", tmp_path / "logs"
    run_dir.mkdir()
    logs.mkdir()
    ap = _start(["ap"], cfg, run_dir, logs / "ap.log")
    nodes = {k: _start(["edge", "--node-id", str(k)], cfg, run_dir, logs / f"edge{k}.log") for k in range(3)}
    try:
        # Execute: SIGKILL node 1 mid-run and start a fresh node 1 at once: its start-up (torch
        # import, model load) must fit in the rounds that remain, so none is spent waiting. The
        # round after the kill still runs without node 1: it expects the dead node, which
        # never answers (asserted below).
        _wait(lambda: len(_rounds_done(run_dir)) >= 5, 120, "5 rounds", ap, logs / "ap.log")
        nodes[1].send_signal(signal.SIGKILL)
        nodes[1].wait()
        nodes[1] = _start(["edge", "--node-id", "1"], cfg, run_dir, logs / "edge1b.log")
        _finish([ap, *nodes.values()])
    finally:
        for p in [ap, *nodes.values()]:
            if p.poll() is None:
                p.kill()
    # Assert
    assert ap.returncode == 0 and all(p.returncode == 0 for p in nodes.values())
    recs = round_log(run_dir)
    assert [r.t for r in recs] == list(range(ROUNDS))
    without = [r.t for r in recs if 1 not in r.active]
    assert without, "no round ran without the killed node"
    assert 1 in recs[-1].active, "the restarted node never took part again"
    assert all({0, 2} <= set(r.active) for r in recs), "a live node was left out"
    reports = _node_reports(run_dir)
    assert {r["model_hash"] for r in reports} == {replay_hash(run_dir)}


def test_ap_restart_resumes_without_losing_or_repeating_a_round(tmp_path: Path) -> None:
    # Prepare
    cfg, run_dir, logs = _config(tmp_path), tmp_path / "run", tmp_path / "logs"
    run_dir.mkdir()
    logs.mkdir()
    ap = _start(["ap"], cfg, run_dir, logs / "ap.log")
    nodes = [_start(["edge", "--node-id", str(k)], cfg, run_dir, logs / f"edge{k}.log") for k in range(3)]
    try:
        # Execute: SIGKILL the AP mid-run, then start it again on the same run directory.
        _wait(lambda: len(_rounds_done(run_dir)) >= 8, 120, "8 rounds", ap, logs / "ap.log")
        ap.send_signal(signal.SIGKILL)
        ap.wait()
        before = len(round_log(run_dir))
        ap = _start(["ap"], cfg, run_dir, logs / "ap2.log")
        _finish([ap, *nodes])
    finally:
        for p in [ap, *nodes]:
            if p.poll() is None:
                p.kill()
    # Assert
    assert ap.returncode == 0 and all(p.returncode == 0 for p in nodes)
    recs = round_log(run_dir)
    assert 8 <= before < ROUNDS
    assert [r.t for r in recs] == list(range(ROUNDS)), "a round was lost or repeated"
    assert "resuming experiment" in (logs / "ap2.log").read_text()
    # Baseband sends the exact scalars in READY: no round claims a finite epsilon against the AP
    rows = [r for r in _rounds_done(run_dir) if not r.get("recovered")]
    assert len(rows) >= ROUNDS - 2 and all(r.get("eps_spent") is None for r in rows)
    assert all(r.get("privacy", "").startswith("none against the AP") for r in rows)
    reports = _node_reports(run_dir)
    assert all(r["next_round"] == ROUNDS for r in reports)
    assert {r["model_hash"] for r in reports} == {replay_hash(run_dir)}
