"""Helpers for the end-to-end tests that start real pAirZero processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from access_point.roundlog import RoundLog
from pairzero.config import ExperimentConfig, config_from_dict
from pairzero.metrics import read_metrics
from pairzero.protocol.messages import RoundRecord
from pairzero.runinfo import experiment_id
from pairzero.trainer import ZOTrainer

ROOT = Path(__file__).resolve().parent.parent


def free_port_block(n: int, start: int | None = None, stop: int = 32000) -> int:
    """A port p such that p..p+n-1 can all be bound on 127.0.0.1 right now.

    Below Linux's ephemeral range (32768+), so no outgoing connection holds one meanwhile.
    The scan starts at a per-process point in 20000-29999 (or ``start``), so two test runs
    on one machine rarely probe the same ports.
    """
    p = start if start is not None else 20000 + (os.getpid() * 7919) % 10000
    if free := _scan(p, n, stop):
        return free
    if free := _scan(20000, n, stop):
        return free
    raise RuntimeError("no free block of ports")


def _scan(p: int, n: int, stop: int) -> int | None:
    while p + n < stop:
        ok = True
        for q in range(p, p + n):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", q))
                except OSError:
                    ok = False
                    p = q + 1
                    break
        if ok:
            return p
    return None


def load_cfg(run_dir: Path) -> ExperimentConfig:
    """The resolved config a run directory was made with."""
    return config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))


def round_log(run_dir: Path) -> list[RoundRecord]:
    """Every committed round of the AP's log (checksums and contiguity verified on open)."""
    rl = RoundLog.open(run_dir / "rounds.sqlite", experiment_id(load_cfg(run_dir)))
    try:
        return rl.records(0)
    finally:
        rl.close()


def replay_hash(run_dir: Path) -> str:
    """Model hash of a fresh model (initial weights) after replaying the AP's round log."""
    tr = ZOTrainer(load_cfg(run_dir), node_ids=[])
    tr.replay(round_log(run_dir))
    return tr.model_hash()


@dataclass(frozen=True)
class LoopbackRun:
    """What one ``pairzero loopback`` run left: its command line (from ``loopback`` on), wall
    time, metrics rows, the nodes' reports and the resolved config (YAML text)."""

    command: list[str]
    wall_s: float
    rows: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    config: str


def run_loopback(sets: Sequence[str], config: Path | None = None, ports: int = 8) -> LoopbackRun:
    """Run ``pairzero loopback`` (``--set`` each of ``sets``, no plots) on a free port block in
    a temporary directory; exit with its output if it fails (for benchmarks)."""
    base = free_port_block(ports)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pairzero.cli", "loopback", "--out", tmp]
        if config is not None:
            cmd += ["--config", str(config)]
        for o in [*sets, "output.plots=false", f"network.control_port={base}",
                  f"network.sample_port_base={base + 1}"]:
            cmd += ["--set", o]
        t0 = time.monotonic()
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.monotonic() - t0
        if res.returncode != 0:
            sys.exit(f"{' '.join(cmd[3:])} failed ({res.returncode}):\n{res.stdout[-2000:]}\n"
                     f"{res.stderr[-2000:]}")
        (run_dir,) = [p for p in Path(tmp).iterdir() if p.is_dir() and not p.is_symlink()]
        nodes = [json.loads(p.read_text()) for p in sorted((run_dir / "nodes").glob("edge*.json"))]
        return LoopbackRun(cmd[3:], wall, read_metrics(run_dir), nodes,
                           (run_dir / "config.yaml").read_text())
