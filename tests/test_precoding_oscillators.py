"""Precoding that survives the radios' oscillators (pairzero.phy.tx.track_phase in the AP's round
protocol on a shared reference), on the numpy stand-in for the radios (tests: Air).

Radios on one 10 MHz reference keep a residual carrier offset (a fraction of a hertz) and their
LO phases walk slowly; frames can be seconds apart (a slow round, an evaluation pause). The
previous frame's pilot phase is then stale by 2 pi cfo gap plus the walk: precoding the payload
with it rotates each node's contribution by that much. One node with g = 1 at a time: the
payload's received phase is the precoding's phase error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pairzero.config import load_config
from pairzero.phy import round as round_mod
from pairzero.phy.round import ApRoundPhy, NodeRoundPhy
from pairzero.phy.rx import NodeEstimate
from pairzero.phy.tx import track_phase
from tests.test_ota_phy_rounds import Air

RATE = 1e6
GAP_S = 2.0  # seconds between two frames
CFO_HZ = 0.05  # residual offset: 36 degrees of phase over one gap
WALK_DEG = 3.0  # LO phase walk: std after 1 s (degrees), a random walk


class _WanderingAir(Air):
    """Air whose node LOs walk in phase between captures (std WALK_DEG sqrt(elapsed s))."""

    def __init__(self, *a, walk_deg: float, **kw) -> None:
        super().__init__(*a, **kw)
        self.base = list(self.gains)
        self.walk = np.zeros(len(self.base))
        self.walk_std = math.radians(walk_deg)
        self.last = 0

    def capture(self, start, length, timeout_s, idle=None):
        dt = max(start - self.last, 0) / RATE
        self.last = start
        self.walk += self.walk_std * math.sqrt(dt) * self.rng.standard_normal(len(self.walk))
        self.gains = [g * np.exp(1j * w) for g, w in zip(self.base, self.walk, strict=True)]
        return super().capture(start, length, timeout_s, idle)


def _phase_errors(rounds: int = 14, seed: int = 3) -> np.ndarray:
    """Payload phase (rad) of one node with g = 1, precoded by the AP, frames GAP_S apart."""
    cfg = load_config(None, ["nodes.count=1", "privacy.enabled=false", "channel.snr_db=30.0",
                             "zo.clip=1.0"])
    air = _WanderingAir([0.8 * np.exp(0.4j)], [0.0], [CFO_HZ / RATE], noise_var=1e-3, seed=seed,
                        walk_deg=WALK_DEG)
    ap = ApRoundPhy(cfg, air, shared_reference=True, realtime=True)
    node = NodeRoundPhy(cfg, 0, air.node(0))
    out = []
    for t in range(rounds):
        plan = ap.plan(t, [0])
        node.transmit(t, 1.0, plan.schedule_for(t, 0))
        ap.receive(t, t, plan, {0: None})
        if plan.precoding:
            out.append(float(np.angle(ap.last_rx.y / plan.eta)))
        air.now = plan.tx_sample + int(GAP_S * RATE)
    return np.array(out[4:])  # after the tracker's start-up


def test_tracked_precoding_keeps_the_payload_aligned_across_long_gaps() -> None:
    # The error left is the walk over one gap (std 3 deg x sqrt(2 s) = 4.2 deg) and what the
    # tracking adds ((1 + g/(2-g)) in variance: 4.9 deg); 5 sigma = 24 deg bounds every round
    err = np.degrees(_phase_errors())
    assert np.all(np.abs(err) < 24.0), err
    assert np.sqrt(np.mean(err**2)) < 10.0, err


def test_precoding_with_the_previous_pilots_phase_loses_alignment(monkeypatch) -> None:
    # The old rule: no rate, the last pilot's phase. Every payload arrives rotated by the
    # phase advanced over the gap: 360 x 0.05 x 2 = 36 degrees, plus the walk
    def last_phase_only(prev: NodeEstimate, new: NodeEstimate, gain: float = 0.0) -> NodeEstimate:
        return track_phase(prev, new, gain=0.0)

    monkeypatch.setattr(round_mod, "track_phase", last_phase_only)
    err = np.degrees(_phase_errors())
    assert abs(float(np.mean(err)) - 36.0) < 8.0, err  # 5 x 4.2 / sqrt(10) on the mean
    # amplitude of the aligned sum: cos(36 deg) = 0.81 of what it should be (-1.8 dB)
    assert np.mean(np.cos(np.radians(err))) < 0.87


def test_the_tracker_unwraps_the_phase_advance_around_the_tracked_rate() -> None:
    # 0.2 Hz over 2 s is 0.4 cycle: the raw advance wraps to -0.6 cycle; around the tracked
    # 0.15 Hz it is +0.1 cycle, and the rate moves half the way to 0.2 Hz
    def est(index: float, phase_cycles: float, cfo: float = 0.0) -> NodeEstimate:
        return NodeEstimate(0, True, np.exp(2j * np.pi * phase_cycles), 0.0, 0.0, index, 30.0, 1e3)

    prev = NodeEstimate(0, True, 1.0 + 0j, 0.15 / RATE, 0.0, 0.0, 30.0, 1e3)
    new = est(2e6, 0.4)
    got = track_phase(prev, new).cfo * RATE
    assert got == pytest.approx(0.175, abs=1e-9)
    with pytest.raises(ValueError, match="gain"):
        track_phase(prev, new, gain=1.5)
