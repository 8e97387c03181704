"""``pairzero simulate``: a whole pAirZero training run in one process.

K simulated edge nodes share ONE model copy (their losses are evaluated at the same perturbed
weights, so a round costs 2 forward passes per node and one fused update), each with its own
data shard; the channel, power control, artificial noise and privacy accounting of
:mod:`pairzero.ota` turn their K scalars into the AP's estimate ĝ_t every round.

``run.method`` selects pAirZero or a baseline:

* ``pairzero``: analog OTA over the simulated channel, privacy-calibrated (``privacy.*``);
* ``zo_noiseless``: federated ZO with exact aggregation (ĝ = mean of the K scalars);
* ``zo_digital``: federated ZO over orthogonal digital links (each scalar sent as a float32
  word, decoded error-free, K× the channel uses). The AP then sees every node's scalar on its
  own, so with ``privacy.enabled`` each node meets the same per-node (ε, δ) target by itself
  (local DP): it adds N(0, σ²) to its clipped scalar before sending, σ = 2·G·z* (one node's
  sensitivity 2G times the per-round noise multiplier z* of pAirZero's calibration), and
  ĝ = mean of the K noisy words: noise std 2·G·z*/√K on ĝ, against 2·G·z*/|S| over the
  air. Without privacy: ĝ = mean of the float32 words, noiseless ZO up to fp32 rounding;
* ``fo_fedavg``: first-order FedAvg (FedSGD: one local gradient per node, averaged; SGD with
  ``run.fo_lr`` on the same trainable parameters), digital, without privacy (the reference
  for what backpropagation buys at 32·d bits per node per round).

With ``zo.clip_quantile`` set, the clip bound G is measured before round 0
(:mod:`pairzero.clip_bound`); the saved ``config.yaml`` holds the resolved G and ``summary.json`` the
warm-up record. ``wall_s`` is the whole run: model loading, warm-up, zero-shot evaluation,
training and the last evaluation.

Outputs in the run directory: ``metrics.jsonl`` (one JSON object per round), ``summary.json``,
``config.yaml`` (resolved), ``provenance.json`` (git revision, seeds), and the plots of
:mod:`pairzero.plots`.

Example::

    pairzero simulate --config configs/loopback.yaml --set run.rounds=200
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pairzero.clip_bound import resolve_clip
from pairzero.config import ExperimentConfig, load_config
from pairzero.metrics import METRICS_FILE, MetricsWriter, progress_line, row_round
from pairzero.ota.comm import downlink_cost, uplink_cost
from pairzero.ota.pipeline import OTARoundRunner
from pairzero.ota.privacy import GaussianDPAccountant, PrivacyRule
from pairzero.runinfo import make_run_dir
from pairzero.seeds import round_seed
from pairzero.tasks import with_task_prompt
from pairzero.trainer import ZOTrainer

__all__ = ["run_simulation", "cmd_simulate"]

log = logging.getLogger(__name__)


class _FirstOrder:
    """FedSGD baseline: per node one backprop gradient on its batch; the mean updates θ."""

    def __init__(self, trainer: ZOTrainer, lr: float) -> None:
        self.trainer = trainer
        self.lr = lr
        self.params = trainer.engine.params

    def round(self, seed: int) -> tuple[float, float]:
        """One round; returns (mean training loss, gradient-norm of the mean gradient)."""
        tr = self.trainer
        tr.model.train(False)
        for p in self.params:
            p.requires_grad_(True)
        grads = [torch.zeros_like(p) for p in self.params]
        losses = []
        for k in tr.node_ids:
            loss = tr.objective.loss(tr.model, tr.encoded_batch(k, seed))
            g = torch.autograd.grad(loss, self.params)
            for acc, gi in zip(grads, g, strict=True):
                acc.add_(gi, alpha=1.0 / len(tr.node_ids))
            losses.append(float(loss.detach()))
        with torch.no_grad():
            for p, g_mean in zip(self.params, grads, strict=True):
                p.sub_(self.lr * g_mean)
        for p in self.params:
            p.requires_grad_(False)
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
        return float(np.mean(losses)), norm


#: numpy stream of the digital baseline's local privacy noise (OTA receiver noise uses 2).
_STREAM_LOCAL_DP = 3


class _DigitalLocalDP:
    """zo_digital with privacy: each node adds its own Gaussian noise (see the module doc)."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        cal = PrivacyRule.from_target(cfg.privacy.epsilon, cfg.privacy.delta, cfg.run.rounds)
        self.sigma = 2.0 * cfg.zo.clip * cal.z_star  # per node, per round
        self.mu_round = 2.0 * cfg.zo.clip / self.sigma  # = 1/z*: the per-round GDP mu
        self.seed = cfg.run.seed
        self.accountant = GaussianDPAccountant(cfg.nodes.count)

    def aggregate(self, t: int, g: np.ndarray) -> tuple[float, float]:
        """(ĝ, closed-form MSE σ²/K) of round t from the nodes' clipped scalars g (K,)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _STREAM_LOCAL_DP, t]))
        words = (g + rng.normal(0.0, self.sigma, size=g.shape)).astype(np.float32)  # sent
        self.accountant.add(self.mu_round)
        return float(np.mean(words.astype(np.float64))), self.sigma**2 / g.size


def run_simulation(
    cfg: ExperimentConfig, out_base: str | Path | None = None, *, echo: bool = True
) -> dict[str, Any]:
    """Train per ``cfg``; returns the summary (also written to ``summary.json``)."""
    t_start = time.monotonic()  # wall_s covers everything from here
    torch.manual_seed(cfg.run.seed)  # nothing should use the global RNG; belt and braces
    # Resolve what the run actually uses before saving its config: the task's own prompt and,
    # with zo.clip_quantile, the clip bound G measured before round 0.
    cfg = dataclasses.replace(cfg, task=with_task_prompt(cfg.task))
    cfg, clip_cal = resolve_clip(cfg)
    run_dir = make_run_dir(cfg, "simulate", out_base)
    trainer = ZOTrainer(cfg)
    method = cfg.run.method
    ota = OTARoundRunner.from_config(cfg) if method == "pairzero" else None
    digital = _DigitalLocalDP(cfg) if method == "zo_digital" and cfg.privacy.enabled else None
    accountant = ota.accountant if ota is not None else (digital.accountant if digital else None)
    private = accountant is not None and cfg.privacy.enabled
    fo = _FirstOrder(trainer, cfg.run.fo_lr) if method == "fo_fedavg" else None
    n_params = trainer.engine.manifest.numel
    k = cfg.nodes.count
    up = uplink_cost(method, n_params, k, payload_uses=cfg.phy.payload_repetitions,
                     pilot_uses=cfg.phy.pilot_length)
    down = downlink_cost(method, n_params, k)

    def say(msg: str) -> None:  # progress is the command's output; the log keeps a copy
        log.debug(msg)
        if echo:
            print(msg, flush=True)

    say(f"simulate: {method}, K={k}, {cfg.run.rounds} rounds, model {cfg.model.name} "
        f"({n_params:,} trainable), task {cfg.task.name}, G = {cfg.zo.clip:g}"
        + (f" (warm-up {clip_cal.quantile:g}-quantile of |g|)" if clip_cal else "")
        + f", run dir {run_dir}")
    start = trainer.evaluate()
    say(f"round    0  val loss {start['loss']:.4f}  val acc {start['accuracy']:.3f}")
    metrics = MetricsWriter(run_dir / METRICS_FILE)
    t0 = time.monotonic()
    history: list[dict[str, Any]] = []
    try:
        metrics.write({"round": 0, "val_loss": start["loss"], "val_accuracy": start["accuracy"],
                       "elapsed_s": 0.0})
        for t in range(cfg.run.rounds):
            seed = round_seed(cfg.run.seed, t)
            row: dict[str, Any] = {"round": row_round(t), "seed": seed}
            if fo is not None:
                row["train_loss"], row["grad_norm"] = fo.round(seed)
            else:
                row.update(_zo_round(trainer, ota, digital, t, seed, method))
            row["uplink_bits_per_node"] = up.bits_per_node
            row["uplink_channel_uses"] = up.channel_uses
            row["downlink_bits"] = down.total_bits
            if private:
                assert accountant is not None
                row["eps_spent"] = float(np.max(accountant.epsilon(cfg.privacy.delta)))
            last = t + 1 == cfg.run.rounds
            if (t + 1) % cfg.task.eval_every == 0 or last:
                ev = trainer.evaluate()
                row["val_loss"], row["val_accuracy"] = ev["loss"], ev["accuracy"]
            row["elapsed_s"] = round(time.monotonic() - t0, 3)
            metrics.write(row)
            history.append(row)
            if (t + 1) % cfg.output.log_every == 0 or "val_accuracy" in row:
                say(progress_line(row, cfg.run.rounds))
    finally:
        metrics.close()

    final = history[-1]
    sq = [r["sq_err"] for r in history if isinstance(r.get("sq_err"), float) and math.isfinite(r["sq_err"])]
    summary: dict[str, Any] = {
        "method": method,
        "rounds": cfg.run.rounds,
        "nodes": k,
        "trainable_params": n_params,
        "start_val_accuracy": start["accuracy"],
        "final_val_accuracy": final["val_accuracy"],
        "start_val_loss": start["loss"],
        "final_val_loss": final["val_loss"],
        "mean_sq_err": float(np.mean(sq)) if sq else None,
        "eps_spent": final.get("eps_spent"),
        "privacy_target": {"epsilon": cfg.privacy.epsilon, "delta": cfg.privacy.delta}
        if private else None,
        "uplink_bits_per_node_per_round": up.bits_per_node,
        "uplink_channel_uses_per_round": up.channel_uses,
        "clip": cfg.zo.clip,
        "clip_calibration": clip_cal.as_dict() if clip_cal else None,
        "train_s": round(time.monotonic() - t0, 2),  # rounds 1..T only
        "run_dir": str(run_dir),
    }
    if cfg.output.plots:
        from pairzero.plots import plot_run

        for p in plot_run(run_dir):
            say(f"plot: {p}")
    summary["wall_s"] = round(time.monotonic() - t_start, 2)  # the whole run, plots included
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    say(f"done: val acc {start['accuracy']:.3f} -> {final['val_accuracy']:.3f}"
        + (f", eps spent {summary['eps_spent']:.3f} (target {cfg.privacy.epsilon})"
           if summary["eps_spent"] is not None else "")
        + f", {summary['wall_s']:.0f} s; results in {run_dir}")
    return summary


def _zo_round(
    trainer: ZOTrainer, ota: OTARoundRunner | None, digital: _DigitalLocalDP | None, t: int,
    seed: int, method: str,
) -> dict[str, Any]:
    """One ZO round for all nodes: scalars, aggregation (OTA or exact), fused update."""
    losses: list[float] = []

    def recording(fn: Any) -> Any:
        def wrapped(m: torch.nn.Module) -> float:
            v = float(fn(m))
            losses.append(v)
            return v
        return wrapped

    tr = trainer
    fns = [recording(fn) for fn in tr.loss_fns(seed)]
    g = np.asarray(tr.engine.scalars(seed, fns), dtype=np.float64)  # (K,)
    k = len(tr.node_ids)
    q = tr.cfg.zo.num_perturbations
    # losses holds, per perturbation j, K values at θ+εz then K at θ-εz: their mean ≈ L(θ).
    row: dict[str, Any] = {"train_loss": float(np.mean(losses)), "g_true_mean": float(np.mean(g))}
    assert len(losses) == 2 * k * q
    if method == "pairzero":
        assert ota is not None
        res = ota.run_round(t, g)
        g_hat = float(res.g_hat)
        row.update(
            g_hat=g_hat, sq_err=float(res.sq_err), mse_closed_form=float(res.mse_closed_form),
            n_active=int(res.n_active), eta=float(res.eta), sigma_a=float(res.sigma_a),
            mu_t_max=float(np.max(res.mu_t)), skipped=bool(res.skipped),
        )
    elif method == "zo_digital" and digital is not None:
        g_hat, mse = digital.aggregate(t, g)  # noisy float32 words, decoded error-free
        row.update(g_hat=g_hat, sq_err=(g_hat - float(np.mean(g))) ** 2, mse_closed_form=mse,
                   n_active=k)
    elif method == "zo_digital":
        g_hat = float(np.mean(g.astype(np.float32)))  # float32 words, decoded error-free
        row.update(g_hat=g_hat, sq_err=(g_hat - float(np.mean(g))) ** 2, n_active=k)
    else:  # zo_noiseless
        g_hat = float(np.mean(g))
        row.update(g_hat=g_hat, sq_err=0.0, n_active=k)
    tr.engine.apply_update(seed, g_hat)
    return row


def cmd_simulate(args: argparse.Namespace) -> int:
    """CLI entry: ``pairzero simulate``."""
    cfg = load_config(args.config, args.overrides)
    run_simulation(cfg, args.out)
    return 0
