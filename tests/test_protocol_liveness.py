"""Liveness is judged on what arrived, not on when a held-up process last looked.

A peer is taken for gone after 3 silent heartbeats. An AP or node held up longer than that
(an fsync, a long forward pass, a loaded machine) finds the other side's heartbeats waiting
in its queue: it must read them before it judges, and keep the peer.
"""

from __future__ import annotations

import time
from pathlib import Path

from access_point.orchestrator import ApSettings, Orchestrator
from access_point.roundlog import RoundLog
from edge_node.runtime import EdgeNode
from pairzero.protocol.messages import AP_NODE_ID, Heartbeat, encode, make
from pairzero.protocol.testing import ConstantPlanner, DigitalNodePhy, IdealApPhy, QuadraticTrainer
from pairzero.protocol.transport import InProcHub

EXP = "exp-liveness"
HB = 0.1  # silent for 3 heartbeats (0.3 s) = gone; the hold-ups below last 0.6 s


def _ap_and_joined_node(hub: InProcHub, tmp_path: Path) -> tuple[Orchestrator, EdgeNode, RoundLog]:
    settings = ApSettings(EXP, 1, 5, QuadraticTrainer(0).manifest_digest(), 0.05, heartbeat_s=HB)
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    orch = Orchestrator(settings, hub.server(), rl, ConstantPlanner(), IdealApPhy())
    node = EdgeNode(0, EXP, hub.client("n0"), QuadraticTrainer(0), DigitalNodePhy(), heartbeat_s=HB)
    node.step(0.0)  # JOIN
    orch._pump(1.0)  # JOIN_ACK
    node.step(1.0)
    assert node.joined and orch.members == [0]
    return orch, node, rl


def test_held_up_ap_keeps_a_node_whose_heartbeats_are_queued(tmp_path: Path) -> None:
    # Prepare
    hub = InProcHub()
    orch, node, rl = _ap_and_joined_node(hub, tmp_path)
    # Execute: the node heartbeats for 2x the silence limit while the AP does not read
    end = time.monotonic() + 6 * HB
    while time.monotonic() < end:
        node.step(HB / 4)
    orch._pump(0.0)
    rl.close()
    # Assert
    assert orch.members == [0], "the AP removed a node whose heartbeats were waiting for it"


def test_held_up_node_keeps_an_ap_whose_heartbeats_are_queued(tmp_path: Path) -> None:
    # Prepare
    hub = InProcHub()
    orch, node, rl = _ap_and_joined_node(hub, tmp_path)
    rl.close()
    # Execute: the AP heartbeats for 2x the silence limit while the node does not read
    ap = orch._tx
    peer = next(iter(orch._members.values())).peer
    end = time.monotonic() + 6 * HB
    while time.monotonic() < end:
        ap.send(peer, encode(make(EXP, 0, Heartbeat(node=AP_NODE_ID, next_round=0))))
        time.sleep(HB / 2)
    node.step(0.0)
    # Assert
    assert node.joined, "the node took an AP whose heartbeats were waiting for it for gone"


def test_silent_node_is_still_removed(tmp_path: Path) -> None:
    # Prepare
    hub = InProcHub()
    orch, node, rl = _ap_and_joined_node(hub, tmp_path)
    # Execute: the node says nothing for 2x the silence limit; the AP keeps serving
    end = time.monotonic() + 6 * HB
    while time.monotonic() < end:
        orch._pump(HB / 4)
    rl.close()
    # Assert
    assert orch.members == []
