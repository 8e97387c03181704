"""``pairzero edge --node-id k``: one edge-node process.

Loads the model and node k's data shard, joins the AP (CurveZMQ key ``node<k>`` from
``network.keys_dir`` when ``network.curve``), and per round computes its ZO scalar with two
forward passes, transmits it (over the air, or in READY in baseband mode), and applies the
AP's update. A node that joins late or missed rounds replays the round log it missed.

Example (the loopback launcher does this for you)::

    pairzero edge --config configs/loopback.yaml --node-id 0
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
from pathlib import Path

from pairzero.config import ExperimentConfig, load_config
from pairzero.runinfo import experiment_id

__all__ = ["cmd_edge", "node_ledger_path"]

log = logging.getLogger(__name__)


def node_ledger_path(cfg: ExperimentConfig, node: int, run_dir: str | None) -> Path:
    """Where node ``node`` keeps its privacy account: ``<run dir>/nodes/edge<k>-privacy.jsonl``,
    or without a run directory ``<output.dir>/<experiment id>/nodes/edge<k>-privacy.jsonl``."""
    base = Path(run_dir) if run_dir else Path(cfg.output.dir) / experiment_id(cfg)
    return base / "nodes" / f"edge{node}-privacy.jsonl"


def cmd_edge(args: argparse.Namespace) -> int:
    """CLI entry: ``pairzero edge``."""
    from edge_node.runtime import EdgeNode
    from pairzero.ota.charging import terms_of
    from pairzero.protocol.keys import load_client_keys
    from pairzero.protocol.transport import ZmqClient
    from pairzero.trainer import ZOTrainer
    from radio.factory import build_node_phy

    cfg = load_config(args.config, args.overrides)
    k = args.node_id
    if not 0 <= k < cfg.nodes.count:
        raise ValueError(f"--node-id {k} out of range: nodes.count = {cfg.nodes.count} (ids 0..{cfg.nodes.count - 1})")
    curve = load_client_keys(cfg.network.keys_dir, k) if cfg.network.curve else None
    trainer = ZOTrainer(cfg, node_ids=[k])
    phy = build_node_phy(cfg, k)
    # the node's own privacy account, kept across restarts (a no-op without one)
    phy.attach_ledger(str(node_ledger_path(cfg, k, args.run_dir)))
    endpoint = f"tcp://{cfg.network.ap_host}:{cfg.network.control_port}"
    transport = ZmqClient(endpoint, curve=curve, heartbeat_s=cfg.network.heartbeat_s)
    node = EdgeNode(k, experiment_id(cfg), transport, trainer, phy,
                    key_id=curve.public.decode() if curve else "", heartbeat_s=cfg.network.heartbeat_s,
                    give_up_s=cfg.network.ap_give_up_s, terms=terms_of(cfg))

    def _stop(signum: int, frame: object) -> None:
        log.warning("signal %d: node %d leaving", signum, k)
        node.stop()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    log.info("node %d: connecting to %s", k, endpoint)
    try:
        n = node.run(until_round=cfg.run.rounds)
    finally:
        transport.close()
        phy.close()
    model_hash = trainer.model_hash()
    log.info("node %d: stopped at round %d (%d rounds participated), model %s", k, n,
             node.rounds_participated, model_hash[:16])
    if args.run_dir:
        report = {"node": k, "next_round": n, "rounds_participated": node.rounds_participated,
                  "model_hash": model_hash, "compute_s": {str(t): s for t, s in trainer.compute_s.items()},
                  "update_s": {str(t): s for t, s in trainer.update_s.items()},
                  "tx_s": {str(t): s for t, s in phy.tx_s.items()}}
        out = Path(args.run_dir) / "nodes"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"edge{k}.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0 if n >= cfg.run.rounds else 1
