"""Baseband mode (``radio.mode: baseband``): the PHY of runs without samples, AP and node side.

The nodes put their scalars in READY (the control plane's *digital* path) and the AP passes
them through the same simulated channel, power control, artificial noise and privacy
accounting as ``pairzero simulate`` (:class:`pairzero.ota.pipeline.OTARoundRunner`): for the
same scalars, round t gives the same ĝ_t in both. The node side (:class:`BasebandNodePhy`) sends
nothing over the air. Built by :mod:`radio.factory` for ``radio.mode: baseband``; the
control-plane tests use the same node PHY.

Privacy: none against the AP. The nodes send their exact scalars in READY, so whatever noise
the simulated channel adds afterwards, the AP has already seen g_k: this mode reports
epsilon = infinity (:meth:`BasebandApPhy.eps_spent`) and logs no mu. It is for testing the
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
from pairzero.protocol.messages import Calibrate, CalResult, RoundRecord, Schedule, TxEvent

__all__ = ["BasebandApPhy", "BasebandNodePhy"]

log = logging.getLogger(__name__)


def node_mask(k: int, nodes: Sequence[int] | Mapping[int, object]) -> np.ndarray:
    """The (k,) boolean mask of the enrolled nodes among ``nodes`` (others are ignored)."""
    m = np.zeros(k, dtype=bool)
    for n in nodes:
        if 0 <= n < k:
            m[n] = True
    return m


class BasebandApPhy:
    """RoundPlanner and ApPhy of the baseband mode (one object: the plan and the receive of a
    round must see the same channel draw).

    ``digital``: the scalars come in READY (the orchestrator leaves out a node whose READY has
    none); ``scalar_bound``: the clip bound G every node applies (a larger scalar is refused).
    """

    digital = True

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.k = cfg.nodes.count
        self.scalar_bound: float | None = cfg.zo.clip
        self.runner = OTARoundRunner.from_config(cfg)
        self.last: RoundResult | None = None
        if cfg.privacy.enabled:
            log.warning("radio.mode baseband: the nodes send their exact scalars to the AP: no "
                        "privacy against the AP (epsilon = inf), whatever privacy.epsilon says")

    def plan(self, t: int, nodes: Sequence[int], timing: ReadyTiming | None = None) -> RoundPlan:
        """Power plan for round t's channel draw and the nodes that answered READY."""
        pp = self.runner.plan(self.runner.channel.draw(t), node_mask(self.k, nodes))
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
        res = self.runner.run_round(t, g, available=node_mask(self.k, usable))
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

    def restore_accounting(self, records: Sequence[RoundRecord]) -> None:
        """Nothing to restore: baseband charges no privacy (the AP sees the exact scalars)."""

    def round_metrics(self) -> dict[str, float | int | None]:
        """The simulated channel's error of the last round: (g_hat - mean g)^2, mean g, the
        closed-form MSE and |S| (the AP knows the true scalars here, and only here)."""
        last = self.last
        if last is None:
            return {}
        return {"sq_err": float(last.sq_err), "g_true_mean": float(last.true_mean),
                "mse_closed_form": float(last.mse_closed_form), "n_active": int(last.n_active)}

    def attach_ledger(self, path: str) -> None:
        """No ledger: nothing is charged."""

    def close(self) -> None:
        """Nothing to release."""


class RadiolessNodePhy:
    """The NodePhy members of a node without a radio (baseband, simulated): no events, no
    device clock, nothing to calibrate, no privacy account of its own (the AP's, or none)."""

    no_radio = "this node runs without a radio PHY (radio.mode: baseband)"

    def take_events(self) -> tuple[TxEvent, ...]:
        return ()

    def spent_mu(self) -> float | None:
        """No account of its own: the scalar goes to the AP as it is, or the AP accounts it."""
        return None

    def clock_report(self) -> tuple[float, float] | None:
        """No radio, no device clock."""
        return None

    def calibrate(self, c: Calibrate) -> CalResult:
        """No radio to calibrate: says so (nothing sent)."""
        return CalResult(node=c.node, iteration=c.iteration, tx_gain_db=0.0, digital_scale=1.0,
                         phase_rad=0.0, timing_advance_samples=0.0, sent=False,
                         detail=self.no_radio)

    def attach_ledger(self, path: str) -> None:
        """No ledger of its own (see :meth:`spent_mu`)."""

    def close(self) -> None:
        """Nothing to release."""


class BasebandNodePhy(RadiolessNodePhy):
    """Node side of the digital path: nothing goes over the air, the scalar travels in READY;
    remembers what it "sent" (round, scalar)."""

    digital = True

    def __init__(self) -> None:
        self.last_prep_s = 0.0
        self.last_slack: tuple[int, float] | None = None
        self.tx_s: dict[int, float] = {}
        self.sent: list[tuple[int, float]] = []

    def transmit(self, t: int, scalar: float | None, sched: Schedule | None) -> None:
        if scalar is not None:
            self.sent.append((t, scalar))

