"""Device time agreed across hosts before a node takes part (CLOCK_CHECK / CLOCK_REPORT).

Every radio sets its device time at a PPS edge from its own host's clock; a host clock off by
half a second or more labels the edge with another second, and every frame of that node then
misses the AP's window, silently. The AP brackets each joining node's device time between the
check leaving and the report arriving (on its own device clock) and refuses a node outside it
in one line naming the node and the offset. In-process AP and nodes (ideal digital PHY) whose
PHYs report device clocks: the node's clock is the AP's plus an offset.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from access_point.orchestrator import ApSettings, Orchestrator
from access_point.roundlog import RoundLog
from edge_node.runtime import EdgeNode, JoinRejected
from pairzero.phy.baseband import BasebandNodePhy
from pairzero.protocol.testing import ConstantPlanner, IdealApPhy, QuadraticTrainer
from pairzero.protocol.transport import InProcHub

EXP = "exp-clock"
HB = 1.0


def _device_time() -> float:
    return time.time() - 1_767_225_600.0  # seconds since the testbed epoch


class _ApPhy(IdealApPhy):
    """The ideal PHY with a radio whose device time is the testbed time."""

    def clock_report(self) -> tuple[float, float] | None:
        return _device_time(), time.time()


class _NodePhy(BasebandNodePhy):
    """A node whose radio labelled its PPS edge ``offset_s`` off (its host clock ``host_s`` off)."""

    def __init__(self, offset_s: float, host_s: float) -> None:
        super().__init__()
        self.offset_s, self.host_s = offset_s, host_s

    def clock_report(self) -> tuple[float, float] | None:
        return _device_time() + self.offset_s, time.time() + self.host_s


def _run(tmp_path: Path, offsets: list[tuple[float, float]], rounds: int = 3):
    hub = InProcHub()
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    settings = ApSettings(experiment=EXP, master_seed=7, rounds=rounds,
                          manifest_digest=QuadraticTrainer(0).manifest_digest(), lr=0.05,
                          ready_timeout_s=10.0, heartbeat_s=HB, min_nodes=len(offsets),
                          start_timeout_s=3.0, hash_every=0, clock_tolerance_s=0.002)
    orch = Orchestrator(settings, hub.server(), rl, ConstantPlanner(), _ApPhy())
    nodes = [EdgeNode(k, EXP, hub.client(f"n{k}"), QuadraticTrainer(k), _NodePhy(*o), heartbeat_s=HB)
             for k, o in enumerate(offsets)]
    outs: list[dict] = []
    threads = []
    for n in nodes:
        out: dict = {}
        outs.append(out)

        def target(n=n, out=out) -> None:
            try:
                out["result"] = n.run(until_round=rounds)
            except BaseException as e:  # surfaced by the test
                out["error"] = e

        th = threading.Thread(target=target, daemon=True)
        th.start()
        threads.append(th)
    ap_out: dict = {}

    def ap() -> None:
        ap_out["result"] = orch.run(linger_s=0.3)

    ap_th = threading.Thread(target=ap, daemon=True)
    ap_th.start()
    for th in threads:
        th.join(30)
    ap_th.join(30)
    recs = rl.records(0)
    rl.close()
    return recs, outs


def test_a_node_whose_device_time_is_a_second_off_is_refused_before_round_0_naming_the_offset(
        tmp_path: Path, caplog) -> None:
    # Prepare: node 1's host clock is 0.6 s ahead, so its radio labelled the PPS edge one
    # second later than the AP's did: its device time is 1 s ahead
    with caplog.at_level("WARNING"):
        recs, outs = _run(tmp_path, [(0.0, 0.0), (1.0, 0.6)])
    # Assert: node 1 refused in one line that names it, the offset and its host clock's
    err = outs[1].get("error")
    assert isinstance(err, JoinRejected), outs[1]
    msg = str(err)
    assert "\n" not in msg and "node 1" in msg
    # the offsets are bracket midpoints, each within half the exchange's round trip (stated)
    m = re.search(r"device time is ([+-][0-9.]+) s \(± ([0-9.]+) ms\) from the AP's; its host "
                  r"clock is ([+-][0-9.]+) s", msg)
    assert m, msg
    off, half, host = float(m[1]), float(m[2]) * 1e-3, float(m[3])
    assert abs(off - 1.0) <= half + 0.0005 and abs(host - 0.6) <= half + 0.0005
    assert "NTP" in msg
    assert "node 1 refused" in caplog.text
    # the run goes on with node 0 alone; node 1 took part in no round
    assert [r.t for r in recs] == [0, 1, 2]
    assert all(r.active == (0,) for r in recs)


def test_nodes_whose_device_time_agrees_train(tmp_path: Path) -> None:
    # A host clock 0.1 ms off labels the same edge: device times agree, every node trains
    recs, outs = _run(tmp_path, [(0.0, 0.0), (0.0, 0.0001)])
    assert all("error" not in o for o in outs), outs
    assert all(r.active == (0, 1) for r in recs)


def test_a_device_time_a_few_frames_off_is_refused_too(tmp_path: Path) -> None:
    # Without a PPS (or a radio whose time was set otherwise), sub-second offsets: refused with
    # the PPS named as the suspect
    recs, outs = _run(tmp_path, [(0.0, 0.0), (0.02, 0.0)])
    err = outs[1].get("error")
    assert isinstance(err, JoinRejected) and "PPS" in str(err)
    m = re.search(r"device time is ([+-][0-9.]+) s \(± ([0-9.]+) ms\)", str(err))
    assert m and abs(float(m[1]) - 0.02) <= float(m[2]) * 1e-3 + 0.0005, err


@pytest.mark.parametrize("tol", [-0.001, float("nan")])
def test_the_clock_tolerance_must_be_a_number_at_least_0(tol: float) -> None:
    with pytest.raises(ValueError, match="clock_tolerance_s"):
        ApSettings(experiment=EXP, master_seed=1, rounds=1, manifest_digest="x", lr=0.1,
                   clock_tolerance_s=tol)
