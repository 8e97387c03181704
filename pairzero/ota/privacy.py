"""Differential privacy of over-the-air aggregation: analytic Gaussian DP and calibration.

Adversary and neighbouring relation
-----------------------------------
The access point (AP) is the adversary. It observes the complex received sample

    y_t = sum_k h_k b_k g_k + n_t + a_t,      n_t ~ CN(0, N0),  a_t ~ CN(0, 2 sigma_a^2)

(N0 = complex receiver-noise variance, so sigma_n^2 = N0/2 per real dimension; the artificial
noise a_t also has sigma_a^2 per real dimension, so the noise is isotropic in the complex
plane with std sigma_t = sqrt(sigma_n^2 + sigma_a^2) per real dimension). Two datasets are
neighbours when one device's scalar g_k in [-G, G] is replaced by another value in [-G, G].
The mean of y_t then moves by at most Delta_t = 2 G |h_k b_k| (a displacement in the complex
plane; the noise is isotropic, so only its length matters). With perfect channel estimates
h_k b_k = eta_t, so Delta_t = 2 G eta_t; with an estimate error h_k b_k = eta_t (1 + e_k) and
Delta_t <= 2 G eta_t (1 + |e_k|). The other devices' signals are *not* counted as noise
(the AP may know them), which is conservative.

Gaussian DP (Dong, Roth, Su 2019; Balle & Wang 2018)
----------------------------------------------------
A Gaussian mechanism with sensitivity Delta and isotropic noise std sigma is mu-GDP with
mu = Delta / sigma. T adaptively composed mechanisms with mu_1..mu_T are mu_tot-GDP with
mu_tot = sqrt(sum mu_t^2) (exact, no slack). mu-GDP is (epsilon, delta(epsilon))-DP for all
epsilon >= 0 with

    delta(epsilon) = Phi(mu/2 - epsilon/mu) - exp(epsilon) Phi(-mu/2 - epsilon/mu).

Noise multiplier
----------------
For a target (epsilon, delta) let mu* solve delta(epsilon; mu*) = delta; the single-shot
noise std for unit sensitivity is sigma(epsilon, delta) = 1/mu* (what dp_accounting's
``get_sigma_gaussian`` returns). Spreading mu* evenly over T rounds gives mu_t = mu*/sqrt(T),
i.e. a per-round noise multiplier (noise std / sensitivity)

    z* = sqrt(T) * sigma(epsilon, delta) = sqrt(T) / mu*.

Rounds with a smaller mu_t (power-limited, node inactive) only help: the accountant composes
the realized mu_t, never assumes the worst.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.stats import norm

__all__ = [
    "delta_from_mu",
    "epsilon_from_mu",
    "mu_from_epsilon_delta",
    "noise_multiplier",
    "estimation_error_bound",
    "PrivacyRule",
    "GaussianDPAccountant",
    "charge_logged_rounds",
]

log = logging.getLogger(__name__)

#: Default tail probability per node per round for the channel-estimate error bound.
DEFAULT_ERROR_TAIL_PROB = 1e-6


def _check_epsilon(epsilon: float, name: str = "epsilon") -> None:
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"{name}: {epsilon!r} is invalid; allowed: a finite number > 0")


def _check_delta(delta: float, name: str = "delta") -> None:
    if not (isinstance(delta, int | float) and 0.0 < delta < 1.0):
        raise ValueError(f"{name}: {delta!r} is invalid; allowed: 0 < delta < 1")


def _log_delta(mu: float, epsilon: float) -> float:
    """log delta(epsilon) of mu-GDP, computed in log space (stable for tiny delta)."""
    if mu <= 0.0:
        return -math.inf
    a = float(norm.logcdf(mu / 2.0 - epsilon / mu))
    b = epsilon + float(norm.logcdf(-mu / 2.0 - epsilon / mu))
    if b >= a:  # difference underflows to <= 0: delta is 0 to working precision
        return -math.inf
    return a + math.log1p(-math.exp(b - a))


def delta_from_mu(mu: float, epsilon: float) -> float:
    """delta such that a mu-GDP mechanism is (epsilon, delta)-DP (dimensionless).

    Args:
        mu: GDP parameter, >= 0 (mu = 0 is perfect privacy).
        epsilon: privacy loss bound, >= 0.
    """
    if not (math.isfinite(mu) and mu >= 0):
        raise ValueError(f"mu: {mu!r} is invalid; allowed: a finite number >= 0")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon: {epsilon!r} is invalid; allowed: a finite number >= 0")
    return math.exp(_log_delta(mu, epsilon))


def epsilon_from_mu(mu: float, delta: float) -> float:
    """Smallest epsilon >= 0 such that a mu-GDP mechanism is (epsilon, delta)-DP.

    delta(epsilon) decreases monotonically in epsilon, so the root is bracketed and found by
    Brent's method in log-delta space (relative tolerance 1e-12).
    """
    if not (math.isfinite(mu) and mu >= 0):
        raise ValueError(f"mu: {mu!r} is invalid; allowed: a finite number >= 0")
    _check_delta(delta)
    log_target = math.log(delta)
    if _log_delta(mu, 0.0) <= log_target:
        return 0.0
    lo, hi = 0.0, max(1.0, mu)
    while _log_delta(mu, hi) > log_target:
        lo, hi = hi, 2.0 * hi
    return float(
        optimize.brentq(lambda e: _log_delta(mu, e) - log_target, lo, hi, xtol=1e-12, rtol=1e-12)
    )


def mu_from_epsilon_delta(epsilon: float, delta: float) -> float:
    """The largest mu such that mu-GDP implies (epsilon, delta)-DP (delta increases with mu)."""
    _check_epsilon(epsilon)
    _check_delta(delta)
    log_target = math.log(delta)
    lo, hi = 1e-3, 1.0
    while _log_delta(lo, epsilon) > log_target:
        lo /= 10.0
    while _log_delta(hi, epsilon) < log_target:
        lo, hi = hi, 2.0 * hi
    return float(
        optimize.brentq(
            lambda m: _log_delta(m, epsilon) - log_target, lo, hi, xtol=1e-14, rtol=1e-13
        )
    )


def noise_multiplier(epsilon: float, delta: float, rounds: int) -> float:
    """Per-round noise multiplier z* = sqrt(T) / mu*(epsilon, delta) (noise std / sensitivity).

    A mechanism run T times, each time with noise std >= z* times its sensitivity, is
    (epsilon, delta)-DP over all T rounds (exact GDP composition).
    """
    _check_epsilon(epsilon)
    _check_delta(delta)
    if isinstance(rounds, bool) or not isinstance(rounds, int | np.integer) or rounds < 1:
        raise ValueError(f"rounds: {rounds!r} is invalid; allowed: an integer >= 1")
    return math.sqrt(int(rounds)) / mu_from_epsilon_delta(epsilon, delta)


def estimation_error_bound(error_std: float, tail_prob: float = DEFAULT_ERROR_TAIL_PROB) -> float:
    """High-probability bound on |e_k| for e_k ~ CN(0, error_std^2) (relative alignment error).

    |e_k|^2 / error_std^2 ~ Exp(1), so P(|e_k| > error_std sqrt(ln(1/p))) = p. The privacy
    calibration inflates the sensitivity by (1 + bound); the guarantee holds except with
    probability ``tail_prob`` per node per round (and then degrades gracefully, since the
    accountant composes realized mu_t).
    """
    if not (math.isfinite(error_std) and 0.0 <= error_std < 1.0):
        raise ValueError(
            f"estimation_error_std: {error_std!r} is invalid; allowed: 0 <= value < 1"
        )
    if not (0.0 < tail_prob < 1.0):
        raise ValueError(f"tail_prob: {tail_prob!r} is invalid; allowed: 0 < value < 1")
    return error_std * math.sqrt(math.log(1.0 / tail_prob))


@dataclass(frozen=True)
class PrivacyRule:
    """Per-round privacy rule for a target (epsilon, delta) over ``rounds`` rounds.

    Attributes:
        epsilon, delta: the per-node target over all rounds.
        rounds: T.
        z_star: per-round noise multiplier (noise std per real dimension / sensitivity).
        error_bound: bound on the relative alignment error |e_k| (0 for perfect CSI).
    """

    epsilon: float
    delta: float
    rounds: int
    z_star: float
    error_bound: float = 0.0

    @classmethod
    def from_target(
        cls,
        epsilon: float,
        delta: float,
        rounds: int,
        estimation_error_std: float = 0.0,
        tail_prob: float = DEFAULT_ERROR_TAIL_PROB,
    ) -> PrivacyRule:
        """Build the rule; ``estimation_error_std`` is the relative std of e_k."""
        z = noise_multiplier(epsilon, delta, rounds)
        bound = estimation_error_bound(estimation_error_std, tail_prob)
        return cls(epsilon=float(epsilon), delta=float(delta), rounds=int(rounds), z_star=z,
                   error_bound=bound)

    @property
    def mu_round(self) -> float:
        """Target per-round mu_t = 1/z* (so that sqrt(T) mu_t = mu*)."""
        return 1.0 / self.z_star

    @property
    def mu_total(self) -> float:
        """Target mu over all rounds, mu* = sqrt(T)/z*."""
        return math.sqrt(self.rounds) / self.z_star

    def eta_priv(self, noise_var: float, amplitude_bound: float) -> float:
        """Largest alignment gain eta with no artificial noise that meets the per-round target.

        eta_priv = sigma_n / (2 A z* (1 + e_max)), sigma_n = sqrt(N0/2); A = clip bound G
        (analog) or 1 (one-bit). Units: eta is received amplitude per unit of g.
        """
        if not (math.isfinite(noise_var) and noise_var > 0):
            raise ValueError(f"noise_var: {noise_var!r} is invalid; allowed: a finite number > 0")
        if not (math.isfinite(amplitude_bound) and amplitude_bound > 0):
            raise ValueError(f"clip_G: {amplitude_bound!r} is invalid; allowed: a number > 0")
        sigma_n = math.sqrt(noise_var / 2.0)
        return sigma_n / (2.0 * amplitude_bound * self.z_star * (1.0 + self.error_bound))

    def sigma_a_required(self, eta: float, noise_var: float, amplitude_bound: float) -> float:
        """Artificial-noise std per real dimension needed at gain ``eta`` (0 if none needed).

        sigma_a^2 = (2 A eta z* (1 + e_max))^2 - sigma_n^2, clipped at 0.
        """
        need = (2.0 * amplitude_bound * eta * self.z_star * (1.0 + self.error_bound)) ** 2
        return math.sqrt(max(need - noise_var / 2.0, 0.0))


def charge_logged_rounds(
    accountant: GaussianDPAccountant, rounds: Iterable[tuple[Sequence[int], float | None]]
) -> int:
    """Compose committed rounds again, as an AP restarted on its round log must: each round
    ``(active nodes, mu)`` charges its logged mu to the nodes it counted (the AP's live
    accounting does the same; where the log keeps the round's largest mu_t, as the baseband AP
    logs it, this is an upper bound). Rounds without mu (privacy off) charge nothing. Returns
    the number of rounds charged."""
    n = 0
    for active, mu in rounds:
        if mu is None:
            continue
        mu_t = np.zeros(accountant.n_nodes)
        mu_t[list(active)] = mu
        accountant.add(mu_t)
        n += 1
    return n


class GaussianDPAccountant:
    """Per-node GDP accountant: composes realized per-round mu_t exactly (mu_tot^2 = sum mu_t^2).

    Example::

        acc = GaussianDPAccountant(n_nodes=K)
        acc.add(result.mu_t)          # (K,) per round
        acc.epsilon(1e-5)             # (K,) epsilon per node so far
    """

    def __init__(self, n_nodes: int) -> None:
        if isinstance(n_nodes, bool) or not isinstance(n_nodes, int | np.integer) or n_nodes < 1:
            raise ValueError(f"n_nodes: {n_nodes!r} is invalid; allowed: an integer >= 1")
        self._mu_sq = np.zeros(int(n_nodes))  # (K,) running sum of mu_t^2
        self._rounds = 0

    @property
    def rounds(self) -> int:
        """Rounds added so far."""
        return self._rounds

    @property
    def n_nodes(self) -> int:
        """K."""
        return len(self._mu_sq)

    def add(self, mu_t: np.ndarray | float) -> None:
        """Add one round's realized mu_t (scalar for all nodes, or shape (K,))."""
        mu = np.broadcast_to(np.asarray(mu_t, dtype=float), self._mu_sq.shape)
        if not np.all(np.isfinite(mu)) or np.any(mu < 0):
            raise ValueError(f"mu_t: {mu_t!r} is invalid; allowed: finite values >= 0")
        self._mu_sq += mu**2
        self._rounds += 1

    def mu_total(self) -> np.ndarray:
        """(K,) composed mu per node."""
        return np.sqrt(self._mu_sq)

    def epsilon(self, delta: float) -> np.ndarray:
        """(K,) epsilon per node at the given delta."""
        _check_delta(delta)
        return np.array([epsilon_from_mu(float(m), delta) for m in self.mu_total()])
