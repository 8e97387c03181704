"""The AP's correction step of `pairzero calibrate` (calibration.session), pure maths."""

import math

import numpy as np
import pytest

from calibration.session import Measurement, Setting, default_target, next_settings, spreads
from pairzero.errors import OperationalError
from pairzero.phy.rx import NodeEstimate

REF = 40.0  # radio.tx_gain_db: the channel model's gains hold there
RANGE = (0.0, 90.0)


def _arrive(h_nat: complex, delay: float, s: Setting, node: int = 0) -> Measurement:
    """What the AP measures from a node with natural channel h_nat (at REF, unit scale) and
    delay ``delay`` running setting ``s``: h = h_nat F e^{j phase}, delay - advance."""
    h = h_nat * s.factor(REF) * np.exp(1j * s.phase_rad)
    return Measurement(node, NodeEstimate(node, True, complex(h), 0.0,
                                          delay - s.timing_advance_samples, 0.0, 30.0, 100.0), s)


def test_one_step_brings_exact_measurements_to_target_phase_and_time():
    # Prepare: four nodes 27 dB apart, random phases and delays, measured at REF
    rng = np.random.default_rng(1)
    h = np.array([1.0, 0.35, 0.125, 0.044]) * np.exp(2j * np.pi * rng.random(4))
    d = rng.uniform(-4, 4, 4)
    first = [_arrive(h[k], d[k], Setting(REF), k) for k in range(4)]
    target = default_target(first, REF, RANGE)
    # Execute
    new = next_settings(first, target, REF, RANGE, gain_step_db=1.0)
    after = [_arrive(h[k], d[k], new[k], k) for k in range(4)]
    # Assert: the strongest node's level, phase 0, delay 0; gain in whole steps, scale in (-1 dB, 1]
    assert target == pytest.approx(1.0)
    np.testing.assert_allclose([abs(m.estimate.gain) for m in after], target, rtol=1e-12)
    np.testing.assert_allclose([np.angle(m.estimate.gain) for m in after], 0.0, atol=1e-12)
    np.testing.assert_allclose([m.estimate.delay for m in after], 0.0, atol=1e-12)
    assert all(s.tx_gain_db == round(s.tx_gain_db) for s in new.values())
    assert all(10 ** (-1 / 20) < s.digital_scale <= 1.0 for s in new.values())
    assert spreads(after) == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
    # ... and a second step from there changes nothing
    again = next_settings(after, target, REF, RANGE, 1.0)
    for k in range(4):
        assert again[k].tx_gain_db == new[k].tx_gain_db
        assert again[k].digital_scale == pytest.approx(new[k].digital_scale)


def test_gain_range_limits_the_target_and_a_clipped_node_stays_below():
    first = [_arrive(1.0, 0.0, Setting(REF), 0), _arrive(0.001, 0.0, Setting(REF), 1)]
    # Reach of node 1: 0.001 x 10^(50/20) = 0.316 < the strongest node's 1.0
    assert default_target(first, REF, RANGE) == pytest.approx(0.001 * 10 ** 2.5)
    new = next_settings(first, 1.0, REF, RANGE, 1.0)
    assert new[1].tx_gain_db == 90.0 and new[1].digital_scale == 1.0


def test_timing_advance_beyond_the_frame_is_refused():
    m = _arrive(1.0, 17.5, Setting(REF, timing_advance_samples=1.0))  # measured 16.5 late
    with pytest.raises(OperationalError, match="timing advance of 17.50 samples"):
        next_settings([m], 1.0, REF, RANGE, 1.0)
    with pytest.raises(ValueError, match="gain_step_db"):
        next_settings([m], 1.0, REF, RANGE, 0.0)


def test_phase_spread_wraps_around():
    ms = [_arrive(np.exp(1j * math.radians(a)), 0.0, Setting(REF), k)
          for k, a in enumerate([179.0, -179.0, 180.0])]
    assert spreads(ms)[1] == pytest.approx(2.0)
