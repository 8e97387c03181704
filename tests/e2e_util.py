"""Helpers for the end-to-end tests that start real pAirZero processes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import yaml

from access_point.roundlog import RoundLog
from pairzero.config import ExperimentConfig, config_from_dict
from pairzero.protocol.messages import RoundRecord
from pairzero.runinfo import experiment_id
from pairzero.trainer import ZOTrainer


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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete lines only: a process may be appending the last one while we read."""
    lines = path.read_text().split("\n")[:-1]  # the part after the last newline is unfinished
    return [json.loads(line) for line in lines if line.strip()]


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
