"""Injected interfaces between the control plane and the compute / physical layer.

The AP orchestrator and the edge-node runtime know nothing about models, OTA maths or
radios: they call these small Protocols. The ZO engine implements :class:`Trainer` (and
:class:`ModelReplica` on the AP, optional), the OTA/privacy maths implement
:class:`RoundPlanner`, and the GNU Radio PHY implements :class:`ApPhy` / :class:`NodePhy`.
Reference implementations for tests and radio-free dry runs live in
:mod:`pairzero.protocol.testing`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pairzero.protocol.messages import Precoding, Round, RoundRecord

__all__ = ["RoundPlan", "PhyResult", "RoundPlanner", "ApPhy", "NodePhy", "ModelReplica", "Trainer"]


@dataclass(frozen=True)
class RoundPlan:
    """What the AP announces for one round (all in the units of :class:`messages.Round`).

    ``eta``: alignment gain eta_t (linear amplitude); ``sigma_a``: total artificial-noise std
    the AP plans (real amplitude); ``noise_std``: each node's artificial-noise share;
    ``tx_sample``: payload start on the shared sample clock (-1: PHY decides); ``mu``: the
    round's Gaussian-DP mu_t = 2 G eta / sqrt(sigma_n^2 + sigma_a^2), or None if not accounted;
    ``precoding``: per-node payload precoding (radio PHY), node id -> Precoding; nodes not in
    it send pilots only. Empty: every node gets the same ROUND (digital path).
    """

    eta: float = 1.0
    sigma_a: float = 0.0
    noise_std: float = 0.0
    tx_sample: int = -1
    mu: float | None = None
    precoding: Mapping[int, Precoding] = field(default_factory=dict)


@dataclass(frozen=True)
class PhyResult:
    """What the AP receiver decided: the aggregate g_hat and the set S_t that contributed.

    ``eta``/``mu``: realized values when the PHY revised the plan (e.g. after pilots), else None.
    """

    g_hat: float
    present: tuple[int, ...]
    eta: float | None = None
    mu: float | None = None


class RoundPlanner(Protocol):
    """Power control / privacy: choose (eta, sigma_a, tx time) for round ``t``."""

    def plan(self, t: int, nodes: Sequence[int]) -> RoundPlan:
        """Plan round ``t`` for the nodes expected to transmit."""
        ...


class ApPhy(Protocol):
    """AP receive chain: turn the over-the-air burst of round ``t`` into g_hat.

    ``ready`` maps every node that sent READY to its digital scalar (ideal-PHY loopback) or
    None (radio path). Must return within bounded time even if a node never transmits.
    """

    def receive(
        self, t: int, seed: int, plan: RoundPlan, ready: Mapping[int, float | None]
    ) -> PhyResult:
        """Receive and aggregate round ``t``."""
        ...


class NodePhy(Protocol):
    """Edge-node transmit chain.

    ``digital`` True means the ideal-PHY loopback path: the scalar travels inside READY and
    :meth:`transmit` sends nothing over the air.
    """

    digital: bool

    def transmit(self, t: int, scalar: float, rnd: Round) -> None:
        """Transmit ``scalar`` (after READY) at ``rnd.tx_sample`` with gain/noise from ``rnd``."""
        ...


class ModelReplica(Protocol):
    """A model that follows the round log: theta <- theta - lr * g_hat * Z(seed)."""

    def apply_update(self, seed: int, g_hat: float, lr: float) -> None:
        """Apply one committed update."""
        ...

    def replay(self, records: Sequence[RoundRecord]) -> None:
        """Apply committed records in order (catch-up); equals apply_update on each."""
        ...

    def model_hash(self) -> str:
        """Hash of the current trainable weights (hex), identical across hosts for equal weights."""
        ...


class Trainer(ModelReplica, Protocol):
    """Edge-node compute: the ZO scalar of the local loss along Z(seed).

    :meth:`compute_scalar` must leave the weights as they were (or undo any perturbation it
    keeps pending in the next apply_update/replay): the AP may re-run a round after a restart.
    """

    def compute_scalar(self, t: int, seed: int) -> float:
        """Clipped two-point ZO scalar g_k for round ``t`` (loss units per unit perturbation)."""
        ...

    def manifest_digest(self) -> str:
        """Hash of the trainable-parameter manifest that keys Z(seed) (checked at JOIN)."""
        ...
