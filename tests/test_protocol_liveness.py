"""Liveness is judged on what arrived, not on when a held-up process last looked.

A peer is taken for gone after 3 silent heartbeats. An AP or node held up longer than that
(an fsync, a long forward pass, a loaded machine) finds the other side's heartbeats waiting
in its queue: it must read them before it judges, and keep the peer. A node whose AP stays
silent for ``network.ap_give_up_s`` stops with one clear line instead of waiting forever.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from access_point.orchestrator import ApSettings, Orchestrator
from access_point.roundlog import RoundLog
from edge_node.runtime import EdgeNode, NodeError
from pairzero.phy.baseband import BasebandNodePhy
from pairzero.protocol.messages import AP_NODE_ID, Heartbeat, encode, make
from pairzero.protocol.testing import ConstantPlanner, IdealApPhy, QuadraticTrainer
from pairzero.protocol.transport import InProcHub

EXP = "exp-liveness"
HB = 0.1  # silent for 3 heartbeats (0.3 s) = gone; the hold-ups below last 0.6 s
REPO = Path(__file__).resolve().parent.parent


def _ap_and_joined_node(hub: InProcHub, tmp_path: Path) -> tuple[Orchestrator, EdgeNode, RoundLog]:
    settings = ApSettings(EXP, 1, 5, QuadraticTrainer(0).manifest_digest(), 0.05, heartbeat_s=HB)
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    orch = Orchestrator(settings, hub.server(), rl, ConstantPlanner(), IdealApPhy())
    node = EdgeNode(0, EXP, hub.client("n0"), QuadraticTrainer(0), BasebandNodePhy(), heartbeat_s=HB)
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


def test_node_gives_up_on_a_silent_ap_after_give_up_s() -> None:
    # Prepare: nobody serves the AP side of the hub
    hub = InProcHub()
    hub.server()
    node = EdgeNode(0, EXP, hub.client("n0"), QuadraticTrainer(0), BasebandNodePhy(), heartbeat_s=HB,
                    give_up_s=0.5)
    # Execute
    t0 = time.monotonic()
    with pytest.raises(NodeError, match="nothing from the AP") as err:
        node.run(until_round=3)
    # Assert: not before the give-up time, and the message names the setting
    assert 0.5 <= time.monotonic() - t0 < 30
    assert "network.ap_give_up_s" in str(err.value)


def test_node_with_give_up_zero_keeps_waiting_for_the_ap() -> None:
    hub = InProcHub()
    hub.server()
    node = EdgeNode(0, EXP, hub.client("n0"), QuadraticTrainer(0), BasebandNodePhy(), heartbeat_s=HB)
    end = time.monotonic() + 1.0  # 10 heartbeats, 3x the re-join limit
    while time.monotonic() < end:
        node.step(HB / 4)  # would raise if it gave up
    assert not node.joined


@pytest.mark.e2e
def test_edge_cli_without_an_ap_stops_with_one_line_and_status_1(tmp_path: Path) -> None:
    # Prepare: a port nothing listens on; baseband PHY (no sample sockets)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "pairzero.cli", "edge", "--node-id", "0",
           "--set", "radio.mode=baseband", "--set", "network.curve=false",
           "--set", f"network.control_port={port}", "--set", "network.ap_give_up_s=1"]
    # Execute
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    # Assert
    assert res.returncode == 1, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("pairzero edge: ")]
    assert len(errors) == 1 and "nothing from the AP" in errors[0], res.stderr
    assert "Traceback" not in res.stderr
