"""Analytic Gaussian DP, noise multiplier and accountant vs Google's dp_accounting."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant

from pairzero.ota.privacy import (
    GaussianDPAccountant,
    PrivacyRule,
    delta_from_mu,
    epsilon_from_mu,
    mu_from_epsilon_delta,
    noise_multiplier,
)


@pytest.mark.parametrize(
    ("epsilon", "delta"), [(0.1, 1e-3), (1.0, 1e-5), (8.0, 1e-5), (20.0, 1e-9), (3.0, 0.1)]
)
def test_noise_multiplier_matches_dp_accounting_sigma(epsilon: float, delta: float) -> None:
    # z* = sqrt(T) sigma(eps, delta), with sigma from dp_accounting's analytic Gaussian
    t = 100
    ref = math.sqrt(t) * dp_accounting.get_sigma_gaussian(epsilon, delta)
    assert noise_multiplier(epsilon, delta, t) == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("mu", [0.05, 0.5, 1.0, 3.0, 10.0])
@pytest.mark.parametrize("delta", [1e-8, 1e-5, 1e-2])
def test_epsilon_from_mu_matches_dp_accounting_analytic_gaussian(mu: float, delta: float) -> None:
    ref = dp_accounting.get_epsilon_gaussian(1.0 / mu, delta)
    assert epsilon_from_mu(mu, delta) == pytest.approx(ref, rel=1e-6, abs=1e-9)


def test_delta_from_mu_inverts_epsilon_from_mu() -> None:
    eps = epsilon_from_mu(1.3, 1e-6)
    assert delta_from_mu(1.3, eps) == pytest.approx(1e-6, rel=1e-8)
    assert mu_from_epsilon_delta(eps, 1e-6) == pytest.approx(1.3, rel=1e-8)


@pytest.mark.parametrize(("z", "rounds"), [(5.0, 100), (20.0, 400), (2.0, 10)])
def test_accountant_agrees_with_pld_accountant_within_one_percent(z: float, rounds: int) -> None:
    # Prepare: T rounds of a Gaussian mechanism with noise multiplier z (mu_t = 1/z)
    delta = 1e-5
    acc = GaussianDPAccountant(n_nodes=2)
    pld = pld_privacy_accountant.PLDAccountant()
    # Execute
    for _ in range(rounds):
        acc.add(np.array([1.0 / z, 0.0]))
    pld.compose(dp_accounting.GaussianDpEvent(z), rounds)
    # Assert
    eps = acc.epsilon(delta)
    assert eps[0] == pytest.approx(pld.get_epsilon(delta), rel=0.01)
    assert eps[1] == 0.0
    assert acc.rounds == rounds


def test_heterogeneous_rounds_agree_with_pld_accountant() -> None:
    # realized mu_t vary with the channel; composition must still match the PLD reference
    mus = np.random.default_rng(0).uniform(0.02, 0.3, size=60)
    acc = GaussianDPAccountant(1)
    for m in mus:
        acc.add(m)
    pld = pld_privacy_accountant.PLDAccountant()
    pld.compose(dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(1 / m) for m in mus]))
    assert acc.epsilon(1e-6)[0] == pytest.approx(pld.get_epsilon(1e-6), rel=0.01)


def test_calibration_reaches_the_target_exactly_after_t_rounds() -> None:
    cal = PrivacyRule.from_target(8.0, 1e-5, rounds=100)
    acc = GaussianDPAccountant(1)
    for _ in range(100):
        acc.add(cal.mu_round)
    assert acc.epsilon(1e-5)[0] == pytest.approx(8.0, rel=1e-9)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: noise_multiplier(0.0, 1e-5, 10), "epsilon"),
        (lambda: noise_multiplier(-1.0, 1e-5, 10), "epsilon"),
        (lambda: noise_multiplier(1.0, 1.0, 10), "delta"),
        (lambda: noise_multiplier(1.0, 0.0, 10), "delta"),
        (lambda: noise_multiplier(1.0, 1e-5, 0), "rounds"),
        (lambda: epsilon_from_mu(-1.0, 1e-5), "mu"),
        (lambda: epsilon_from_mu(1.0, 2.0), "delta"),
        (lambda: delta_from_mu(1.0, -1.0), "epsilon"),
        (lambda: GaussianDPAccountant(0), "n_nodes"),
        (lambda: GaussianDPAccountant(2).add(np.array([-1.0, 0.0])), "mu_t"),
        (lambda: PrivacyRule.from_target(1.0, 1e-5, 10, estimation_error_std=1.5),
         "estimation_error_std"),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()


def test_baseband_mode_reports_no_privacy_against_the_ap() -> None:
    # Prepare: the baseband AP (the nodes' exact scalars arrive in READY)
    from pairzero.config import load_config
    from pairzero.phy.baseband import BasebandApPhy

    cfg = load_config(None, ["nodes.count=3", "run.rounds=4", "radio.mode=baseband"])
    ap = BasebandApPhy(cfg)
    # Execute
    plan = ap.plan(0, [0, 1, 2])
    res = ap.receive(0, 7, plan, {0: 0.1, 1: -0.2, 2: 0.3})
    # Assert: epsilon infinite, no mu logged as if the round were private; off: None
    assert ap.eps_spent() == math.inf
    assert plan.mu is None and res.mu is None
    off = load_config(None, ["nodes.count=3", "radio.mode=baseband", "privacy.enabled=false"])
    assert BasebandApPhy(off).eps_spent() is None


def test_charge_logged_rounds_composes_mu_on_the_active_nodes_only() -> None:
    from pairzero.ota.privacy import charge_logged_rounds

    acc = GaussianDPAccountant(4)
    n = charge_logged_rounds(acc, [((0, 2), 0.3), ((), 0.5), ((1, 2), 0.4), ((0, 1, 2, 3), None)])
    assert n == 3
    assert np.allclose(acc.mu_total(), [0.3, 0.4, 0.5, 0.0])
