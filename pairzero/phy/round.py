"""The round protocol over the air, built once on the radio front end (:mod:`pairzero.phy.frontend`).

Used by the AP and the nodes of every radio mode (loopback emulator, emulated USRP, USRPs), by
the calibration CLI and by ``bench/phy_nmse.py``. One frame per federated round::

    AP                                                   node k
    ROUND(t, seed) ---------------------------------->   g_k = clip(ZO scalar)      (control plane)
                   <-------------------- READY(t, k)     compute_s, last frame's TX events
    plan(t, ready nodes, timing):
      frame time n_t = now + lead   (lead: the worst SCHEDULE-to-radio latency of the last
                                     LATENCY_ROUNDS rounds, measured from the slack the nodes
                                     report, + radio.tx_lead_s; loopback: the next free slot)
      eta_t, b_k, sigma_a from the latest pilots (the previous frame), power and privacy
    SCHEDULE(t, n_t, eta_t, b_k or none) ------------>   frame at n_t: preamble + pilot
                                                          (+ payload b_k (g_k + w_k) if precoded)
    receive: capture [n_t - margin, n_t + length + margin) (control plane served meanwhile)
      -> pilots: h_k, CFO, delay per node (next round's precoding)
      -> y = eta_t sum_S g_k + noise;  g_hat = estimate_g_hat(y, |S|, eta_t)  (pairzero.ota)

A node is precoded once its estimate is trustworthy: on a shared 10 MHz reference (USRPs) after
one pilot frame, its oscillators' residual offset tracked from then on from the phase advance
between its pilots (:func:`pairzero.phy.tx.track_phase`: the payload is precoded for the phase
predicted at its own sample time, however long ago the last pilot was); in loopback, where
the emulator applies a CFO, after its CFO has been refined from the phase advance between two
consecutive frames (:func:`pairzero.phy.tx.refine_cfo`); one pilot's CFO error times a frame
stride would be too large a phase error. With privacy on, a
node is also precoded only once the change of its gain between two of its pilot frames (the
error a precoding would have made) has been measured: the privacy plan bounds that error from
measurements, never from a configured value (:mod:`pairzero.ota.charging`), so on radios the
first payload is in a node's third frame; and only once its pilot was *significant* in its last
two frames (a statistic noise alone reaches with probability at most
``privacy.error_tail_prob``), so that no node is precoded from a false detection; and only
once the bound on its precoding error is at most
:data:`~pairzero.ota.charging.MAX_PLANNING_BOUND` or rests on
:data:`~pairzero.ota.charging.HOLD_BACK_ERRORS` measured errors (from one or two, that bound is
many times the errors seen, and the plan would put several times the noise a known channel
needs on every node's scalar: usually the payloads start one frame later). Nodes
without such an estimate, and nodes that missed the READY deadline, send pilots only.

S_t is the set of precoded nodes whose pilot is in the frame. A precoded node that does not
send its payload (its own privacy account refuses it, or it has no scalar for the round) sends
nothing at all in that frame, pilot included: the AP then leaves it out of S_t, so |S_t| counts
only the payloads that went out (g_hat unbiased) and its noise share protects nobody's charge.

Privacy (:mod:`pairzero.ota.charging`): the plan is written to the run's privacy ledger before
any SCHEDULE leaves; after the frame every precoded node is charged, from this frame's pilot
estimate and the noise measured in the window's quiet samples where its pilot is present (the
other nodes' noise shares counted only where their pilots are), its worst-case mu (its own
noise share alone) where it is not, or where no frame was received. Each node reports its own
ledger's spend in READY, and the plan admits no payload that would take any account (the AP's
charges, what it told the node, what the node reported) past the target.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import secrets
import time
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from pairzero.config import ExperimentConfig
from pairzero.ota.aggregate import estimate_g_hat, one_bit_symbol
from pairzero.ota.charging import (
    MAX_PLANNING_BOUND,
    NodeBudget,
    NoiseFloor,
    PrivacyBudgetSpent,
    PrivacyLedger,
    RadioPrivacy,
    plan_payload,
    terms_of,
)
from pairzero.ota.power import PowerPlan, amplitude_bound
from pairzero.ota.privacy import PrivacyRule
from pairzero.phy.calibration_file import NodeCalibration, calibrate_burst, radio_identity
from pairzero.phy.frame import FrameLayout
from pairzero.phy.frontend import (
    EventKind,
    Idle,
    RadioError,
    RadioEvent,
    RadioFrontEnd,
    SendReport,
)
from pairzero.phy.rx import BurstReceiver, NodeEstimate, RxResult
from pairzero.phy.schedule import capture_window, frame_stride, quiet_slices
from pairzero.phy.tx import NodePrecoding, build_node_burst, refine_cfo, track_phase
from pairzero.protocol.interfaces import PhyResult, ReadyTiming, RoundPlan
from pairzero.protocol.messages import (
    Calibrate,
    CalResult,
    Precoding,
    RoundRecord,
    Schedule,
    TxEvent,
)
from sync.estimation import presence_threshold

__all__ = ["ReadyTiming", "ApRoundPhy", "NodeRoundPhy"]

log = logging.getLogger(__name__)

#: Largest extra lead (s) the AP adds after nodes report late frames.
MAX_LATE_MARGIN_S = 2.0
#: Rounds over which the AP keeps the worst measured SCHEDULE latency for a frame's lead: one
#: slow round (a node descheduled, a garbage collection) raises the lead for this many rounds,
#: so jitter seen recently is covered by measurement rather than by radio.tx_lead_s alone.
LATENCY_ROUNDS = 20


class ApRoundPhy:
    """The AP side of the round protocol: RoundPlanner and ApPhy over one front end.

    ``shared_reference``: radios on one 10 MHz + PPS (no carrier offset to refine: precode
    after one pilot frame, without CFO pre-compensation). ``realtime``: the front end's clock
    runs in real time (radios): a frame's time is now + the worst SCHEDULE-to-radio latency of
    the last :data:`LATENCY_ROUNDS` rounds (see :meth:`frame_index`) + ``tx_lead_s``;
    otherwise (the lockstep loopback emulator, whose clock moves only as the nodes define their
    streams) frames simply follow each other.
    ``capture_slack_s``: how long after a window is due the capture gives up (s).
    """

    digital = False  # the scalars come over the air, not in READY
    scalar_bound: float | None = None  # READY carries no scalar to bound

    def __init__(
        self,
        cfg: ExperimentConfig,
        frontend: RadioFrontEnd,
        shared_reference: bool = False,
        realtime: bool = False,
        tx_lead_s: float = 0.0,
        capture_slack_s: float = 5.0,
    ) -> None:
        if tx_lead_s < 0 or capture_slack_s <= 0:
            raise ValueError(f"tx_lead_s {tx_lead_s!r} must be >= 0, capture_slack_s "
                             f"{capture_slack_s!r} > 0")
        self.cfg = cfg
        self.k = cfg.nodes.count
        self.frontend = frontend
        self.shared_reference = shared_reference
        self.realtime = realtime
        self.tx_lead_s = tx_lead_s
        self.capture_slack_s = capture_slack_s
        self.layout = FrameLayout(cfg.phy, self.k)
        self.receiver = BurstReceiver(self.layout)
        self.stride = frame_stride(self.layout)
        s = self.layout.payload_template
        self.payload_energy = float(np.vdot(s, s).real)  # y = <s, r>/E_s: noise var / E_s
        p = self.layout.pilot_template
        self.pilot_energy = float(np.vdot(p, p).real)  # a pilot estimate's error: N0 / E_p
        # Receiver noise from the window's quiet samples (before and after the frame). Until
        # the first frame is measured: the configured SNR for unit received amplitude.
        self.noise_floor = NoiseFloor()
        self._quiet = quiet_slices(self.layout)
        self.noise_var_y = 10 ** (-cfg.channel.snr_db / 10) / self.payload_energy
        self.est_err_var = 10 ** (-cfg.channel.snr_db / 10) / self.pilot_energy  # latest frame's
        self.amplitude = amplitude_bound(cfg.ota.scheme, cfg.zo.clip)
        self.privacy = None
        self.charges: RadioPrivacy | None = None
        if cfg.privacy.enabled:
            self.privacy = PrivacyRule.from_target(
                cfg.privacy.epsilon, cfg.privacy.delta, cfg.run.rounds,
                estimation_error_std=cfg.channel.estimation_error_std,
                tail_prob=cfg.privacy.error_tail_prob,
            )
            self.charges = RadioPrivacy(self.privacy, self.k, self.amplitude,
                                        cfg.privacy.error_tail_prob)
        # A pilot statistic noise alone exceeds with probability <= error_tail_prob (the same
        # statistic and delay search as the receiver's presence test at phy.presence_pfa).
        self.significance = presence_threshold(2 * self.receiver.search + 1,
                                               cfg.privacy.error_tail_prob)
        self.estimates: dict[int, NodeEstimate] = {}
        self._rate_weight: dict[int, float] = {}  # per node: the rate tracker's weight (samples)
        # Nodes whose estimate is good enough to precode with (see the module docstring).
        self.refined: set[int] = set()
        self._plans: dict[int, PowerPlan] = {}
        self._next_free = 0  # earliest index the next frame may start at
        self._late_margin_s = 0.0  # extra lead after nodes reported late frames
        self._latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_ROUNDS)
        self._planned_at: float | None = None  # when the last frame time was set (monotonic s)
        self._ap_send_s = 0.0  # from then to the capture command: the SCHEDULEs' sending
        self._last_lead: tuple[int, float] | None = None  # (round, its frame's lead in device s)
        self._measured = False  # a SCHEDULE-to-radio latency has been measured
        self.last_rx: RxResult | None = None

    # ------------------------------------------------------------------ planning
    def frame_index(self, t: int, timing: ReadyTiming | None = None) -> int:
        """Start of round t's frame: now + lead on a radio's clock (never before the end of the
        previous frame plus a gap); on the lockstep emulator's clock, (t + 1) strides (or the
        next free slot after a restart of the AP or the emulator)."""
        timing = timing or ReadyTiming()
        if not self.realtime:
            n = max(self.frontend.now_index(), self._next_free, (t + 1) * self.stride)
            self._next_free = n + self.stride
            return n
        if timing.late_reports:
            self._late_margin_s = min(max(2 * self._late_margin_s, 0.01), MAX_LATE_MARGIN_S)
            log.warning("round %d: %d node(s) reported a late frame: lead raised by %.0f ms", t,
                        timing.late_reports, self._late_margin_s * 1e3)
        else:
            self._late_margin_s *= 0.9
        # The latency a frame's lead must cover: from the AP setting the frame time to the
        # slowest node's radio holding the frame. Measured on the device clock once the nodes
        # report their previous frame's slack (that frame's lead minus the least slack; at
        # least the AP's own sending); before that, estimated: the AP's sending, SCHEDULE one
        # way (half the control-plane round trip), the node's preparation. The lead covers the
        # worst of the last LATENCY_ROUNDS rounds; tx_lead_s and the late margin the rest.
        prev = self._last_lead
        if timing.tx_slack_s is not None and prev is not None and prev[0] == t - 1:
            latency, how = max(prev[1] - timing.tx_slack_s, self._ap_send_s), "measured"
            if not self._measured:  # estimates give way to the first measurement
                self._latencies.clear()
                self._measured = True
        else:
            latency, how = self._ap_send_s + timing.control_s / 2 + timing.tx_prep_s, "estimated"
        if latency > 0:
            self._latencies.append(latency)
        worst = max(self._latencies, default=0.0)
        lead_s = self.tx_lead_s + worst + self._late_margin_s
        now = self.frontend.now_index()
        n = max(now + math.ceil(lead_s * self.frontend.sample_rate - 1e-6), self._next_free)
        self._next_free = n + self.stride
        self._planned_at = time.monotonic()
        self._last_lead = (t, (n - now) / self.frontend.sample_rate)
        log.debug("round %d: frame at sample %d, %.1f ms ahead (SCHEDULE-to-radio latency %.1f ms %s; "
                  "worst of the last %d rounds %.1f ms; late margin %.1f ms)", t, n,
                  (n - now) / self.frontend.sample_rate * 1e3, latency * 1e3, how,
                  len(self._latencies), worst * 1e3, self._late_margin_s * 1e3)
        return n

    def attach_ledger(self, path: str) -> None:
        """Keep the privacy charges durable in ``path`` (the run directory's privacy.jsonl)."""
        if self.charges is not None:
            self.charges.ledger = PrivacyLedger(path, terms_of(self.cfg))

    def _planning_noise(self) -> float:
        """N0 at the aggregate y to plan with: with privacy, the noise floor's lower confidence
        bound (less noise is the conservative side); else its estimate."""
        n0 = (self.noise_floor.lower(self.cfg.privacy.error_tail_prob) if self.charges is not None
              else self.noise_floor.estimate())
        return n0 / self.payload_energy if n0 else self.noise_var_y

    def plan(self, t: int, nodes: Sequence[int], timing: ReadyTiming | None = None) -> RoundPlan:
        """Frame time, η_t, b_k and artificial noise for the nodes in the round (those that sent
        READY in time), from the latest estimates; with privacy, nodes whose budget the round
        would exceed are left out, and the plan is durable before it is returned."""
        lost = self.frontend.check_lock()  # between rounds: no burst or capture in flight
        if lost is not None:
            raise RadioError(f"round {t}: the AP's radio {lost}: it can keep neither time nor "
                             "frequency; the rounds so far are committed (check the reference "
                             "cable / GPSDO, then restart the AP on its run directory)")
        if self.charges is not None and timing is not None:
            for k, mu in timing.spent_mu.items():
                self.charges.note_reported(k, mu)
        plan = self._power_plan(t, nodes)
        # The frame time last: its lead counts from here, after the plan's durable write.
        return dataclasses.replace(plan, tx_sample=self.frame_index(t, timing))

    def _power_plan(self, t: int, nodes: Sequence[int]) -> RoundPlan:
        """:meth:`plan` without the frame time."""
        h = np.zeros(self.k, dtype=complex)
        avail = np.zeros(self.k, dtype=bool)
        for k in nodes:
            e = self.estimates.get(k)
            # With privacy, a node is precoded once its precoding error has been measured and its
            # pilot was significant in its last two frames.
            trusted = self.charges is None or self.charges.precodable(k)
            if e is not None and k in self.refined and 0 <= k < self.k and trusted:
                h[k], avail[k] = e.gain, True
        if not avail.any():
            log.info("round %d: no channel estimates yet: pilots only", t)
            self._plans.pop(t, None)
            return RoundPlan(eta=1.0, precoding={})
        noise_y = self._planning_noise()
        pl = plan_payload(h, avail, noise_y, self.charges, self.privacy, self.cfg.nodes.power_budget,
                          self.amplitude, g_th=self.cfg.channel.truncation_threshold,
                          eta_floor=self.cfg.privacy.eta_floor,
                          sigma_a_max=self.cfg.privacy.max_artificial_noise_std,
                          est_err_var=self.est_err_var)
        for k, why in sorted(pl.refused.items()):
            log.warning("round %d: node %d left out: %s", t, k, why)
        if pl.waiting:
            log.info("round %d: pilots only from nodes %s: their precoding-error bounds (%s), from "
                     "their first frames, exceed %g", t, sorted(pl.waiting),
                     " ".join(f"{pl.waiting[k]:.3g}" for k in sorted(pl.waiting)), MAX_PLANNING_BOUND)
        pp, active, planned, noise_std = pl.power, pl.active, pl.planned, pl.noise_std
        if self.charges is not None and active and log.isEnabledFor(logging.DEBUG):
            log.debug("round %d: eta %.4g limited by %s (eta_pow %.4g, eta_priv %.4g), sigma_a "
                      "%.4g, N0_y %.4g, |h| %s, error bounds %s", t, pp.eta, pp.limited_by,
                      pp.eta_pow, pp.eta_priv, pp.sigma_a, noise_y,
                      " ".join(f"{abs(h[k]):.3g}" for k in active),
                      " ".join(f"{self.charges.planning_bound(k, abs(h[k]), self.est_err_var):.3g}"
                               for k in active))
        if not active and pl.refused:
            if self.charges is not None and self.charges.exhausted(pl.refused):
                raise PrivacyBudgetSpent(
                    f"round {t}: every node's privacy budget is spent (epsilon target "
                    f"{self.cfg.privacy.epsilon:g} at delta {self.cfg.privacy.delta:g}): no "
                    "further payload may be sent; the rounds so far are committed")
            self._plans.pop(t, None)
            return RoundPlan(eta=1.0, precoding={})
        self._plans[t] = pp
        pre = {}
        for k in active:
            e = self.estimates[k]
            b = complex(pp.b[k])
            pre[k] = Precoding(b_re=b.real, b_im=b.imag, cfo=e.cfo, delay=e.delay,
                               ref_index=e.ref_index, mu=planned.get(k, 0.0), noise_var=noise_y)
        if self.charges is not None and pl.cost is not None:
            self.charges.open_round(t, pl.cost)  # durable before any SCHEDULE leaves
        # Artificial noise shared by the nodes: each adds CN(0, 2 noise_std^2) to its scalar, so
        # the AP receives about eta times their sum: sigma_a per real dimension in all.
        mu = max(planned.values()) if planned else None
        return RoundPlan(eta=pp.eta if pp.eta > 0 else 1.0, sigma_a=pp.sigma_a, noise_std=noise_std,
                         mu=mu, precoding=pre)

    # ------------------------------------------------------------------ receive
    def receive(self, t: int, seed: int, plan: RoundPlan, ready: Mapping[int, float | None],
                idle: Idle | None = None) -> PhyResult:
        """Capture round t's frame, update the channel estimates, form ĝ from the payload and
        charge every precoded node (measured where its pilot is in the frame, else planned)."""
        pp = self._plans.pop(t, None)
        if self.realtime and self._planned_at is not None:
            self._ap_send_s = time.monotonic() - self._planned_at
            self._planned_at = None
        start, length = capture_window(self.layout, plan.tx_sample)
        cap = self.frontend.capture(start, length, self.capture_slack_s, idle)
        if not cap.ok or cap.samples is None:
            why = "; ".join(str(e) for e in cap.events) or "no samples"
            log.warning("round %d: frame at sample %d not received (%s): the round completes "
                        "without it", t, plan.tx_sample, why)
            return self._charged(t, plan, f"frame not received ({why})")
        self.noise_floor.add(np.concatenate([cap.samples[q] for q in self._quiet]))
        res = self.receiver.process(cap.samples, start, expected_start=plan.tx_sample)
        self.last_rx = res
        if not res.detected:
            log.warning("round %d: no frame detected (metric %.3g < %.3g)", t, res.metric, res.threshold)
            return self._charged(t, plan, "no frame detected")
        if math.isfinite(res.noise_var) and res.noise_var > 0:
            self.noise_var_y = res.noise_var / self.payload_energy
            self.est_err_var = res.noise_var / self.pilot_energy
        self._update_estimates(res)
        if res.absent:
            log.info("round %d: no pilot from nodes %s", t, res.absent)
        present = {e.node: e for e in res.nodes if e.present}
        # Whoever was precoded and whose pilot is in this frame transmitted its payload (a node
        # that holds its payload back sends no pilot either): it is in y, so it is in S_t and
        # it is charged privacy; only these nodes' noise shares count for each other's charge.
        s = sorted(k for k in plan.precoding if k in present)
        if not s or pp is None:
            return self._charged(t, plan, "pilot absent from the frame")
        g_hat = estimate_g_hat(res.y, len(s), plan.eta, self.cfg.ota.scheme)
        b = {k: complex(plan.precoding[k].b_re, plan.precoding[k].b_im) for k in s}
        gains = {k: present[k].gain for k in s}
        err_var = {k: self.est_err_var for k in s}  # a pilot estimate's error variance
        charged = self._charged(t, plan, "pilot absent from the frame", b, gains, err_var)
        return PhyResult(g_hat=g_hat, present=tuple(s), eta=plan.eta, mu=charged.mu)

    def _charged(self, t: int, plan: RoundPlan, why: str, b: Mapping[int, complex] | None = None,
                 gains: Mapping[int, complex] | None = None,
                 err_var: Mapping[int, float] | None = None) -> PhyResult:
        """Charge round t (measured mu for the nodes in ``gains``, planned mu for the other
        precoded nodes: they may have sent their payload) and return the empty result, with the
        round's largest mu."""
        if self.charges is None:
            return PhyResult(0.0, ())
        charge = self.charges.charge_frame(t, plan.eta, plan.noise_std, self._planning_noise(),
                                           b or {}, gains or {}, err_var or {}, why)
        return PhyResult(0.0, (), mu=max(charge.values()) if charge else None)

    def _update_estimates(self, res: RxResult) -> None:
        for e in res.nodes:
            old = self.estimates.get(e.node)
            if self.charges is not None:
                self.charges.note_pilot(e.node, e.present and e.statistic > self.significance)
            if self.charges is not None and e.present and old is not None and abs(old.gain) > 0:
                # what precoding with the previous estimate would have missed by (privacy plan)
                self.charges.record_error(e.node, abs(e.gain) / abs(old.gain) - 1.0)
            if not e.present:
                self.estimates.pop(e.node, None)
                self.refined.discard(e.node)
            elif self.shared_reference:
                # Radios on a shared 10 MHz reference: only the oscillators' residual offset (a
                # fraction of a hertz) and a slow phase walk, but frames may be a second apart.
                # The rate is tracked from the phase advance between consecutive pilots, and
                # the payload precoded for the phase predicted at its own sample time.
                if old is None:
                    self.estimates[e.node] = dataclasses.replace(e, cfo=0.0)
                    self._rate_weight[e.node] = 0.0
                else:
                    self.estimates[e.node], self._rate_weight[e.node] = track_phase(
                        old, e, self._rate_weight.get(e.node, 0.0))
                self.refined.add(e.node)
            elif old is not None and 0 < e.ref_index - old.ref_index <= 2 * self.stride:
                self.estimates[e.node] = refine_cfo(old, e)
                self.refined.add(e.node)
            else:  # first pilot, or too long since the last one to unwrap the phase advance
                self.estimates[e.node] = e
                self.refined.discard(e.node)

    def restore_accounting(self, records: Sequence[RoundRecord]) -> None:
        """After an AP restart: the charges from the privacy ledger, where a round planned but
        never charged (it may have gone out) is charged its planned mu now; without a ledger,
        the committed rounds' mu to the nodes in S_t."""
        if self.charges is not None:
            self.charges.restore(records)

    def clock_report(self) -> tuple[float, float] | None:
        """The AP radio's (device time s, host clock Unix s) when its clock runs in real time
        (radios), else None (the lockstep emulator)."""
        return self.frontend.clock_report() if self.realtime else None

    def eps_spent(self) -> float | None:
        """Largest ε charged to any node so far (None without privacy)."""
        if self.charges is None:
            return None
        return float(np.max(self.charges.epsilon()))

    def round_metrics(self) -> dict[str, float | int | None]:
        """No extra metrics: the AP of a radio run does not know the nodes' scalars."""
        return {}

    def close(self) -> None:
        self.frontend.close()
        if self.charges is not None and self.charges.ledger is not None:
            self.charges.ledger.close()


class NodeRoundPhy:
    """The node side of the round protocol: this round's frame, sent through one front end.

    Per SCHEDULE the node sends one frame at ``tx_sample``: its preamble and pilot and, when
    the SCHEDULE carries its precoding, the payload ``b_k (g_k + w_k)`` with CFO and delay
    pre-compensation, where w_k ~ CN(0, 2 noise_std^2) (circular: noise_std per real
    dimension, as the accountant assumes) is its share of the artificial noise. The noise comes
    from the operating system's entropy, not from a seed: the AP must not be able to regenerate
    it. One-bit mode sends sign(g_k) instead of g_k (+1 for g_k = 0, the rule of every path:
    :func:`pairzero.ota.aggregate.one_bit_symbol`). What the radio reports (a late or
    underflowed burst) is kept for the next READY (:meth:`take_events`).

    A node the AP precoded that does not send its payload (no scalar for the round, or its
    privacy account refuses it) sends a silent frame: no payload, no noise share and no pilot,
    so the AP leaves it out of S_t (see the module docstring).

    With privacy on, the node keeps its own account (:class:`~pairzero.ota.charging.NodeBudget`,
    durable once :meth:`attach_ledger` is called) and reports its spend in READY
    (:meth:`spent_mu`): a payload that would take it over its target, or a precoding above its
    power budget, is not sent (a silent frame, one ERROR line, a ``privacy_budget`` event in its
    next READY); a payload it sends is counted before it goes to the radio.
    """

    digital = False

    def __init__(self, cfg: ExperimentConfig, node: int, frontend: RadioFrontEnd,
                 send_slack_s: float = 1.0, calibration: NodeCalibration | None = None) -> None:
        if not 0 <= node < cfg.nodes.count:
            raise ValueError(f"node: {node!r} must be in 0..{cfg.nodes.count - 1}")
        self.cfg = cfg
        self.node = node
        self.frontend = frontend
        self.send_slack_s = send_slack_s
        self.layout = FrameLayout(cfg.phy, cfg.nodes.count)
        # This node's entry of radio.calibration_file: its digital scale, phase and timing
        # advance apply to every frame (the analog gain is on the front end).
        self.calibration = calibration
        self._noise = np.random.default_rng(secrets.randbits(128))
        self.sent: list[int] = []  # tx_sample of every frame handed to the radio
        self.tx_s: dict[int, float] = {}  # round t -> seconds from SCHEDULE to radio handoff
        self.last_prep_s = 0.0
        # (round, device s from the frame being in the radio to its time) of the last frame
        self.last_slack: tuple[int, float] | None = None
        self._events: list[TxEvent] = []
        self.budget: NodeBudget | None = None
        if cfg.privacy.enabled:
            cal = PrivacyRule.from_target(cfg.privacy.epsilon, cfg.privacy.delta, cfg.run.rounds)
            self.budget = NodeBudget(cal, amplitude_bound(cfg.ota.scheme, cfg.zo.clip),
                                     power_budget=cfg.nodes.power_budget)

    def attach_ledger(self, path: str) -> None:
        """Keep this node's privacy account durable in ``path`` (it survives a restart)."""
        if self.budget is not None:
            self.budget = NodeBudget(self.budget.cal, self.budget.amplitude,
                                     PrivacyLedger(path, terms_of(self.cfg)),
                                     power_budget=self.budget.power_budget)
            log.info("node %d: privacy account %s: %d payloads, epsilon %.3f spent of %g", self.node,
                     path, self.budget.payloads, self.budget.epsilon(), self.cfg.privacy.epsilon)

    def spent_mu(self) -> float | None:
        """What this node's own privacy account has composed so far (None: privacy off)."""
        return self.budget.spent if self.budget is not None else None

    def clock_report(self) -> tuple[float, float] | None:
        """This node's radio's (device time s, host clock Unix s), None without a device clock."""
        return self.frontend.clock_report()

    def burst(self, scalar: float | None, sched: Schedule) -> npt.NDArray[np.complex64]:
        """This round's frame: pilots, plus the precoded payload when the AP sent precoding; a
        precoded node without a payload (``scalar`` None) sends silence (no pilot either)."""
        p = sched.precoding
        if p is None:
            return build_node_burst(self.layout, self.node, None, None, frame_start=sched.tx_sample)
        if scalar is None:
            return np.zeros(self.layout.length, dtype=np.complex64)
        value: complex = (float(one_bit_symbol(scalar)) if self.cfg.ota.scheme == "one_bit"
                          else float(scalar))
        if sched.noise_std > 0:
            value += complex(*self._noise.normal(0.0, sched.noise_std, 2))
        pre = NodePrecoding(node=self.node, b=complex(p.b_re, p.b_im), cfo=p.cfo, delay=p.delay,
                            ref_index=p.ref_index)
        return build_node_burst(self.layout, self.node, value, pre, frame_start=sched.tx_sample)

    def transmit(self, t: int, scalar: float | None, sched: Schedule | None) -> SendReport | None:
        """Send round t's frame at ``sched.tx_sample``; ``scalar`` None: pilots only (a silent
        frame when the AP precoded this node)."""
        if sched is None:
            raise ValueError(f"round {t}: a radio node transmits on SCHEDULE; the AP runs without "
                             "a radio PHY: set the same radio.mode on the AP and the nodes")
        lost = self.frontend.check_lock()  # between rounds: no burst in flight
        if lost is not None:
            raise RadioError(f"node {self.node}: its radio {lost}: it can keep neither time nor "
                             "frequency, so it stops taking part (check the reference cable / "
                             "GPSDO, then restart the node)")
        t0 = time.perf_counter()
        now = self.frontend.now_index()
        ahead_s = (sched.tx_sample - now) / self.frontend.sample_rate  # device s
        if now > sched.tx_sample:
            ev = RadioEvent(EventKind.LATE_BURST, sched.tx_sample,
                            f"SCHEDULE for sample {sched.tx_sample} handled at sample {now}")
            self._note(t, "late_schedule", ev)
            self.last_slack = (t, ahead_s)
            return None
        if scalar is not None and sched.precoding is not None and self.budget is not None:
            scalar = self._afford(t, scalar, sched)
        if scalar is None and sched.precoding is not None:
            log.warning("node %d round %d: precoded but no payload to send: a silent frame (no "
                        "pilot), so the AP leaves this node out of the round", self.node, t)
        x = self.burst(scalar, sched)
        index = sched.tx_sample
        if self.calibration is not None:
            x, index = calibrate_burst(x, index, self.calibration.factor(),
                                       self.calibration.timing_advance_samples)
        built = time.perf_counter() - t0
        report = self.frontend.send(x, index, self.send_slack_s)
        # What the AP must allow for next time: building the frame plus handing it to the radio
        # (not the wait for the radio's acknowledgement, which comes after the frame's time).
        self.last_prep_s = built + report.handoff_s
        self.tx_s[t] = self.last_prep_s
        self.last_slack = (t, ahead_s - self.last_prep_s * self.frontend.rate_factor)
        log.debug("node %d round %d: frame built in %.1f ms, handed to the radio in %.1f ms, %.1f ms "
                  "before its time", self.node, t, built * 1e3, report.handoff_s * 1e3,
                  (sched.tx_sample - now) / self.frontend.sample_rate * 1e3)
        self.sent.append(sched.tx_sample)
        for ev in report.events:
            self._note(t, _TX_KIND.get(ev.kind, "tx_error"), ev)
        return report

    def _afford(self, t: int, scalar: float, sched: Schedule) -> float | None:
        """The scalar to send (None: a silent frame): a payload over budget, or precoded above
        the node's power budget, is refused; one that fits is counted before it goes to the
        radio."""
        assert self.budget is not None and sched.precoding is not None
        p = sched.precoding
        b_abs = abs(complex(p.b_re, p.b_im))
        cost = self.budget.cost(p.mu, sched.eta, sched.sigma_a, p.noise_var, b_abs)
        self.budget.remember(sched.eta, b_abs)
        if cost > p.mu * (1 + 1e-9):
            log.warning("node %d round %d: the AP planned mu %.4g, but eta %.4g, |b| %.4g and "
                        "sigma_a %.4g imply up to %.4g: counting %.4g", self.node, t, p.mu,
                        sched.eta, b_abs, sched.sigma_a, cost, cost)
        detail = ""
        if self.budget.over_power(b_abs):
            detail = (f"payload refused: precoding |b| {b_abs:.4g} asks for more than the power "
                      f"budget {self.budget.power_budget:g} (nodes.power_budget); silent frame")
        elif not self.budget.allows(cost):
            detail = (f"payload refused: mu {cost:.4g} would take the node past its privacy "
                      f"target (epsilon {self.budget.epsilon():.3f} spent of "
                      f"{self.cfg.privacy.epsilon:g}); silent frame")
        if detail:
            log.error("node %d round %d: %s", self.node, t, detail)
            self._events.append(TxEvent(t=t, kind="privacy_budget", detail=detail))
            return None
        self.budget.charge(t, cost)
        return scalar

    def calibrate(self, c: Calibrate) -> CalResult:
        """Serve a CALIBRATE of ``pairzero calibrate``: set its calibration (``c.apply``: the
        radio's analog TX gain and the digital scale, phase and timing advance of every later
        frame), then send a pilot-only frame at ``c.tx_sample`` with it. What the node runs
        now, the gain as the radio set it, goes back in the CAL_RESULT."""
        gain = float(self.frontend.tx_gain_db)
        detail = ""
        if c.apply:
            try:
                gain = float(self.frontend.set_tx_gain(c.tx_gain_db))
            except (ValueError, RuntimeError) as e:  # RadioError: RuntimeError
                detail = f"TX gain {c.tx_gain_db:g} dB not set: {e}"
            self.calibration = NodeCalibration(
                node=self.node, radio=radio_identity(self.cfg, self.node),
                center_freq_hz=self.cfg.radio.center_freq_hz, sample_rate=self.cfg.phy.sample_rate,
                tx_gain_db=gain, digital_scale=c.digital_scale, phase_rad=c.phase_rad,
                timing_advance_samples=c.timing_advance_samples)
            log.info("node %d calibration pass %d: %s", self.node, c.iteration,
                     self.calibration.describe())
        cal = self.calibration
        sent = False
        now = self.frontend.now_index()
        if not detail and now > c.tx_sample:
            detail = f"CALIBRATE for sample {c.tx_sample} handled at sample {now}"
        elif not detail:
            x = build_node_burst(self.layout, self.node, None, None, frame_start=c.tx_sample)
            index = c.tx_sample
            if cal is not None:
                x, index = calibrate_burst(x, index, cal.factor(), cal.timing_advance_samples)
            report = self.frontend.send(x, index, self.send_slack_s)
            sent = report.sent
            detail = "; ".join(str(e) for e in report.events)[:500]
        if detail:
            log.warning("node %d calibration pass %d: %s", self.node, c.iteration, detail)
        return CalResult(
            node=self.node, iteration=c.iteration, tx_gain_db=gain,
            digital_scale=cal.digital_scale if cal else 1.0, phase_rad=cal.phase_rad if cal else 0.0,
            timing_advance_samples=cal.timing_advance_samples if cal else 0.0, sent=sent,
            detail=detail)

    def _note(self, t: int, kind: str, ev: RadioEvent) -> None:
        log.warning("node %d round %d: %s", self.node, t, ev)
        self._events.append(TxEvent(t=t, kind=kind, detail=str(ev)[:500]))

    def take_events(self) -> tuple[TxEvent, ...]:
        """The radio events since the last call (the node reports them in its next READY)."""
        out, self._events = tuple(self._events[-16:]), []
        return out

    def close(self) -> None:
        self.frontend.close()
        if self.budget is not None and self.budget.ledger is not None:
            self.budget.ledger.close()


_TX_KIND = {EventKind.LATE_BURST: "late_burst", EventKind.UNDERFLOW: "underflow",
            EventKind.NO_ACK: "no_ack"}

