"""OTA aggregation: closed-form MSE vs Monte Carlo, one-bit vote, comm cost, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pairzero.ota.aggregate import analog_estimate, closed_form_mse, ota_round, receive
from pairzero.ota.comm import downlink_cost, uplink_bits_per_round, uplink_cost
from pairzero.ota.fading import ChannelModel
from pairzero.ota.power import plan_round
from pairzero.ota.privacy import PrivacyRule

G = 2.0


@pytest.mark.parametrize(("snr_db", "eta_floor_factor"), [(5.0, 0.0), (25.0, 0.0), (25.0, 4.0)])
def test_closed_form_mse_matches_monte_carlo(snr_db: float, eta_floor_factor: float) -> None:
    # Prepare: fixed channel (perfect CSI), so g_hat - mean_S(g) = Re(n + a)/(|S| eta) is
    # N(0, m). The sample mean of N squared errors is m chi2_N / N: relative std sqrt(2/N).
    # N = 20000 -> 1.0 %; tolerance 5 sigma = 5 %. Bias: |mean err| <= 5 sqrt(m/N).
    n_trials = 20000
    st = ChannelModel(8, seed=11, snr_db=snr_db, fading="rayleigh").draw(0)
    cal = PrivacyRule.from_target(6.0, 1e-5, rounds=100)
    floor = eta_floor_factor * cal.eta_priv(st.noise_var, G)
    plan = plan_round(st.h_est, 10.0, G, st.noise_var, g_th=0.05, privacy=cal, eta_floor=floor)
    rng = np.random.default_rng(123)
    g = rng.uniform(-G, G, size=8)
    # Execute
    res = [ota_round(g, st, plan, rng) for _ in range(n_trials)]
    err = np.array([r.g_hat - r.target for r in res])
    # Assert
    m = closed_form_mse(st.noise_var, plan.sigma_a, plan.n_active, plan.eta)
    assert res[0].mse_closed_form == pytest.approx(m)
    assert (plan.sigma_a > 0) == (eta_floor_factor > 1)
    assert abs(np.mean(err**2) / m - 1) < 5 * math.sqrt(2 / n_trials)
    assert abs(np.mean(err)) < 5 * math.sqrt(m / n_trials)


def test_analog_estimate_is_exact_without_noise() -> None:
    st = ChannelModel(6, seed=2, snr_db=10.0, fading="rician").draw(3)
    plan = plan_round(st.h_est, 1.0, G, st.noise_var)
    g = np.array([0.5, -1.0, 1.5, 2.0, -2.0, 0.1])
    y = receive(plan.b * g, st.h, 0.0, 0.0, np.random.default_rng(0))
    assert analog_estimate(y, plan.n_active, plan.eta) == pytest.approx(np.mean(g))


def test_scalars_are_clipped_to_G_like_the_nodes_do() -> None:
    st = ChannelModel(3, seed=2, snr_db=80.0, fading="none").draw(0)
    plan = plan_round(st.h_est, 1.0, G, st.noise_var)
    res = ota_round(np.array([100.0, -100.0, 1.0]), st, plan, np.random.default_rng(0))
    assert res.target == pytest.approx((G - G + 1.0) / 3)
    assert abs(res.g_hat - res.target) < 1e-2


@pytest.mark.parametrize("seed", range(20))
def test_one_bit_majority_vote_correct_in_noiseless_limit(seed: int) -> None:
    # Prepare: SNR 80 dB (noise std 1e-4 x signal), odd K so there is no tie
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 16)) * 2 + 1
    st = ChannelModel(k, seed=seed, snr_db=80.0, fading="rayleigh").draw(0)
    plan = plan_round(st.h_est, 1.0, 1.0, st.noise_var)
    g = rng.normal(size=k)
    # Execute
    res = ota_round(g, st, plan, rng, scheme="one_bit")
    # Assert
    majority = 1.0 if np.sum(np.sign(g)) > 0 else -1.0
    assert res.g_hat == majority == res.target


def test_one_bit_vote_is_wrong_sometimes_at_low_snr() -> None:
    # the vote is a real decision on noisy data, not a copy of the target
    st = ChannelModel(3, seed=0, snr_db=-20.0, fading="none").draw(0)
    plan = plan_round(st.h_est, 1.0, 1.0, st.noise_var)
    rng = np.random.default_rng(0)
    g = np.array([1.0, 1.0, -1.0])
    votes = [ota_round(g, st, plan, rng, scheme="one_bit").g_hat for _ in range(200)]
    assert 0 < votes.count(-1.0) < 200


def test_skipped_round_when_nobody_is_active() -> None:
    st = ChannelModel(3, seed=0, snr_db=10.0).draw(0)
    plan = plan_round(st.h_est, 1.0, G, st.noise_var, g_th=1e9)
    res = ota_round(np.ones(3), st, plan, np.random.default_rng(0))
    assert res.skipped and res.g_hat == 0.0 and np.all(res.mu_t == 0)


def test_realized_mu_matches_design_with_perfect_csi() -> None:
    st = ChannelModel(5, seed=1, snr_db=30.0).draw(0)
    cal = PrivacyRule.from_target(2.0, 1e-6, rounds=20)
    plan = plan_round(st.h_est, 10.0, G, st.noise_var, privacy=cal)
    res = ota_round(np.zeros(5), st, plan, np.random.default_rng(0))
    np.testing.assert_allclose(res.mu_t[plan.active], cal.mu_round, rtol=1e-9)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: closed_form_mse(0.1, 0.0, 0, 1.0), "n_active"),
        (lambda: closed_form_mse(0.1, 0.0, 2, 0.0), "eta"),
        (lambda: closed_form_mse(-0.1, 0.0, 2, 1.0), "noise_var"),
        (lambda: closed_form_mse(0.1, -1.0, 2, 1.0), "sigma_a"),
        (lambda: analog_estimate(1.0, 0, 1.0), "n_active"),
        (lambda: receive(np.ones(2), np.ones(3), 0.1, 0.0, np.random.default_rng()), "x"),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()


def test_ota_round_rejects_wrong_shape_and_scheme() -> None:
    st = ChannelModel(3, seed=0, snr_db=10.0).draw(0)
    plan = plan_round(st.h_est, 1.0, G, st.noise_var)
    with pytest.raises(ValueError, match="g"):
        ota_round(np.ones(4), st, plan, np.random.default_rng(0))
    with pytest.raises(ValueError, match="scheme"):
        ota_round(np.ones(3), st, plan, np.random.default_rng(0), scheme="qam")  # type: ignore[arg-type]


def test_comm_cost_per_method() -> None:
    d, k = 125_000_000, 10
    assert uplink_bits_per_round("pairzero", d) == 0.0
    assert uplink_bits_per_round("zo_digital", d) == 32.0
    assert uplink_bits_per_round("fo_fedavg", d) == 32.0 * d
    # OTA: channel uses do not grow with K (except pilots); digital TDMA grows with K
    assert uplink_cost("pairzero", d, k, payload_uses=64, pilot_uses=63).channel_uses == 64 + 630
    assert uplink_cost("zo_digital", d, k).channel_uses == 320.0
    assert downlink_cost("zo_digital", d, k).bits_per_node == 96.0
    assert downlink_cost("fo_fedavg", d, k).bits_per_node == 32.0 * d
    with pytest.raises(ValueError, match="method"):
        uplink_cost("sgd", d, k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_nodes"):
        uplink_cost("pairzero", d, 0)
