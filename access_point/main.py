"""``pairzero ap``: the access-point process.

Binds the control plane (ZeroMQ ROUTER at ``network.ap_host:network.control_port``, CurveZMQ
when ``network.curve``), resumes from the round log in the run directory, and runs the rounds:
ROUND → READY (deadline) → over-the-air receive → commit to the round log → UPDATE. It keeps a
replica of the model (ZO engine, no forward passes except evaluation) to publish the expected
model hash and to evaluate validation accuracy every ``task.eval_every`` rounds.

Failures end it with one line and status 1, the round log consistent: a damaged or shortened
round log (refused before anything else is loaded), a full disk or read-only run directory, or
``network.max_empty_rounds`` consecutive rounds with no node present (a dead channel).
``summary.json`` records the rounds committed, the empty and partial rounds and why a run
stopped early.

Example (the loopback launcher does this for you)::

    pairzero ap --config configs/loopback.yaml --run-dir runs/my-run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pairzero.config import ExperimentConfig, load_config
from pairzero.errors import OperationalError, RunDirUnwritable
from pairzero.metrics import METRICS_FILE, MetricsWriter, progress_line
from pairzero.protocol.interfaces import ApPhy
from pairzero.runinfo import experiment_id, make_run_dir, write_provenance

__all__ = ["cmd_ap", "ApProgress"]

log = logging.getLogger(__name__)


class ApProgress:
    """The AP's metrics: the orchestrator's row of each committed round plus the PHY's privacy
    (eps spent) and channel fields and an evaluation every ``task.eval_every`` rounds, written
    by the run's :class:`~pairzero.metrics.MetricsWriter`, and a progress line (``echo``).
    ``extra``: fields the run adds to every round row (``pairzero simulate``: the training loss
    and the channel costs)."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, replica: Any, phy: ApPhy,
                 extra: Callable[[], Mapping[str, Any]] | None = None, echo: bool = True) -> None:
        self.cfg = cfg
        self.replica = replica
        self.phy = phy
        self.extra = extra
        self.echo = echo
        self.writer = MetricsWriter(run_dir / METRICS_FILE)
        self.where = self.writer.where
        self.t0 = time.monotonic()
        self.last: dict[str, Any] = {}

    def evaluate(self, round_no: int) -> dict[str, Any]:
        ev = self.replica.evaluate()
        return {"round": round_no, "val_loss": ev["loss"], "val_accuracy": ev["accuracy"]}

    def write(self, row: dict[str, Any]) -> None:
        self.writer.write(row)

    def logged_rounds(self) -> set[int]:
        return self.writer.logged_rounds()

    def backfill(self, row: dict[str, Any]) -> None:
        """Write the row of a committed round rebuilt from the round log (no evaluation)."""
        self.writer.backfill(row)

    def __call__(self, row: dict[str, Any]) -> None:
        out = dict(row)
        if self.extra is not None:
            out.update(self.extra())
        eps = self.phy.eps_spent()
        if eps is not None:
            # JSON has no infinity: baseband's "no privacy against the AP" is null + a note.
            out["eps_spent"] = _finite(eps)
            if not math.isfinite(eps):
                out["privacy"] = "none against the AP (radio.mode baseband: exact scalars in READY)"
        out.update({k: _finite(v) if isinstance(v, float) else v
                    for k, v in self.phy.round_metrics().items()})
        if out["round"] % self.cfg.task.eval_every == 0 or out["round"] == self.cfg.run.rounds:
            out.update({k: v for k, v in self.evaluate(out["round"]).items() if k != "round"})
        out["elapsed_s"] = round(time.monotonic() - self.t0, 3)
        self.write(out)
        self.last = out
        if out["round"] % self.cfg.output.log_every == 0 or "val_accuracy" in out:
            line = progress_line(out, self.cfg.run.rounds)
            log.debug("%s", line)
            if self.echo:
                print(line, flush=True)

    def close(self) -> None:
        self.writer.close()


def _unwritable(path: Path, e: OSError) -> RunDirUnwritable:
    return RunDirUnwritable.at(path, e)


def _finite(x: float) -> float | None:
    return float(x) if x == x and abs(x) != float("inf") else None


def cmd_ap(args: argparse.Namespace) -> int:
    """CLI entry: ``pairzero ap``."""
    from access_point.orchestrator import ApSettings, Orchestrator
    from access_point.roundlog import RoundLog
    from pairzero.protocol.keys import load_server_keys
    from pairzero.protocol.transport import ZmqServer
    from pairzero.trainer import ZOTrainer
    from radio.factory import build_ap_phy

    cfg = load_config(args.config, args.overrides)
    exp = experiment_id(cfg)
    # What most often fails first (keys, the port) before anything is loaded or created.
    curve, key_ids = load_server_keys(cfg.network.keys_dir) if cfg.network.curve else (None, None)
    endpoint = f"tcp://{cfg.network.ap_host}:{cfg.network.control_port}"
    try:
        transport = ZmqServer(endpoint, curve=curve, heartbeat_s=cfg.network.heartbeat_s)
    except Exception as e:
        raise OSError(f"cannot bind {endpoint}: {e} (is another AP running?)") from None
    with contextlib.ExitStack() as stack:
        stack.callback(transport.close)
        run_dir = _run_dir(cfg, args)
        # The round log first: a damaged or unwritable log is refused before the model loads.
        rl = RoundLog.open(run_dir / "rounds.sqlite", exp)
        stack.callback(rl.close)
        replica = ZOTrainer(cfg, node_ids=[])
        phy = build_ap_phy(cfg)
        stack.callback(phy.close)
        # privacy charges, durable before any frame goes out (a no-op without accounting)
        phy.attach_ledger(str(run_dir / "privacy.jsonl"))
        progress = ApProgress(cfg, run_dir, replica, phy)
        stack.callback(progress.close)
        settings = ApSettings.from_config(cfg, exp, replica.manifest_digest())
        orch = Orchestrator(settings, transport, rl, phy, phy, metrics=progress, replica=replica,
                            key_ids=key_ids)

        def _stop(signum: int, frame: object) -> None:
            log.warning("signal %d: stopping after the current step (the round log stays consistent)", signum)
            orch.stop()

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        print(f"AP {exp} (pid {os.getpid()}): listening on {transport.endpoint}, {cfg.nodes.count} nodes, "
              f"{cfg.run.rounds} rounds, PHY {cfg.radio.mode}, run dir {run_dir}", flush=True)
        if rl.next_round == 0:
            progress.write({**progress.evaluate(0), "elapsed_s": 0.0})
        committed = orch.run(linger_s=2.0 * cfg.network.heartbeat_s)
    done = orch.next_round >= cfg.run.rounds and orch.stop_reason is None
    summary = {"rounds_committed": orch.next_round, "committed_by_this_run": committed,
               "finished": done, **{k: progress.last.get(k) for k in ("val_accuracy", "val_loss", "eps_spent")},
               "empty_rounds": orch.empty_rounds, "partial_rounds": orch.partial_rounds,
               "stop_reason": orch.stop_reason,
               "model_hash": replica.model_hash(), "experiment": exp, "run_dir": str(run_dir)}
    if "privacy" in progress.last:  # baseband: no privacy against the AP
        summary["privacy"] = progress.last["privacy"]
    summary_path = run_dir / "summary.json"
    try:
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    except OSError as e:
        raise _unwritable(summary_path, e) from None
    if done and cfg.output.plots:
        from pairzero.plots import plot_run

        for p in plot_run(run_dir):
            print(f"plot: {p}", flush=True)
    print(f"AP done: {orch.next_round}/{cfg.run.rounds} rounds committed ({orch.empty_rounds} "
          f"empty, {orch.partial_rounds} partial); results in {run_dir}", flush=True)
    if orch.stop_reason is not None:
        raise OperationalError(f"run stopped after round {orch.next_round - 1}: "
                               f"{orch.stop_reason}; results so far in {run_dir}")
    return 0 if done else 1


def _run_dir(cfg: ExperimentConfig, args: argparse.Namespace) -> Path:
    """The run directory (created with the resolved config unless the launcher made it)."""
    try:
        if not args.run_dir:
            return make_run_dir(cfg, "ap", args.out)
        run_dir = Path(args.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "config.yaml").exists():
            write_provenance(cfg, run_dir)
        return run_dir
    except OSError as e:
        raise _unwritable(Path(e.filename or args.run_dir or args.out or "."), e) from None


if __name__ == "__main__":
    sys.exit("use `pairzero ap`")
