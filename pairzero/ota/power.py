r"""Per-round power control for private over-the-air aggregation.

Notation and units
------------------
* g_k in [-G, G]: node k's clipped ZO scalar (units of the loss per unit perturbation). In the
  one-bit scheme nodes send sign(g_k), so the amplitude bound is A = 1 instead of A = G.
* h_k, h_est_k: true and estimated complex channel amplitudes (dimensionless).
* P_k: transmit power budget of node k, linear, in the units where a unit received amplitude
  has power 1 (so that N0 = 10^(-SNR_dB/10) in the same units).
* b_k = eta conj(h_est_k) / |h_est_k|^2: transmit scale (truncated channel inversion with
  phase pre-compensation), so that h_k b_k = eta (1 + e_k).
* eta: alignment gain, received amplitude per unit of g.
* sigma_n^2 = N0/2, sigma_a^2: receiver and artificial noise variance per real dimension.
* z*: per-round noise multiplier (:func:`pairzero.ota.privacy.noise_multiplier`), e_max: bound
  on |e_k| (:func:`pairzero.ota.privacy.estimation_error_bound`).

Optimisation problem (one round, active set S = {k : |h_est_k|^2 >= g_th})
--------------------------------------------------------------------------
    minimise_{eta, sigma_a}  MSE = (sigma_n^2 + sigma_a^2) / (|S|^2 eta^2)
    subject to  |b_k|^2 A^2 = eta^2 A^2 / |h_est_k|^2 <= P_k      for k in S   (power)
                2 A eta (1 + e_max) / sqrt(sigma_n^2 + sigma_a^2) <= 1/z*      (privacy)
                eta >= eta_floor                                           (hardware / sync)
                0 <= sigma_a <= sigma_a_max                          (artificial-noise budget)

Power gives eta <= eta_pow = min_{k in S} sqrt(P_k) |h_est_k| / A. Privacy says
sqrt(sigma_n^2 + sigma_a^2)/eta >= 2 A z* (1 + e_max), hence MSE >= (2 A z* (1 + e_max) / |S|)^2,
with equality exactly on the privacy boundary sigma_a^2 = (2 A eta z* (1 + e_max))^2 - sigma_n^2,
which needs eta >= eta_priv = sigma_n / (2 A z* (1 + e_max)).

Solution:
1. eta_pow >= eta_priv (privacy-limited, the usual case at realistic SNR): every eta in
   [max(eta_priv, eta_floor), eta_pow] attains the MSE floor; the energy-optimal one is the
   smallest, eta = max(eta_priv, eta_floor), with sigma_a = 0 when eta = eta_priv (no artificial
   noise) and sigma_a^2 = (2 A eta z* (1+e_max))^2 - sigma_n^2 when the floor binds.
2. eta_pow < eta_priv (power-limited): eta = eta_pow, sigma_a = 0; privacy holds with margin and
   MSE = sigma_n^2 / (|S| eta_pow)^2.
3. eta_floor > eta_pow: the floor is infeasible; eta = eta_pow and ``floor_slack`` =
   eta_floor - eta_pow is logged.
4. Required sigma_a > sigma_a_max: sigma_a = sigma_a_max and ``privacy_slack`` =
   mu_t / mu_target - 1 > 0 is logged as a warning (the guarantee is then not met this round;
   the accountant still composes the realized mu_t).
Without privacy (``privacy=None``): eta = eta_pow, sigma_a = 0 (full power, minimum MSE).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pairzero.ota.privacy import PrivacyRule

__all__ = ["PowerPlan", "plan_round", "amplitude_bound"]

log = logging.getLogger(__name__)

Scheme = Literal["analog", "one_bit"]


def amplitude_bound(scheme: Scheme, clip_G: float) -> float:
    """Largest |symbol| a node multiplies b_k by: G for ``analog``, 1 for ``one_bit`` (sign)."""
    if not (math.isfinite(clip_G) and clip_G > 0):
        raise ValueError(f"clip_G: {clip_G!r} is invalid; allowed: a finite number > 0")
    if scheme == "analog":
        return float(clip_G)
    if scheme == "one_bit":
        return 1.0
    raise ValueError(f"scheme: {scheme!r} is invalid; allowed: 'analog', 'one_bit'")


@dataclass(frozen=True)
class PowerPlan:
    """One round's transmit plan (all gains in the units of the module docstring).

    Attributes:
        active: (K,) bool, nodes that transmit (|h_est|^2 >= g_th and available).
        eta: alignment gain (received amplitude per unit of g); 0 when nobody is active.
        b: (K,) complex transmit scales b_k (0 for inactive nodes).
        sigma_a: artificial-noise std per real dimension.
        eta_pow: power-limited maximum of eta (inf when nobody is active).
        eta_priv: privacy cap on eta without artificial noise (inf without privacy).
        amplitude_bound: A, the bound on |g_k| (analog: G; one-bit: 1).
        noise_var: N0 the plan was made for.
        mu_design: per-round GDP mu of each active node, using the error bound e_max.
        mu_target: per-round target 1/z* (inf without privacy).
        privacy_slack: max(mu_design / mu_target - 1, 0); > 0 means the target is missed.
        floor_slack: max(eta_floor - eta, 0); > 0 means the eta floor was not reachable.
        limited_by: what set eta: 'power', 'privacy', 'floor' or 'none' (no active node).
    """

    active: np.ndarray
    eta: float
    b: np.ndarray
    sigma_a: float
    eta_pow: float
    eta_priv: float
    amplitude_bound: float
    noise_var: float
    mu_design: float
    mu_target: float
    privacy_slack: float
    floor_slack: float
    limited_by: str

    @property
    def n_active(self) -> int:
        """|S_t|."""
        return int(np.count_nonzero(self.active))

    @property
    def tx_power(self) -> np.ndarray:
        """(K,) worst-case transmit power |b_k|^2 A^2 (linear)."""
        return np.abs(self.b) ** 2 * self.amplitude_bound**2


def _power_array(power_budget: float | np.ndarray, k: int) -> np.ndarray:
    p = np.asarray(power_budget, dtype=float)
    if p.ndim == 0:
        p = np.full(k, float(p))
    if p.shape != (k,) or not np.all(np.isfinite(p)) or np.any(p <= 0):
        raise ValueError(
            f"power_budget: {power_budget!r} is invalid; allowed: a finite number > 0 or one "
            f"per node ({k})"
        )
    return p


def plan_round(
    h_est: np.ndarray,
    power_budget: float | np.ndarray,
    clip_G: float,
    noise_var: float,
    g_th: float = 0.0,
    privacy: PrivacyRule | None = None,
    eta_floor: float = 0.0,
    sigma_a_max: float | None = None,
    available: np.ndarray | None = None,
) -> PowerPlan:
    """Solve the per-round power-control problem of the module docstring.

    Args:
        h_est: (K,) complex estimated channel gains.
        power_budget: P_k (linear), a scalar for all nodes or (K,).
        clip_G: amplitude bound A of the transmitted symbol (G analog; 1 one-bit, see
            :func:`amplitude_bound`).
        noise_var: N0, complex receiver-noise variance.
        g_th: truncation threshold on |h_est|^2 (nodes below it stay silent).
        privacy: calibration (None: no privacy, full power).
        eta_floor: minimum alignment gain (hardware / sync floor), >= 0.
        sigma_a_max: largest artificial-noise std per real dimension available (None: any).
        available: (K,) bool, nodes that answered READY this round (None: all).
    """
    h, p = _checked_inputs(h_est, power_budget, clip_G, noise_var, g_th, eta_floor, sigma_a_max)
    k = h.shape[0]
    gain2 = np.abs(h) ** 2  # (K,) estimated power gains
    active = _active_set(gain2, g_th, available, k)
    mu_target = privacy.mu_round if privacy is not None else math.inf
    eta_priv = privacy.eta_priv(noise_var, clip_G) if privacy is not None else math.inf
    if not np.any(active):
        log.info("no node above the truncation threshold g_th=%g: round skipped", g_th)
        return PowerPlan(
            active=active, eta=0.0, b=np.zeros(k, dtype=complex), sigma_a=0.0,
            eta_pow=math.inf, eta_priv=eta_priv, amplitude_bound=float(clip_G),
            noise_var=float(noise_var), mu_design=0.0, mu_target=mu_target,
            privacy_slack=0.0, floor_slack=0.0, limited_by="none",
        )

    # Power: |b_k| A = eta A / |h_est_k| <= sqrt(P_k)  =>  eta <= sqrt(P_k) |h_est_k| / A
    eta_pow = float(np.min(np.sqrt(p[active] * gain2[active]))) / clip_G
    eta, limited_by = _alignment_gain(eta_pow, eta_priv, eta_floor, privacy is not None)
    floor_slack = max(eta_floor - eta, 0.0)
    if floor_slack > 0:
        log.warning("eta floor %.3g unreachable with the power budget: eta=%.3g", eta_floor, eta)
    sigma_a = 0.0
    if privacy is not None and eta > eta_priv:
        sigma_a = privacy.sigma_a_required(eta, noise_var, clip_G)
        if sigma_a_max is not None and sigma_a > sigma_a_max:
            sigma_a = float(sigma_a_max)
    # Never let rounding push us above the plan's power: recompute b from the final eta.
    b = np.zeros(k, dtype=complex)
    b[active] = eta * np.conj(h[active]) / gain2[active]
    mu_design, privacy_slack = _privacy_design(privacy, clip_G, eta, noise_var, sigma_a, mu_target)
    if privacy_slack > 1e-9:  # 1e-9: floating-point rounding on the boundary, not a violation
        log.warning(
            "privacy target missed this round: mu_t=%.4g > target %.4g (artificial noise "
            "capped at sigma_a_max=%s)", mu_design, mu_target, sigma_a_max,
        )
    return PowerPlan(
        active=active, eta=float(eta), b=b, sigma_a=float(sigma_a), eta_pow=eta_pow,
        eta_priv=eta_priv, amplitude_bound=float(clip_G), noise_var=float(noise_var),
        mu_design=float(mu_design), mu_target=mu_target, privacy_slack=float(privacy_slack),
        floor_slack=float(floor_slack), limited_by=limited_by,
    )


def _checked_inputs(
    h_est: np.ndarray, power_budget: float | np.ndarray, clip_G: float, noise_var: float,
    g_th: float, eta_floor: float, sigma_a_max: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(h_est, P_k as (K,)) once every argument of :func:`plan_round` is checked (else a
    ValueError naming the argument and what is allowed)."""
    h = np.asarray(h_est)
    if h.ndim != 1 or h.shape[0] < 1:
        raise ValueError(
            f"h_est: shape {h.shape} is invalid; allowed: one complex gain per node, K >= 1"
        )
    if not np.all(np.isfinite(h)):
        raise ValueError("h_est: contains non-finite values; allowed: finite complex gains")
    p = _power_array(power_budget, h.shape[0])
    if not (math.isfinite(clip_G) and clip_G > 0):
        raise ValueError(f"clip_G: {clip_G!r} is invalid; allowed: a finite number > 0")
    if not (math.isfinite(noise_var) and noise_var > 0):
        raise ValueError(f"noise_var: {noise_var!r} is invalid; allowed: a finite number > 0")
    if not (math.isfinite(g_th) and g_th >= 0):
        raise ValueError(f"g_th: {g_th!r} is invalid; allowed: a finite number >= 0")
    if not (math.isfinite(eta_floor) and eta_floor >= 0):
        raise ValueError(f"eta_floor: {eta_floor!r} is invalid; allowed: a finite number >= 0")
    if sigma_a_max is not None and not (sigma_a_max >= 0 and math.isfinite(sigma_a_max)):
        raise ValueError(f"sigma_a_max: {sigma_a_max!r} is invalid; allowed: >= 0 or None")
    return h, p


def _active_set(gain2: np.ndarray, g_th: float, available: np.ndarray | None, k: int) -> np.ndarray:
    """S: the nodes above the truncation threshold (with a nonzero estimate) that are available."""
    active = (gain2 >= g_th) & (gain2 > 0)
    if available is not None:
        av = np.asarray(available, dtype=bool)
        if av.shape != (k,):
            raise ValueError(f"available: shape {av.shape} is invalid; allowed: ({k},) bool")
        active &= av
    return np.asarray(active)


def _alignment_gain(eta_pow: float, eta_priv: float, eta_floor: float,
                    private: bool) -> tuple[float, str]:
    """(eta, what set it): cases 1-3 of the module docstring."""
    if not private or eta_pow < eta_priv:
        eta, limited_by = eta_pow, "power"
    else:
        eta, limited_by = eta_priv, "privacy"
    if eta < eta_floor:
        if eta_floor <= eta_pow:
            eta, limited_by = eta_floor, "floor"
        else:
            eta, limited_by = eta_pow, "power"
    return eta, limited_by


def _privacy_design(privacy: PrivacyRule | None, clip_G: float, eta: float,
                    noise_var: float, sigma_a: float, mu_target: float) -> tuple[float, float]:
    """(mu_design, privacy_slack) of the plan: the per-round GDP mu with the error bound e_max,
    and how far it exceeds the target (0 when met or without privacy)."""
    e_max = privacy.error_bound if privacy is not None else 0.0
    sigma_t = math.sqrt(noise_var / 2.0 + sigma_a**2)
    mu_design = 2.0 * clip_G * eta * (1.0 + e_max) / sigma_t
    privacy_slack = max(mu_design / mu_target - 1.0, 0.0) if privacy is not None else 0.0
    return mu_design, privacy_slack
