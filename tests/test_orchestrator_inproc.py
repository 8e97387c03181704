"""In-process AP + edge nodes over InProcHub with the exact quadratic trainer and ideal PHY."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from access_point.orchestrator import ApSettings, Orchestrator, round_seed
from access_point.roundlog import RoundLog
from edge_node.runtime import EdgeNode, JoinRejected
from pairzero.metrics import MetricsWriter, round_index, round_rows
from pairzero.phy.baseband import BasebandNodePhy
from pairzero.protocol.testing import (
    ConstantPlanner,
    IdealApPhy,
    QuadraticTrainer,
    replay_hash,
)
from pairzero.protocol.transport import InProcHub

EXP = "exp-inproc"
HB = 1.0  # nodes and AP drop each other after 3 silent heartbeats: 3 s, ample on a loaded CI


def _settings(rounds: int, **kw) -> ApSettings:
    base = dict(experiment=EXP, master_seed=7, rounds=rounds,
                manifest_digest=QuadraticTrainer(0).manifest_digest(), lr=0.05,
                ready_timeout_s=10.0, heartbeat_s=HB, min_nodes=3, start_timeout_s=30.0,
                hash_every=2)
    base.update(kw)
    return ApSettings(**base)


def _node(hub: InProcHub, k: int, **kw) -> EdgeNode:
    trainer = QuadraticTrainer(k, compute_delay_s=kw.pop("delay", 0.0))
    return EdgeNode(k, EXP, hub.client(f"n{k}"), trainer, BasebandNodePhy(), heartbeat_s=HB, **kw)


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


def test_orchestrator_three_nodes_identical_state_equal_to_log_replay(tmp_path: Path) -> None:
    # Prepare
    rounds = 6
    hub = InProcHub()
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    metrics = MetricsWriter(tmp_path / "metrics.jsonl")
    orch = Orchestrator(_settings(rounds), hub.server(), rl, ConstantPlanner(), IdealApPhy(),
                        metrics=metrics, replica=QuadraticTrainer(0))
    nodes = [_node(hub, k) for k in range(3)]
    # Execute
    threads = [_thread(n.run, until_round=rounds) for n in nodes]
    ap_th, ap_out = _thread(orch.run, linger_s=0.3)
    for th, _ in threads:
        th.join(20)
    ap_th.join(20)
    metrics.close()
    # Assert
    assert ap_out.get("result") == rounds, ap_out
    for _, out in threads:
        assert out.get("result") == rounds, out
    recs = rl.records(0)
    assert [r.t for r in recs] == list(range(rounds))
    assert [r.seed for r in recs] == [round_seed(7, t) for t in range(rounds)]
    assert all(r.active == (0, 1, 2) for r in recs)
    hashes = {n.trainer.model_hash() for n in nodes}
    assert hashes == {replay_hash(recs)} == {recs[-1].model_hash}
    # g_hat of round 0 is the exact mean of the three scalars at theta = 0
    z0 = QuadraticTrainer(0).z(recs[0].seed)
    expected0 = np.mean([z0 @ (0 - QuadraticTrainer(k).target) for k in range(3)])
    assert recs[0].g_hat == pytest.approx(expected0, rel=1e-12)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == list(range(1, rounds + 1))  # rounds completed
    assert rows[0]["missing"] == []
    rl.close()


def test_orchestrator_dead_node_does_not_hang_and_rejoins_to_identical_state(tmp_path: Path) -> None:
    # Prepare: node 2 computes slowly and is killed (transport closed, no LEAVE) mid-round 2
    rounds = 8
    hub = InProcHub()
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    # The deadline must be long enough that the live nodes always answer on a loaded 2-core
    # machine (the rounds without node 2 each wait for it in full).
    orch = Orchestrator(_settings(rounds, ready_timeout_s=3.0), hub.server(), rl, ConstantPlanner(),
                        IdealApPhy(), replica=QuadraticTrainer(0))
    n0, n1 = _node(hub, 0), _node(hub, 1)
    victim = _node(hub, 2)
    t0, o0 = _thread(n0.run, until_round=rounds)
    t1, o1 = _thread(n1.run, until_round=rounds)
    tv, ov = _thread(victim.run, until_round=2, leave=False)
    ap_th, ap_out = _thread(orch.run, linger_s=120)  # serves catch-ups until stopped below
    tv.join(10)  # the victim has applied rounds 0, 1 and now crashes before READY of round 2
    hub.drop("n2")
    # Execute: while the survivors go on, a fresh node 2 (initial weights) joins later
    time.sleep(0.6)
    reborn = EdgeNode(2, EXP, hub.client("n2b"), QuadraticTrainer(2), BasebandNodePhy(),
                      heartbeat_s=HB)
    tr, orr = _thread(reborn.run, until_round=rounds)
    for th in (t0, t1, tr):
        th.join(60)
    orch.stop()
    ap_th.join(30)
    # Assert
    assert ap_out.get("result") == rounds, ap_out
    recs = rl.records(0)
    assert len(recs) == rounds
    assert any(2 not in r.active for r in recs), "some round must have run without node 2"
    assert all({0, 1} <= set(r.active) for r in recs)
    ref = replay_hash(recs)
    assert n0.trainer.model_hash() == n1.trainer.model_hash() == reborn.trainer.model_hash() == ref
    rl.close()


def test_orchestrator_refuses_manifest_mismatch_with_reason(tmp_path: Path) -> None:
    # Prepare
    hub = InProcHub()
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    orch = Orchestrator(_settings(1, min_nodes=1, start_timeout_s=1.0), hub.server(), rl,
                        ConstantPlanner(), IdealApPhy())
    bad = EdgeNode(0, EXP, hub.client("bad"), QuadraticTrainer(0, dim=9), BasebandNodePhy(),
                   heartbeat_s=HB)
    ap_th, _ = _thread(orch.run)
    # Execute / Assert
    with pytest.raises(JoinRejected, match="manifest digest mismatch"):
        bad.run(until_round=1)
    orch.stop()
    ap_th.join(5)
    assert orch.members == []
    rl.close()


def test_node_rejoining_behind_the_round_is_not_waited_for(tmp_path: Path) -> None:
    # Prepare: node 2 applies rounds 0 and 1, then goes silent without closing its connection
    # (its link cut: nothing tells the AP); round 2 expects its READY.
    rounds = 4
    hub = InProcHub()
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    metrics = MetricsWriter(tmp_path / "metrics.jsonl")
    orch = Orchestrator(_settings(rounds, ready_timeout_s=30.0), hub.server(), rl, ConstantPlanner(),
                        IdealApPhy(), metrics=metrics, replica=QuadraticTrainer(0))
    n0, n1 = _node(hub, 0), _node(hub, 1)
    cut = _node(hub, 2)
    t0, _ = _thread(n0.run, until_round=rounds)
    t1, _ = _thread(n1.run, until_round=rounds)
    tc, _ = _thread(cut.run, until_round=2, leave=False)
    ap_th, ap_out = _thread(orch.run, linger_s=60)
    tc.join(20)
    deadline = time.monotonic() + 20
    while rl.next_round < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # round 2 is waiting for node 2's READY
    # Execute: node 2 comes back as a node that took the AP for gone: it JOINs again at its
    # round 2... of a fresh process here, at round 0, behind round 2
    back = EdgeNode(2, EXP, hub.client("n2-back"), QuadraticTrainer(2), BasebandNodePhy(), heartbeat_s=HB)
    joined_at = time.monotonic()
    tb, _ = _thread(back.run, until_round=rounds)
    for th in (t0, t1, tb):
        th.join(60)
    orch.stop()
    ap_th.join(30)
    metrics.close()
    # Assert: round 2 ended as soon as node 2 re-joined, not at the 30 s READY deadline
    assert ap_out.get("result") == rounds, ap_out
    rows = {round_index(r): r for r in round_rows(tmp_path / "metrics.jsonl")}
    assert "re-joined at its round 0" in rows[2]["left_out"]["2"], rows[2]
    assert rows[2]["round_s"] < 15.0, rows[2]
    assert time.monotonic() - joined_at < 25.0
    recs = rl.records(0)
    assert n0.trainer.model_hash() == back.trainer.model_hash() == replay_hash(recs)
    rl.close()


class _ClockedApPhy(IdealApPhy):
    """The ideal PHY with a radio device clock (the AP checks each joining node's)."""

    def clock_report(self) -> tuple[float, float] | None:
        return time.time(), time.time()


class _ClockedNodePhy(BasebandNodePhy):
    def clock_report(self) -> tuple[float, float] | None:
        return time.time(), time.time()


@pytest.mark.parametrize("clocked", [False, True], ids=["no-radio-clock", "radio-clock-checked"])
def test_a_round_announced_while_its_nodes_rejoin_is_announced_again_and_not_lost(
        tmp_path: Path, clocked: bool) -> None:
    # Prepare: after round 0's UPDATE the AP is busy for longer than the nodes' patience (3
    # heartbeats: its replica's update stands in for an evaluation of a large model); the
    # nodes take it for gone and re-JOIN, so round 1's ROUND reaches nodes that are not
    # joined and drop it. With radio clocks the re-joined node takes part only once its
    # device time is checked again (CLOCK_CHECK / CLOCK_REPORT).
    class _SlowOnce(QuadraticTrainer):
        def apply_update(self, seed: int, g_hat: float, lr: float) -> None:
            if not getattr(self, "_slept", False):
                self._slept = True
                time.sleep(3 * HB + 2.0)
            super().apply_update(seed, g_hat, lr)

    rounds = 3
    hub = InProcHub()
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    metrics = MetricsWriter(tmp_path / "metrics.jsonl")
    orch = Orchestrator(_settings(rounds, ready_timeout_s=30.0, clock_tolerance_s=0.5),
                        hub.server(), rl, ConstantPlanner(),
                        _ClockedApPhy() if clocked else IdealApPhy(), metrics=metrics,
                        replica=_SlowOnce(0))
    nodes = [EdgeNode(k, EXP, hub.client(f"n{k}"), QuadraticTrainer(k),
                      _ClockedNodePhy() if clocked else BasebandNodePhy(), heartbeat_s=HB)
             for k in range(3)]
    threads = [_thread(n.run, until_round=rounds) for n in nodes]
    # Execute
    ap_th, ap_out = _thread(orch.run, linger_s=0.3)
    for th, _ in threads:
        th.join(90)
    ap_th.join(30)
    metrics.close()
    # Assert: the nodes did re-join, and round 1 went on with all three at once, not after its
    # 30 s READY deadline without them; every node took part in every round
    assert ap_out.get("result") == rounds, ap_out
    rows = {round_index(r): r for r in round_rows(tmp_path / "metrics.jsonl")}
    assert rows[1]["missing"] == [] and rows[1]["ready_wait_s"] < 20.0, rows[1]
    recs = rl.records(0)
    assert [r.active for r in recs] == [(0, 1, 2)] * rounds
    assert all(n.rounds_participated == rounds for n in nodes)
    assert {n.trainer.model_hash() for n in nodes} == {replay_hash(recs)}
    rl.close()


def test_a_node_whose_radio_fails_leaves_with_the_reason_and_the_rounds_go_on(tmp_path: Path, caplog) -> None:
    # Prepare: node 2's radio loses its lock at round 1 (its PHY raises a RadioError)
    from pairzero.phy.frontend import RadioError

    class _LosesLock(BasebandNodePhy):
        def transmit(self, t, scalar, sched):
            if t >= 1:
                raise RadioError("node 2: its radio lost_lock: lo_locked reads false: it stops")
            return super().transmit(t, scalar, sched)

    rounds = 3
    hub = InProcHub()
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    orch = Orchestrator(_settings(rounds), hub.server(), rl, ConstantPlanner(), IdealApPhy(),
                        replica=QuadraticTrainer(0))
    nodes = [_node(hub, 0), _node(hub, 1),
             EdgeNode(2, EXP, hub.client("n2"), QuadraticTrainer(2), _LosesLock(), heartbeat_s=HB)]
    threads = [_thread(n.run, until_round=rounds) for n in nodes]
    ap_th, ap_out = _thread(orch.run, linger_s=0.3)
    # Execute
    with caplog.at_level("INFO"):
        for th, _ in threads:
            th.join(20)
        ap_th.join(20)
    # Assert: node 2 raised with the reason, told the AP, and the rounds went on without it
    assert isinstance(threads[2][1].get("error"), RadioError)
    assert "it left (node 2: its radio lost_lock: lo_locked reads false" in caplog.text
    assert ap_out.get("result") == rounds
    # (on this digital path round 1's READY, with its scalar, left before the radio failed)
    assert rl.records(0)[2].active == (0, 1)
    rl.close()


def test_rounds_wait_for_members_still_catching_up_then_go_on_without_them(tmp_path: Path) -> None:
    # Prepare: an AP whose log already holds rounds 0 and 1 (restarted after its last commit);
    # node 0 joins with nothing applied and catches up; a second peer joins as node 1 at round
    # 0 and never asks for the rounds it lacks
    from pairzero.protocol.messages import Join, RoundRecord, encode, make

    rounds = 4
    hub = InProcHub()
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    for t in range(2):
        rl.append(RoundRecord(EXP, t, round_seed(7, t), 0.0, 0.05, (), 1.0, 0.0, None, None, 1.0))
    orch = Orchestrator(_settings(rounds, min_nodes=2, ready_timeout_s=1.0), hub.server(), rl,
                        ConstantPlanner(), IdealApPhy())
    stuck = hub.client("stuck")
    stuck.send(encode(make(EXP, 0, Join(1, QuadraticTrainer(1).manifest_digest(), "", "", 0))))
    node = _node(hub, 0)
    tn, _ = _thread(node.run, until_round=rounds)
    t0 = time.monotonic()
    ap_th, ap_out = _thread(orch.run, linger_s=0.2)
    ap_th.join(30)
    tn.join(30)
    # Assert: node 0 caught up in time for round 2 and took part from then on; the run did not
    # hang on the peer that never caught up (each round waited at most the READY deadline)
    assert ap_out.get("result") == 2, ap_out
    assert [r.active for r in rl.records(2)] == [(0,), (0,)]
    assert time.monotonic() - t0 < 10.0
    rl.close()


def test_an_ap_gives_members_behind_the_round_the_ready_deadline_before_an_empty_round(tmp_path: Path) -> None:
    # Prepare: the log holds rounds 0 and 1; the only member joined at round 0 and never
    # catches up (min_nodes 1, READY deadline 1 s)
    from pairzero.protocol.messages import Join, RoundRecord, encode, make

    hub = InProcHub()
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    for t in range(2):
        rl.append(RoundRecord(EXP, t, round_seed(7, t), 0.0, 0.05, (), 1.0, 0.0, None, None, 1.0))
    orch = Orchestrator(_settings(4, min_nodes=1, ready_timeout_s=1.0), hub.server(), rl,
                        ConstantPlanner(), IdealApPhy())
    stuck = hub.client("stuck")
    stuck.send(encode(make(EXP, 0, Join(1, QuadraticTrainer(1).manifest_digest(), "", "", 0))))
    # Execute
    t0 = time.time()
    ap_th, ap_out = _thread(orch.run)
    ap_th.join(30)
    # Assert: rounds 2 and 3 were committed (the AP does not hang), each only after the member
    # had the READY deadline to reach it (an AP that ran them at once took a catching-up
    # member's rounds for empty ones, and five of those for a dead channel)
    assert ap_out.get("result") == 2, ap_out
    r2, r3 = rl.records(2)
    assert r2.timestamp - t0 >= 0.95 and r3.timestamp - r2.timestamp >= 0.95
    rl.close()
