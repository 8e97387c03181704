"""Helpers for the end-to-end tests that start real pAirZero processes (the launcher's own
helpers, :func:`pairzero.launch.free_port_block` and :func:`pairzero.launch.run_loopback`, are
re-exported)."""

from __future__ import annotations

from pathlib import Path

import yaml

from access_point.roundlog import RoundLog
from pairzero.config import ExperimentConfig, config_from_dict
from pairzero.launch import free_port_block, run_loopback
from pairzero.protocol.messages import RoundRecord
from pairzero.runinfo import experiment_id
from pairzero.trainer import ZOTrainer

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ROOT", "free_port_block", "run_loopback", "load_cfg", "round_log", "replay_hash"]


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
