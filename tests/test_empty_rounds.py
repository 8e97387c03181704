"""Empty rounds (no node present: a dead channel, no frame detected) are counted, as are partial
rounds (fewer nodes than enrolled); ``max_empty_rounds`` consecutive empty rounds stop the run
with the reason instead of finishing it with no-op updates. In-process AP and nodes; the
"radio" of the nodes puts nothing in READY, so what reaches the AP is what the PHY says."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from access_point.orchestrator import ApSettings, Orchestrator
from access_point.roundlog import RoundLog
from edge_node.runtime import EdgeNode
from pairzero.phy.baseband import BasebandNodePhy
from pairzero.protocol.interfaces import PhyResult, RoundPlan
from pairzero.protocol.messages import RoundRecord, Schedule
from pairzero.protocol.testing import ConstantPlanner, IdealApPhy, QuadraticTrainer
from pairzero.protocol.transport import InProcHub

EXP = "exp-empty"
MANIFEST = QuadraticTrainer(0).manifest_digest()


class _DeadChannelNodePhy(BasebandNodePhy):
    """A node radio whose frames never reach the AP (the channel emulator is dead)."""

    digital = False

    def transmit(self, t: int, scalar: float | None, sched: Schedule | None) -> None:
        return None


class _FlakyChannel(IdealApPhy):
    """The ideal digital PHY, except that no frame is detected in ``dead`` rounds and only
    node 0's in ``half`` rounds."""

    def __init__(self, dead: set[int], half: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        super().__init__()
        self.dead, self.half = dead, half

    def receive(self, t: int, seed: int, plan: RoundPlan,
                ready: Mapping[int, float | None], idle=None) -> PhyResult:
        if t in self.dead:
            return PhyResult(0.0, ())
        if t in self.half:
            ready = {k: v for k, v in ready.items() if k == 0}
        return super().receive(t, seed, plan, ready)


def _run(tmp_path: Path, rounds: int, max_empty: int, phy: IdealApPhy, node_phy=BasebandNodePhy,
         log: RoundLog | None = None) -> tuple[Orchestrator, int, RoundLog]:
    hub = InProcHub()
    rl = log or RoundLog.open(tmp_path / "log.sqlite", EXP)
    settings = ApSettings(EXP, 1, rounds, MANIFEST, 0.05, ready_timeout_s=20.0, heartbeat_s=1.0,
                          min_nodes=2, node_count=2, max_empty_rounds=max_empty)
    orch = Orchestrator(settings, hub.server(), rl, ConstantPlanner(), phy)
    nodes = [EdgeNode(k, EXP, hub.client(f"n{k}"), QuadraticTrainer(k), node_phy(),
                      heartbeat_s=1.0, next_round=rl.next_round) for k in range(2)]
    for n in nodes:  # their weights follow the log (a resumed AP's nodes)
        n.trainer.replay(rl.records(0))
    threads = [threading.Thread(target=n.run, kwargs={"until_round": rounds}, daemon=True)
               for n in nodes]
    for th in threads:
        th.start()
    committed = orch.run()
    for n in nodes:
        n.stop()
    for th in threads:
        th.join(10)
    return orch, committed, rl


def test_consecutive_empty_rounds_stop_the_run_with_the_reason(tmp_path: Path) -> None:
    # Prepare / Execute: every frame is lost; 3 consecutive empty rounds allowed
    orch, committed, rl = _run(tmp_path, 10, 3, IdealApPhy(), _DeadChannelNodePhy)
    # Assert: stopped after round 2 (committed, no-op), not after all 10 rounds
    assert committed == 3 and rl.next_round == 3
    assert orch.empty_rounds == 3 and orch.partial_rounds == 0
    assert orch.stop_reason is not None
    assert "3 consecutive rounds (0..2) had no node present" in orch.stop_reason
    assert "network.max_empty_rounds" in orch.stop_reason
    assert [r.active for r in rl.records(0)] == [()] * 3
    rl.close()


def test_zero_disables_the_empty_round_stop(tmp_path: Path) -> None:
    orch, committed, rl = _run(tmp_path, 4, 0, IdealApPhy(), _DeadChannelNodePhy)
    assert committed == 4 and orch.stop_reason is None
    assert orch.empty_rounds == 4
    rl.close()


def test_empty_and_partial_rounds_are_counted_and_a_present_round_resets_the_streak(
        tmp_path: Path) -> None:
    # Prepare: rounds 0, 1, 3, 4 lose every frame, round 5 node 1's; limit 3 in a row
    phy = _FlakyChannel(dead={0, 1, 3, 4}, half={5})
    # Execute
    orch, committed, rl = _run(tmp_path, 7, 3, phy)
    # Assert: never 3 empty in a row, so the run finishes
    assert committed == 7 and orch.stop_reason is None
    assert (orch.empty_rounds, orch.partial_rounds) == (4, 1)
    assert [len(r.active) for r in rl.records(0)] == [0, 0, 2, 0, 0, 1, 2]
    rl.close()


def test_resumed_ap_counts_logged_rounds_and_starts_a_new_streak(tmp_path: Path) -> None:
    # Prepare: a log that ends with 2 empty rounds after a partial one (the AP was stopped)
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    for t, active in enumerate([(0,), (), ()]):
        rl.append(RoundRecord(EXP, t, 1000 + t, 0.0, 0.05, active, 1.0, 0.0, None, None, 1.0))
    # Execute: restarted with a limit of 2; round 3 is empty again, round 4 is not
    orch, committed, rl = _run(tmp_path, 5, 2, _FlakyChannel(dead={3}), log=rl)
    # Assert: the counts include the logged rounds; the restart was a new attempt
    assert committed == 2 and orch.stop_reason is None
    assert (orch.empty_rounds, orch.partial_rounds) == (3, 1)
    rl.close()
