"""The AP and node PHY adapters of the distributed round, over the numpy reference channel.

The GNU Radio emulator and the USRP front ends are replaced here by a stand-in that places each
node's frame on the shared sample clock and passes the AP window through
:func:`pairzero.phy.channel.apply_channel` (the emulator's model); everything else is the real
planning, precoding, receiver and aggregation code. The flowgraph path itself is covered by
tests/test_loopback_end_to_end.py.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from access_point.ota_phy import GnuRadioApPhy
from edge_node.ota_phy import GnuRadioNodePhy
from pairzero.config import load_config
from pairzero.phy.channel import apply_channel
from pairzero.protocol.messages import Round


class Air:
    """Frames sent by the nodes, and the AP's window of their sum through the channel."""

    def __init__(self, gains, delays, cfos, noise_var: float, seed: int = 0) -> None:
        self.gains, self.delays, self.cfos, self.noise_var = gains, delays, cfos, noise_var
        self.frames: dict[int, tuple[int, np.ndarray]] = {}
        self.rng = np.random.default_rng(seed)
        self.usrp = SimpleNamespace(get_time_now=lambda: SimpleNamespace(get_real_secs=lambda: 1.0))

    def node(self, k: int) -> SimpleNamespace:
        return SimpleNamespace(send=lambda burst, start: self.frames.__setitem__(k, (start, burst)))

    def capture(self, start: int, length: int, timeout_s: float | None = None) -> np.ndarray:
        streams = []
        for k in range(len(self.gains)):
            x = np.zeros(length, dtype=complex)
            if k in self.frames:
                s, b = self.frames[k]
                x[s - start : s - start + len(b)] = b
            streams.append(x)
        self.frames.clear()
        return apply_channel(streams, self.gains, self.delays, self.cfos, self.noise_var, self.rng, start)


def _rounds(mode: str, cfos, rounds: int = 6, drop: dict[int, set[int]] | None = None):
    cfg = load_config(None, ["nodes.count=3", "privacy.enabled=false", "channel.snr_db=30.0",
                             f"radio.mode={mode}"])
    gains = [0.9 * np.exp(0.7j), 1.3 * np.exp(-2.1j), 0.6 * np.exp(2.8j)]
    air = Air(gains, [1.3, -2.6, 0.4], cfos, noise_var=1e-3)
    ap = GnuRadioApPhy(cfg, frontend=air)
    nodes = [GnuRadioNodePhy(cfg, k, frontend=air.node(k)) for k in range(3)]
    g = np.array([0.4, -0.9, 0.7])
    out = []
    for t in range(rounds):
        gone = (drop or {}).get(t, set())
        plan = ap.plan(t, [0, 1, 2])
        for k in range(3):
            if k in gone:
                continue
            rnd = Round(t=t, seed=t, eta=plan.eta, noise_std=plan.noise_std, sigma_a=plan.sigma_a,
                        tx_sample=plan.tx_sample, deadline_s=1.0, lr=0.1, precoding=plan.precoding.get(k))
            nodes[k].transmit(t, float(g[k]), rnd)
        res = ap.receive(t, t, plan, {k: None for k in range(3) if k not in gone})
        out.append((plan, res, ap.noise_var_y))
    return out, g


def _tolerance(plan, noise_var_y: float, n: int) -> float:
    # ĝ = Re(y)/(|S| η): noise std sqrt(N0/2)/(|S| η). 5 sigma, with the 1 dB allowance of the
    # PHY benchmark (imperfect sync) on the variance: 5 * sqrt(1.26 * N0/2) / (|S| η).
    return 5 * math.sqrt(1.26 * noise_var_y / 2) / (n * plan.eta)


def test_loopback_rounds_sound_then_aggregate_the_sum_over_the_air() -> None:
    out, g = _rounds("loopback", cfos=[6e-5, -8e-5, 2e-5])
    for plan, res, _ in out[:2]:  # two frames to refine every CFO: pilots only
        assert plan.precoding == {}
        assert res.present == () and res.g_hat == 0.0
    for plan, res, n0 in out[2:]:
        assert res.present == (0, 1, 2)
        assert abs(res.g_hat - g.mean()) < _tolerance(plan, n0, 3)


def test_a_node_that_does_not_send_is_left_out_and_the_rest_still_add_up() -> None:
    out, g = _rounds("loopback", cfos=[6e-5, -8e-5, 2e-5], drop={4: {2}})
    plan, res, n0 = out[4]
    assert res.present == (0, 1)
    assert abs(res.g_hat - g[:2].mean()) < _tolerance(plan, n0, 2)
    # node 2 is back in the next round only after two fresh pilot frames (CFO refinement)
    assert out[5][1].present == (0, 1)


def test_usrp_mode_on_a_shared_reference_precodes_after_one_pilot_frame() -> None:
    out, g = _rounds("usrp", cfos=[0.0, 0.0, 0.0], rounds=4)
    assert out[0][1].present == ()
    for plan, res, n0 in out[1:]:
        assert res.present == (0, 1, 2)
        assert all(p.cfo == 0.0 for p in plan.precoding.values())
        assert abs(res.g_hat - g.mean()) < _tolerance(plan, n0, 3)


def test_a_radio_round_needs_a_scheduled_sample_time() -> None:
    cfg = load_config(None, ["nodes.count=3"])
    node = GnuRadioNodePhy(cfg, 0, frontend=SimpleNamespace(send=lambda *a: None))
    rnd = Round(t=0, seed=1, eta=1.0, noise_std=0.0, sigma_a=0.0, tx_sample=-1, deadline_s=1.0, lr=0.1)
    with pytest.raises(ValueError, match="radio.mode"):
        node.transmit(0, 0.1, rnd)
