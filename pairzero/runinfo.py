"""Run directories: every result file sits next to the resolved config, seeds and git revision."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import subprocess
from pathlib import Path
from typing import Any, TextIO

from pairzero import __version__
from pairzero.config import ExperimentConfig, config_to_dict, dump_config

REPO_ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger(__name__)


def git_revision(root: Path = REPO_ROOT) -> str:
    """``<sha>[-dirty]`` of the checkout, or ``unknown`` outside a git work tree."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(cfg: ExperimentConfig) -> dict[str, Any]:
    """What makes a result reproducible: revision, seeds, versions, the resolved config."""
    import numpy
    import torch

    return {
        "git_revision": git_revision(),
        "pairzero_version": __version__,
        "seed": cfg.run.seed,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "host": platform.node(),
        "config": config_to_dict(cfg),
    }


def make_run_dir(cfg: ExperimentConfig, kind: str, base: str | Path | None = None) -> Path:
    """Create ``<output.dir>/<name>-<kind>-<timestamp>`` with config.yaml and provenance.json."""
    base = Path(base if base is not None else cfg.output.dir)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = base / f"{cfg.run.name}-{kind}-{stamp}"
    i = 1
    while run_dir.exists():
        run_dir = base / f"{cfg.run.name}-{kind}-{stamp}-{i}"
        i += 1
    run_dir.mkdir(parents=True)
    write_provenance(cfg, run_dir)
    return run_dir


def write_provenance(cfg: ExperimentConfig, run_dir: Path) -> None:
    dump_config(cfg, run_dir / "config.yaml")
    (run_dir / "provenance.json").write_text(json.dumps(provenance(cfg), indent=2) + "\n")


def experiment_id(cfg: ExperimentConfig) -> str:
    """Id every control message carries: the run name + a hash of what defines the training.

    Processes started from different configs (model, task, ZO, seed, node count, privacy) get
    different ids, so their messages are rejected instead of silently mixing two experiments.
    """
    import hashlib

    d = config_to_dict(cfg)
    key = {s: d[s] for s in ("run", "model", "task", "zo", "privacy", "ota")}
    key["nodes"] = d["nodes"]["count"]
    key["zo"] = {k: v for k, v in d["zo"].items() if k != "threads"}  # speed only, never the bits
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return f"{cfg.run.name}-{digest}"


def open_jsonl_for_append(path: str | Path) -> TextIO:
    """Open a JSONL file for appending, first cutting a torn last line (a process killed
    mid-write) so that every line stays one valid JSON object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with path.open("rb+") as f:
            data = f.read()
            if not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                log.warning("%s: cut a torn last line (%d bytes)", path, len(data) - keep)
                f.truncate(keep)
    return path.open("a")
