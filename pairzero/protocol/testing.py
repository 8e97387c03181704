"""Reference implementations of the control-plane interfaces, for tests and radio-free runs.

* :class:`QuadraticTrainer`: node k minimizes L_k(theta) = 0.5 * ||theta - c_k||^2 with
  theta in R^dim. Its ZO scalar along z is the exact directional derivative z . (theta - c_k)
  (the two-point SPSA estimate of a quadratic has no bias: (L(θ+εz) − L(θ−εz)) / 2ε equals it
  up to rounding), and the update theta <- theta - lr * g_hat * z is exact and cheap, so node
  states can be compared bit for bit.
* :class:`IdealApPhy`: the AP side of the *digital* path, no radios (the node side is the
  baseband mode's :class:`pairzero.phy.baseband.BasebandNodePhy`); the scalars travel inside
  READY and the AP forms g_hat = (eta * sum_k g_k + n) / (|S| eta),
  n ~ N(0, noise_std^2 + sigma_a^2) seeded per round.
* :class:`ConstantPlanner`: the same (eta, sigma_a) every round.

They import nothing above the core: the AP and node processes that run them over ZeroMQ (the
crash/restart tests) are ``python -m tests.roles ap|node`` (tests/roles.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import cast

import numpy as np

from pairzero.protocol.interfaces import Idle, PhyResult, ReadyTiming, RoundPlan
from pairzero.protocol.messages import RoundRecord

__all__ = ["QuadraticTrainer", "IdealApPhy", "ConstantPlanner", "replay_hash"]

log = logging.getLogger(__name__)


class QuadraticTrainer:
    """Exact, cheap stand-in for the ZO engine (see module docstring). float64 weights."""

    def __init__(self, node_id: int, dim: int = 8, manifest: str = "quadratic-v1",
                 compute_delay_s: float = 0.0):
        if dim < 1:
            raise ValueError(f"dim: {dim} must be >= 1")
        if compute_delay_s < 0:
            raise ValueError(f"compute_delay_s: {compute_delay_s} must be >= 0")
        self.node_id = node_id
        self.dim = dim
        self.theta = np.zeros(dim)  # (dim,) shared initial weights
        self.target = np.random.default_rng(1000 + node_id).standard_normal(dim)  # (dim,) c_k
        self._manifest = hashlib.sha256(f"{manifest}:{dim}".encode()).hexdigest()
        self.compute_delay_s = compute_delay_s
        self.applied: list[int] = []  # seeds applied, in order

    def z(self, seed: int) -> np.ndarray:
        """Perturbation direction Z(seed), shape (dim,), identical on every host."""
        return np.random.default_rng(seed).standard_normal(self.dim)

    def compute_scalar(self, t: int, seed: int) -> float:
        if self.compute_delay_s:
            time.sleep(self.compute_delay_s)
        return float(self.z(seed) @ (self.theta - self.target))

    def apply_update(self, seed: int, g_hat: float, lr: float) -> None:
        self.theta = self.theta - lr * g_hat * self.z(seed)
        self.applied.append(seed)

    def replay(self, records: Sequence[RoundRecord]) -> None:
        for r in records:
            self.apply_update(r.seed, r.g_hat, r.lr)

    def model_hash(self) -> str:
        return hashlib.sha256(self.theta.tobytes()).hexdigest()

    def manifest_digest(self) -> str:
        return self._manifest


def replay_hash(records: Sequence[RoundRecord], dim: int = 8) -> str:
    """Model hash of a fresh QuadraticTrainer after replaying ``records`` (the reference)."""
    tr = QuadraticTrainer(0, dim)
    tr.replay(records)
    return tr.model_hash()


class ConstantPlanner:
    """Same plan every round (no power control / privacy)."""

    def __init__(self, eta: float = 1.0, sigma_a: float = 0.0, mu: float | None = None):
        if not eta > 0:
            raise ValueError(f"eta: {eta} must be > 0")
        if sigma_a < 0:
            raise ValueError(f"sigma_a: {sigma_a} must be >= 0")
        self._plan = RoundPlan(eta=eta, sigma_a=sigma_a, mu=mu)

    def plan(self, t: int, nodes: Sequence[int], timing: ReadyTiming | None = None) -> RoundPlan:
        return self._plan


class IdealApPhy:
    """Digital 'over-the-air' sum of the scalars carried in READY (see module docstring).

    Takes a READY without a scalar as absent (``digital`` False: the orchestrator does not
    refuse it), bounds no scalar, accounts no privacy."""

    digital = False
    scalar_bound: float | None = None

    def __init__(self, noise_std: float = 0.0, seed: int = 0):
        if noise_std < 0:
            raise ValueError(f"noise_std: {noise_std} must be >= 0")
        self.noise_std = noise_std
        self.seed = seed

    def receive(self, t: int, seed: int, plan: RoundPlan,
                ready: Mapping[int, float | None], idle: Idle | None = None) -> PhyResult:
        present = tuple(sorted(k for k, g in ready.items() if g is not None))
        if not present:
            return PhyResult(0.0, ())
        y = plan.eta * sum(float(cast(float, ready[k])) for k in present)  # present: not None
        sigma = float(np.hypot(self.noise_std, plan.sigma_a))
        if sigma > 0:
            y += float(np.random.default_rng([self.seed, t]).normal(0.0, sigma))
        return PhyResult(y / (len(present) * plan.eta), present)

    def clock_report(self) -> tuple[float, float] | None:
        """No radio, no device clock."""
        return None

    def restore_accounting(self, records: Sequence[RoundRecord]) -> None:
        """No privacy account to restore."""

    def eps_spent(self) -> float | None:
        return None

    def round_metrics(self) -> dict[str, float | int | None]:
        return {}

    def attach_ledger(self, path: str) -> None:
        """No ledger."""

    def close(self) -> None:
        """Nothing to release."""
