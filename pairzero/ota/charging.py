r"""Privacy charges of the radio path: what each transmission costs a node, from what was measured.

The accountant (:mod:`pairzero.ota.privacy`) composes per-round Gaussian-DP mu_k,t exactly; this
module decides *which* mu_k,t a round costs node k when the signal went over a real channel.
The AP (the adversary of the threat model, docs/threat_model.md) sees the payload aggregate

    y = sum_{j in S} h_j b_j (x_j + w_j) + n,    x_j = g_j (analog) or sign(g_j) (one-bit),

with |x_j| <= A, each node's artificial-noise share w_j ~ CN(0, 2 s^2) (circular: s^2 per real
dimension, drawn by the node from the OS's entropy) and receiver noise n ~ CN(0, N0_y). Replacing
node k's data moves the mean of y by at most 2 A |h_k b_k| in the complex plane, and the noise
is isotropic with per-dimension variance N0_y/2 + s^2 sum_j |h_j b_j|^2, so round t costs node k

    mu_k,t = 2 A |h_k b_k| / sqrt(N0_y/2 + s^2 sum_{j in S} |h_j b_j|^2).

Nothing here is a design value; each factor comes from this round's frame, with a confidence
bound that holds except with probability ``tail_prob`` (``privacy.error_tail_prob``) each:

* |h_k b_k| from the same frame's pilot estimate: |h_k| <= |h^_k| + sqrt(V_k ln(1/p)), V_k = the
  pilot estimate's error variance (a CN error: |e|^2/V_k ~ Exp(1)); other nodes' noise
  contributions with the lower bound |h^_j| - sqrt(V_j ln(1/p)) (>= 0).
* N0 from the samples of the capture window where no node transmits (before and after the
  frame), pooled over the last ``window`` frames, as a chi-square lower confidence bound
  (:class:`NoiseFloor`), never from the pilot-fit residual, which model error inflates.

A node that was precoded but whose pilot is absent from the frame, and every precoded node of a
frame that was not received or not detected, is charged the *planned* mu (:meth:`RadioPrivacy.plan`):
it may have transmitted, and the AP holds the samples. The plan itself bounds the precoding error
e_k = h_k b_k / eta - 1 of the frame to come from the errors measured in node k's recent frames
(:meth:`RadioPrivacy.error_bound`), so that the realized mu stays within the plan.

Budget: a node whose composed mu (charged so far, or told so far, whichever is larger) would
exceed mu* = mu(epsilon, delta) with the planned round is left out of it (:meth:`RadioPrivacy.admit`).
Every plan is written to a durable ledger (:class:`PrivacyLedger`) before any node transmits, and
every charge after the frame: an AP that restarts charges a planned round that has no charge
(it may have been transmitted) before anything else (:meth:`RadioPrivacy.restore`).

The node side (:class:`NodeBudget`) keeps its own account of what it was told and refuses a
payload that would take it over its budget, so a device need not trust the AP's bookkeeping.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import secrets
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import chi2

from pairzero.errors import OperationalError
from pairzero.ota.power import PowerPlan, plan_round
from pairzero.ota.privacy import (
    GaussianDPAccountant,
    PrivacyCalibration,
    charge_logged_rounds,
    epsilon_from_mu,
)
from pairzero.protocol.messages import PrivacyTerms, RoundRecord
from pairzero.runinfo import open_jsonl_for_append

__all__ = [
    "NoiseFloor",
    "PrivacyLedger",
    "LedgerMismatch",
    "PrivacyBudgetSpent",
    "RadioPrivacy",
    "PayloadPlan",
    "plan_payload",
    "NodeBudget",
    "terms_of",
    "mu_of",
    "magnitude_bounds",
    "SIGMA_CONFIDENCE",
]

log = logging.getLogger(__name__)

#: Confidence of the upper bound on a node's precoding-error std from its recent frames (the
#: tail bound on |e| then uses ``tail_prob``).
SIGMA_CONFIDENCE = 0.01
#: Largest relative shortfall of a node's noise share that the shares are scaled up for.
_MAX_SHRINK = 0.9
#: Relative slack for floating-point rounding when a node's budget is compared with mu*.
_BUDGET_RTOL = 1e-9


class LedgerMismatch(OperationalError):
    """The privacy ledger of the run directory was written under other privacy terms."""


class PrivacyBudgetSpent(OperationalError):
    """Every enrolled node's privacy budget is spent: no further round may carry a payload."""


def terms_of(cfg: Any) -> PrivacyTerms:
    """The privacy terms of an :class:`~pairzero.config.ExperimentConfig` (checked at JOIN)."""
    return PrivacyTerms(enabled=bool(cfg.privacy.enabled), clip=float(cfg.zo.clip),
                        epsilon=float(cfg.privacy.epsilon), delta=float(cfg.privacy.delta),
                        rounds=int(cfg.run.rounds))


def mu_of(amplitude: float, sensitivity_gain: float, noise_var_per_dim: float) -> float:
    """Gaussian-DP mu of one release: 2 A |h b| / sigma, sigma^2 the per-dimension noise variance."""
    if noise_var_per_dim <= 0:
        return math.inf if sensitivity_gain > 0 else 0.0
    return 2.0 * amplitude * sensitivity_gain / math.sqrt(noise_var_per_dim)


def magnitude_bounds(h_est: complex, err_var: float, tail_prob: float) -> tuple[float, float]:
    """(lower, upper) confidence bounds on |h| from an estimate with CN(0, err_var) error.

    |h - h_est|^2 / err_var ~ Exp(1), so |h - h_est| <= sqrt(err_var ln(1/p)) except with
    probability p, and |h| lies within that distance of |h_est|.
    """
    r = math.sqrt(max(err_var, 0.0) * math.log(1.0 / tail_prob))
    a = abs(h_est)
    return max(a - r, 0.0), a + r


@functools.lru_cache(maxsize=1024)
def _chi2_low(dof: int) -> float:
    return float(chi2.ppf(SIGMA_CONFIDENCE, dof))


class NoiseFloor:
    """Receiver noise from samples that carry no signal, pooled over the last ``window`` frames.

    For n complex samples of CN(0, N0), sum |x|^2 = (N0/2) chi^2_{2n}; so
    N0 >= 2 sum |x|^2 / chi2.ppf(1 - p, 2n) except with probability p (:meth:`lower`).
    Assumes the receiver noise is stationary over the pooled frames (thermal noise of one
    receiver chain at one gain).
    """

    def __init__(self, window: int = 32) -> None:
        if window < 1:
            raise ValueError(f"window: {window!r} must be >= 1")
        self._frames: deque[tuple[float, int]] = deque(maxlen=window)

    def add(self, samples: np.ndarray) -> None:
        """Pool the noise-only complex samples of one frame."""
        x = np.asarray(samples)
        if x.size == 0:
            return
        s = float(np.sum(np.abs(x.astype(np.complex128)) ** 2))
        if math.isfinite(s):
            self._frames.append((s, int(x.size)))

    @property
    def samples(self) -> int:
        """Complex samples pooled."""
        return sum(n for _, n in self._frames)

    def estimate(self) -> float | None:
        """Unbiased N0 (complex variance), or None before the first frame."""
        n = self.samples
        return sum(s for s, _ in self._frames) / n if n else None

    def lower(self, tail_prob: float) -> float | None:
        """Lower confidence bound on N0 at level 1 - ``tail_prob`` (None before the first frame)."""
        n = self.samples
        if not n:
            return None
        total = sum(s for s, _ in self._frames)
        return 2.0 * total / float(chi2.ppf(1.0 - tail_prob, 2 * n))


class PrivacyLedger:
    """Durable record of the privacy charges: one JSON object per line, flushed and fsynced.

    The first line holds the privacy terms the ledger was written under; opening it under other
    terms raises :class:`LedgerMismatch` naming the field. A torn last line (a process killed
    mid-write) is cut on open. Lines::

        {"kind": "terms", ...PrivacyTerms}
        {"kind": "plan", "id": ..., "t": t, "mu": {"k": mu_planned, ...}}   before the frame
        {"kind": "charge", "id": ..., "t": t, "mu": {"k": mu_charged, ...}, "why": {...}}
        {"kind": "sent", "t": t, "mu": mu}                                  (node ledger)
    """

    def __init__(self, path: str | Path, terms: PrivacyTerms) -> None:
        self.path = Path(path)
        self.terms = terms
        existing = self.path.exists() and self.path.stat().st_size > 0
        self._f = open_jsonl_for_append(self.path)
        self.entries: list[dict[str, Any]] = self._read() if existing else []
        if not self.entries:
            self.append({"kind": "terms", **dataclasses.asdict(terms)})
            return
        head = self.entries[0]
        if head.get("kind") != "terms":
            raise LedgerMismatch(f"{self.path}: no privacy terms on its first line: not a ledger "
                                 "of this version; move it away to start a new one")
        stored = PrivacyTerms(enabled=bool(head.get("enabled")), clip=float(head.get("clip", 0.0)),
                              epsilon=float(head.get("epsilon", 0.0)),
                              delta=float(head.get("delta", 0.0)), rounds=int(head.get("rounds", 0)))
        diff = terms.differences(stored)
        if diff:
            raise LedgerMismatch(f"{self.path}: written under other privacy terms ({'; '.join(diff)}, "
                                 "this run vs the ledger): the spent budget would not be comparable; "
                                 "use the config of that run or a new run directory")

    def _read(self) -> list[dict[str, Any]]:
        out = []
        for i, line in enumerate(self.path.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise LedgerMismatch(f"{self.path}:{i + 1}: not a JSON line ({e}); the ledger is "
                                     "damaged: restore it or use a new run directory") from None
        return out

    def append(self, entry: Mapping[str, Any]) -> None:
        """Write one entry durably (returns after fsync)."""
        line = json.dumps(dict(entry), allow_nan=False, separators=(",", ":"))
        try:
            self._f.write(line + "\n")
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as e:
            raise OperationalError(f"{self.path}: cannot write the privacy ledger: {e.strerror or e} "
                                   "(full disk or read-only directory?)") from None
        self.entries.append(dict(entry))

    def close(self) -> None:
        self._f.close()


def _mu_map(mu: Mapping[int, float]) -> dict[str, float]:
    return {str(k): float(v) for k, v in sorted(mu.items())}


class RadioPrivacy:
    """The AP's planning bounds, budget and charges for the radio path (one per run).

    Args:
        calibration: the per-round rule (target over ``rounds``; its ``error_bound`` is the
            configured floor of the precoding-error bound).
        n_nodes: K.
        amplitude: A, the bound on a node's transmitted symbol (G analog, 1 one-bit).
        tail_prob: probability each confidence bound may fail (per node, per round).
        window: frames pooled for the noise floor and a node's precoding-error history.
        ledger: durable record (None: in memory only, for tools and tests).
    """

    def __init__(self, calibration: PrivacyCalibration, n_nodes: int, amplitude: float,
                 tail_prob: float, window: int = 32, ledger: PrivacyLedger | None = None) -> None:
        if not 0.0 < tail_prob < 1.0:
            raise ValueError(f"tail_prob: {tail_prob!r} must be in (0, 1)")
        self.cal = calibration
        self.k = n_nodes
        self.amplitude = float(amplitude)
        self.tail_prob = float(tail_prob)
        self.mu_budget = calibration.mu_total  # mu* of the whole run
        self.charged = GaussianDPAccountant(n_nodes)  # what the AP charges (measured or planned)
        self.told = GaussianDPAccountant(n_nodes)  # what the nodes were told (their own accounts)
        self._err: dict[int, deque[float]] = {}
        self._window = window
        self.ledger = ledger
        self._open: dict[int, tuple[str, dict[int, float]]] = {}  # t -> (plan id, planned mu)

    # ------------------------------------------------------------------ bounds
    def record_error(self, node: int, e: float) -> None:
        """Note one measured precoding error of node ``node``: e = |h^_k,t| / |h^_k,t-1| - 1, this
        frame's pilot estimate against the one a precoding would have used (b_k = eta
        conj(h^_k,t-1) / |h^_k,t-1|^2, so |h_k,t b_k| / eta - 1; only the magnitude bears on
        privacy). Measured on every frame that carries the node's pilot, payload or not."""
        if math.isfinite(e):
            self._err.setdefault(node, deque(maxlen=self._window)).append(float(e) ** 2)

    def has_history(self, node: int) -> bool:
        """Whether node ``node`` has a measured precoding error: it is not precoded before (its
        error could not be bounded from a measurement)."""
        return bool(self._err.get(node))

    def error_bound(self, node: int) -> float:
        """Bound on |e_k| for node k's next frame: the configured floor, or from its measured
        errors. For a CN(0, sigma^2) error, |1 + e| - 1 ~ Re(e) ~ N(0, sigma^2/2): from n
        measured values, sigma_U^2 = 2 sum e_i^2 / chi2.ppf(SIGMA_CONFIDENCE, n) bounds sigma^2
        at level 1 - SIGMA_CONFIDENCE, and |e| <= sigma_U sqrt(ln(1/tail_prob))."""
        hist = self._err.get(node)
        if not hist:
            return self.cal.error_bound
        sigma_u = math.sqrt(2.0 * sum(hist) / _chi2_low(len(hist)))
        return max(self.cal.error_bound, sigma_u * math.sqrt(math.log(1.0 / self.tail_prob)))

    def planning_bound(self, node: int, h_abs: float, est_err_var: float) -> float:
        """Relative bound on how far |h_k b_k| may exceed eta this round: the precoding-error
        bound plus the pilot estimate's confidence radius r relative to |h^_k| (the charge
        bounds |h_k| by |h^_k| + r, :meth:`planned_mu`)."""
        r = magnitude_bounds(0j, est_err_var, self.tail_prob)[1]
        return self.error_bound(node) + (r / h_abs if h_abs > 0 else math.inf)

    def calibration_for(self, nodes: Iterable[int], h_est: np.ndarray,
                        est_err_var: float = 0.0) -> PrivacyCalibration:
        """The per-round rule with the largest :meth:`planning_bound` of ``nodes`` (eta is common
        to all, so the least certain node sets it)."""
        bound = max((self.planning_bound(k, abs(complex(h_est[k])), est_err_var) for k in nodes),
                    default=self.cal.error_bound)
        return dataclasses.replace(self.cal, error_bound=bound)

    # ------------------------------------------------------------------ planning
    def planned_mu(self, b: np.ndarray, h_est: np.ndarray, active: Sequence[int], noise_std: float,
                   noise_var_y: float, est_err_var: float = 0.0) -> dict[int, float]:
        """mu each active node may cost this round, every planned node transmitting:
        |h_k b_k| <= |b_k| (|h^_k| (1 + e_k) + r) with e_k its precoding-error bound and r the
        confidence radius of a pilot estimate with error variance ``est_err_var`` (the latest
        frame's: this frame's estimate, which the charge uses, has the same); the others'
        noise contributions with |b_j| (|h^_j| (1 - e_j) - r), at least 0."""
        r = magnitude_bounds(0j, est_err_var, self.tail_prob)[1]
        hi, lo = {}, {}
        for k in active:
            a, bk, e = abs(complex(h_est[k])), abs(complex(b[k])), self.error_bound(k)
            hi[k], lo[k] = bk * (a * (1.0 + e) + r), bk * max(a * (1.0 - e) - r, 0.0)
        var = noise_var_y / 2.0 + noise_std**2 * sum(v**2 for v in lo.values())
        return {k: mu_of(self.amplitude, hi[k], var) for k in active}

    def _spent(self) -> np.ndarray:
        """(K,) composed mu per node: the larger of the AP's charges and the node's own account."""
        return np.maximum(self.charged.mu_total(), self.told.mu_total())

    def _headroom(self, spent: float) -> float:
        """mu^2 a node that has spent ``spent`` may still spend."""
        return self.mu_budget**2 * (1.0 + _BUDGET_RTOL) - spent**2

    def admit(self, planned: Mapping[int, float]) -> dict[int, str]:
        """Nodes whose planned mu does not fit their remaining budget -> why (one line each)."""
        spent = self._spent()
        out = {}
        for k, mu in planned.items():
            if mu**2 > self._headroom(float(spent[k])):
                eps_after = epsilon_from_mu(math.hypot(float(spent[k]), mu), self.cal.delta)
                out[k] = (f"privacy budget: this round (mu {mu:.4g}) would take it to epsilon "
                          f"{eps_after:.3f} > target {self.cal.epsilon:g}")
        return out

    def exhausted(self) -> bool:
        """Whether no node can afford even the per-round target any more."""
        return all(self._headroom(float(m)) < self.cal.mu_round**2 for m in self._spent())

    def open_round(self, t: int, planned: Mapping[int, float]) -> None:
        """Make round t's plan durable (before any node transmits) and count what each node is
        told (its own account, :class:`NodeBudget`)."""
        pid = secrets.token_hex(8)
        if self.ledger is not None:
            self.ledger.append({"kind": "plan", "id": pid, "t": t, "mu": _mu_map(planned)})
        self._open[t] = (pid, dict(planned))
        self.told.add(self._vector(planned))

    # ------------------------------------------------------------------ charging
    def measured_mu(self, b: Mapping[int, complex], h_est: Mapping[int, complex],
                    err_var: Mapping[int, float], present: Sequence[int], noise_std: float,
                    noise_var_y: float) -> dict[int, float]:
        """mu of each present payload node from this frame's own pilot estimates (upper bound
        on its |h_k b_k|, lower bounds on the others' noise contributions) and N0_y."""
        lo, hi = {}, {}
        for k in present:
            lo[k], hi[k] = magnitude_bounds(complex(h_est[k]), err_var[k], self.tail_prob)
            bk = abs(complex(b[k]))
            lo[k], hi[k] = lo[k] * bk, hi[k] * bk
        var = noise_var_y / 2.0 + noise_std**2 * sum(v**2 for v in lo.values())
        return {k: mu_of(self.amplitude, hi[k], var) for k in present}

    def charge_frame(self, t: int, eta: float, noise_std: float, noise_var_y: float,
                     b: Mapping[int, complex], gains: Mapping[int, complex],
                     err_var: Mapping[int, float], why_not_measured: str) -> dict[int, float]:
        """Charge round t from its frame: the nodes in ``gains`` (payload sent, pilot measured in
        this frame: gain h^_k, error variance ``err_var``) their measured mu; every other
        planned node its planned mu, for
        ``why_not_measured``. No frame at all: ``gains`` empty. Returns the charges."""
        present = sorted(gains)
        measured = (self.measured_mu(b, gains, err_var, present, noise_std, noise_var_y)
                    if present else {})
        planned = self._open.get(t, ("", {}))[1]
        why = {k: why_not_measured for k in planned if k not in measured}
        if why:
            log.warning("round %d: nodes %s charged their planned privacy cost: %s", t, sorted(why),
                        why_not_measured)
        return self.close_round(t, measured, why)

    def close_round(self, t: int, measured: Mapping[int, float], why: Mapping[int, str]) -> dict[int, float]:
        """Charge round t: ``measured`` mu for the nodes measured in the frame, the planned mu
        for every other planned node (``why``: the reason, for the ledger). Returns the charges."""
        entry = self._open.pop(t, None)
        if entry is None:
            return {}
        pid, planned = entry
        charge = {k: float(measured.get(k, mu)) for k, mu in planned.items()}
        if self.ledger is not None:
            self.ledger.append({"kind": "charge", "id": pid, "t": t, "mu": _mu_map(charge),
                                "planned": {str(k): why[k] for k in sorted(why) if k in planned}})
        self.charged.add(self._vector(charge))
        return charge

    # ------------------------------------------------------------------ restart
    def restore(self, records: Sequence[RoundRecord]) -> list[int]:
        """Rebuild both accounts after an AP restart: from the ledger when it has entries (a plan
        without its charge, a frame that may have gone out before the AP stopped, is charged its
        planned mu: returned as the rounds so charged), else from the committed records."""
        entries = self.ledger.entries[1:] if self.ledger is not None else []
        if not entries:
            charge_logged_rounds(self.charged, ((r.active, r.mu) for r in records))
            charge_logged_rounds(self.told, ((r.active, r.mu) for r in records))
            return []
        plans = {e["id"]: e for e in entries if e.get("kind") == "plan"}
        charges = {e["id"]: e for e in entries if e.get("kind") == "charge"}
        lost = []
        for pid, p in plans.items():
            planned = {int(k): float(v) for k, v in p["mu"].items()}
            self.told.add(self._vector(planned))
            c = charges.get(pid)
            if c is None:
                lost.append(int(p["t"]))
                if self.ledger is not None:  # settle it durably: the next restart finds it charged
                    self.ledger.append({"kind": "charge", "id": pid, "t": p["t"], "mu": p["mu"],
                                        "planned": {k: "planned before a restart, never measured"
                                                    for k in p["mu"]}})
                self.charged.add(self._vector(planned))
            else:
                self.charged.add(self._vector({int(k): float(v) for k, v in c["mu"].items()}))
        if lost:
            log.warning("privacy: rounds %s were planned (and maybe transmitted) before the AP "
                        "stopped, never charged: charged their planned mu now", lost)
        return lost

    # ------------------------------------------------------------------ reporting
    def epsilon(self) -> np.ndarray:
        """(K,) epsilon charged per node so far."""
        return self.charged.epsilon(self.cal.delta)

    def _vector(self, mu: Mapping[int, float]) -> np.ndarray:
        v = np.zeros(self.k)
        for k, m in mu.items():
            if 0 <= k < self.k:
                v[k] = m
        return v


@dataclass(frozen=True)
class PayloadPlan:
    """One round's payload plan: the power plan, who sends (``active``), each node's artificial
    noise share (``noise_std``, per real dimension), the mu each may cost (``planned``; empty
    without privacy) and who was left out for their budget (``refused``: node -> why)."""

    power: PowerPlan
    active: list[int]
    noise_std: float
    planned: dict[int, float]
    refused: dict[int, str]


def plan_payload(
    h_est: np.ndarray, available: np.ndarray, noise_var_y: float, charges: RadioPrivacy | None,
    privacy: PrivacyCalibration | None, power_budget: float, amplitude: float, g_th: float = 0.0,
    eta_floor: float = 0.0, sigma_a_max: float | None = None, est_err_var: float = 0.0,
) -> PayloadPlan:
    """Plan a round's payload (:func:`pairzero.ota.power.plan_round`) with each node's measured
    precoding-error bound (the largest of the round's nodes: eta is common), and leave out the
    nodes whose budget the round would exceed, planning again without them until every planned
    node fits. ``noise_var_y``: N0 at the aggregate (a lower confidence bound with privacy);
    ``est_err_var``: a pilot estimate's error variance (:meth:`RadioPrivacy.planned_mu`)."""
    avail = np.asarray(available, dtype=bool).copy()
    refused: dict[int, str] = {}
    while True:
        cal = privacy
        if charges is not None:
            cal = charges.calibration_for((int(k) for k in np.flatnonzero(avail)), h_est, est_err_var)
        pp = plan_round(h_est, power_budget, amplitude, noise_var_y, g_th=g_th, privacy=cal,
                        eta_floor=eta_floor, sigma_a_max=sigma_a_max, available=avail)
        active = [int(k) for k in np.flatnonzero(pp.active)]
        # Each node's share arrives with a gain of at least eta (1 - bound): sized so that their
        # sum still reaches sigma_a (the plan's) in the worst case.
        shrink = 1.0 - min(cal.error_bound, _MAX_SHRINK) if cal is not None else 1.0
        noise_std = (pp.sigma_a / (pp.eta * shrink * math.sqrt(len(active)))
                     if pp.sigma_a > 0 and pp.eta > 0 and active else 0.0)
        if charges is None or not active:
            return PayloadPlan(pp, active, noise_std, {}, refused)
        planned = charges.planned_mu(pp.b, h_est, active, noise_std, noise_var_y, est_err_var)
        over = charges.admit(planned)
        if not over:
            return PayloadPlan(pp, active, noise_std, planned, refused)
        refused.update(over)
        for k in over:
            avail[k] = False


class NodeBudget:
    """A node's own privacy account: what it was told each payload costs, checked, composed and
    kept durable, so the node refuses a payload that would take it over its target whatever
    the AP's bookkeeping says.

    The cost of a payload is the larger of the AP's planned ``mu`` and the node's own lower
    bound 2 A eta / sqrt(N0_y/2 + sigma_a^2) (its signal arrives with gain ~eta; no more noise
    than the receiver's and the planned artificial noise protects it). A payload is refused when
    sqrt(spent^2 + cost^2) > mu*.
    """

    def __init__(self, calibration: PrivacyCalibration, amplitude: float,
                 ledger: PrivacyLedger | None = None) -> None:
        self.cal = calibration
        self.amplitude = float(amplitude)
        self.mu_budget = calibration.mu_total
        self.ledger = ledger
        self.spent_sq = 0.0
        self.payloads = 0
        if ledger is not None:
            for e in ledger.entries:
                if e.get("kind") == "sent":
                    self.spent_sq += float(e["mu"]) ** 2
                    self.payloads += 1

    @property
    def spent(self) -> float:
        """Composed mu so far."""
        return math.sqrt(self.spent_sq)

    def cost(self, told_mu: float, eta: float, sigma_a: float, noise_var_y: float) -> float:
        """What this payload costs by the node's own reckoning (see the class docstring)."""
        own = mu_of(self.amplitude, eta, noise_var_y / 2.0 + sigma_a**2) if noise_var_y > 0 else math.inf
        return max(float(told_mu), own)

    def allows(self, mu: float) -> bool:
        """Whether a payload costing ``mu`` keeps the node within its target."""
        return self.spent_sq + mu**2 <= self.mu_budget**2 * (1.0 + _BUDGET_RTOL)

    def charge(self, t: int, mu: float) -> None:
        """Count a payload durably (before it is handed to the radio)."""
        if self.ledger is not None:
            self.ledger.append({"kind": "sent", "t": t, "mu": float(mu)})
        self.spent_sq += mu**2
        self.payloads += 1

    def epsilon(self) -> float:
        """epsilon spent so far at the run's delta."""
        return epsilon_from_mu(self.spent, self.cal.delta)
