"""Numpy PHY: TX -> reference channel -> RX, noise-only, dropped node, precoding protocol."""

import numpy as np
import pytest

from pairzero.config import PhyConfig
from pairzero.phy import BurstReceiver, FrameLayout, build_node_burst, compute_precoding, refine_cfo
from pairzero.phy.reference_channel import apply_channel

PAD = 300


def _frame(lay, rng, chans, noise_var, n0, values=None, prec=None, present=None):
    k_all = lay.num_nodes
    present = range(k_all) if present is None else present
    pre = {p.node: p for p in prec or []}
    streams = []
    for k in range(k_all):
        x = np.zeros(lay.length + 2 * PAD, complex)
        if k in present:
            v = None if values is None or (prec is not None and k not in pre) else values[k]
            x[PAD : PAD + lay.length] = build_node_burst(lay, k, v, pre.get(k), frame_start=n0)
        streams.append(x)
    g, d, f = zip(*chans, strict=True)
    return apply_channel(streams, g, d, f, noise_var, rng, start_index=n0 - PAD)


def _chans(rng, k):
    return [(np.exp(2j * np.pi * rng.random()), rng.uniform(-4, 4), rng.uniform(-1e-4, 1e-4)) for _ in range(k)]


def _round(lay, rx, rng, chans, noise_var, values, eta, present=None):
    step = lay.length + 512
    n1 = 1000
    a = rx.process(_frame(lay, rng, chans, noise_var, n1, present=present), n1 - PAD, n1)
    b = rx.process(_frame(lay, rng, chans, noise_var, n1 + step, present=present), n1 + step - PAD, n1 + step)
    est = [refine_cfo(x, y) for x, y in zip(a.nodes, b.nodes, strict=True)]
    prec = compute_precoding(est, eta=eta)
    n3 = n1 + 2 * step
    c = rx.process(_frame(lay, rng, chans, noise_var, n3, values, prec, present), n3 - PAD, n3)
    return est, c


def _sum_tolerance(lay, noise_var, values, eta):
    """5-sigma bound on Re(y)/eta - sum g from the noise and the pilot estimation error.

    Re part of the payload matched filter: noise var noise_var / (2 E_s). Each node's
    channel-inversion error e_k has Re part var noise_var / (2 |h|^2 E_p) and multiplies
    eta g_k (|h| = 1 here). Phase errors enter Re(y) only at second order (slack 1.5x).
    """
    es = np.vdot(lay.payload_template, lay.payload_template).real
    ep = np.vdot(lay.pilot_template, lay.pilot_template).real
    var = noise_var / (2 * es) / eta**2 + np.sum(np.square(values)) * noise_var / (2 * ep)
    return 5 * 1.5 * np.sqrt(var)


def test_phy_recovers_sum_of_four_scalars_through_channel():
    # Prepare: K = 4, unit gains with random phase, delays +-4, CFO +-1e-4, SNR 15 dB
    rng = np.random.default_rng(42)
    lay = FrameLayout(PhyConfig(), 4)
    rx = BurstReceiver(lay)
    chans = _chans(rng, 4)
    noise_var = 10 ** (-15 / 10)
    values = rng.uniform(-1, 1, 4)
    # Execute
    est, res = _round(lay, rx, rng, chans, noise_var, values, eta=1.0)
    # Assert
    assert res.detected and res.absent == []
    assert abs(res.y.real - values.sum()) < _sum_tolerance(lay, noise_var, values, 1.0)
    for e, (_, d, f) in zip(est, chans, strict=True):
        assert abs(e.delay - d) < 0.2  # samples
        assert abs(e.cfo - f) < 5e-6  # cycles/sample


def test_phy_noise_only_window_detects_no_burst():
    rng = np.random.default_rng(3)
    lay = FrameLayout(PhyConfig(), 4)
    rx = BurstReceiver(lay)
    n = 3 * lay.length
    detections = 0
    for _ in range(20):
        w = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * np.sqrt(0.5)
        detections += rx.process(w).detected
    # P(false alarm) <= detection_pfa = 1e-3 per window: 20 windows give 0 with prob > 0.98.
    assert detections == 0


def test_phy_detects_burst_without_schedule_at_low_snr():
    rng = np.random.default_rng(5)
    lay = FrameLayout(PhyConfig(), 4)
    rx = BurstReceiver(lay)
    r = _frame(lay, rng, _chans(rng, 4), 1.0, 5000)  # 0 dB per sample
    res = rx.process(r, 5000 - PAD)
    assert res.detected
    assert abs(res.frame_start - 5000) <= 5  # within the delay spread of the nodes


def test_phy_dropped_node_reported_and_others_summed():
    rng = np.random.default_rng(7)
    lay = FrameLayout(PhyConfig(), 4)
    rx = BurstReceiver(lay)
    chans = _chans(rng, 4)
    noise_var = 10 ** (-15 / 10)
    values = rng.uniform(-1, 1, 4)
    est, res = _round(lay, rx, rng, chans, noise_var, values, 1.0, present=[0, 1, 3])
    assert res.absent == [2]
    assert [e.node for e in est if not e.present] == [2]
    present_vals = values[[0, 1, 3]]
    assert abs(res.y.real - present_vals.sum()) < _sum_tolerance(lay, noise_var, present_vals, 1.0)


def test_compute_precoding_requires_exactly_one_of_eta_and_b():
    lay = FrameLayout(PhyConfig(), 1)
    with pytest.raises(ValueError, match="eta"):
        compute_precoding([], eta=None, b=None)
    with pytest.raises(ValueError, match="eta"):
        compute_precoding([], eta=1.0, b=[])
    assert lay.length > 0


def test_frame_layout_rejects_even_preamble():
    with pytest.raises(ValueError, match="preamble_length"):
        FrameLayout(PhyConfig(preamble_length=64), 2)
