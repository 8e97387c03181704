"""Injected interfaces between the control plane and the compute / physical layer.

The AP orchestrator and the edge-node runtime know nothing about models, OTA maths or
radios: they call these small Protocols. The ZO engine implements :class:`Trainer` (and
:class:`ModelReplica` on the AP, optional), the OTA/privacy maths implement
:class:`RoundPlanner`, and the GNU Radio PHY implements :class:`ApPhy` / :class:`NodePhy`.
Every member the AP and the nodes use is declared here (nothing is probed with ``getattr``):
the baseband PHYs (:mod:`pairzero.phy.baseband`), the radio round protocol
(:mod:`pairzero.phy.round`) and the reference implementations for tests
(:mod:`pairzero.protocol.testing`) implement all of it; :mod:`radio.factory` builds the one a
run's mode needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pairzero.protocol.messages import (
    Calibrate,
    CalResult,
    Precoding,
    RoundRecord,
    Schedule,
    TxEvent,
)

__all__ = [
    "RoundPlan", "PhyResult", "ReadyTiming", "RoundPlanner", "ApPhy", "ApPhyPlanner", "NodePhy",
    "ModelReplica", "Trainer", "Idle",
]

#: Called by the PHY while it waits for samples (seconds to wait at most): the AP passes its
#: control-plane pump, so heartbeats, LEAVEs and JOINs are served during a capture.
Idle = Callable[[float], None]


@dataclass(frozen=True)
class RoundPlan:
    """What the AP announces for one round (all in the units of :class:`messages.Round`).

    ``eta``: alignment gain eta_t (linear amplitude); ``sigma_a``: total artificial-noise std
    the AP plans (real amplitude); ``noise_std``: each node's artificial-noise share;
    ``tx_sample``: frame start on the shared sample clock (-1: no frame, the digital path:
    no SCHEDULE is sent); ``mu``: the
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

    def schedule_for(self, t: int, node: int) -> Schedule:
        """The SCHEDULE node ``node`` gets for round t: the frame time and its own precoding
        (none: it sends its pilots only)."""
        return Schedule(t=t, node=node, tx_sample=self.tx_sample, eta=self.eta,
                        noise_std=self.noise_std, sigma_a=self.sigma_a,
                        precoding=self.precoding.get(node))


@dataclass(frozen=True)
class ReadyTiming:
    """What the control plane measured in a round, for the frame time (seconds).

    ``control_s``: the worst control-plane round trip of the nodes in the round (their ROUND ->
    READY time at the AP minus their own compute time); ``tx_prep_s``: the worst time a node
    took from SCHEDULE to its radio for its last frame; ``tx_slack_s``: the least slack a node
    reported for its frame of the previous round (device seconds from the frame being in its
    radio to its time; negative: late; None: none reported); ``late_reports``: nodes that
    reported a late or underflowed frame in their READY. ``spent_mu``: node -> the privacy
    spend (Gaussian-DP mu) its own ledger reported in READY, which the plan must respect.
    """

    control_s: float = 0.0
    tx_prep_s: float = 0.0
    late_reports: int = 0
    tx_slack_s: float | None = None
    spent_mu: Mapping[int, float] = field(default_factory=dict)


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
    """Power control / privacy: choose (eta, sigma_a, frame time) for round ``t``."""

    def plan(self, t: int, nodes: Sequence[int], timing: ReadyTiming | None = None) -> RoundPlan:
        """Plan round ``t`` for the nodes that answered READY in time."""
        ...


class ApPhy(Protocol):
    """AP receive chain: turn the over-the-air burst of round ``t`` into g_hat.

    ``ready`` maps every node that sent READY to its digital scalar (ideal-PHY loopback) or
    None (radio path). Must return within bounded time even if a node never transmits.

    ``digital``: the scalars come in READY (baseband, ideal-PHY tests): the orchestrator leaves
    out a node whose READY has none; ``scalar_bound``: the largest |scalar| a READY may carry
    (the clip bound G; None: not checked).
    """

    digital: bool
    scalar_bound: float | None

    def receive(
        self, t: int, seed: int, plan: RoundPlan, ready: Mapping[int, float | None],
        idle: Idle | None = None,
    ) -> PhyResult:
        """Receive and aggregate round ``t``; call ``idle`` while waiting for samples."""
        ...

    def clock_report(self) -> tuple[float, float] | None:
        """(device time s, host clock Unix s) of the AP's radio now, when it has a device clock
        set at a PPS edge (the AP then checks every joining node's: CLOCK_CHECK); else None."""
        ...

    def restore_accounting(self, records: Sequence[RoundRecord]) -> None:
        """After an AP (re)start, before any round: bring the privacy account up to the
        committed ``records`` (and to what the privacy ledger says was planned)."""
        ...

    def eps_spent(self) -> float | None:
        """Largest epsilon charged to any node so far (inf: no privacy against the AP; None:
        privacy not accounted)."""
        ...

    def round_metrics(self) -> Mapping[str, float | int | None]:
        """Extra fields of the last received round's metrics row (e.g. the simulated channel's
        squared error, which only a PHY that knows the true scalars can tell); may be empty."""
        ...

    def attach_ledger(self, path: str) -> None:
        """Keep the privacy charges durable in ``path`` (no-op without privacy accounting)."""
        ...

    def close(self) -> None:
        """Release the radio and the ledger (idempotent)."""
        ...


class ApPhyPlanner(RoundPlanner, ApPhy, Protocol):
    """The planner and the receive chain in one object, as :func:`radio.factory.build_ap_phy`
    builds them for every mode: the plan and the receive of a round see the same channel."""


class NodePhy(Protocol):
    """Edge-node transmit chain.

    ``digital`` True means the digital path (baseband mode, ideal-PHY tests): the scalar
    travels inside READY; :meth:`transmit` is called once READY is sent, with no schedule, and
    sends nothing over the air. Otherwise :meth:`transmit` is called on SCHEDULE.
    ``last_prep_s``: seconds the last frame took from SCHEDULE to the radio (reported in READY);
    ``last_slack``: (round, device seconds from the frame being in the radio to its time;
    negative: late) of the last frame, or None (reported in the next READY);
    ``tx_s``: round -> seconds from SCHEDULE to the radio, per frame sent (the node's report).
    """

    digital: bool
    last_prep_s: float
    last_slack: tuple[int, float] | None

    @property
    def tx_s(self) -> Mapping[int, float]:
        """Round -> seconds from SCHEDULE to the radio, per frame sent."""
        ...

    def transmit(self, t: int, scalar: float | None, sched: Schedule | None) -> object:
        """Transmit round t's frame: ``scalar`` (None: pilots only) as ``sched`` says."""
        ...

    def take_events(self) -> tuple[TxEvent, ...]:
        """What went wrong with the frames sent since the last call (for the next READY)."""
        ...

    def spent_mu(self) -> float | None:
        """The privacy spend (Gaussian-DP mu) of the node's own account so far, for READY
        (None: no account: privacy off, or the digital path, which is not private)."""
        ...

    def clock_report(self) -> tuple[float, float] | None:
        """(device time s, host clock Unix s) of the node's radio now (CLOCK_REPORT); None
        without a device clock."""
        ...

    def calibrate(self, c: Calibrate) -> CalResult:
        """Serve a CALIBRATE of ``pairzero calibrate``: apply its setting, send a pilot frame,
        and say what was done (``sent`` False with the reason when there is no radio)."""
        ...

    def attach_ledger(self, path: str) -> None:
        """Keep this node's privacy account durable in ``path`` (no-op without privacy)."""
        ...

    def close(self) -> None:
        """Release the radio and the ledger (idempotent)."""
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
