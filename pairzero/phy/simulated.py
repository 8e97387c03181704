"""The simulated PHY of ``pairzero simulate``: the nodes' frames cross an in-process air.

``pairzero simulate`` runs the AP's orchestrator and K edge nodes in one process over the
in-process transport; this module is their PHY. As over a radio, READY carries no scalar: the
AP plans the round, SCHEDULE tells every node to send, and each node's
:meth:`SimulatedNodePhy.transmit` puts what it sends on a :class:`SimulatedAir`, from which
:meth:`SimulatedApPhy.receive` takes the round's frames and aggregates them per
``run.method``:

* ``pairzero``: the simulated channel, power control, artificial noise and privacy accounting of
  :class:`pairzero.ota.pipeline.OTARoundRunner` (the same as ``radio.mode: baseband``; only the
  way the scalars reach it differs);
* ``zo_noiseless``: exact aggregation, ĝ = mean of the K scalars;
* ``zo_digital``: every node sends its scalar as a float32 word over orthogonal links, decoded
  error-free; with ``privacy.enabled`` each node first adds its own Gaussian noise, σ = 2·G·z*
  (local DP: one node's sensitivity 2G times the per-round noise multiplier z* of pAirZero's
  calibration; the AP charges μ = 2G/σ = 1/z* per round to every node). The noise of round t
  comes from the stream ``SeedSequence([run.seed, 3, t])``: each node draws the round's
  K-vector and keeps its own entry.

The air also carries each node's exact scalar beside what it sent, which only a simulation
knows: the AP side reports the aggregation's squared error from it (:meth:`round_metrics`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np

from pairzero.config import ExperimentConfig
from pairzero.ota.pipeline import OTARoundRunner
from pairzero.ota.privacy import GaussianDPAccountant, PrivacyRule
from pairzero.phy.baseband import RadiolessNodePhy, node_mask
from pairzero.protocol.interfaces import Idle, PhyResult, ReadyTiming, RoundPlan
from pairzero.protocol.messages import RoundRecord, Schedule

__all__ = ["SIMULATED_METHODS", "SimulatedAir", "SimulatedNodePhy", "SimulatedApPhy"]

log = logging.getLogger(__name__)

#: The ``run.method`` values this PHY aggregates (fo_fedavg sends gradients, not scalars).
SIMULATED_METHODS = ("pairzero", "zo_noiseless", "zo_digital")

#: numpy stream of the digital baseline's local privacy noise (OTA receiver noise uses 2).
_STREAM_LOCAL_DP = 3

#: How long the AP waits for a scheduled frame that never reaches the air (s).
_FRAME_TIMEOUT_S = 600.0


def _local_dp_sigma(cfg: ExperimentConfig) -> float:
    """σ of a node's local privacy noise in ``zo_digital``: 2·G·z* (see the module doc)."""
    cal = PrivacyRule.from_target(cfg.privacy.epsilon, cfg.privacy.delta, cfg.run.rounds)
    return 2.0 * cfg.zo.clip * cal.z_star


def _check_method(cfg: ExperimentConfig) -> None:
    if cfg.run.method not in SIMULATED_METHODS:
        raise ValueError(f"run.method: {cfg.run.method!r} is not simulated by this PHY; "
                         f"allowed: {', '.join(SIMULATED_METHODS)}")


class SimulatedAir:
    """What the nodes sent, per round: node -> (exact scalar, value sent). Thread-safe."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._frames: dict[int, dict[int, tuple[float, float]]] = {}
        self._closed = False

    def close(self) -> None:
        """Stop waiting: a :meth:`take` in progress returns what it has (a node failed)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def send(self, t: int, node: int, scalar: float, sent: float) -> None:
        with self._cv:
            self._frames.setdefault(t, {})[node] = (scalar, sent)
            self._cv.notify_all()

    def take(self, t: int, nodes: Sequence[int], timeout_s: float,
             idle: Idle | None = None) -> dict[int, tuple[float, float]]:
        """Round t's frames once every node of ``nodes`` has sent (or ``timeout_s`` passed:
        those that did not send are absent); the round is then removed from the air."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._cv:
                got = self._frames.get(t, {})
                left = deadline - time.monotonic()
                if all(k in got for k in nodes) or left <= 0 or self._closed:
                    return self._frames.pop(t, {})
                self._cv.wait(min(left, 0.05))
            if idle is not None:
                idle(0.0)  # the control plane stays served while the AP waits


class SimulatedNodePhy(RadiolessNodePhy):
    """Node ``node``'s transmit chain: on SCHEDULE its scalar goes on the air (``zo_digital``:
    as a float32 word, with local privacy noise when ``privacy.enabled``). The AP's PHY
    accounts every node's privacy."""

    digital = False
    no_radio = "this node runs on the simulated PHY (pairzero simulate)"

    def __init__(self, cfg: ExperimentConfig, node: int, air: SimulatedAir) -> None:
        _check_method(cfg)
        self.node = node
        self.k = cfg.nodes.count
        self.air = air
        self.method = cfg.run.method
        self.seed = cfg.run.seed
        private = self.method == "zo_digital" and cfg.privacy.enabled
        self.sigma = _local_dp_sigma(cfg) if private else None
        self.last_prep_s = 0.0
        self.last_slack: tuple[int, float] | None = None
        self.tx_s: dict[int, float] = {}

    def word(self, t: int, scalar: float) -> float:
        """What this node sends for ``scalar`` in round t."""
        if self.method != "zo_digital":
            return scalar
        if self.sigma is not None:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, _STREAM_LOCAL_DP, t]))
            scalar = scalar + float(rng.normal(0.0, self.sigma, size=self.k)[self.node])
        return float(np.float32(scalar))

    def transmit(self, t: int, scalar: float | None, sched: Schedule | None) -> None:
        if scalar is not None:  # None: no scalar for this round (pilots only): nothing to send
            self.air.send(t, self.node, scalar, self.word(t, scalar))


class SimulatedApPhy:
    """RoundPlanner and ApPhy of ``pairzero simulate`` (one object: the plan and the receive
    of a round see the same channel draw); aggregates per ``run.method``."""

    digital = False
    scalar_bound: float | None = None  # READY carries no scalar

    def __init__(self, cfg: ExperimentConfig, air: SimulatedAir) -> None:
        _check_method(cfg)
        self.cfg = cfg
        self.k = cfg.nodes.count
        self.air = air
        self.method = cfg.run.method
        self.runner = OTARoundRunner.from_config(cfg) if self.method == "pairzero" else None
        self.accountant: GaussianDPAccountant | None = None
        self.sigma: float | None = None  # zo_digital's local privacy noise per node
        if self.runner is not None:
            self.accountant = self.runner.accountant
        elif self.method == "zo_digital" and cfg.privacy.enabled:
            self.sigma = _local_dp_sigma(cfg)
            self.accountant = GaussianDPAccountant(self.k)
        self.last: dict[str, float | int | bool | None] = {}

    def plan(self, t: int, nodes: Sequence[int], timing: ReadyTiming | None = None) -> RoundPlan:
        """pairzero: the power plan of round t's channel draw for the nodes that answered
        READY; every method: a frame (SCHEDULE) for every node."""
        if self.runner is None:
            return RoundPlan(tx_sample=0)
        pp = self.runner.plan(self.runner.channel.draw(t), node_mask(self.k, nodes))
        return RoundPlan(eta=pp.eta, sigma_a=pp.sigma_a, noise_std=0.0, tx_sample=0, mu=None)

    def receive(
        self, t: int, seed: int, plan: RoundPlan, ready: Mapping[int, float | None],
        idle: Idle | None = None,
    ) -> PhyResult:
        """Take round t's frames of the READY nodes from the air and aggregate them."""
        frames = self.air.take(t, sorted(ready), _FRAME_TIMEOUT_S, idle)
        frames = {k: v for k, v in frames.items() if k in ready and 0 <= k < self.k}
        if len(frames) < len(ready):
            log.warning("round %d: no frame from nodes %s", t, sorted(set(ready) - set(frames)))
        g = np.zeros(self.k)  # the exact scalars (what only a simulation knows)
        for k, (scalar, _) in frames.items():
            g[k] = scalar
        if self.runner is not None:
            return self._over_the_air(t, g, frames)
        if not frames:
            self.last = {"n_active": 0}
            return PhyResult(g_hat=0.0, present=())
        present = tuple(sorted(frames))
        sent = np.array([frames[k][1] for k in present])
        mse: float | None = None
        if self.method == "zo_noiseless":
            g_hat, sq_err = float(np.mean(sent)), 0.0
        else:  # zo_digital: float32 words decoded error-free (noisy ones with local DP)
            if self.sigma is not None:
                assert self.accountant is not None
                self.accountant.add(2.0 * self.cfg.zo.clip / self.sigma)  # 1/z* per node
                g_hat, mse = float(np.mean(sent)), self.sigma**2 / self.k
            else:
                g_hat = float(np.mean(sent.astype(np.float32)))
            sq_err = (g_hat - float(np.mean(g))) ** 2
        self.last = {"g_true_mean": float(np.mean(g)), "sq_err": sq_err, "n_active": len(present)}
        if mse is not None:
            self.last["mse_closed_form"] = mse
        return PhyResult(g_hat=g_hat, present=present)

    def _over_the_air(self, t: int, g: np.ndarray, frames: Mapping[int, object]) -> PhyResult:
        """pairzero: round t over the simulated channel, privacy accounted."""
        assert self.runner is not None
        res = self.runner.run_round(t, g, available=node_mask(self.k, frames))
        assert self.runner.last_plan is not None
        present = tuple(int(k) for k in np.flatnonzero(self.runner.last_plan.active))
        self.last = {"g_true_mean": float(np.mean(g)), "sq_err": float(res.sq_err),
                     "mse_closed_form": float(res.mse_closed_form), "n_active": int(res.n_active),
                     "mu_t_max": float(np.max(res.mu_t)), "skipped": bool(res.skipped)}
        return PhyResult(g_hat=float(res.g_hat), present=present, eta=float(res.eta), mu=None)

    def clock_report(self) -> tuple[float, float] | None:
        """No radio, no device clock."""
        return None

    def eps_spent(self) -> float | None:
        """Largest epsilon charged to a node so far (None without privacy)."""
        if self.accountant is None or not self.cfg.privacy.enabled:
            return None
        return float(np.max(self.accountant.epsilon(self.cfg.privacy.delta)))

    def restore_accounting(self, records: Sequence[RoundRecord]) -> None:
        """Charge the committed ``records`` again (a simulate run starts with none)."""
        if records:
            raise NotImplementedError(
                "pairzero simulate does not resume: start it in a new run directory")

    def round_metrics(self) -> dict[str, float | int | bool | None]:
        """What only a simulation knows about the last round: the exact scalars' mean, the
        aggregation's squared error and closed-form MSE, |S|, the largest per-node mu_t."""
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                for k, v in self.last.items()}

    def attach_ledger(self, path: str) -> None:
        """No ledger: the accountant lives with the run."""

    def close(self) -> None:
        """Nothing to release."""
