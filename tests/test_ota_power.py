"""Power control: truncation, power limits, privacy cap, artificial noise, floors, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pairzero.ota.fading import ChannelModel
from pairzero.ota.power import amplitude_bound, plan_round
from pairzero.ota.privacy import PrivacyRule

G = 5.0


def _channel(k: int = 16, seed: int = 0, snr_db: float = 20.0):
    return ChannelModel(k, seed=seed, snr_db=snr_db, fading="rayleigh", path_loss_exponent=3.0,
                        min_distance_m=10.0, max_distance_m=100.0).draw(0)


@pytest.mark.parametrize("seed", range(5))
def test_power_limits_and_truncation_respected(seed: int) -> None:
    # Prepare
    st = _channel(seed=seed)
    p = np.random.default_rng(seed).uniform(0.1, 10.0, size=16)
    g_th = float(np.median(np.abs(st.h_est) ** 2))
    # Execute
    plan = plan_round(st.h_est, p, G, st.noise_var, g_th=g_th)
    # Assert
    gain2 = np.abs(st.h_est) ** 2
    np.testing.assert_array_equal(plan.active, gain2 >= g_th)
    assert np.all(plan.tx_power[plan.active] <= p[plan.active] * (1 + 1e-12))
    assert np.all(plan.b[~plan.active] == 0)
    # full power without privacy: the weakest active node is exactly at its budget
    assert np.max(plan.tx_power[plan.active] / p[plan.active]) == pytest.approx(1.0)
    # phase pre-compensation: every active node arrives with the same real gain eta
    np.testing.assert_allclose(st.h[plan.active] * plan.b[plan.active], plan.eta, rtol=1e-12)


def test_energy_optimal_privacy_plan_uses_eta_priv_without_artificial_noise() -> None:
    # Prepare: high SNR, big budget -> privacy-limited
    st = _channel(snr_db=40.0)
    cal = PrivacyRule.from_target(4.0, 1e-5, rounds=50)
    # Execute
    plan = plan_round(st.h_est, 100.0, G, st.noise_var, privacy=cal)
    # Assert
    assert plan.limited_by == "privacy"
    assert plan.eta == pytest.approx(st.sigma_n / (2 * G * cal.z_star))
    assert plan.eta < plan.eta_pow
    assert plan.sigma_a == 0.0
    assert plan.mu_design == pytest.approx(cal.mu_round)


def test_eta_floor_adds_exactly_the_artificial_noise_the_target_needs() -> None:
    # Prepare
    st = _channel(snr_db=40.0)
    cal = PrivacyRule.from_target(4.0, 1e-5, rounds=50)
    eta_priv = cal.eta_priv(st.noise_var, G)
    # Execute
    plan = plan_round(st.h_est, 100.0, G, st.noise_var, privacy=cal, eta_floor=3 * eta_priv)
    # Assert: sigma_a^2 = (2 G eta z*)^2 - sigma_n^2, so mu_t is back on target
    assert plan.limited_by == "floor"
    assert plan.eta == pytest.approx(3 * eta_priv)
    assert plan.sigma_a**2 == pytest.approx((2 * G * plan.eta * cal.z_star) ** 2 - st.sigma_n**2)
    assert plan.mu_design == pytest.approx(cal.mu_round)
    assert plan.privacy_slack == pytest.approx(0.0, abs=1e-9)


def test_capped_artificial_noise_reports_privacy_slack() -> None:
    st = _channel(snr_db=40.0)
    cal = PrivacyRule.from_target(4.0, 1e-5, rounds=50)
    eta_priv = cal.eta_priv(st.noise_var, G)
    plan = plan_round(st.h_est, 100.0, G, st.noise_var, privacy=cal, eta_floor=3 * eta_priv,
                      sigma_a_max=0.0)
    assert plan.sigma_a == 0.0
    assert plan.privacy_slack == pytest.approx(2.0)  # mu_t = 3x the target


def test_unreachable_floor_falls_back_to_power_limit_and_reports_slack() -> None:
    st = _channel(snr_db=40.0)
    plan = plan_round(st.h_est, 1.0, G, st.noise_var, eta_floor=1e6)
    assert plan.eta == pytest.approx(plan.eta_pow)
    assert plan.floor_slack == pytest.approx(1e6 - plan.eta_pow)


def test_power_limited_round_has_privacy_margin() -> None:
    # Prepare: very low SNR makes eta_priv huge, so power binds
    st = _channel(snr_db=-20.0)
    cal = PrivacyRule.from_target(4.0, 1e-5, rounds=50)
    # Execute
    plan = plan_round(st.h_est, 1e-3, G, st.noise_var, privacy=cal)
    # Assert
    assert plan.limited_by == "power"
    assert plan.mu_design < cal.mu_round
    assert plan.sigma_a == 0.0


def test_error_bound_lowers_eta_priv_by_one_plus_bound() -> None:
    st = _channel(snr_db=40.0)
    exact = PrivacyRule.from_target(4.0, 1e-5, rounds=50)
    noisy = PrivacyRule.from_target(4.0, 1e-5, rounds=50, estimation_error_std=0.05)
    assert noisy.eta_priv(st.noise_var, G) == pytest.approx(
        exact.eta_priv(st.noise_var, G) / (1 + noisy.error_bound))


def test_no_active_node_skips_round() -> None:
    st = _channel()
    plan = plan_round(st.h_est, 1.0, G, st.noise_var, g_th=1e9)
    assert plan.n_active == 0 and plan.eta == 0.0 and plan.limited_by == "none"


def test_unavailable_nodes_are_left_out() -> None:
    st = _channel(k=4)
    plan = plan_round(st.h_est, 1.0, G, st.noise_var, available=np.array([1, 0, 1, 0], bool))
    np.testing.assert_array_equal(plan.active, [True, False, True, False])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"power_budget": -1.0}, "power_budget"),
        ({"power_budget": [1.0, 2.0]}, "power_budget"),
        ({"clip_G": 0.0}, "clip_G"),
        ({"clip_G": -2.0}, "clip_G"),
        ({"h_est": np.zeros(0, complex)}, "h_est"),
        ({"noise_var": 0.0}, "noise_var"),
        ({"g_th": -1.0}, "g_th"),
        ({"eta_floor": -1.0}, "eta_floor"),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(kwargs: dict, name: str) -> None:
    args = {"h_est": np.ones(3, complex), "power_budget": 1.0, "clip_G": 1.0,
            "noise_var": 0.1} | kwargs
    with pytest.raises(ValueError, match=name):
        plan_round(**args)


def test_amplitude_bound() -> None:
    assert amplitude_bound("analog", 7.0) == 7.0
    assert amplitude_bound("one_bit", 7.0) == 1.0
    with pytest.raises(ValueError, match="scheme"):
        amplitude_bound("qam", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clip_G"):
        amplitude_bound("analog", math.inf)
