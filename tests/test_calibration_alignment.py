"""Power alignment through the loopback channel emulator: the one calibration path
(calibration.session, over the control plane) reduces the spread as its error budget says."""

import numpy as np
import pytest
import yaml

from pairzero.phy.calibration_file import read_calibration_file

pytestmark = pytest.mark.e2e  # starts processes or runs the channel emulator

K_SIGMA = 5.0  # P(|Z| > 5) = 5.7e-7 per Gaussian check
GAIN_BIAS = 3e-4  # noiseless relative bias of |h_hat| (<= 2.7e-4: tests/test_phy_loopback_flowgraph.py)


def _spread_bounds(amps, noise_var, pilot_energy, k=K_SIGMA):
    """(expected spread before, its tolerance, bound on spread after), all dB, for true received
    amplitudes ``amps`` (linear, one per node) measured with pilots of energy ``pilot_energy``.

    Pass 1: |h1_k| = a_k (1 + e1_k), e1_k ~ N(0, s^2 / a_k^2), s^2 = noise_var / (2 E_p) (the LS
    gain error's in-phase part). Node k then sends T / |h1_k| (T = max |h1|, the strongest node's
    level (calibration.session.default_target), exact TX-gain steps x digital scale), so pass 2
    reads a_k T / |h1_k| (1 + e2_k) ~ T (1 - e1_k + e2_k),
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
    target = a.max() * (1 - k * s / a.max())  # worst case of pass 1
    var = np.sort(s**2 * (1 / a**2 + 1 / target**2))
    after = db * k * np.sqrt(var[-1] + var[-2])
    before_tol = db * 2 * (k * s / a.min() + GAIN_BIAS)
    return float(20 * np.log10(a.max() / a.min())), float(before_tol), float(after)


def test_loopback_calibration_reduces_spread(tmp_path):
    """One correction pass of the control-plane calibration (the AP of the edge loops over the
    in-process transport, the samples through the emulator) on a Rayleigh draw."""
    pytest.importorskip("gnuradio.gr")
    from pairzero.config import load_config
    from pairzero.phy import FrameLayout
    from radio.emulator import draw_node_channels
    from tests.calibration_util import calibrate_in_process

    out = tmp_path / "cal.yaml"
    overrides = ["nodes.count=4", "channel.fading=rayleigh", "channel.snr_db=25", "run.seed=5",
                 "privacy.enabled=false"]
    # The emulator's seeded draw (amplitudes 1.29, 1.70, 1.25, 1.00: 4.6 dB spread).
    cfg = load_config(None, overrides)
    amps = [abs(c.gain) for c in draw_node_channels(cfg.channel, cfg.nodes, cfg.run.seed)]
    tp = FrameLayout(cfg.phy, cfg.nodes.count).pilot_template
    expected_before, before_tol, after_bound = _spread_bounds(
        amps, 10 ** (-cfg.channel.snr_db / 10), np.vdot(tp, tp).real
    )
    # Execute: pass 0 as the nodes start, one correction, the pass that measures it
    res = calibrate_in_process(cfg, out, max_iter=1)
    meta = yaml.safe_load(out.read_text())["meta"]
    cals = read_calibration_file(out).nodes
    # Assert: the bounds assume exact corrections (no TX gain clipped to its 0..90 dB range)
    assert res.passes == 1 and len(cals) == 4
    assert all(0.0 < c.tx_gain_db < 90.0 for c in cals)
    assert abs(meta["spread_before_db"] - expected_before) < before_tol
    assert meta["spread_after_db"] < after_bound
    # ... the file holds what the nodes ran in the last pass
    assert [c.tx_gain_db for c in cals] == [m.setting.tx_gain_db for m in res.last]
