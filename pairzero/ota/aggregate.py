"""Over-the-air aggregation: what the air does to the nodes' symbols, and what the AP reads.

Analog scheme (DESIGN.md section 4): node k sends x_k = b_k g_k, the AP receives
y = sum_k h_k x_k + n + a (complex, n ~ CN(0, N0), a ~ CN(0, 2 sigma_a^2)) and estimates the
mean of the active nodes' scalars as g_hat = Re(y) / (|S| eta). With perfect channel
estimates, g_hat - mean_S(g) = Re(n + a) / (|S| eta) ~ N(0, (sigma_n^2 + sigma_a^2)/(|S| eta)^2).

One-bit scheme: node k sends x_k = b_k sign(g_k); the AP decides sign(Re(y)), the majority
vote of the active nodes' signs (signSGD with majority vote over the air). g_hat is +-1 and the
training loop scales it by its own step size.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from pairzero.ota.fading import ChannelState
from pairzero.ota.power import PowerPlan

__all__ = [
    "RoundResult",
    "receive",
    "analog_estimate",
    "one_bit_symbol",
    "one_bit_vote",
    "estimate_g_hat",
    "closed_form_mse",
    "realized_mu",
    "ota_round",
]

log = logging.getLogger(__name__)

Scheme = Literal["analog", "one_bit"]


def receive(
    x: np.ndarray,
    h: np.ndarray,
    noise_var: float,
    sigma_a: float,
    rng: np.random.Generator,
) -> complex:
    """One received complex sample y = sum_k h_k x_k + n + a.

    Args:
        x: (K,) complex transmitted amplitudes.
        h: (K,) complex channel gains.
        noise_var: N0, complex AWGN variance (N0/2 per real dimension).
        sigma_a: artificial-noise std per real dimension (a ~ CN(0, 2 sigma_a^2)).
        rng: source of the noise.
    """
    x = np.asarray(x)
    h = np.asarray(h)
    if x.shape != h.shape or x.ndim != 1:
        raise ValueError(f"x: shape {x.shape} is invalid; allowed: same 1-D shape as h {h.shape}")
    if not (math.isfinite(noise_var) and noise_var >= 0):
        raise ValueError(f"noise_var: {noise_var!r} is invalid; allowed: a finite number >= 0")
    if not (math.isfinite(sigma_a) and sigma_a >= 0):
        raise ValueError(f"sigma_a: {sigma_a!r} is invalid; allowed: a finite number >= 0")
    std = math.sqrt(noise_var / 2.0 + sigma_a**2)  # per real dimension, n + a together
    noise = std * (rng.standard_normal() + 1j * rng.standard_normal())
    return complex(np.sum(h * x) + noise)


def analog_estimate(y: complex, n_active: int, eta: float) -> float:
    """g_hat = Re(y) / (|S| eta): the estimate of the active nodes' mean scalar."""
    if n_active < 1:
        raise ValueError(f"n_active: {n_active!r} is invalid; allowed: an integer >= 1")
    if not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"eta: {eta!r} is invalid; allowed: a finite number > 0")
    return float(np.real(y)) / (n_active * eta)


def one_bit_symbol(g: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """What a node sends in the one-bit scheme: sign(g_k) in {-1, +1}, a zero scalar sent as +1
    (the same tie rule as the vote). The one rule of every path (simulation, baseband, radios)."""
    return np.where(np.asarray(g, dtype=np.float64) >= 0.0, 1.0, -1.0)


def one_bit_vote(y: complex) -> float:
    """Majority vote read off the air: sign(Re(y)) in {-1, +1} (a tie, Re(y) == 0, gives +1)."""
    return 1.0 if float(np.real(y)) >= 0.0 else -1.0


def estimate_g_hat(y: complex, n_active: int, eta: float, scheme: Scheme) -> float:
    """The AP's aggregate from the received statistic y: the one estimator every path uses
    (simulation, baseband, loopback, USRPs). ``analog``: Re(y) / (|S| eta); ``one_bit``: the
    majority vote sign(Re(y)), a tie (Re(y) == 0) counting as +1."""
    if scheme == "analog":
        return analog_estimate(y, n_active, eta)
    if scheme == "one_bit":
        return one_bit_vote(y)
    raise ValueError(f"scheme: {scheme!r} is invalid; allowed: 'analog', 'one_bit'")


def closed_form_mse(noise_var: float, sigma_a: float, n_active: int, eta: float) -> float:
    """MSE of the analog estimate with perfect CSI: (N0/2 + sigma_a^2) / (|S|^2 eta^2)."""
    if n_active < 1:
        raise ValueError(f"n_active: {n_active!r} is invalid; allowed: an integer >= 1")
    if not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"eta: {eta!r} is invalid; allowed: a finite number > 0")
    if not (math.isfinite(noise_var) and noise_var >= 0):
        raise ValueError(f"noise_var: {noise_var!r} is invalid; allowed: a finite number >= 0")
    if not (math.isfinite(sigma_a) and sigma_a >= 0):
        raise ValueError(f"sigma_a: {sigma_a!r} is invalid; allowed: a finite number >= 0")
    return (noise_var / 2.0 + sigma_a**2) / (n_active**2 * eta**2)


def realized_mu(h: np.ndarray, plan: PowerPlan) -> np.ndarray:
    """(K,) realized per-round GDP mu of each node against the AP, with the *true* channel.

    mu_k = 2 A |h_k b_k| / sqrt(sigma_n^2 + sigma_a^2): changing g_k over [-A, A] moves the mean
    of the complex y by 2 A |h_k b_k|, and the noise is isotropic. Inactive nodes: 0.
    """
    sigma_t = math.sqrt(plan.noise_var / 2.0 + plan.sigma_a**2)
    return 2.0 * plan.amplitude_bound * np.abs(np.asarray(h) * plan.b) / sigma_t


@dataclass(frozen=True)
class RoundResult:
    """What one OTA round produced.

    Attributes:
        g_hat: the AP's estimate (analog: of the active nodes' mean scalar; one-bit: +-1 vote);
            0.0 when the round was skipped.
        target: what a noiseless scheme would return (analog: mean of clipped g over S;
            one-bit: majority sign over S).
        true_mean: mean of the clipped g over all K nodes.
        sq_err: (g_hat - target)^2 (nan when skipped).
        n_active: |S|.
        eta, sigma_a: from the plan.
        mse_closed_form: (sigma_n^2 + sigma_a^2)/(|S| eta)^2 (analog, perfect CSI; nan if skipped).
        mu_t: (K,) realized per-round GDP mu per node (feed to GaussianDPAccountant.add).
        y: the received complex sample.
        skipped: True when no node was active.
    """

    g_hat: float
    target: float
    true_mean: float
    sq_err: float
    n_active: int
    eta: float
    sigma_a: float
    mse_closed_form: float
    mu_t: np.ndarray
    y: complex
    skipped: bool


def ota_round(
    g: np.ndarray,
    state: ChannelState,
    plan: PowerPlan,
    rng: np.random.Generator,
    scheme: Scheme = "analog",
) -> RoundResult:
    """Simulate one OTA round end to end: symbols -> channel (true h) -> AP estimate.

    Args:
        g: (K,) the nodes' scalars; clipped to [-A, A] (A = plan.amplitude_bound) as a node does.
        state: the round's channel (the plan was made from state.h_est).
        plan: from :func:`pairzero.ota.power.plan_round` with the scheme's amplitude bound.
        rng: receiver / artificial-noise randomness.
        scheme: ``analog`` or ``one_bit``.
    """
    g = np.asarray(g, dtype=float)
    k = state.n_nodes
    if g.shape != (k,):
        raise ValueError(f"g: shape {g.shape} is invalid; allowed: ({k},), one scalar per node")
    if not np.all(np.isfinite(g)):
        raise ValueError("g: contains non-finite values; allowed: finite scalars")
    if plan.b.shape != (k,):
        raise ValueError(f"plan: b has shape {plan.b.shape}, the channel has K={k} nodes")
    if scheme not in ("analog", "one_bit"):
        raise ValueError(f"scheme: {scheme!r} is invalid; allowed: 'analog', 'one_bit'")
    a = plan.amplitude_bound
    # (K,) what each node multiplies b_k by: its clipped scalar, or its sign
    sym = np.clip(g, -a, a) if scheme == "analog" else one_bit_symbol(g)
    true_mean = float(np.mean(np.clip(g, -a, a))) if scheme == "analog" else float(np.mean(g))
    x = plan.b * sym  # (K,) complex; zero for inactive nodes (b_k = 0)
    y = receive(x, state.h, state.noise_var, plan.sigma_a, rng)
    mu_t = realized_mu(state.h, plan)
    n = plan.n_active
    if n == 0:
        return RoundResult(
            g_hat=0.0, target=float("nan"), true_mean=true_mean, sq_err=float("nan"),
            n_active=0, eta=plan.eta, sigma_a=plan.sigma_a, mse_closed_form=float("nan"),
            mu_t=mu_t, y=y, skipped=True,
        )
    g_hat = estimate_g_hat(y, n, plan.eta, scheme)
    if scheme == "analog":
        target = float(np.mean(sym[plan.active]))
    else:
        target = 1.0 if float(np.sum(sym[plan.active])) >= 0.0 else -1.0
    mse = closed_form_mse(state.noise_var, plan.sigma_a, n, plan.eta)
    log.debug("OTA round t=%d |S|=%d eta=%.4g sigma_a=%.4g max mu_t=%.4g",
              state.round_t, n, plan.eta, plan.sigma_a, float(np.max(mu_t)))
    return RoundResult(
        g_hat=g_hat, target=target, true_mean=true_mean, sq_err=(g_hat - target) ** 2,
        n_active=n, eta=plan.eta, sigma_a=plan.sigma_a, mse_closed_form=mse, mu_t=mu_t,
        y=y, skipped=False,
    )
