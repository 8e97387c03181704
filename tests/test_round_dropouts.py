"""A node that leaves, or whose connection drops, is out of the current round at once: the AP
stops waiting for its READY instead of waiting for the READY deadline. A node killed mid-round
costs at most 3 heartbeats of wall time (here: far less, the closed TCP connection is seen at
once). An edge node asked to stop (SIGTERM / SIGINT) says LEAVE."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from access_point.orchestrator import ApSettings, Orchestrator
from access_point.roundlog import RoundLog
from edge_node.runtime import EdgeNode
from pairzero.metrics import MemoryMetrics
from pairzero.phy.baseband import BasebandNodePhy
from pairzero.protocol.messages import (
    Heartbeat,
    Join,
    JoinAck,
    Leave,
    Ready,
    Round,
    decode,
    encode,
    make,
)
from pairzero.protocol.testing import (
    ConstantPlanner,
    IdealApPhy,
    QuadraticTrainer,
    replay_hash,
)
from pairzero.protocol.transport import InProcHub, ZmqClient, ZmqServer

EXP = "exp-dropouts"
MANIFEST = QuadraticTrainer(0).manifest_digest()
REPO = Path(__file__).resolve().parent.parent


def _thread(fn, *args, **kw) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def target() -> None:
        try:
            out["result"] = fn(*args, **kw)
        except BaseException as e:  # surfaced by the test
            out["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, out


def _one_round_where_node_1_vanishes(tmp_path: Path, vanish) -> tuple[float, dict]:
    """AP + node 0 (honest) + node 1 (scripted: joins, receives ROUND 0, then ``vanish``es);
    READY deadline 30 s. Returns the round's wall time and its metrics row."""
    hub = InProcHub()
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    metrics = MemoryMetrics()
    rows = metrics.rows
    settings = ApSettings(EXP, 1, 1, MANIFEST, 0.05, ready_timeout_s=30.0, heartbeat_s=1.0,
                          min_nodes=2, node_count=2)
    orch = Orchestrator(settings, hub.server(), rl, ConstantPlanner(), IdealApPhy(),
                        metrics=metrics)
    n1 = hub.client("n1")
    n1.send(encode(make(EXP, 0, Join(1, MANIFEST, "", "", 0))))
    node0 = EdgeNode(0, EXP, hub.client("n0"), QuadraticTrainer(0, compute_delay_s=0.3),
                     BasebandNodePhy(), heartbeat_s=1.0)
    n_th, _ = _thread(node0.run, until_round=1)
    ap_th, ap_out = _thread(orch.run)
    while True:  # node 1 waits for ROUND 0, then vanishes while the others compute
        data = n1.recv(10.0)
        assert data is not None
        if isinstance(decode(data, EXP).body, Round):
            break
    t0 = time.monotonic()
    vanish(hub, n1)
    ap_th.join(25)
    elapsed = time.monotonic() - t0
    n_th.join(5)
    assert ap_out.get("result") == 1, ap_out
    assert [r.active for r in rl.records(0)] == [(0,)]
    rl.close()
    return elapsed, rows[0]


def test_leave_mid_round_ends_the_wait_for_that_node_at_once(tmp_path: Path) -> None:
    def leave(hub: InProcHub, n1) -> None:
        n1.send(encode(make(EXP, 0, Leave(1, "operator stop"))))

    # Execute
    elapsed, row = _one_round_where_node_1_vanishes(tmp_path, leave)
    # Assert: done once node 0 answered (0.3 s compute), not at the 30 s deadline
    assert elapsed < 5.0
    assert row["ready"] == [0] and row["missing"] == []
    assert "left (operator stop)" in row["left_out"]["1"]


def test_dropped_connection_mid_round_ends_the_wait_for_that_node_at_once(tmp_path: Path) -> None:
    def crash(hub: InProcHub, n1) -> None:
        hub.drop("n1")  # no LEAVE: the connection closes, as when the process is killed

    elapsed, row = _one_round_where_node_1_vanishes(tmp_path, crash)
    assert elapsed < 5.0
    assert row["left_out"] == {"1": "its connection closed"}


def test_a_leave_queued_before_the_connection_closes_is_a_clean_leave(tmp_path: Path, caplog) -> None:
    # Prepare: node 1 joined; it sends a HEARTBEAT and a LEAVE, and its connection closes
    # before the AP has read them (a node stopping at the end of a run)
    hub = InProcHub()
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    settings = ApSettings(EXP, 1, 1, MANIFEST, 0.05, heartbeat_s=60.0, min_nodes=2, node_count=2)
    orch = Orchestrator(settings, hub.server(), rl, ConstantPlanner(), IdealApPhy())
    n1 = hub.client("n1")
    n1.send(encode(make(EXP, 0, Join(1, MANIFEST, "", "", 0))))
    orch._pump(1.0)
    assert isinstance(decode(n1.recv(1.0), EXP).body, JoinAck)
    n1.send(encode(make(EXP, 0, Heartbeat(1, 0))))
    n1.send(encode(make(EXP, 0, Leave(1, "stopped"))))
    hub.drop("n1")
    # Execute: the AP reads the HEARTBEAT and learns the connection closed
    with caplog.at_level(logging.INFO, logger="access_point.orchestrator"):
        orch._pump(0.0)
        orch._pump(0.0)
    rl.close()
    # Assert: the LEAVE is served first: one INFO line with its reason, no WARNING
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.INFO, "node 1 removed: it left (stopped)") in msgs, msgs
    assert not [m for lvl, m in msgs if lvl >= logging.WARNING], msgs
    assert orch.dropped == 0


@pytest.mark.e2e
def test_node_killed_mid_round_over_zeromq_costs_less_than_three_heartbeats(tmp_path: Path) -> None:
    # Prepare: real sockets; node 1 is a separate process whose rounds take 3 s of compute;
    # heartbeat 0.5 s, READY deadline 30 s
    hb, rounds = 0.5, 3
    server = ZmqServer("tcp://127.0.0.1:*", heartbeat_s=hb)
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    metrics = MemoryMetrics()
    rows = metrics.rows
    settings = ApSettings(EXP, 1, rounds, MANIFEST, 0.05, ready_timeout_s=30.0, heartbeat_s=hb,
                          min_nodes=2, start_timeout_s=60.0, node_count=2)
    orch = Orchestrator(settings, server, rl, ConstantPlanner(), IdealApPhy(), metrics=metrics)
    client = ZmqClient(server.endpoint, heartbeat_s=hb)
    node0 = EdgeNode(0, EXP, client, QuadraticTrainer(0), BasebandNodePhy(), heartbeat_s=hb)
    victim = subprocess.Popen(
        [sys.executable, "-m", "tests.roles", "node", "--endpoint", server.endpoint,
         "--experiment", EXP, "--node-id", "1", "--heartbeat", str(hb), "--delay", "3.0"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ap_th, ap_out = _thread(orch.run, linger_s=0.0)
    n_th, n_out = _thread(node0.run, until_round=rounds)
    try:
        # Execute: once round 0 is committed, node 1 is computing round 1: kill it 1 s in
        deadline = time.monotonic() + 60
        while not rows and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rows and rows[0]["ready"] == [0, 1], rows
        time.sleep(1.0)
        t_kill = time.time()
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        n_th.join(30)
        ap_th.join(30)
    finally:
        victim.kill()
        node0.stop()
        orch.stop()
        n_th.join(10)
        ap_th.join(10)
        client.close()
        server.close()
    # Assert: round 1 committed with node 0 alone, well within 3 heartbeats of the kill
    assert ap_out.get("result") == rounds and n_out.get("result") == rounds, (ap_out, n_out)
    cost = rows[1]["time"] - t_kill
    print(f"\nround 1: committed {cost:.3f} s after node 1 was killed "
          f"(round wall time {rows[1]['round_s']:.3f} s, heartbeat {hb} s)")
    assert rows[1]["ready"] == [0] and rows[1]["left_out"] == {"1": "its connection closed"}
    assert cost < 3 * hb, cost
    recs = rl.records(0)
    rl.close()
    assert [r.active for r in recs] == [(0, 1), (0,), (0,)]
    assert node0.trainer.model_hash() == replay_hash(recs)


@pytest.mark.e2e
def test_edge_node_says_leave_when_terminated(tmp_path: Path) -> None:
    # Prepare: a scripted AP (ROUTER) and a real `pairzero edge` process (baseband)
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    router.bind(f"tcp://127.0.0.1:{port}")
    cmd = [sys.executable, "-m", "pairzero.cli", "edge", "--node-id", "0",
           "--set", "radio.mode=baseband", "--set", "network.curve=false",
           "--set", f"network.control_port={port}", "--set", "network.heartbeat_s=0.5"]
    edge = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    got: list = []
    try:
        assert router.poll(120_000), "the edge node never sent JOIN"
        peer, data = router.recv_multipart()
        join = decode(data, None)
        assert isinstance(join.body, Join)
        exp = join.experiment
        router.send_multipart([peer, encode(make(exp, 0, JoinAck(0, 0, 10)))])
        assert router.poll(10_000)  # its first heartbeat: joined and serving
        router.recv_multipart()
        # Execute
        edge.send_signal(signal.SIGTERM)
        end = time.monotonic() + 20
        while time.monotonic() < end and not any(isinstance(b, Leave) for b in got):
            if router.poll(200):
                got.append(decode(router.recv_multipart()[1], exp).body)
        edge.wait(30)
    finally:
        if edge.poll() is None:
            edge.kill()
        ctx.destroy(linger=0)
    # Assert
    leaves = [b for b in got if isinstance(b, Leave)]
    assert leaves and leaves[0].node == 0, got
    assert not any(isinstance(b, Ready) for b in got)
    assert edge.returncode is not None and edge.returncode >= 0, "killed instead of leaving"
