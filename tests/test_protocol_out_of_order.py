"""Out-of-order and out-of-place messages are logged and dropped, never applied."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from access_point.orchestrator import ApSettings, Orchestrator
from access_point.roundlog import RoundLog
from edge_node.runtime import EdgeNode, ModelHashMismatch
from pairzero.phy.baseband import BasebandNodePhy
from pairzero.protocol.messages import (
    CatchupResponse,
    Join,
    JoinAck,
    Ready,
    Round,
    RoundRecord,
    Update,
    decode,
    encode,
    make,
)
from pairzero.protocol.testing import (
    ConstantPlanner,
    IdealApPhy,
    QuadraticTrainer,
)
from pairzero.protocol.transport import InProcHub

EXP = "exp-ooo"


def _next(ap, timeout: float = 1.0):
    """Next message from the node other than a heartbeat (None on timeout)."""
    while True:
        inbound = ap.recv(timeout)
        if inbound is None:
            return None
        msg = decode(inbound.data, EXP)
        if msg.type != "HEARTBEAT":
            return msg


def _joined_node(hub: InProcHub) -> tuple[EdgeNode, object]:
    ap = hub.server()
    node = EdgeNode(0, EXP, hub.client("n0"), QuadraticTrainer(0), BasebandNodePhy(),
                    heartbeat_s=10.0)
    node.step(0.0)  # sends JOIN
    inbound = ap.recv(1.0)
    assert inbound is not None and decode(inbound.data, EXP).type == "JOIN"
    ap.send(inbound.peer, encode(make(EXP, 0, JoinAck(0, 0, 0))))
    node.step(1.0)
    assert node.joined
    return node, (ap, inbound.peer)


def test_protocol_node_drops_stale_and_future_updates(caplog: pytest.LogCaptureFixture) -> None:
    # Prepare
    hub = InProcHub()
    node, (ap, peer) = _joined_node(hub)
    h0 = node.trainer.model_hash()
    # Execute: a future UPDATE (gap) must trigger catch-up, not be applied
    ap.send(peer, encode(make(EXP, 3, Update(3, 11, 0.5, 0.1, (0,), None))))
    node.step(1.0)
    req = _next(ap)
    # ... and a ROUND while catching up is skipped (no READY)
    ap.send(peer, encode(make(EXP, 0, Round(0, 11, 1.0, 0.1))))
    with caplog.at_level(logging.INFO):
        node.step(1.0)
    # Assert
    assert type(req.body).__name__ == "CatchupRequest" and req.body.from_round == 0
    assert node.trainer.model_hash() == h0 and node.next_round == 0
    assert _next(ap, 0.1) is None, "no READY may be sent for a skipped round"
    assert "skips round 0" in caplog.text
    # Execute: a catch-up with a hole is refused and asked again
    rec = RoundRecord(EXP, 1, 11, 0.5, 0.1, (0,), 1.0, 0.0, None, None, 1.0)
    ap.send(peer, encode(make(EXP, 0, CatchupResponse(0, 0, (rec,), False, 2))))
    node.step(1.0)
    again = _next(ap)
    assert again.body.from_round == 0 and node.next_round == 0


def test_protocol_node_stops_on_model_hash_mismatch() -> None:
    hub = InProcHub()
    node, (ap, peer) = _joined_node(hub)
    ap.send(peer, encode(make(EXP, 0, Update(0, 11, 0.5, 0.1, (0,), "0" * 64))))
    with pytest.raises(ModelHashMismatch, match="diverged"):
        node.step(1.0)


def test_protocol_ap_drops_ready_for_wrong_round(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: AP with one scripted member that answers round 0 with a READY for round 5
    hub = InProcHub()
    rl = RoundLog.open(tmp_path / "l.sqlite", EXP)
    s = ApSettings(EXP, 0, 1, QuadraticTrainer(0).manifest_digest(), 0.1, ready_timeout_s=0.3,
                   heartbeat_s=10.0, min_nodes=1, hash_every=0)
    orch = Orchestrator(s, hub.server(), rl, ConstantPlanner(), IdealApPhy())
    # The AP serves on after its one round: on a slow machine the wrong READY may arrive after
    # the deadline, and is then dropped (and logged) the same way.
    th = threading.Thread(target=orch.run, kwargs={"linger_s": 60}, daemon=True)
    node_tx = hub.client("n0")
    tr = QuadraticTrainer(0)
    node_tx.send(encode(make(EXP, 0, Join(0, tr.manifest_digest(), tr.model_hash(), "", 0))))
    # Execute
    with caplog.at_level(logging.WARNING):
        th.start()
        seen = []
        while True:
            data = node_tx.recv(10.0)
            assert data is not None
            msg = decode(data, EXP)
            seen.append(msg.type)
            if isinstance(msg.body, Round):
                node_tx.send(encode(make(EXP, 0, Ready(5, 0, True, 123.0))))
            if isinstance(msg.body, Update):
                break
        deadline = time.monotonic() + 10
        while orch.dropped < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        orch.stop()
        th.join(5)
    # Assert: the round ran without node 0 (its READY was for another round)
    assert msg.body.active == () and msg.body.g_hat == 0.0
    assert orch.dropped == 1 and "dropped READY for round 5" in caplog.text
    rl.close()


def test_a_round_announced_twice_is_answered_twice_from_one_forward_pass() -> None:
    # Prepare: a node counting its forward passes
    hub = InProcHub()
    node, (ap, peer) = _joined_node(hub)
    calls: list[int] = []
    compute = node.trainer.compute_scalar

    def counted(t: int, seed: int) -> float:
        calls.append(t)
        return compute(t, seed)

    node.trainer.compute_scalar = counted  # type: ignore[method-assign]
    # Execute: ROUND 0, then ROUND 0 again (the AP re-announces it to a node that re-joined)
    for _ in range(2):
        ap.send(peer, encode(make(EXP, 0, Round(0, 11, 5.0, 0.1))))
        node.step(1.0)
    first, second = _next(ap), _next(ap)
    # Assert: two READYs with the same scalar, one forward pass, one round taken part in
    assert first.type == second.type == "READY"
    assert first.body.digital_scalar == second.body.digital_scalar == compute(0, 11)
    assert calls == [0] and node.rounds_participated == 1
