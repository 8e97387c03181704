"""``pairzero simulate``: a whole pAirZero training run in one process, through the round code
of the testbed.

The AP's :class:`~access_point.orchestrator.Orchestrator` and K
:class:`~edge_node.runtime.EdgeNode` s run in threads of this process over the in-process
transport (:class:`~pairzero.protocol.transport.InProcHub`) and the simulated PHY
(:mod:`pairzero.phy.simulated`): every round is ROUND → READY → plan → SCHEDULE → frames on the
simulated air → ĝ → commit to the round log → UPDATE → metrics row, exactly as in ``pairzero
loopback``; only the transport and the PHY differ. The K nodes and the AP's replica share ONE
model copy (:class:`~pairzero.trainer.SharedWeights`: their weights are provably identical, so
a round costs 2 forward passes per node and one fused update, and memory is one model
whatever K); each node has its own data shard.

``run.method`` selects pAirZero or a baseline (how each aggregates: :mod:`pairzero.phy.simulated`):

* ``pairzero``: analog OTA over the simulated channel, privacy-calibrated (``privacy.*``);
* ``zo_noiseless``: federated ZO with exact aggregation (ĝ = mean of the K scalars);
* ``zo_digital``: federated ZO over orthogonal digital links (float32 words, K× the channel
  uses); with ``privacy.enabled`` each node meets the per-node (ε, δ) target by itself (local
  DP: noise std 2·G·z*/√K on ĝ, against 2·G·z*/|S| over the air);
* ``fo_fedavg``: first-order FedAvg (FedSGD: one local gradient per node, averaged; SGD with
  ``run.fo_lr`` on the same trainable parameters), digital, without privacy. Its nodes send d
  floats, which the round protocol (one scalar per node) does not carry: it runs its own short
  loop (:func:`_first_order_rounds`) on the same trainer and metrics writer.

With ``zo.clip_quantile`` set, the clip bound G is measured before round 0
(:mod:`pairzero.clip_bound`); the saved ``config.yaml`` holds the resolved G and ``summary.json`` the
warm-up record. ``wall_s`` is the whole run: model loading, warm-up, zero-shot evaluation,
training and the last evaluation.

Outputs in the run directory: ``metrics.jsonl`` (:mod:`pairzero.metrics`), ``rounds.sqlite``
(the round log, ZO methods), ``summary.json``, ``config.yaml`` (resolved), ``provenance.json``
(git revision, seeds), and the plots of :mod:`pairzero.plots`.

Example::

    pairzero simulate --config configs/loopback.yaml --set run.rounds=200
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from access_point.main import ApProgress
from access_point.orchestrator import ApSettings, Orchestrator
from access_point.roundlog import RoundLog
from edge_node.runtime import EdgeNode
from pairzero.clip_bound import resolve_clip
from pairzero.config import ExperimentConfig, load_config
from pairzero.metrics import METRICS_FILE, MetricsWriter, progress_line, read_metrics, row_round
from pairzero.ota.charging import terms_of
from pairzero.ota.comm import downlink_cost, uplink_cost
from pairzero.phy.simulated import SimulatedAir, SimulatedApPhy, SimulatedNodePhy
from pairzero.protocol.transport import InProcHub
from pairzero.runinfo import experiment_id, make_run_dir
from pairzero.seeds import round_seed
from pairzero.tasks import with_task_prompt
from pairzero.trainer import SharedWeights, ZOTrainer

__all__ = ["run_simulation", "cmd_simulate"]

log = logging.getLogger(__name__)

#: In one process no node is lost: liveness timers (s) long enough never to fire, and a READY
#: deadline no computation reaches (a node thread that fails stops the run at once instead).
_NEVER_S = 86400.0


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

    def say(msg: str) -> None:  # progress is the command's output; the log keeps a copy
        log.debug(msg)
        if echo:
            print(msg, flush=True)

    costs = _channel_costs(cfg, trainer.engine.manifest.numel)
    say(f"simulate: {cfg.run.method}, K={cfg.nodes.count}, {cfg.run.rounds} rounds, model "
        f"{cfg.model.name} ({trainer.engine.manifest.numel:,} trainable), task {cfg.task.name}, "
        f"G = {cfg.zo.clip:g}"
        + (f" (warm-up {clip_cal.quantile:g}-quantile of |g|)" if clip_cal else "")
        + f", run dir {run_dir}")
    start = trainer.evaluate()
    say(f"round    0  val loss {start['loss']:.4f}  val acc {start['accuracy']:.3f}")
    row0 = {"round": 0, "val_loss": start["loss"], "val_accuracy": start["accuracy"],
            "elapsed_s": 0.0}
    t0 = time.monotonic()
    if cfg.run.method == "fo_fedavg":
        _first_order_rounds(cfg, trainer, run_dir, row0, costs, say)
    else:
        _protocol_rounds(cfg, trainer, run_dir, row0, costs, echo)
    summary = _summary(cfg, run_dir, start, trainer.engine.manifest.numel, costs)
    summary["clip_calibration"] = clip_cal.as_dict() if clip_cal else None
    summary["train_s"] = round(time.monotonic() - t0, 2)  # rounds 1..T only
    summary["run_dir"] = str(run_dir)
    if cfg.output.plots:
        from pairzero.plots import plot_run

        for p in plot_run(run_dir):
            say(f"plot: {p}")
    summary["wall_s"] = round(time.monotonic() - t_start, 2)  # the whole run, plots included
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    say(f"done: val acc {start['accuracy']:.3f} -> {summary['final_val_accuracy']:.3f}"
        + (f", eps spent {summary['eps_spent']:.3f} (target {cfg.privacy.epsilon})"
           if summary["eps_spent"] is not None else "")
        + f", {summary['wall_s']:.0f} s; results in {run_dir}")
    return summary


def _channel_costs(cfg: ExperimentConfig, n_params: int) -> dict[str, float]:
    """The per-round channel costs every round row carries (:mod:`pairzero.ota.comm`)."""
    k, method = cfg.nodes.count, cfg.run.method
    up = uplink_cost(method, n_params, k, payload_uses=cfg.phy.payload_repetitions,
                     pilot_uses=cfg.phy.pilot_length)
    return {"uplink_bits_per_node": up.bits_per_node, "uplink_channel_uses": up.channel_uses,
            "downlink_bits": downlink_cost(method, n_params, k).total_bits}


def _summary(cfg: ExperimentConfig, run_dir: Path, start: dict[str, float], n_params: int,
             costs: dict[str, float]) -> dict[str, Any]:
    """The run's summary from its metrics rows."""
    rows = [r for r in read_metrics(run_dir) if r["round"] > 0]
    if len(rows) != cfg.run.rounds:
        raise RuntimeError(f"{run_dir / METRICS_FILE}: {len(rows)} round rows, expected "
                           f"{cfg.run.rounds}")
    final = rows[-1]
    sq = [r["sq_err"] for r in rows
          if isinstance(r.get("sq_err"), float) and math.isfinite(r["sq_err"])]
    private = final.get("eps_spent") is not None
    return {
        "method": cfg.run.method,
        "rounds": cfg.run.rounds,
        "nodes": cfg.nodes.count,
        "trainable_params": n_params,
        "start_val_accuracy": start["accuracy"],
        "final_val_accuracy": final["val_accuracy"],
        "start_val_loss": start["loss"],
        "final_val_loss": final["val_loss"],
        "mean_sq_err": float(np.mean(sq)) if sq else None,
        "eps_spent": final.get("eps_spent"),
        "privacy_target": {"epsilon": cfg.privacy.epsilon, "delta": cfg.privacy.delta}
        if private else None,
        "uplink_bits_per_node_per_round": costs["uplink_bits_per_node"],
        "uplink_channel_uses_per_round": costs["uplink_channel_uses"],
        "clip": cfg.zo.clip,
    }


# ----------------------------------------------------------------------------- ZO methods


def _protocol_rounds(cfg: ExperimentConfig, trainer: ZOTrainer, run_dir: Path,
                     row0: dict[str, Any], costs: dict[str, float], echo: bool) -> None:
    """Every round through the orchestrator and K edge nodes (threads of this process)."""
    exp = experiment_id(cfg)
    shared = SharedWeights(trainer)
    air = SimulatedAir()
    ap_phy = SimulatedApPhy(cfg, air)
    settings = dataclasses.replace(
        ApSettings.from_config(cfg, exp, trainer.manifest_digest()),
        heartbeat_s=_NEVER_S, ready_timeout_s=_NEVER_S, start_timeout_s=_NEVER_S,
        hash_every=0, max_empty_rounds=0)  # an empty round is a result here, not a dead link
    hub = InProcHub()
    server = hub.server()
    with contextlib.ExitStack() as stack, _protocol_chatter_off():
        stack.callback(server.close)
        roundlog = RoundLog.open(run_dir / "rounds.sqlite", exp)
        stack.callback(roundlog.close)

        def extra() -> dict[str, Any]:
            return {"train_loss": shared.train_loss(), **costs}

        replica = shared.view()  # the AP's model: evaluated for the metrics
        progress = ApProgress(cfg, run_dir, replica, ap_phy, extra=extra, echo=echo)
        stack.callback(progress.close)
        progress.write(row0)
        orch = Orchestrator(settings, server, roundlog, ap_phy, ap_phy, metrics=progress,
                            replica=replica)
        nodes = [EdgeNode(k, exp, hub.client(f"node{k}"), shared.view(k),
                          SimulatedNodePhy(cfg, k, air), heartbeat_s=_NEVER_S,
                          terms=terms_of(cfg)) for k in range(cfg.nodes.count)]

        def stop_all() -> None:  # a node failed: the AP stops waiting for its frame and rounds
            air.close()
            orch.stop()

        threads = _NodeThreads(nodes, cfg.run.rounds, on_failure=stop_all)
        try:
            orch.run()
        except BaseException:
            threads.finish(timeout_s=0.0)  # the AP failed (or Ctrl-C): stop the nodes now
            raise
        threads.finish()
    if orch.next_round < cfg.run.rounds:
        raise RuntimeError(f"pairzero simulate stopped after {orch.next_round} of "
                           f"{cfg.run.rounds} rounds: {orch.stop_reason or 'stopped'}")


class _NodeThreads:
    """The edge nodes, one thread each; the first to fail calls ``on_failure`` (its error is
    raised by :meth:`finish`)."""

    def __init__(self, nodes: list[EdgeNode], rounds: int, on_failure: Callable[[], Any]) -> None:
        self.nodes = nodes
        self.errors: list[BaseException] = []
        self._on_failure = on_failure
        self.threads = [threading.Thread(target=self._run, args=(n, rounds), daemon=True,
                                         name=f"node{n.node_id}") for n in nodes]
        for t in self.threads:
            t.start()

    def _run(self, node: EdgeNode, rounds: int) -> None:
        try:
            node.run(until_round=rounds)
        except BaseException as e:
            self.errors.append(e)
            log.error("node %d failed: %s", node.node_id, e)
            for n in self.nodes:
                n.stop()
            self._on_failure()

    def finish(self, timeout_s: float = 60.0) -> None:
        """Wait for the nodes to apply the last update (stop them after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        for t in self.threads:
            t.join(max(deadline - time.monotonic(), 0.0))
        for n in self.nodes:
            n.stop()
        for t in self.threads:
            t.join(5.0)
        if self.errors:
            raise self.errors[0]


@contextlib.contextmanager
def _protocol_chatter_off() -> Iterator[None]:
    """The AP's and the nodes' per-message INFO lines (joins, commits) stay out of the
    terminal at the default log level: simulate's progress lines say the same."""
    names = ("access_point", "edge_node")
    saved = {n: logging.getLogger(n).level for n in names}
    quiet = logging.getLogger().getEffectiveLevel() > logging.DEBUG
    for n in names:
        if quiet:
            logging.getLogger(n).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


# ----------------------------------------------------------------------------- fo_fedavg


def _first_order_rounds(cfg: ExperimentConfig, trainer: ZOTrainer, run_dir: Path,
                        row0: dict[str, Any], costs: dict[str, float],
                        say: Callable[[str], None]) -> None:
    """FedSGD: per round each node's backprop gradient on its batch; their mean updates θ."""
    metrics = MetricsWriter(run_dir / METRICS_FILE)
    t0 = time.monotonic()
    try:
        metrics.write(row0)
        for t in range(cfg.run.rounds):
            seed = round_seed(cfg.run.seed, t)
            row: dict[str, Any] = {"round": row_round(t), "seed": seed}
            row["train_loss"], row["grad_norm"] = _first_order_round(trainer, cfg.run.fo_lr, seed)
            row.update(costs)
            if (t + 1) % cfg.task.eval_every == 0 or t + 1 == cfg.run.rounds:
                ev = trainer.evaluate()
                row["val_loss"], row["val_accuracy"] = ev["loss"], ev["accuracy"]
            row["elapsed_s"] = round(time.monotonic() - t0, 3)
            metrics.write(row)
            if (t + 1) % cfg.output.log_every == 0 or "val_accuracy" in row:
                say(progress_line(row, cfg.run.rounds))
    finally:
        metrics.close()


def _first_order_round(tr: ZOTrainer, lr: float, seed: int) -> tuple[float, float]:
    """One FedSGD round; returns (mean training loss, norm of the mean gradient)."""
    params = tr.engine.params
    tr.model.train(False)
    for p in params:
        p.requires_grad_(True)
    grads = [torch.zeros_like(p) for p in params]
    losses = []
    for k in tr.node_ids:
        loss = tr.objective.loss(tr.model, tr.encoded_batch(k, seed))
        g = torch.autograd.grad(loss, params)
        for acc, gi in zip(grads, g, strict=True):
            acc.add_(gi, alpha=1.0 / len(tr.node_ids))
        losses.append(float(loss.detach()))
    with torch.no_grad():
        for p, g_mean in zip(params, grads, strict=True):
            p.sub_(lr * g_mean)
    for p in params:
        p.requires_grad_(False)
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
    return float(np.mean(losses)), norm


def cmd_simulate(args: argparse.Namespace) -> int:
    """CLI entry: ``pairzero simulate``."""
    cfg = load_config(args.config, args.overrides)
    run_simulation(cfg, args.out)
    return 0
