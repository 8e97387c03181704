"""The round protocol (pairzero.phy.round) on a numpy stand-in for the radio front ends.

The front ends are replaced by :class:`Air`, which places each node's frame on the shared sample
clock and passes the AP's window through :func:`pairzero.phy.reference_channel.apply_channel` (the
emulator's model); everything else is the real planning, precoding, receiver and aggregation
code. The same protocol through the running emulator: tests/test_phy_loopback_flowgraph.py; on
the emulated USRP: tests/test_radio_emulated_usrp.py.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from pairzero.config import load_config
from pairzero.phy.frontend import Capture, EventKind, RadioEvent, SendReport
from pairzero.phy.reference_channel import apply_channel
from pairzero.phy.round import LATENCY_ROUNDS, ApRoundPhy, NodeRoundPhy
from pairzero.protocol.interfaces import ReadyTiming
from pairzero.protocol.messages import Schedule


class Air:
    """Frames sent by the nodes, and the AP's window of their sum through the channel.

    ``now``: the radios' clock (sample index), advanced by the test; ``lost``: windows to
    report as not received (a timeout)."""

    sample_rate = 1e6
    rate_factor = 1.0  # a clock in step with the host's
    tx_gain_db = 0.0

    def __init__(self, gains, delays, cfos, noise_var: float, seed: int = 0) -> None:
        self.gains, self.delays, self.cfos, self.noise_var = gains, delays, cfos, noise_var
        self.frames: dict[int, tuple[int, np.ndarray]] = {}
        self.rng = np.random.default_rng(seed)
        self.now = 0
        self.lost: set[int] = set()
        self.unlocked: set[int | str] = set()  # radios whose lock sensor reads false ("ap", k)

    def now_index(self) -> int:
        return self.now

    def set_tx_gain(self, gain_db: float) -> float:
        raise ValueError("set_tx_gain: the AP's side of Air is a receiver")

    def check_lock(self) -> RadioEvent | None:
        return RadioEvent(EventKind.LOST_LOCK, None, "ref_locked reads false") if "ap" in self.unlocked else None

    def clock_report(self) -> tuple[float, float] | None:
        return None

    def node(self, k: int) -> Air:
        air = self

        class NodeFrontEnd:
            sample_rate = 1e6
            rate_factor = 1.0
            tx_gain_db = 0.0

            def set_tx_gain(self, gain_db: float) -> float:
                self.tx_gain_db = gain_db
                return gain_db

            def now_index(self) -> int:
                return air.now

            def send(self, burst, index, timeout_s):
                air.frames[k] = (index, burst)
                return SendReport(index, True)

            def check_lock(self) -> RadioEvent | None:
                return RadioEvent(EventKind.LOST_LOCK, None, "lo_locked reads false") if k in air.unlocked else None

            def clock_report(self) -> tuple[float, float] | None:
                return None

            def close(self) -> None:
                pass

        return NodeFrontEnd()  # type: ignore[return-value]

    def capture(self, start: int, length: int, timeout_s: float, idle=None) -> Capture:
        if start in self.lost:
            self.frames.clear()
            return Capture(start, length, None, (RadioEvent(EventKind.TIMEOUT, start, "lost"),))
        streams = []
        for k in range(len(self.gains)):
            x = np.zeros(length, dtype=complex)
            if k in self.frames:
                s, b = self.frames[k]
                x[s - start : s - start + len(b)] = b
            streams.append(x)
        self.frames.clear()
        y = apply_channel(streams, self.gains, self.delays, self.cfos, self.noise_var, self.rng, start)
        return Capture(start, length, y.astype(np.complex64))

    def close(self) -> None:
        pass


GAINS = [0.9 * np.exp(0.7j), 1.3 * np.exp(-2.1j), 0.6 * np.exp(2.8j)]


def _rounds(shared_reference: bool, cfos, rounds: int = 6, drop: dict[int, set[int]] | None = None,
            lost: set[int] = frozenset()):
    cfg = load_config(None, ["nodes.count=3", "privacy.enabled=false", "channel.snr_db=30.0"])
    air = Air(GAINS, [1.3, -2.6, 0.4], cfos, noise_var=1e-3)
    ap = ApRoundPhy(cfg, air, shared_reference=shared_reference, realtime=shared_reference)
    nodes = [NodeRoundPhy(cfg, k, air.node(k)) for k in range(3)]
    g = np.array([0.4, -0.9, 0.7])
    out = []
    for t in range(rounds):
        gone = (drop or {}).get(t, set())
        ready = [k for k in range(3) if k not in gone]
        plan = ap.plan(t, ready)
        if t in lost:
            air.lost.add(plan.tx_sample - 128)
        for k in ready:
            nodes[k].transmit(t, float(g[k]), plan.schedule_for(t, k))
        res = ap.receive(t, t, plan, {k: None for k in ready})
        out.append((plan, res, ap.noise_var_y))
        if shared_reference:  # radios: their clock moves on between rounds
            air.now = plan.tx_sample + 10_000
    return out, g


def _tolerance(plan, noise_var_y: float, n: int) -> float:
    # ĝ = Re(y)/(|S| η): noise std sqrt(N0/2)/(|S| η). 5 sigma, with the 1 dB allowance of the
    # PHY benchmark (imperfect sync) on the variance: 5 * sqrt(1.26 * N0/2) / (|S| η).
    return 5 * math.sqrt(1.26 * noise_var_y / 2) / (n * plan.eta)


def test_loopback_rounds_sound_then_aggregate_the_sum_over_the_air() -> None:
    out, g = _rounds(False, cfos=[6e-5, -8e-5, 2e-5])
    for plan, res, _ in out[:2]:  # two frames to refine every CFO: pilots only
        assert plan.precoding == {}
        assert res.present == () and res.g_hat == 0.0
    for plan, res, n0 in out[2:]:
        assert res.present == (0, 1, 2)
        assert abs(res.g_hat - g.mean()) < _tolerance(plan, n0, 3)


def test_frames_follow_each_other_on_the_lockstep_clock() -> None:
    out, _ = _rounds(False, cfos=[0.0, 0.0, 0.0], rounds=4)
    starts = [plan.tx_sample for plan, _, _ in out]
    stride = starts[1] - starts[0]
    assert stride > 0 and starts == [stride * (t + 1) for t in range(4)]


def test_a_node_that_does_not_send_is_left_out_and_the_rest_still_add_up() -> None:
    out, g = _rounds(False, cfos=[6e-5, -8e-5, 2e-5], drop={4: {2}})
    plan, res, n0 = out[4]
    assert res.present == (0, 1)
    assert abs(res.g_hat - g[:2].mean()) < _tolerance(plan, n0, 2)
    # node 2 is back in the next round only after two fresh pilot frames (CFO refinement)
    assert out[5][1].present == (0, 1)


def test_usrp_mode_on_a_shared_reference_precodes_after_one_pilot_frame() -> None:
    out, g = _rounds(True, cfos=[0.0, 0.0, 0.0], rounds=4)
    assert out[0][1].present == ()
    for plan, res, n0 in out[1:]:
        assert res.present == (0, 1, 2)
        # no carrier offset here: the tracked residual is pilot noise only, far below 1 Hz
        assert all(abs(p.cfo) * 1e6 < 0.1 for p in plan.precoding.values())
        assert abs(res.g_hat - g.mean()) < _tolerance(plan, n0, 3)


def test_a_window_that_never_arrives_ends_the_round_without_it(caplog) -> None:
    # Prepare / Execute: round 2's window times out on the radio
    with caplog.at_level(logging.WARNING, logger="pairzero.phy.round"):
        out, g = _rounds(True, cfos=[0.0, 0.0, 0.0], rounds=4, lost={2})
    # Assert: that round commits nothing (one WARN line), the next one aggregates again
    assert out[2][1].present == () and out[2][1].g_hat == 0.0
    warns = [r for r in caplog.records if "not received" in r.getMessage()]
    assert len(warns) == 1 and "timeout" in warns[0].getMessage()
    assert out[3][1].present == (0, 1, 2)


def test_the_frame_time_covers_the_measured_latencies_on_a_radio_clock() -> None:
    cfg = load_config(None, ["nodes.count=3"])
    air = Air(GAINS, [0, 0, 0], [0, 0, 0], 1e-3)
    ap = ApRoundPhy(cfg, air, shared_reference=True, realtime=True, tx_lead_s=0.02)
    air.now = 5_000_000
    # Execute: 30 ms control-plane round trip, 4 ms of TX preparation on the slowest node
    n = ap.frame_index(0, ReadyTiming(control_s=0.030, tx_prep_s=0.004))
    # Assert: now + (20 lead + 30 / 2 one way + 4) ms at 1 MS/s
    assert n == 5_000_000 + 39_000
    # A node reports a late frame: the next frame gets 10 ms more, and the margin doubles
    air.now = n + 100_000
    n2 = ap.frame_index(1, ReadyTiming(control_s=0.030, tx_prep_s=0.004, late_reports=1))
    assert n2 == air.now + 49_000
    n3 = ap.frame_index(2, ReadyTiming(control_s=0.030, tx_prep_s=0.004, late_reports=2))
    assert n3 == air.now + 59_000
    # Two frames never overlap, whatever the clock says
    assert ap.frame_index(3) >= n3 + ap.stride


def test_the_frame_time_follows_the_latency_measured_from_the_nodes_slack() -> None:
    cfg = load_config(None, ["nodes.count=3"])
    air = Air(GAINS, [0, 0, 0], [0, 0, 0], 1e-3)
    ap = ApRoundPhy(cfg, air, shared_reference=True, realtime=True, tx_lead_s=0.005)
    air.now = 1_000_000
    # Round 0, estimated: 5 + 30 / 2 + 4 = 24 ms ahead
    assert ap.frame_index(0, ReadyTiming(control_s=0.030, tx_prep_s=0.004)) == 1_024_000
    # Execute: the slowest node had its round-0 frame in its radio 21 ms before its time, so
    # it took 3 ms of the 24 ms lead; the estimate (still 24 ms) gives way to the measurement
    air.now = 2_000_000
    n1 = ap.frame_index(1, ReadyTiming(control_s=0.030, tx_prep_s=0.004, tx_slack_s=0.021))
    # Assert: 5 ms tx_lead + 3 ms measured
    assert n1 == 2_008_000
    # A slow round (a node had 1 ms to spare of the 8 ms lead: 7 ms taken) raises the lead,
    # and the worst latency holds for LATENCY_ROUNDS rounds, even when later ones are fast
    air.now = 3_000_000
    assert ap.frame_index(2, ReadyTiming(tx_slack_s=0.001)) == 3_012_000
    for t in range(3, 3 + LATENCY_ROUNDS - 1):
        air.now = 1_000_000 * (t + 1)
        assert ap.frame_index(t, ReadyTiming(tx_slack_s=0.012 - 0.003)) == air.now + 12_000
    air.now = 1_000_000 * (LATENCY_ROUNDS + 3)
    assert ap.frame_index(LATENCY_ROUNDS + 2, ReadyTiming(tx_slack_s=0.009)) == air.now + 8_000
    # A slack that is not about the previous frame (round LATENCY_ROUNDS + 3 had none) is not
    # used: the estimate (here 200 / 2 ms one way) is
    air.now += 1_000_000
    n = ap.frame_index(LATENCY_ROUNDS + 4, ReadyTiming(control_s=0.2, tx_slack_s=-0.5))
    assert n == air.now + 5_000 + 100_000


def test_a_node_refuses_a_schedule_it_got_after_the_frame_time() -> None:
    cfg = load_config(None, ["nodes.count=3"])
    air = Air(GAINS, [0, 0, 0], [0, 0, 0], 1e-3)
    node = NodeRoundPhy(cfg, 1, air.node(1))
    air.now = 2_000
    sched = Schedule(t=5, node=1, tx_sample=1_500, eta=1.0, noise_std=0.0, sigma_a=0.0, precoding=None)
    # Execute
    assert node.transmit(5, 0.3, sched) is None
    # Assert: nothing went on the air, and the next READY carries why and how late (0.5 ms)
    assert air.frames == {}
    (ev,) = node.take_events()
    assert ev.t == 5 and ev.kind == "late_schedule"
    assert node.take_events() == ()
    assert node.last_slack == (5, pytest.approx(-0.0005))
    # A frame in time: its slack is its lead at SCHEDULE (20 ms) less the node's own time
    sched = Schedule(t=6, node=1, tx_sample=22_000, eta=1.0, noise_std=0.0, sigma_a=0.0, precoding=None)
    assert node.transmit(6, 0.3, sched) is not None
    assert node.last_slack == (6, pytest.approx(0.020 - node.last_prep_s))
    assert 0 < node.last_prep_s < 0.020


def test_a_radio_round_needs_a_schedule() -> None:
    cfg = load_config(None, ["nodes.count=3"])
    node = NodeRoundPhy(cfg, 0, Air(GAINS, [0, 0, 0], [0, 0, 0], 1e-3).node(0))
    with pytest.raises(ValueError, match="radio.mode"):
        node.transmit(0, 0.1, None)


def test_a_lost_lock_between_rounds_ends_the_radios_part_with_the_reason() -> None:
    # Prepare: two rounds run; then node 1's LO and, later, the AP's reference lose lock
    from pairzero.phy.frontend import RadioError

    cfg = load_config(None, ["nodes.count=3", "privacy.enabled=false", "channel.snr_db=30.0"])
    air = Air(GAINS, [0.0] * 3, [0.0] * 3, noise_var=1e-3)
    ap = ApRoundPhy(cfg, air, shared_reference=True, realtime=True)
    nodes = [NodeRoundPhy(cfg, k, air.node(k)) for k in range(3)]
    for t in range(2):
        plan = ap.plan(t, [0, 1, 2])
        for k in range(3):
            nodes[k].transmit(t, 0.1, plan.schedule_for(t, k))
        ap.receive(t, t, plan, dict.fromkeys(range(3)))
        air.now = plan.tx_sample + 10_000
    air.unlocked.add(1)
    plan = ap.plan(2, [0, 1, 2])
    # Execute / Assert: node 1 sends nothing and stops with the sensor named; node 0 goes on
    with pytest.raises(RadioError, match=r"node 1: its radio lost_lock: lo_locked reads false"):
        nodes[1].transmit(2, 0.1, plan.schedule_for(2, 1))
    assert 1 not in air.frames
    assert nodes[0].transmit(2, 0.1, plan.schedule_for(2, 0)).sent
    ap.receive(2, 2, plan, dict.fromkeys(range(3)))
    air.unlocked.add("ap")
    with pytest.raises(RadioError, match=r"round 3: the AP's radio lost_lock: ref_locked reads false"):
        ap.plan(3, [0, 2])
