"""Power alignment: pure corrections, YAML round trip, loopback run reducing the spread."""

import numpy as np
import pytest

from calibration.core import (
    compute_calibration,
    correction_factor,
    spread_db,
)
from pairzero.phy.calibration import read_calibration_file
from pairzero.phy.rx import NodeEstimate

K_SIGMA = 5.0  # P(|Z| > 5) = 5.7e-7 per Gaussian check
GAIN_STEP_DB = 1.0  # run_calibration's default, which cmd_calibrate uses
GAIN_BIAS = 3e-4  # noiseless relative bias of |h_hat| (<= 2.7e-4: tests/test_phy_loopback_flowgraph.py)


def _est(node, gain, present=True):
    return NodeEstimate(node, present, gain, 0.0, 0.5, 100.0, 20.0, 50.0)


def test_corrections_bring_every_node_to_the_target_with_zero_phase():
    # Prepare: three nodes 0.2, 0.5 and 1.3 in amplitude, arbitrary phases
    ests = [_est(0, 0.2 * np.exp(1j)), _est(1, 0.5 * np.exp(-2j)), _est(2, 1.3j)]
    # Execute
    cals = compute_calibration(ests, tx_gain_db=40.0, gain_step_db=1.0)
    after = [e.gain * correction_factor(c, 40.0) for e, c in zip(ests, cals, strict=True)]
    # Assert: equal amplitudes (target = weakest x -1 dB), phase 0, digital scale in (-1 dB, 1]
    assert np.allclose(np.abs(after), 0.2 * 10 ** (-1 / 20))
    assert np.allclose(np.angle(after), 0.0, atol=1e-12)
    assert all(10 ** (-1 / 20) <= c.digital_scale <= 1.0 for c in cals)
    assert [c.tx_gain_db for c in cals] == sorted([c.tx_gain_db for c in cals], reverse=True)


def test_tx_gain_is_clipped_to_its_range():
    cals = compute_calibration([_est(0, 1.0), _est(1, 0.001)], 40.0, target_amplitude=0.5, gain_range_db=(0, 50))
    assert cals[1].tx_gain_db == 50.0


def test_calibration_rejects_absent_node_and_bad_input():
    with pytest.raises(ValueError, match="not detected"):
        compute_calibration([_est(0, 1.0), _est(1, 0.0, present=False)], 40.0)
    with pytest.raises(ValueError, match="amplitudes"):
        spread_db([])


def _spread_bounds(amps, noise_var, pilot_energy, k=K_SIGMA):
    """(expected spread before, its tolerance, bound on spread after), all dB, for true received
    amplitudes ``amps`` (linear, one per node) measured with pilots of energy ``pilot_energy``.

    Pass 1: |h1_k| = a_k (1 + e1_k), e1_k ~ N(0, s^2 / a_k^2), s^2 = noise_var / (2 E_p) (the LS
    gain error's in-phase part). Node k then sends T / |h1_k| (T = min |h1| 10^(-step/20), exact
    TX-gain steps x digital scale), so pass 2 reads a_k T / |h1_k| (1 + e2_k) ~ T (1 - e1_k + e2_k),
    e2_k ~ N(0, s^2 / T^2): spread after = 20 log10(e) (max - min) of d_k = e2_k - e1_k,
    independent, var s^2 (1/a_k^2 + 1/T^2); > 20 log10(e) k sqrt(two largest variances) only if a
    pair differs by > k of its std: P <= 6 x 5.7e-7. The estimator's noiseless bias depends only on
    the node's delay and CFO, the same in both passes: it cancels. Spread before: the max and the
    min of a_k (1 + e1_k) each move by <= max |e1_k| (+ bias), so it stays within
    20 log10(e) 2 (k s / a_min + GAIN_BIAS) of 20 log10(a_max / a_min): P <= 4 x 5.7e-7.
    """
    a = np.asarray(amps, dtype=float)
    s = np.sqrt(noise_var / (2 * pilot_energy))
    db = 20 / np.log(10)  # dB per unit of relative amplitude error
    target = a.min() * 10 ** (-GAIN_STEP_DB / 20) * (1 - k * s / a.min())  # worst case of pass 1
    var = np.sort(s**2 * (1 / a**2 + 1 / target**2))
    after = db * k * np.sqrt(var[-1] + var[-2])
    before_tol = db * 2 * (k * s / a.min() + GAIN_BIAS)
    return float(20 * np.log10(a.max() / a.min())), float(before_tol), float(after)


def test_loopback_calibration_reduces_spread(tmp_path):
    pytest.importorskip("gnuradio.gr")
    from calibration.cli import write_loopback_calibration
    from pairzero.config import load_config
    from pairzero.phy import FrameLayout
    from radio.emulator import draw_node_channels

    out = tmp_path / "cal.yaml"
    overrides = ["nodes.count=4", "channel.fading=rayleigh", "channel.snr_db=25", "run.seed=5"]
    # The emulator's seeded draw (amplitudes 0.98, 0.94, 0.43, 0.63: 7.2 dB spread).
    cfg = load_config(None, overrides)
    amps = [abs(c.gain) for c in draw_node_channels(cfg.channel, cfg.nodes, cfg.run.seed)]
    tp = FrameLayout(cfg.phy, cfg.nodes.count).pilot_template
    expected_before, before_tol, after_bound = _spread_bounds(
        amps, 10 ** (-cfg.channel.snr_db / 10), np.vdot(tp, tp).real
    )  # 7.22 dB, 0.26 dB, 0.25 dB
    write_loopback_calibration(cfg, out)
    import yaml

    meta = yaml.safe_load(out.read_text())["meta"]
    cals = read_calibration_file(out).nodes
    # Assert: the bounds assume exact corrections (no TX gain clipped to its 0..90 dB range)
    assert all(0.0 < c.tx_gain_db < 90.0 for c in cals) and len(cals) == 4
    assert abs(meta["spread_before_db"] - expected_before) < before_tol
    assert meta["spread_after_db"] < after_bound
