"""Baseband over-the-air aggregation at the AP, for runs without a radio PHY.

The nodes put their scalars in READY (the control plane's *digital* path) and the AP passes
them through the same simulated channel, power control, artificial noise and privacy
accounting as ``pairzero simulate`` (:class:`pairzero.ota.pipeline.OTARoundRunner`): for the
same scalars, round t gives the same ĝ_t in both. Selected by ``radio.mode: baseband``.

Privacy: none against the AP. The nodes send their exact scalars in READY, so whatever noise
the simulated channel adds afterwards, the AP has already seen g_k: this mode reports
epsilon = infinity (:meth:`BasebandOTA.eps_spent`) and logs no mu. It is for testing the
control plane and the training loop, not for private runs (docs/threat_model.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from pairzero.config import ExperimentConfig
from pairzero.ota.aggregate import RoundResult
from pairzero.ota.pipeline import OTARoundRunner
from pairzero.protocol.interfaces import Idle, PhyResult, ReadyTiming, RoundPlan

__all__ = ["BasebandOTA"]

log = logging.getLogger(__name__)


class BasebandOTA:
    """RoundPlanner and ApPhy of the baseband mode (one object: the plan and the receive of a
    round must see the same channel draw).

    ``digital``: the scalars come in READY (the orchestrator leaves out a node whose READY has
    none); ``scalar_bound``: the clip bound G every node applies (a larger scalar is refused).
    """

    digital = True

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.k = cfg.nodes.count
        self.scalar_bound = cfg.zo.clip
        self.runner = OTARoundRunner.from_config(cfg)
        self.last: RoundResult | None = None
        if cfg.privacy.enabled:
            log.warning("radio.mode baseband: the nodes send their exact scalars to the AP: no "
                        "privacy against the AP (epsilon = inf), whatever privacy.epsilon says")

    def _mask(self, nodes: Sequence[int] | Mapping[int, object]) -> np.ndarray:
        m = np.zeros(self.k, dtype=bool)
        for n in nodes:
            if 0 <= n < self.k:
                m[n] = True
        return m

    def plan(self, t: int, nodes: Sequence[int], timing: ReadyTiming | None = None) -> RoundPlan:
        """Power plan for round t's channel draw and the nodes that answered READY."""
        pp = self.runner.plan(self.runner.channel.draw(t), self._mask(nodes))
        return RoundPlan(eta=pp.eta, sigma_a=pp.sigma_a, noise_std=0.0, tx_sample=-1, mu=None)

    def receive(
        self, t: int, seed: int, plan: RoundPlan, ready: Mapping[int, float | None],
        idle: Idle | None = None,
    ) -> PhyResult:
        """Aggregate the READY scalars over round t's simulated channel."""
        g = np.zeros(self.k)
        usable = {}
        for k, v in ready.items():
            if v is None or not 0 <= k < self.k:  # the orchestrator refuses these first
                log.warning("round %d: node %d left out: %s", t, k, "READY without its scalar"
                            if v is None else f"not an enrolled node (nodes.count = {self.k})")
                continue
            g[k] = usable[k] = v
        res = self.runner.run_round(t, g, available=self._mask(usable))
        self.last = res
        assert self.runner.last_plan is not None
        present = tuple(int(k) for k in np.flatnonzero(self.runner.last_plan.active))
        return PhyResult(g_hat=float(res.g_hat), present=present, eta=float(res.eta), mu=None)

    def clock_report(self) -> tuple[float, float] | None:
        """No radio, no device clock."""
        return None

    def eps_spent(self) -> float | None:
        """epsilon against the AP: infinite (it receives the exact scalars; None without privacy)."""
        return math.inf if self.cfg.privacy.enabled else None
