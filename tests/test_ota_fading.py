"""Channel model: reproducibility, path loss, SNR, estimation error, parameter validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pairzero.config import ChannelConfig, NodesConfig
from pairzero.ota.fading import ChannelModel, noise_var_from_snr_db


def test_same_seed_and_round_give_same_draw_regardless_of_order() -> None:
    # Prepare
    a = ChannelModel(8, seed=7, snr_db=10.0, fading="rician", estimation_error_std=0.1)
    b = ChannelModel(8, seed=7, snr_db=10.0, fading="rician", estimation_error_std=0.1)
    # Execute
    a5 = a.draw(5)
    for t in (3, 2, 1):
        b.draw(t)
    b5 = b.draw(5)
    # Assert
    np.testing.assert_array_equal(a5.h, b5.h)
    np.testing.assert_array_equal(a5.h_est, b5.h_est)
    np.testing.assert_array_equal(a.distances_m, b.distances_m)


def test_different_rounds_and_seeds_give_different_draws() -> None:
    m = ChannelModel(4, seed=1, snr_db=10.0)
    other = ChannelModel(4, seed=2, snr_db=10.0)
    assert not np.allclose(m.draw(0).h, m.draw(1).h)
    assert not np.allclose(m.draw(0).h, other.draw(0).h)


def test_from_config_uses_distances_snr_and_path_loss() -> None:
    # Prepare: 10 m and 100 m with exponent 2 -> 20 dB apart, no fading
    nodes = NodesConfig(count=2, distances_m=(10.0, 100.0))
    ch = ChannelConfig(fading="none", snr_db=20.0, path_loss_exponent=2.0, reference_distance_m=10.0)
    # Execute
    state = ChannelModel.from_config(ch, nodes, seed=0).draw(0)
    # Assert
    gains_db = 10 * np.log10(np.abs(state.h) ** 2)
    np.testing.assert_allclose(gains_db, [0.0, -20.0], atol=1e-9)
    assert state.noise_var == pytest.approx(0.01)
    assert state.sigma_n == pytest.approx(math.sqrt(0.005))


def test_rayleigh_mean_power_matches_path_gain() -> None:
    # Prepare: E|h|^2 = PL; with n i.i.d. Exp(1) draws the mean has relative std 1/sqrt(n),
    # n = 64 nodes x 300 rounds = 19200 -> 0.72 %; tolerance 5 sigma = 3.6 %.
    m = ChannelModel(64, seed=3, snr_db=0.0, fading="rayleigh", path_loss_exponent=3.0,
                     min_distance_m=10.0, max_distance_m=50.0)
    # Execute
    p = np.mean([np.abs(m.draw(t).h) ** 2 / m.path_gain for t in range(300)])
    # Assert
    assert abs(p - 1.0) < 5 / math.sqrt(64 * 300)


def test_estimation_error_follows_the_stated_model() -> None:
    # Prepare: e = h/h_est - 1 ~ CN(0, s^2) -> E|e|^2 = s^2 (rel. std of the mean 1/sqrt(n))
    s = 0.2
    m = ChannelModel(50, seed=4, snr_db=10.0, estimation_error_std=s)
    # Execute
    e = np.concatenate([m.draw(t).h / m.draw(t).h_est - 1 for t in range(200)])
    # Assert
    assert abs(np.mean(np.abs(e) ** 2) / s**2 - 1) < 5 / math.sqrt(e.size)
    assert abs(np.mean(e)) < 5 * s / math.sqrt(e.size)


def test_perfect_estimates_when_error_std_is_zero() -> None:
    state = ChannelModel(5, seed=0, snr_db=10.0).draw(2)
    np.testing.assert_array_equal(state.h, state.h_est)


def test_noise_var_from_snr() -> None:
    assert noise_var_from_snr_db(30.0) == pytest.approx(1e-3)
    assert noise_var_from_snr_db(-10.0) == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_nodes": 0}, "n_nodes"),
        ({"seed": -1}, "seed"),
        ({"fading": "nakagami"}, "fading"),
        ({"estimation_error_std": 1.0}, "estimation_error_std"),
        ({"distances_m": [10.0, -1.0, 5.0]}, "distances_m"),
        ({"distances_m": [10.0]}, "distances_m"),
        ({"min_distance_m": 50.0, "max_distance_m": 10.0}, "min_distance_m"),
        ({"path_loss_exponent": -1.0}, "path_loss_exponent"),
        ({"snr_db": math.nan}, "snr_db"),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(kwargs: dict, name: str) -> None:
    args = {"n_nodes": 3, "seed": 0, "snr_db": 10.0} | kwargs
    with pytest.raises(ValueError, match=name):
        ChannelModel(**args)


def test_negative_round_rejected() -> None:
    with pytest.raises(ValueError, match="round_t"):
        ChannelModel(3, seed=0, snr_db=10.0).draw(-1)
