"""An AP or an edge node as a process, on the reference implementations of the control-plane
interfaces (:mod:`pairzero.protocol.testing`: quadratic trainer, ideal PHY, constant plan) over
ZeroMQ, for the tests that kill and restart processes::

    python -m tests.roles ap --endpoint tcp://127.0.0.1:5555 --rounds 10 --log rounds.sqlite
    python -m tests.roles node --endpoint tcp://127.0.0.1:5555 --node-id 0

(run from the repository root). It lives with the tests because it starts the AP
(:mod:`access_point`) and node (:mod:`edge_node`) loops, which the core package must not import.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence

from access_point.orchestrator import ApSettings, Orchestrator
from access_point.roundlog import RoundLog
from edge_node.runtime import EdgeNode
from pairzero.metrics import MetricsWriter
from pairzero.phy.baseband import BasebandNodePhy
from pairzero.protocol.keys import load_client_keys, load_server_keys
from pairzero.protocol.testing import ConstantPlanner, IdealApPhy, QuadraticTrainer
from pairzero.protocol.transport import ZmqClient, ZmqServer


def _ap_main(a: argparse.Namespace) -> int:
    curve, ids = load_server_keys(a.keys) if a.keys else (None, None)
    rl = RoundLog.open(a.log, a.experiment)
    tx = ZmqServer(a.endpoint, curve=curve, heartbeat_s=a.heartbeat)
    metrics = MetricsWriter(a.metrics) if a.metrics else None
    settings = ApSettings(
        experiment=a.experiment, master_seed=a.seed, rounds=a.rounds,
        manifest_digest=QuadraticTrainer(0, a.dim).manifest_digest(), lr=a.lr,
        ready_timeout_s=a.ready_timeout, heartbeat_s=a.heartbeat, min_nodes=a.min_nodes,
        start_timeout_s=a.start_timeout, hash_every=a.hash_every,
    )
    orch = Orchestrator(settings, tx, rl, ConstantPlanner(), IdealApPhy(),
                        metrics=metrics, replica=QuadraticTrainer(0, a.dim), key_ids=ids)
    signal.signal(signal.SIGTERM, lambda signum, frame: orch.stop())  # ends the linger cleanly
    sys.stdout.write(f"AP listening on {tx.endpoint}\n")
    sys.stdout.flush()
    try:
        orch.run(linger_s=a.linger)
    finally:
        tx.close()
        rl.close()
        if metrics:
            metrics.close()
    return 0


def _node_main(a: argparse.Namespace) -> int:
    curve = load_client_keys(a.keys, a.node_id) if a.keys else None
    tx = ZmqClient(a.endpoint, curve=curve, heartbeat_s=a.heartbeat)
    trainer = QuadraticTrainer(a.node_id, a.dim, compute_delay_s=a.delay)
    node = EdgeNode(a.node_id, a.experiment, tx, trainer, BasebandNodePhy(),
                    key_id=curve.public.decode() if curve else "", heartbeat_s=a.heartbeat)
    try:
        n = node.run(until_round=a.until)
    finally:
        tx.close()
    sys.stdout.write(json.dumps({"node": a.node_id, "next_round": n,
                                 "model_hash": trainer.model_hash()}) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tests.roles``."""
    p = argparse.ArgumentParser(prog="python -m tests.roles")
    p.add_argument("role", choices=["ap", "node"])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--experiment", default="test-exp")
    p.add_argument("--keys", default=None)
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--heartbeat", type=float, default=0.2)
    p.add_argument("--log", default="rounds.sqlite")
    p.add_argument("--metrics", default=None)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--ready-timeout", type=float, default=0.5)
    p.add_argument("--min-nodes", type=int, default=1)
    p.add_argument("--start-timeout", type=float, default=5.0)
    p.add_argument("--hash-every", type=int, default=1)
    p.add_argument("--linger", type=float, default=1.0)
    p.add_argument("--node-id", type=int, default=0)
    p.add_argument("--until", type=int, default=None)
    p.add_argument("--delay", type=float, default=0.0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [{a.role}] %(name)s: %(message)s")
    return _ap_main(a) if a.role == "ap" else _node_main(a)


if __name__ == "__main__":
    sys.exit(main())
