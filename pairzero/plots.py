"""Plots of a run, made from its result files (never from in-memory state): ``pairzero report``.

``plot_run(run_dir)`` reads ``metrics.jsonl`` (:func:`pairzero.metrics.read_metrics`) and writes
PNGs next to it; ``pairzero report`` does the same for one or more run directories and, given
several (e.g. one per SNR), also a comparison plot of the aggregation MSE and the final accuracy against the channel SNR.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pairzero.metrics import read_metrics

__all__ = ["plot_run", "plot_comparison", "cmd_report"]

log = logging.getLogger(__name__)


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, int | float) and math.isfinite(v):
            xs.append(r["round"])
            ys.append(float(v))
    return xs, ys


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(run_dir: str | Path) -> list[Path]:
    """Loss/accuracy vs round, ε spent vs round and squared error vs round; returns the PNGs."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    plt = _pyplot()
    out: list[Path] = []

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    xs, train = _series(rows, "train_loss")
    if train:  # simulate knows the nodes' batch losses; the AP does not
        ax1.plot(xs, train, lw=0.8, alpha=0.6, label="train (batch) loss")
    ax1.plot(*_series(rows, "val_loss"), "o-", label="validation loss")
    ax1.set_xlabel("round")
    ax1.set_ylabel("loss (nats)")
    ax1.legend()
    ax2.plot(*_series(rows, "val_accuracy"), "o-", color="C2")
    ax2.set_xlabel("round")
    ax2.set_ylabel("validation accuracy")
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out.append(run_dir / "loss_accuracy.png")
    fig.savefig(out[-1], dpi=110)
    plt.close(fig)

    xs, eps = _series(rows, "eps_spent")
    if eps:
        target = _privacy_target(run_dir)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(xs, eps, label="ε spent (max over nodes)")
        if target is not None:
            ax.axhline(target, color="k", ls="--", label=f"target ε = {target:g}")
        ax.set_xlabel("round")
        ax.set_ylabel("ε")
        ax.legend()
        fig.tight_layout()
        out.append(run_dir / "privacy.png")
        fig.savefig(out[-1], dpi=110)
        plt.close(fig)

    xs, sq = _series(rows, "sq_err")
    if sq and any(v > 0 for v in sq):
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.semilogy(xs, [max(v, 1e-30) for v in sq], ".", ms=3, label="(ĝ − mean g)²")
        xc, mc = _series(rows, "mse_closed_form")
        if mc:
            ax.semilogy(xc, mc, "-", label="closed-form MSE")
        ax.set_xlabel("round")
        ax.set_ylabel("aggregation squared error")
        ax.legend()
        fig.tight_layout()
        out.append(run_dir / "aggregation_error.png")
        fig.savefig(out[-1], dpi=110)
        plt.close(fig)
    return out


def _privacy_target(run_dir: Path) -> float | None:
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        return None
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    priv = cfg.get("privacy") or {}
    return float(priv["epsilon"]) if priv.get("enabled") and "epsilon" in priv else None


def plot_comparison(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Mean aggregation MSE and final accuracy vs channel SNR (dB), one point per run."""
    plt = _pyplot()
    pts = []
    for d in run_dirs:
        cfg = yaml.safe_load((Path(d) / "config.yaml").read_text())
        rows = read_metrics(d)
        _, sq = _series(rows, "sq_err")
        _, acc = _series(rows, "val_accuracy")
        pts.append((float(cfg["channel"]["snr_db"]), sum(sq) / len(sq) if sq else math.nan,
                    acc[-1] if acc else math.nan, cfg["run"]["method"]))
    pts.sort()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for method in sorted({p[3] for p in pts}):
        sel = [p for p in pts if p[3] == method]
        ax1.semilogy([p[0] for p in sel], [p[1] for p in sel], "o-", label=method)
        ax2.plot([p[0] for p in sel], [p[2] for p in sel], "o-", label=method)
    ax1.set_xlabel("SNR (dB)")
    ax1.set_ylabel("mean aggregation MSE")
    ax2.set_xlabel("SNR (dB)")
    ax2.set_ylabel("final validation accuracy")
    ax1.legend()
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def cmd_report(args: argparse.Namespace) -> int:
    """CLI entry: ``pairzero report RUN_DIR [RUN_DIR ...]``."""
    for d in args.run_dirs:
        for p in plot_run(d):
            print(p)
        summary = Path(d) / "summary.json"
        if summary.is_file():
            print(summary.read_text().strip())
    if len(args.run_dirs) > 1:
        print(plot_comparison(args.run_dirs, args.compare_out))
    return 0
