"""One message never stops the AP: whatever handling it raises is logged with the peer and the
message dropped, except an OperationalError (the round log failed) and KeyboardInterrupt /
SystemExit. Fields decode cannot judge are checked where the AP handles them: enrolled node
ids at JOIN, a READY's scalar present (and within the clip bound) when the PHY takes it from
READY; a refused READY leaves its node out of the round at once."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from access_point.orchestrator import ApSettings, Orchestrator
from access_point.roundlog import RoundLog, RoundLogError
from pairzero.protocol.messages import (
    CatchupRequest,
    Heartbeat,
    Join,
    JoinAck,
    JoinReject,
    Ready,
    Round,
    decode,
    encode,
    make,
)
from pairzero.protocol.testing import ConstantPlanner, IdealApPhy, QuadraticTrainer
from pairzero.protocol.transport import InProcHub

EXP = "exp-faults"
MANIFEST = QuadraticTrainer(0).manifest_digest()


class _DigitalPhy(IdealApPhy):
    """The ideal digital PHY declaring, as the baseband one does, that it takes the scalars
    from READY and that they are clipped to +-2."""

    digital = True
    scalar_bound = 2.0


def _ap(tmp_path: Path, phy: IdealApPhy | None = None, **kw) -> tuple[Orchestrator, InProcHub, RoundLog]:
    hub = InProcHub()
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    base = dict(ready_timeout_s=30.0, heartbeat_s=1.0, min_nodes=1, node_count=2)
    base.update(kw)
    settings = ApSettings(EXP, 1, 3, MANIFEST, 0.05, **base)
    return Orchestrator(settings, hub.server(), rl, ConstantPlanner(), phy or IdealApPhy()), hub, rl


def _join(orch: Orchestrator, hub: InProcHub, node: int, name: str | None = None):
    client = hub.client(name or f"n{node}")
    client.send(encode(make(EXP, 0, Join(node, MANIFEST, "", "", 0))))
    orch._pump(0.1)
    return client, decode(client.recv(1.0), EXP).body


def test_exception_while_handling_a_message_is_logged_and_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: a member, and a handler that fails (a bug, an unforeseen input)
    orch, hub, rl = _ap(tmp_path)
    client, ack = _join(orch, hub, 0)
    assert isinstance(ack, JoinAck)

    def boom(*a: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(orch, "_on_catchup", boom)
    # Execute
    client.send(encode(make(EXP, 0, CatchupRequest(0, 0))))
    with caplog.at_level(logging.ERROR):
        orch._pump(0.1)
    client.send(encode(make(EXP, 0, Heartbeat(0, 0))))
    orch._pump(0.1)
    # Assert: logged with the peer, dropped, and the AP serves the next message
    assert orch.dropped == 1
    assert "peer " + b"n0".hex() in caplog.text and "RuntimeError: boom" in caplog.text
    assert orch.members == [0]
    rl.close()


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3),
                                 RoundLogError("log.sqlite: disk full")])
def test_interrupts_and_round_log_failures_are_not_swallowed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    # Prepare
    orch, hub, rl = _ap(tmp_path)
    client, _ = _join(orch, hub, 0)

    def fail(*a: object) -> None:
        raise exc

    monkeypatch.setattr(orch, "_on_catchup", fail)
    client.send(encode(make(EXP, 0, CatchupRequest(0, 0))))
    # Execute / Assert
    with pytest.raises(type(exc)):
        orch._pump(0.1)
    rl.close()


def test_join_beyond_the_enrolled_range_is_refused(tmp_path: Path) -> None:
    # Prepare: nodes 0..1 enrolled (nodes.count = 2)
    orch, hub, rl = _ap(tmp_path)
    # Execute
    _, reply2 = _join(orch, hub, 2)
    _, reply1 = _join(orch, hub, 1)
    # Assert
    assert isinstance(reply2, JoinReject) and "not enrolled" in reply2.reason
    assert "nodes 0..1" in reply2.reason
    assert isinstance(reply1, JoinAck)
    assert orch.members == [1]
    rl.close()


def _round_with_one_ready(tmp_path: Path, ready: Ready) -> tuple[Orchestrator, float, list[dict]]:
    """Nodes 0 and 1 joined over a digital PHY; node 1 answers ROUND 0 with ``ready``, node 0
    with its scalar. Returns the AP, the round's wall time and the metrics rows."""
    rows: list[dict] = []
    orch, hub, rl = _ap(tmp_path, _DigitalPhy(), min_nodes=2)
    orch._metrics = rows.append
    c0, _ = _join(orch, hub, 0)
    c1, _ = _join(orch, hub, 1)

    def nodes() -> None:
        for c, body in ((c1, ready), (c0, Ready(0, 0, True, 0.5))):
            while True:
                data = c.recv(5.0)
                assert data is not None
                if isinstance(decode(data, EXP).body, Round):
                    break
            c.send(encode(make(EXP, 0, body)))

    th = threading.Thread(target=nodes, daemon=True)
    th.start()
    t0 = time.monotonic()
    orch._run_round(0)
    elapsed = time.monotonic() - t0
    th.join(5)
    recs = rl.records(0)
    rl.close()
    assert [r.active for r in recs] == [(0,)]
    return orch, elapsed, rows


@pytest.mark.parametrize(("ready", "why"), [
    (Ready(0, 1, True, None), "without its scalar"),
    (Ready(0, 1, True, 1e300), "outside the clip bound"),
    (Ready(0, 1, False, None), "no scalar for this round"),
])
def test_refused_ready_leaves_its_node_out_at_once(tmp_path: Path, ready: Ready, why: str) -> None:
    # Execute (the READY deadline is 30 s)
    orch, elapsed, rows = _round_with_one_ready(tmp_path, ready)
    # Assert: the round completed with node 0 only, without waiting for node 1's deadline
    assert elapsed < 10.0
    assert why in rows[0]["left_out"]["1"]
    assert rows[0]["missing"] == []
