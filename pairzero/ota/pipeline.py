"""Per-round glue for the training loop / AP: channel draw -> power plan -> OTA -> accounting.

Typical use (``pairzero simulate``)::

    ota = OTARoundRunner.from_config(cfg)           # cfg: ExperimentConfig
    for t in range(cfg.run.rounds):
        g = ...                                      # (K,) ZO scalars of the nodes
        res = ota.run_round(t, g)                    # RoundResult; res.g_hat goes to UPDATE
    ota.accountant.epsilon(cfg.privacy.delta)        # (K,) realized epsilon per node

The AP process, which measures h_est itself, calls :func:`pairzero.ota.power.plan_round`
directly with its estimates and uses :meth:`OTARoundRunner.plan` only in loopback.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pairzero.ota.aggregate import RoundResult, Scheme, ota_round
from pairzero.ota.fading import ChannelModel, ChannelState
from pairzero.ota.power import PowerPlan, amplitude_bound, plan_round
from pairzero.ota.privacy import GaussianDPAccountant, PrivacyRule

__all__ = ["OTARoundRunner"]

log = logging.getLogger(__name__)

_STREAM_RX_NOISE = 2


class OTARoundRunner:
    """Simulated OTA rounds with privacy calibration and per-node accounting.

    Args:
        channel: the seeded channel model.
        power_budget: P_k (linear), scalar or (K,).
        clip_G: ZOConfig.clip (G).
        g_th: truncation threshold on |h_est|^2.
        scheme: ``analog`` or ``one_bit``.
        privacy: the per-round rule, or None for no privacy (full power).
        eta_floor: minimum alignment gain.
        sigma_a_max: artificial-noise std cap (None: unlimited).
        seed: seed of the receiver-noise stream (round t uses SeedSequence([seed, 2, t])).
    """

    def __init__(
        self,
        channel: ChannelModel,
        power_budget: float | np.ndarray,
        clip_G: float,
        g_th: float = 0.0,
        scheme: Scheme = "analog",
        privacy: PrivacyRule | None = None,
        eta_floor: float = 0.0,
        sigma_a_max: float | None = None,
        seed: int = 0,
    ) -> None:
        self.channel = channel
        self.power_budget = power_budget
        self.scheme: Scheme = scheme
        self.amplitude = amplitude_bound(scheme, clip_G)
        self.g_th = g_th
        self.privacy = privacy
        self.eta_floor = eta_floor
        self.sigma_a_max = sigma_a_max
        self.seed = int(seed)
        self.accountant = GaussianDPAccountant(channel.n_nodes)
        self.last_plan: PowerPlan | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> OTARoundRunner:
        """Build from an :class:`pairzero.config.ExperimentConfig`."""
        channel = ChannelModel.from_config(cfg.channel, cfg.nodes, cfg.run.seed)
        privacy = None
        if cfg.privacy.enabled:
            privacy = PrivacyRule.from_target(
                cfg.privacy.epsilon, cfg.privacy.delta, cfg.run.rounds,
                estimation_error_std=cfg.channel.estimation_error_std,
                tail_prob=cfg.privacy.error_tail_prob,
            )
        return cls(
            channel, cfg.nodes.power_budget, cfg.zo.clip, g_th=cfg.channel.truncation_threshold,
            scheme=cfg.ota.scheme, privacy=privacy, eta_floor=cfg.privacy.eta_floor,
            sigma_a_max=cfg.privacy.max_artificial_noise_std, seed=cfg.run.seed,
        )

    def plan(self, state: ChannelState, available: np.ndarray | None = None) -> PowerPlan:
        """Power plan for a channel state (uses only state.h_est, as the AP would)."""
        return plan_round(
            state.h_est, self.power_budget, self.amplitude, state.noise_var, g_th=self.g_th,
            privacy=self.privacy, eta_floor=self.eta_floor, sigma_a_max=self.sigma_a_max,
            available=available,
        )

    def run_round(
        self, round_t: int, g: np.ndarray, available: np.ndarray | None = None
    ) -> RoundResult:
        """Draw round t's channel, plan, aggregate g (K,) over the air, account mu_t."""
        state = self.channel.draw(round_t)
        plan = self.plan(state, available)
        self.last_plan = plan  # who was active (plan.active) in the latest round
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _STREAM_RX_NOISE, round_t]))
        res = ota_round(g, state, plan, rng, self.scheme)
        self.accountant.add(res.mu_t)
        log.debug(
            "round %d: |S|=%d eta=%.4g (%s) sigma_a=%.3g max mu_t=%.4g",
            round_t, res.n_active, res.eta, plan.limited_by, res.sigma_a, float(np.max(res.mu_t)),
        )
        return res
