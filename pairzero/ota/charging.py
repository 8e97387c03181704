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

from pairzero.durable import canonical_digest, chain_genesis, chain_link, write_atomic
from pairzero.errors import OperationalError
from pairzero.ota.power import PowerPlan, plan_round
from pairzero.ota.privacy import (
    GaussianDPAccountant,
    PrivacyRule,
    charge_logged_rounds,
    epsilon_from_mu,
)
from pairzero.protocol.messages import PrivacyTerms, RoundRecord
from pairzero.runinfo import open_jsonl_for_append

__all__ = [
    "NoiseFloor",
    "PrivacyLedger",
    "LedgerMismatch",
    "LedgerCorrupt",
    "ledger_head_path",
    "PrivacyBudgetSpent",
    "RadioPrivacy",
    "PayloadPlan",
    "PlannedCost",
    "plan_payload",
    "NodeBudget",
    "terms_of",
    "mu_of",
    "node_bound",
    "magnitude_bounds",
    "SIGMA_CONFIDENCE",
    "MAX_PLANNING_BOUND",
    "HOLD_BACK_ERRORS",
]

log = logging.getLogger(__name__)

_LEDGER_HEAD_FORMAT = "pairzero-privacy-head/1"
_LEDGER_GENESIS = chain_genesis("pairzero-privacy-ledger")

#: Confidence of the upper bound on a node's precoding-error std from its recent frames (the
#: tail bound on |e| then uses ``tail_prob``).
SIGMA_CONFIDENCE = 0.01
#: Largest relative shortfall of a node's noise share that the shares are scaled up for.
_MAX_SHRINK = 0.9
#: Relative slack for floating-point rounding when a node's budget is compared with mu*.
_BUDGET_RTOL = 1e-9
#: Largest relative bound on |h_k b_k| / eta - 1 (:meth:`RadioPrivacy.planning_bound`) with which
#: a node is precoded while it has fewer than :data:`HOLD_BACK_ERRORS` measured precoding
#: errors. eta is common to the round, so the least certain node's bound e scales the noise the
#: plan puts on every node's scalar by 1 + e (:meth:`PrivacyRule.eta_priv`), and from one or two
#: measured errors e is hundreds or tens of times their size (a chi-square bound from n values:
#: 419 x their rms at n = 1, 52 x at n = 2, 27 x at n = 3): such a node sends pilots only
#: (costing it no privacy) until its bound is at most this (at most twice the noise of a known
#: channel) or it has HOLD_BACK_ERRORS errors measured, whichever comes first (a channel that
#: changes that much between frames is precoded with the bound it has: waiting longer would
#: hardly tighten it).
MAX_PLANNING_BOUND = 1.0
#: Measured precoding errors after which a node is precoded whatever its bound (see above).
#: Until the first payload round of a run, while more than half of the nodes are held back so
#: are the others: a first round of the one or two nodes measured first would carry K/|S| times
#: the noise on g_hat (a real-model run, K = 4: a first round of one node gave g_hat = 1.44,
#: against 0.1-0.5 in the rounds of all four after it), and holding back all of K = 50 until
#: the last is measured cost the opt-tiny loopback curve a round (4 pilot-only rounds, not 3).
HOLD_BACK_ERRORS = 3


class LedgerMismatch(OperationalError):
    """The privacy ledger of the run directory was written under other privacy terms."""


class LedgerCorrupt(OperationalError):
    """The privacy ledger is missing, shorter than its head proves, or altered."""


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


def ledger_head_path(path: str | Path) -> Path:
    """The head file of the ledger at ``path`` (``privacy.jsonl`` -> ``privacy.head``)."""
    return Path(path).with_suffix(".head")


class PrivacyLedger:
    """Durable record of the privacy charges: one JSON object per line, flushed and fsynced,
    hash chained, with a head file that proves its length (:mod:`pairzero.durable`).

    The first line holds the privacy terms the ledger was written under; opening it under other
    terms raises :class:`LedgerMismatch` naming the field. Every line carries ``chain``, the
    hash chain over the entries so far, and after every append ``<name>.head`` records the
    number of entries and the last chain value (atomically). Opening refuses, in one line
    (:class:`LedgerCorrupt`), a ledger that is missing, empty or shorter than its head records,
    one whose chain breaks (a line changed, removed or reordered) or differs from its head's,
    and a chained ledger without a head: an account that lost charges is never resumed from
    (the budget it would grant is not the node's). A torn last line (a process killed
    mid-write, never counted by the head) is cut; a ledger ahead of its head (a stop between
    the line's fsync and the head's update) is accepted and its head rewritten. A ledger
    written before the chain existed is chained from its content, with a warning. Lines::

        {"kind": "terms", ...PrivacyTerms}
        {"kind": "plan", "id": ..., "t": t, "mu": {"k": mu_told, ...},
         "worst": {"k": mu_unmeasured, ...}}                                 before the frame
        {"kind": "charge", "id": ..., "t": t, "mu": {"k": mu_charged, ...}, "planned": {...},
         "present": [...]}                                                   after the frame
        {"kind": "sent", "t": t, "mu": mu}                                  (node ledger)
    """

    def __init__(self, path: str | Path, terms: PrivacyTerms) -> None:
        self.path = Path(path)
        self.head_path = ledger_head_path(self.path)
        self.terms = terms
        head = self._read_head()
        size = self.path.stat().st_size if self.path.exists() else None
        if head is not None and head[0] > 0 and not size:
            what = "is missing" if size is None else "is empty (zero length)"
            raise LedgerCorrupt(f"{self.path}: the privacy ledger {what} but {self.head_path.name} "
                                f"records {head[0]} entries: refusing to start a new account over "
                                "charges already made (restore the ledger or use a new run directory)")
        self.entries, self._chain, chained = self._read() if size else ([], _LEDGER_GENESIS, True)
        self._check_length(head, chained)
        self._f = open_jsonl_for_append(self.path)  # cuts a torn last line, never counted
        if not self.entries:
            self.append({"kind": "terms", **dataclasses.asdict(terms)})
            return
        if head is None or head[0] != len(self.entries):
            self._write_head()
        head0 = self.entries[0]
        if head0.get("kind") != "terms":
            raise LedgerMismatch(f"{self.path}: no privacy terms on its first line: not a ledger "
                                 "of this version; move it away to start a new one")
        stored = PrivacyTerms(enabled=bool(head0.get("enabled")), clip=float(head0.get("clip", 0.0)),
                              epsilon=float(head0.get("epsilon", 0.0)),
                              delta=float(head0.get("delta", 0.0)), rounds=int(head0.get("rounds", 0)))
        diff = terms.differences(stored)
        if diff:
            raise LedgerMismatch(f"{self.path}: written under other privacy terms ({'; '.join(diff)}, "
                                 "this run vs the ledger): the spent budget would not be comparable; "
                                 "use the config of that run or a new run directory")

    def _read_head(self) -> tuple[int, str] | None:
        try:
            obj = json.loads(self.head_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LedgerCorrupt(f"{self.head_path}: the privacy ledger's head file is unreadable "
                                f"({e}); restore it or use a new run directory") from None
        try:
            if obj.get("format") != _LEDGER_HEAD_FORMAT:
                raise ValueError(f"format {obj.get('format')!r}")
            n, chain = int(obj["entries"]), str(obj["chain"])
            if n < 0 or len(bytes.fromhex(chain)) != 32:
                raise ValueError("entries or chain out of range")
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise LedgerCorrupt(f"{self.head_path}: the privacy ledger's head file is damaged ({e}); "
                                "restore it or use a new run directory") from None
        return n, chain

    def _read(self) -> tuple[list[dict[str, Any]], str, bool]:
        """(entries, chain value after the last, whether the lines carry the chain); a torn last
        line (no newline: never committed) is left out."""
        try:
            text = self.path.read_bytes().decode()
        except (OSError, UnicodeDecodeError) as e:
            raise LedgerCorrupt(f"{self.path}: cannot read the privacy ledger ({e})") from None
        lines = text.split("\n")[:-1]  # the part after the last newline is torn
        out: list[dict[str, Any]] = []
        chain, chained = _LEDGER_GENESIS, False
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError("not a JSON object")
            except ValueError as err:
                raise LedgerCorrupt(f"{self.path}:{i + 1}: not a JSON object ({err}); the ledger "
                                    "is damaged: restore it or use a new run directory") from None
            stored = entry.pop("chain", None)
            chain = chain_link(chain, canonical_digest(entry))
            # Lines without the chain only before the first line with it (a ledger written
            # before the chain existed, chained from then on).
            if (stored is not None and stored != chain) or (stored is None and chained):
                raise LedgerCorrupt(f"{self.path}:{i + 1}: the privacy ledger's hash chain breaks "
                                    "here (this line or one before it was changed, removed or "
                                    "reordered); restore it or use a new run directory")
            chained = chained or stored is not None
            out.append(entry)
        return out, chain, chained

    def _check_length(self, head: tuple[int, str] | None, chained: bool) -> None:
        n = len(self.entries)
        if head is None:
            if n and chained:
                raise LedgerCorrupt(f"{self.path}: {n} entries but no head file "
                                    f"{self.head_path.name}: it proves the ledger's length and is "
                                    "written with every entry; refusing a ledger whose length "
                                    "cannot be checked (restore the head or use a new run directory)")
            if n:
                log.warning("%s: written before the privacy ledger was hash chained: its %d entries "
                            "are chained from now on, but whether entries were lost before cannot "
                            "be proven", self.path, n)
            return
        if n < head[0]:
            raise LedgerCorrupt(f"{self.path}: the privacy ledger holds {n} entries but "
                                f"{self.head_path.name} records {head[0]}: charges were lost "
                                "(truncated or replaced); refusing to resume an account that "
                                "would grant budget already spent (restore the ledger or use a "
                                "new run directory)")
        chain = _LEDGER_GENESIS
        for e in self.entries[: head[0]]:
            chain = chain_link(chain, canonical_digest(e))
        if chain != head[1]:
            raise LedgerCorrupt(f"{self.path}: the hash chain at entry {head[0]} differs from "
                                f"{self.head_path.name}: not the ledger the head was written for, "
                                "or its entries were changed")

    def append(self, entry: Mapping[str, Any]) -> None:
        """Write one entry durably (returns after the line's fsync and the head's update)."""
        body = dict(entry)
        chain = chain_link(self._chain, canonical_digest(body))
        line = json.dumps({**body, "chain": chain}, allow_nan=False, separators=(",", ":"))
        try:
            self._f.write(line + "\n")
            self._f.flush()
            os.fsync(self._f.fileno())
            self._chain = chain
            self.entries.append(body)
            self._write_head()
        except OSError as e:
            raise OperationalError(f"{self.path}: cannot write the privacy ledger: {e.strerror or e} "
                                   "(full disk or read-only directory?)") from None

    def _write_head(self) -> None:
        write_atomic(self.head_path, json.dumps({"format": _LEDGER_HEAD_FORMAT,
                                                 "entries": len(self.entries),
                                                 "chain": self._chain}) + "\n")

    def close(self) -> None:
        self._f.close()


def _mu_map(mu: Mapping[int, float]) -> dict[str, float]:
    return {str(k): float(v) for k, v in sorted(mu.items())}


@dataclass(frozen=True)
class PlannedCost:
    """What a round's plan may cost each planned node (:meth:`RadioPrivacy.planned_mu`):
    ``told`` with every planned noise share arriving (what the node is told and counts),
    ``worst`` with its own share alone (admission; the most an unmeasured round is charged),
    and the bounds they come from: ``hi`` on |h_k b_k|, ``lo`` on the gain its share arrives
    with (linear amplitudes)."""

    told: dict[int, float]
    worst: dict[int, float]
    hi: dict[int, float]
    lo: dict[int, float]


class RadioPrivacy:
    """The AP's planning bounds, budget and charges for the radio path (one per run).

    Args:
        rule: the per-round rule (target over ``rounds``; its ``error_bound`` is the
            configured floor of the precoding-error bound).
        n_nodes: K.
        amplitude: A, the bound on a node's transmitted symbol (G analog, 1 one-bit).
        tail_prob: probability each confidence bound may fail (per node, per round).
        window: frames pooled for the noise floor and a node's precoding-error history.
        ledger: durable record (None: in memory only, for tools and tests).
    """

    def __init__(self, rule: PrivacyRule, n_nodes: int, amplitude: float,
                 tail_prob: float, window: int = 32, ledger: PrivacyLedger | None = None) -> None:
        if not 0.0 < tail_prob < 1.0:
            raise ValueError(f"tail_prob: {tail_prob!r} must be in (0, 1)")
        self.cal = rule
        self.k = n_nodes
        self.amplitude = float(amplitude)
        self.tail_prob = float(tail_prob)
        self.mu_budget = rule.mu_total  # mu* of the whole run
        self.charged = GaussianDPAccountant(n_nodes)  # what the AP charges (measured or planned)
        self.told = GaussianDPAccountant(n_nodes)  # what the nodes were told (their own accounts)
        self.reported = np.zeros(n_nodes)  # what each node said it has spent (READY), largest
        self._err: dict[int, deque[float]] = {}
        self._streak: dict[int, int] = {}  # consecutive pilot frames with a significant pilot
        self._window = window
        self.ledger = ledger
        self._open: dict[int, tuple[str, PlannedCost]] = {}  # t -> (plan id, its cost)
        self.opened = False  # a payload round has been planned (by this AP process)

    # ------------------------------------------------------------------ bounds
    def record_error(self, node: int, e: float) -> None:
        """Note one measured precoding error of node ``node``: e = |h^_k,t| / |h^_k,t-1| - 1, this
        frame's pilot estimate against the one a precoding would have used (b_k = eta
        conj(h^_k,t-1) / |h^_k,t-1|^2, so |h_k,t b_k| / eta - 1; only the magnitude bears on
        privacy). Measured on every frame that carries the node's pilot, payload or not."""
        if math.isfinite(e):
            self._err.setdefault(node, deque(maxlen=self._window)).append(float(e) ** 2)

    def error_history(self, node: int) -> int:
        """How many precoding errors of node ``node`` are held (at most the window of frames)."""
        return len(self._err.get(node, ()))

    def has_history(self, node: int) -> bool:
        """Whether node ``node`` has a measured precoding error: it is not precoded before (its
        error could not be bounded from a measurement)."""
        return bool(self._err.get(node))

    def note_pilot(self, node: int, significant: bool) -> None:
        """Note one frame's pilot of node ``node``: ``significant`` when it is present with a
        statistic that noise alone exceeds with probability at most ``tail_prob``
        (:func:`sync.estimation.presence_threshold` at ``tail_prob``); absent or weaker: False."""
        self._streak[node] = self._streak.get(node, 0) + 1 if significant else 0

    def precodable(self, node: int) -> bool:
        """Whether node ``node`` may be precoded: its pilot was significant in its last two
        frames (the estimate a precoding uses is noise only with probability at most
        ``tail_prob``, so one false detection cannot make a node transmit with a gain set from
        noise) and its precoding error has been measured (:meth:`has_history`)."""
        return self._streak.get(node, 0) >= 2 and self.has_history(node)

    def note_reported(self, node: int, spent_mu: float) -> None:
        """What node ``node`` says it has spent (its own ledger, sent in READY): the budget
        admits no round that would take that past mu* (:meth:`admit`)."""
        if 0 <= node < self.k and math.isfinite(spent_mu) and spent_mu > self.reported[node]:
            self.reported[node] = float(spent_mu)

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

    def rule_for(self, nodes: Iterable[int], h_est: np.ndarray,
                        est_err_var: float = 0.0) -> PrivacyRule:
        """The per-round rule with the largest :meth:`planning_bound` of ``nodes`` (eta is common
        to all, so the least certain node sets it)."""
        bound = max((self.planning_bound(k, abs(complex(h_est[k])), est_err_var) for k in nodes),
                    default=self.cal.error_bound)
        return dataclasses.replace(self.cal, error_bound=bound)

    # ------------------------------------------------------------------ planning
    def planned_mu(self, b: np.ndarray, h_est: np.ndarray, active: Sequence[int], noise_std: float,
                   noise_var_y: float, est_err_var: float = 0.0, eta: float = 0.0,
                   sigma_a: float = 0.0) -> PlannedCost:
        """What each active node may cost this round (:class:`PlannedCost`).

        |h_k b_k| <= |b_k| (|h^_k| (1 + e_k) + r) with e_k its precoding-error bound and r the
        confidence radius of a pilot estimate with error variance ``est_err_var`` (the latest
        frame's: this frame's estimate, which the charge uses, has the same); a noise share
        arrives with |b_j| (|h^_j| (1 - e_j) - r), at least 0.

        ``told``: every planned node transmitting its share; at least the node's own bound
        :func:`node_bound` (``eta``, ``sigma_a``), so the node counts exactly what it is told.
        ``worst``: whichever of the *other* planned shares arrive (only the node's own share is
        certain: it goes out with its payload), the largest mu over those subsets, i.e. with
        its own share alone; at least ``told``. What the budget admits a node against
        (:meth:`admit`) and the most a round is charged when it cannot be measured."""
        r = magnitude_bounds(0j, est_err_var, self.tail_prob)[1]
        hi, lo = {}, {}
        for k in active:
            a, bk, e = abs(complex(h_est[k])), abs(complex(b[k])), self.error_bound(k)
            hi[k], lo[k] = bk * (a * (1.0 + e) + r), bk * max(a * (1.0 - e) - r, 0.0)
        var = noise_var_y / 2.0 + noise_std**2 * sum(v**2 for v in lo.values())
        own = node_bound(self.amplitude, eta, sigma_a, noise_var_y) if eta > 0 else 0.0
        told = {k: max(mu_of(self.amplitude, hi[k], var), own) for k in active}
        worst = {k: max(mu_of(self.amplitude, hi[k], noise_var_y / 2.0 + noise_std**2 * lo[k] ** 2),
                        told[k]) for k in active}
        return PlannedCost(told, worst, hi, lo)

    def _spent(self) -> np.ndarray:
        """(K,) composed mu per node: the largest of the AP's charges, what it told the node, and
        what the node reported from its own ledger."""
        return np.maximum(np.maximum(self.charged.mu_total(), self.told.mu_total()), self.reported)

    def _headroom(self, spent: float) -> float:
        """mu^2 a node that has spent ``spent`` may still spend."""
        return self.mu_budget**2 * (1.0 + _BUDGET_RTOL) - spent**2

    def admit(self, worst: Mapping[int, float]) -> dict[int, str]:
        """Nodes whose round would not fit their remaining budget, whatever the round's charge
        turns out to be (``worst``, :meth:`planned_mu`) -> why (one line each)."""
        spent = self._spent()
        out = {}
        for k, mu in worst.items():
            if mu**2 > self._headroom(float(spent[k])):
                eps_after = epsilon_from_mu(math.hypot(float(spent[k]), mu), self.cal.delta)
                out[k] = (f"privacy budget: this round (mu {mu:.4g}) would take it to epsilon "
                          f"{eps_after:.3f} > target {self.cal.epsilon:g}")
        return out

    def exhausted(self, refused: Iterable[int] = ()) -> bool:
        """Whether no node can afford a payload any more: each was ``refused`` this round (its
        remaining budget does not admit the round's worst case, which an eta floor or a noise
        cap keeps where it is) or cannot afford even the per-round target."""
        out = set(refused)
        return all(k in out or self._headroom(float(m)) < self.cal.mu_round**2
                   for k, m in enumerate(self._spent()))

    def open_round(self, t: int, cost: PlannedCost) -> None:
        """Make round t's plan durable (before any node transmits) and count what each node is
        told (its own account, :class:`NodeBudget`)."""
        pid = secrets.token_hex(8)
        if self.ledger is not None:
            self.ledger.append({"kind": "plan", "id": pid, "t": t, "mu": _mu_map(cost.told),
                                "worst": _mu_map(cost.worst)})
        self._open[t] = (pid, cost)
        self.told.add(self._vector(cost.told))
        self.opened = True

    # ------------------------------------------------------------------ charging
    def charge_frame(self, t: int, eta: float, noise_std: float, noise_var_y: float,
                     b: Mapping[int, complex], gains: Mapping[int, complex],
                     err_var: Mapping[int, float], why_not_measured: str) -> dict[int, float]:
        """Charge round t from its frame.

        ``gains``: the planned nodes whose pilot is in this frame (they sent their payload and
        their noise share): gain h^_k with error variance ``err_var[k]``, precoded with ``b[k]``.
        Each is charged its measured mu: |h_k b_k| <= |b_k| (|h^_k| + r_k), and only these
        nodes' noise shares, each arriving with at least |b_j| (|h^_j| - r_j), protect it.
        Every other planned node may have transmitted (an undetected pilot, or no frame:
        ``gains`` empty) and is charged for ``why_not_measured`` with its planned bound on
        |h_k b_k| and, as noise, only its own share and those whose pilots are in the frame
        (the shares whose arrival is certain), at most its ``worst``. ``noise_var_y``: N0 at
        the aggregate, a lower confidence bound. Returns the charges."""
        lo, hi = {}, {}
        for k in sorted(gains):
            lo[k], hi[k] = magnitude_bounds(complex(gains[k]), err_var[k], self.tail_prob)
            bk = abs(complex(b[k]))
            lo[k], hi[k] = lo[k] * bk, hi[k] * bk
        certain = noise_var_y / 2.0 + noise_std**2 * sum(v**2 for v in lo.values())
        measured = {k: mu_of(self.amplitude, hi[k], certain) for k in hi}
        entry = self._open.get(t)
        if entry is None:
            return {}
        cost = entry[1]
        unmeasured = {k: min(cost.worst[k], mu_of(self.amplitude, cost.hi[k],
                                                  certain + noise_std**2 * cost.lo[k] ** 2))
                      for k in cost.told if k not in measured}
        if unmeasured:
            log.warning("round %d: nodes %s charged their unmeasured privacy cost (their own noise "
                        "share and those of the nodes in the frame): %s", t, sorted(unmeasured),
                        why_not_measured)
        return self.close_round(t, {**measured, **unmeasured},
                                {k: why_not_measured for k in unmeasured})

    def close_round(self, t: int, charge: Mapping[int, float], why: Mapping[int, str]) -> dict[int, float]:
        """Charge round t: ``charge`` for the nodes it names, the worst-case mu for every other
        planned node; ``why``: the nodes not measured from the frame, with the reason (for the
        ledger). Returns the charges."""
        entry = self._open.pop(t, None)
        if entry is None:
            return {}
        pid, cost = entry
        out = {k: float(charge.get(k, cost.worst[k])) for k in cost.told}
        if self.ledger is not None:
            self.ledger.append({"kind": "charge", "id": pid, "t": t, "mu": _mu_map(out),
                                "planned": {str(k): why[k] for k in sorted(why) if k in out},
                                "present": sorted(int(k) for k in out if k not in why)})
        self.charged.add(self._vector(out))
        return out

    # ------------------------------------------------------------------ restart
    def restore(self, records: Sequence[RoundRecord]) -> list[int]:
        """Rebuild both accounts after an AP restart from the ledger (a plan without its charge, a
        frame that may have gone out before the AP stopped, is charged its worst-case mu:
        returned as the rounds so charged). Never from the committed records alone: they lack
        the charges of rounds whose frame was lost or whose nodes' pilots were absent, so a
        round log with payload rounds and a ledger without a single plan is refused
        (:class:`LedgerCorrupt`)."""
        entries = self.ledger.entries[1:] if self.ledger is not None else []
        paid = [r.t for r in records if r.active]
        if not entries:
            if paid and self.ledger is not None:
                raise LedgerCorrupt(
                    f"{self.ledger.path}: the round log has {len(paid)} rounds with payloads "
                    f"(the first {paid[0]}) but the privacy ledger holds no charge: refusing to "
                    "rebuild the privacy account from the round log alone (it lacks the charges "
                    "of lost frames and absent pilots); restore the ledger or use a new run "
                    "directory")
            if paid:  # no ledger at all (tools, tests): what the records hold, a lower bound
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
                worst = p.get("worst", p["mu"])  # ledgers before the worst case: the plan
                if self.ledger is not None:  # settle it durably: the next restart finds it charged
                    self.ledger.append({"kind": "charge", "id": pid, "t": p["t"], "mu": worst,
                                        "planned": {k: "planned before a restart, never measured"
                                                    for k in worst}, "present": []})
                self.charged.add(self._vector({int(k): float(v) for k, v in worst.items()}))
            else:
                self.charged.add(self._vector({int(k): float(v) for k, v in c["mu"].items()}))
        if lost:
            log.warning("privacy: rounds %s were planned (and maybe transmitted) before the AP "
                        "stopped, never charged: charged their worst-case mu now", lost)
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
    noise share (``noise_std``, per real dimension), who was left out for their budget
    (``refused``: node -> why), what the round may cost each active node (``cost``; None
    without privacy) and who sends pilots only because its precoding-error bound, from fewer
    than :data:`HOLD_BACK_ERRORS` errors, is above :data:`MAX_PLANNING_BOUND` (``waiting``:
    node -> its bound)."""

    power: PowerPlan
    active: list[int]
    noise_std: float
    refused: dict[int, str]
    cost: PlannedCost | None = None
    waiting: dict[int, float] = dataclasses.field(default_factory=dict)

    @property
    def planned(self) -> dict[int, float]:
        """mu each active node is told (empty without privacy)."""
        return self.cost.told if self.cost is not None else {}

    @property
    def worst(self) -> dict[int, float]:
        """mu each active node is charged at most when its payload cannot be measured."""
        return self.cost.worst if self.cost is not None else {}


def plan_payload(
    h_est: np.ndarray, available: np.ndarray, noise_var_y: float, charges: RadioPrivacy | None,
    privacy: PrivacyRule | None, power_budget: float, amplitude: float, g_th: float = 0.0,
    eta_floor: float = 0.0, sigma_a_max: float | None = None, est_err_var: float = 0.0,
) -> PayloadPlan:
    """Plan a round's payload (:func:`pairzero.ota.power.plan_round`) with each node's measured
    precoding-error bound (the largest of the round's nodes: eta is common), leave out the nodes
    whose bound, from fewer than :data:`HOLD_BACK_ERRORS` measured errors, exceeds
    :data:`MAX_PLANNING_BOUND` (pilots only; before the run's first payload, all nodes while
    more than half are held back), and the nodes whose budget the round's worst case would
    exceed, planning again without them until every planned node fits. ``noise_var_y``: N0 at
    the aggregate (a lower confidence bound with privacy); ``est_err_var``: a pilot estimate's
    error variance (:meth:`RadioPrivacy.planned_mu`)."""
    avail = np.asarray(available, dtype=bool).copy()
    refused: dict[int, str] = {}
    waiting: dict[int, float] = {}
    if charges is not None:
        bounds = {int(k): charges.planning_bound(int(k), abs(complex(h_est[k])), est_err_var)
                  for k in np.flatnonzero(avail)}
        waiting = {k: b for k, b in bounds.items()
                   if b > MAX_PLANNING_BOUND and charges.error_history(k) < HOLD_BACK_ERRORS}
        if waiting and not charges.opened and 2 * (len(bounds) - len(waiting)) < len(bounds):
            # The first payload of a run (or of a restarted AP) waits until at least half of the
            # nodes are ready: a round of the few measured first would carry up to K/|S| times
            # the noise on g_hat (half: at most twice, as MAX_PLANNING_BOUND allows).
            waiting = bounds
        avail[list(waiting)] = False
    while True:
        cal = privacy
        if charges is not None:
            cal = charges.rule_for((int(k) for k in np.flatnonzero(avail)), h_est, est_err_var)
        pp = plan_round(h_est, power_budget, amplitude, noise_var_y, g_th=g_th, privacy=cal,
                        eta_floor=eta_floor, sigma_a_max=sigma_a_max, available=avail)
        active = [int(k) for k in np.flatnonzero(pp.active)]
        # Each node's share arrives with a gain of at least eta (1 - bound): sized so that their
        # sum still reaches sigma_a (the plan's) in the worst case.
        shrink = 1.0 - min(cal.error_bound, _MAX_SHRINK) if cal is not None else 1.0
        noise_std = (pp.sigma_a / (pp.eta * shrink * math.sqrt(len(active)))
                     if pp.sigma_a > 0 and pp.eta > 0 and active else 0.0)
        if charges is None or not active:
            return PayloadPlan(pp, active, noise_std, refused, waiting=waiting)
        cost = charges.planned_mu(pp.b, h_est, active, noise_std, noise_var_y, est_err_var,
                                  eta=pp.eta, sigma_a=pp.sigma_a)
        over = charges.admit(cost.worst)
        if not over:
            return PayloadPlan(pp, active, noise_std, refused, cost, waiting)
        refused.update(over)
        for k in over:
            avail[k] = False


def node_bound(amplitude: float, eta: float, sigma_a: float, noise_var_y: float) -> float:
    """The least a payload can cost a node by its own reckoning: 2 A eta / sqrt(N0_y/2 +
    sigma_a^2) (its signal arrives with gain eta, and no more noise than the receiver's and the
    planned artificial noise protects it); inf without a stated N0."""
    return mu_of(amplitude, eta, noise_var_y / 2.0 + sigma_a**2) if noise_var_y > 0 else math.inf


#: Precodings a node remembers for its own bound on its channel gain (:class:`NodeBudget`).
NODE_GAIN_MEMORY = 4


class NodeBudget:
    """A node's own privacy account: what it was told each payload costs, checked, composed and
    kept durable, so the node refuses a payload that would take it over its target whatever
    the AP's bookkeeping says.

    The cost of a payload is the larger of the AP's planned ``mu`` and the node's own bound
    2 A |b_k| g_ref / sqrt(N0_y/2 + sigma_a^2): its signal arrives with gain |h_k b_k|, and no
    more noise than the receiver's and the planned artificial noise protects it. The node
    does not know |h_k|; g_ref is the largest channel gain its recent precodings implied
    (eta / |b_k| of this one and of the last :data:`NODE_GAIN_MEMORY`), so a precoding made from
    a gain estimate far below what the AP saw before (a noise-level false detection, which
    would make the node transmit far above eta) is counted at what it costs if the channel has
    not faded that much. A precoding above the node's power budget (|b_k| A > sqrt(P)) is a
    protocol violation and refused. A payload is refused when sqrt(spent^2 + cost^2) > mu*.
    """

    def __init__(self, rule: PrivacyRule, amplitude: float,
                 ledger: PrivacyLedger | None = None, power_budget: float = math.inf) -> None:
        self.cal = rule
        self.amplitude = float(amplitude)
        self.power_budget = float(power_budget)
        self.mu_budget = rule.mu_total
        self.ledger = ledger
        self.spent_sq = 0.0
        self.payloads = 0
        self._gains: deque[float] = deque(maxlen=NODE_GAIN_MEMORY)
        if ledger is not None:
            for e in ledger.entries:
                if e.get("kind") == "sent":
                    self.spent_sq += float(e["mu"]) ** 2
                    self.payloads += 1

    @property
    def spent(self) -> float:
        """Composed mu so far."""
        return math.sqrt(self.spent_sq)

    def cost(self, told_mu: float, eta: float, sigma_a: float, noise_var_y: float,
             b_abs: float | None = None) -> float:
        """What this payload costs by the node's own reckoning (see the class docstring);
        ``b_abs``: |b_k| of the precoding (None: the gain the AP planned, eta)."""
        gain = eta
        if b_abs is not None and b_abs > 0 and eta > 0:
            gain = b_abs * max([eta / b_abs, *self._gains])
        return max(float(told_mu), node_bound(self.amplitude, gain, sigma_a, noise_var_y))

    def over_power(self, b_abs: float) -> bool:
        """Whether a precoding asks for more than the node's power budget."""
        return (b_abs * self.amplitude) ** 2 > self.power_budget * (1.0 + 1e-9)

    def remember(self, eta: float, b_abs: float) -> None:
        """Keep the channel gain a precoding the node sent implied (eta / |b_k|)."""
        if eta > 0 and b_abs > 0:
            self._gains.append(eta / b_abs)
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
