"""Power alignment: pure corrections, YAML round trip, loopback run reducing the spread."""

import argparse

import numpy as np
import pytest

from calibration.core import (
    compute_calibration,
    correction_factor,
    load_calibration,
    spread_db,
    write_calibration,
)
from pairzero.phy.rx import NodeEstimate


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


def test_calibration_yaml_round_trip(tmp_path):
    cals = compute_calibration([_est(0, 0.3), _est(1, 0.9)], 40.0)
    path = write_calibration(tmp_path / "cal.yaml", cals, {"mode": "test"})
    assert load_calibration(path) == cals


def test_loopback_calibration_reduces_spread(tmp_path):
    pytest.importorskip("gnuradio.gr")
    from calibration.cli import cmd_calibrate

    out = tmp_path / "cal.yaml"
    args = argparse.Namespace(
        config=None,
        overrides=["nodes.count=4", "channel.fading=rayleigh", "channel.snr_db=25", "run.seed=5"],
        output=str(out),
    )
    assert cmd_calibrate(args) == 0
    import yaml

    meta = yaml.safe_load(out.read_text())["meta"]
    # Rayleigh draws: the raw spread is several dB; after alignment only the estimation noise of
    # two pilot passes remains (relative std ~ sqrt(noise/(|h|^2 E_p)) ~ 1%, i.e. < 0.2 dB).
    assert meta["spread_before_db"] > 2.0
    assert meta["spread_after_db"] < 0.5
    assert len(load_calibration(out)) == 4
