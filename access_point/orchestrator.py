"""Access-point round orchestration (control plane), single-threaded over a ServerTransport.

One round t:

1. seed s_t = :func:`round_seed` (master seed, t) -- deterministic, so a re-run after a
   crash uses the same perturbation;
2. broadcast ROUND to every member;
3. collect READY until every expected node answered or ``ready_timeout_s`` passed (a node
   that never answers costs at most the deadline, never a hang); each READY also tells the
   node's compute time, so the rest of its ROUND -> READY time is the control-plane round trip;
4. ``planner.plan(t, ready nodes, timing)`` -> (eta_t, sigma_a, noise share, frame time,
   per-node precoding); with a radio PHY (a frame time), SCHEDULE to every member;
5. ``phy.receive(..., idle=pump)`` -> g_hat and the set S_t actually present (no node present:
   g_hat=0, a no-op update, so round numbering stays contiguous); the control plane is served
   while the PHY waits for samples (heartbeats, LEAVE, JOIN);
6. the optional AP model replica applies the update and hashes it;
7. **commit** the record to the round log (fsynced);
8. broadcast UPDATE (with the expected model hash every ``hash_every`` rounds);
9. the metrics get one row (:mod:`pairzero.metrics`: ``round`` = t + 1, rounds completed).

Commit (7) happens after the content is decided (5, 6) and before anything leaves (8): a
crash before 7 re-runs round t from scratch after restart (no node has applied it); a crash
after 7 leaves nodes behind by one, which they fill from the log by catch-up. Between and
during rounds the AP serves JOIN, CATCHUP_REQUEST, LEAVE and HEARTBEAT; undecodable or
out-of-place messages are logged and dropped.

Hostile or broken peers: every field a message carries is checked where it is handled, beyond
what :func:`~pairzero.protocol.messages.decode` checks (node ids within the enrolled range
``0..node_count-1`` at JOIN, a READY's scalar present and within the clip bound when the PHY
takes scalars in READY, rounds a node claims to have applied at most those committed). An
exception while handling one message is logged with the peer and the message dropped: one
message never stops the AP. Only :class:`~pairzero.errors.OperationalError` (the round log
cannot be written or read) ends the run.

A node is out of the current round as soon as the AP knows it cannot answer: it sent LEAVE,
its connection closed (the transport reports it), it was silent for 3 heartbeats, or its
READY was refused; the AP then stops waiting for it instead of waiting for the READY deadline.

Empty rounds (no node present, e.g. a dead channel: the PHY detects no frame) are committed as
no-op updates and counted, as are partial rounds (fewer nodes than ``node_count``);
``max_empty_rounds`` consecutive empty rounds stop the run with :attr:`Orchestrator.stop_reason`
set (the AP then exits with status 1). The counts are rebuilt from the round log on resume;
the consecutive count starts again at each start (a restart is a new attempt).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from access_point.roundlog import RoundLog, RoundLogCorrupt
from pairzero.config import ExperimentConfig
from pairzero.errors import OperationalError
from pairzero.metrics import RoundMetrics, record_row
from pairzero.protocol.interfaces import (
    ApPhy,
    ModelReplica,
    PhyResult,
    ReadyTiming,
    RoundPlan,
    RoundPlanner,
)
from pairzero.protocol.keys import identity_refusal
from pairzero.protocol.messages import (
    AP_NODE_ID,
    MAX_INT,
    MAX_MESSAGE_BYTES,
    Body,
    CatchupRequest,
    CatchupResponse,
    ClockCheck,
    ClockReport,
    Error,
    Heartbeat,
    Join,
    JoinAck,
    JoinReject,
    Leave,
    Message,
    PrivacyTerms,
    ProtocolError,
    Ready,
    Round,
    RoundRecord,
    Update,
    decode,
    encode,
    make,
)
from pairzero.protocol.transport import Inbound, ServerTransport, drain_queued
from pairzero.seeds import round_seed

__all__ = ["round_seed", "ApSettings", "Orchestrator"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApSettings:
    """Orchestrator settings (seconds for times).

    ``experiment``: experiment id every message carries; ``manifest_digest``: the trainable
    manifest nodes must match; ``min_nodes``: members needed before the first round
    (waited for up to ``start_timeout_s``, then at least one); ``hash_every``: UPDATE carries the
    expected model hash every that many rounds (0: never; needs a replica). ``node_count``: node
    ids 0..node_count-1 are enrolled (None: any id the protocol allows); a partial round has
    fewer nodes present than that. ``max_empty_rounds``: that many consecutive rounds with no
    node present stop the run (0: never). ``terms``: the privacy terms (G, epsilon, delta, T) a
    node must hold to join (None: not checked). ``clock_tolerance_s``: how far a joining node's
    radio device time may lie outside the interval the AP's CLOCK_CHECK exchange brackets it in
    (a fraction of a frame; only when the AP's PHY has a device clock).
    """

    experiment: str
    master_seed: int
    rounds: int
    manifest_digest: str
    lr: float
    ready_timeout_s: float = 30.0
    heartbeat_s: float = 2.0
    min_nodes: int = 1
    start_timeout_s: float = 60.0
    hash_every: int = 10
    catchup_page: int = 500
    poll_s: float = 0.02
    node_count: int | None = None
    max_empty_rounds: int = 0
    terms: PrivacyTerms | None = None
    clock_tolerance_s: float = 0.002

    def __post_init__(self) -> None:
        checks = {
            "rounds": self.rounds >= 1, "master_seed": 0 <= self.master_seed <= MAX_INT,
            "lr": math.isfinite(self.lr) and self.lr >= 0, "ready_timeout_s": self.ready_timeout_s > 0,
            "heartbeat_s": self.heartbeat_s > 0, "min_nodes": self.min_nodes >= 1,
            "start_timeout_s": self.start_timeout_s >= 0, "hash_every": self.hash_every >= 0,
            "catchup_page": self.catchup_page >= 1, "poll_s": self.poll_s > 0,
            "experiment": bool(self.experiment),
            "node_count": self.node_count is None or self.node_count >= 1,
            "max_empty_rounds": self.max_empty_rounds >= 0,
            "clock_tolerance_s": math.isfinite(self.clock_tolerance_s) and self.clock_tolerance_s >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ApSettings.{name}: invalid value {getattr(self, name)!r}")

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, experiment: str, manifest_digest: str) -> ApSettings:
        """Settings from the experiment config (run, zo.lr, nodes.count, network.*, the privacy
        terms)."""
        from pairzero.ota.charging import terms_of
        from pairzero.phy.frame import FrameLayout

        n = cfg.network
        frame_s = FrameLayout(cfg.phy, cfg.nodes.count).length / cfg.phy.sample_rate
        return cls(
            experiment=experiment, master_seed=cfg.run.seed, rounds=cfg.run.rounds,
            manifest_digest=manifest_digest, lr=cfg.zo.lr, ready_timeout_s=n.ready_timeout_s,
            heartbeat_s=n.heartbeat_s, min_nodes=cfg.nodes.count,
            start_timeout_s=n.start_timeout_s, hash_every=n.hash_every,
            node_count=cfg.nodes.count, max_empty_rounds=n.max_empty_rounds, terms=terms_of(cfg),
            clock_tolerance_s=frame_s / 4,
        )


@dataclass
class _Member:
    peer: bytes
    next_round: int
    last_seen: float
    key_id: str = ""
    # An unanswered CLOCK_CHECK: (nonce, AP device time s, AP host clock s when sent). A member
    # takes part in rounds only once its radio's device time agrees with the AP's.
    clock_check: tuple[int, float, float] | None = None


#: TX events a node reports that mean its frame was not on the air in time.
_LATE_KINDS = frozenset({"late_burst", "underflow", "late_schedule"})


@dataclass
class _RoundState:
    t: int
    seed: int
    expected: frozenset[int]
    sent_at: float = 0.0  # when ROUND left (monotonic s)
    ready: dict[int, float | None] = field(default_factory=dict)
    # node -> (control-plane round trip s, its last SCHEDULE -> radio time s, late frames
    # reported, slack of its previous frame s or None)
    timing: dict[int, tuple[float, float, bool, float | None]] = field(default_factory=dict)
    spent: dict[int, float] = field(default_factory=dict)  # node -> privacy mu it reported
    announced: set[int] = field(default_factory=set)  # nodes sent this round's ROUND again

    def ready_timing(self) -> ReadyTiming:
        """The worst latencies of the nodes that answered (what the frame time must allow for)
        and the privacy spend each reported."""
        if not self.timing:
            return ReadyTiming(spent_mu=dict(self.spent))
        vals = list(self.timing.values())
        slacks = [v[3] for v in vals if v[3] is not None]
        return ReadyTiming(control_s=max(v[0] for v in vals), tx_prep_s=max(v[1] for v in vals),
                           late_reports=sum(1 for v in vals if v[2]),
                           tx_slack_s=min(slacks) if slacks else None, spent_mu=dict(self.spent))
    left_out: dict[int, str] = field(default_factory=dict)  # node -> why it is out of round t


class Orchestrator:
    """The AP control loop. Call :meth:`run` in one thread; :meth:`stop` from any thread.

    ``key_ids``: with CurveZMQ, enrolled public key (Z85) -> node id; JOINs whose
    authenticated key is not that node's are refused. ``replica``: optional model replica
    giving the expected model hash (it is brought up to date from the log at start).
    """

    def __init__(
        self,
        settings: ApSettings,
        transport: ServerTransport,
        roundlog: RoundLog,
        planner: RoundPlanner,
        phy: ApPhy,
        metrics: RoundMetrics | None = None,
        replica: ModelReplica | None = None,
        key_ids: Mapping[bytes, int] | None = None,
    ):
        if roundlog.experiment != settings.experiment:
            raise ValueError(
                f"roundlog: experiment {roundlog.experiment!r} != settings {settings.experiment!r}"
            )
        self.s = settings
        self._tx = transport
        self._log = roundlog
        self._planner = planner
        self._phy = phy
        self._metrics = metrics
        self._replica = replica
        self._key_ids = dict(key_ids) if key_ids is not None else None
        self._members: dict[int, _Member] = {}
        self._stop = threading.Event()
        self._round: _RoundState | None = None
        self._last_hb = 0.0
        self.dropped = 0  # messages dropped as malformed or out of place (for tests/metrics)
        self.empty_rounds = 0  # committed rounds with no node present (this log, all starts)
        self.partial_rounds = 0  # committed rounds with fewer than node_count nodes present
        self._consecutive_empty = 0  # since this start
        self.stop_reason: str | None = None  # why the run was stopped before its last round

    # ------------------------------------------------------------------ public

    @property
    def next_round(self) -> int:
        """First round not yet committed."""
        return self._log.next_round

    @property
    def members(self) -> list[int]:
        """Node ids currently joined."""
        return sorted(self._members)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current step (thread-safe)."""
        self._stop.set()

    def run(self, linger_s: float = 0.0) -> int:
        """Run rounds ``next_round .. rounds-1``; return the number committed by this call.

        Resumes from the round log. After the last round keeps serving (catch-ups, final
        heartbeats) for ``linger_s`` seconds.
        """
        start = self._log.next_round
        self._check_metrics_within_log()
        # Even at round 0: a round planned before a crash may have gone out (privacy ledger).
        self._resume(self._log.records(0) if start > 0 else [])
        self._wait_for_members()
        behind_since: float | None = None
        while not self._stop.is_set() and self._log.next_round < self.s.rounds:
            if not self._members:
                self._pump(self.s.poll_s)
                continue
            # Every member still catching up (an AP restarted after its last commit, a rejoin)
            # or being checked: give them up to the READY deadline to reach the round rather
            # than commit empty rounds they could have been in (and take the channel for dead).
            t = self._log.next_round
            if not self._current(t):
                behind_since = behind_since if behind_since is not None else time.monotonic()
                if time.monotonic() - behind_since < self.s.ready_timeout_s:
                    self._pump(self.s.poll_s)
                    continue
            behind_since = None
            self._run_round(t)
        end = time.monotonic() + linger_s
        while not self._stop.is_set() and time.monotonic() < end:
            self._pump(min(self.s.poll_s, max(end - time.monotonic(), 0.0)))
        return self._log.next_round - start

    def _resume(self, records: list[RoundRecord]) -> None:
        """Bring what lives in memory up to the round log: the replica's weights, the PHY's
        privacy accountant (``restore_accounting``: first, before any round), and metrics rows
        lost in the crash."""
        if records:
            log.info("resuming experiment %s at round %d", self.s.experiment, len(records))
        self._phy.restore_accounting(records)
        if self._replica is not None:
            self._replica.replay(records)
            log.info("AP replica replayed %d rounds: hash %s", len(records), self._replica.model_hash())
        self._backfill_metrics(records)
        for rec in records:
            self._count_round(rec, resumed=True)

    def _check_metrics_within_log(self) -> None:
        """Refuse to run when the metrics hold rows of rounds the round log lacks: the log lost
        committed rounds (a row is written only after its round's commit), and redoing them
        would apply and charge them twice."""
        if self._metrics is None:
            return
        beyond = sorted(t for t in self._metrics.logged_rounds() if t >= self._log.next_round)
        if beyond:
            where = self._metrics.where
            shown = ", ".join(map(str, beyond[:5])) + (", ..." if len(beyond) > 5 else "")
            raise RoundLogCorrupt(
                f"{self._log.path}: the round log holds {self._log.next_round} rounds but {where} "
                f"has rows for rounds {shown}: the log lost committed rounds; refusing to redo "
                "them (restore the log or use a new run directory)")

    def _backfill_metrics(self, records: list[RoundRecord]) -> None:
        """Rows for committed rounds the metrics lack: an AP killed between the commit and the
        metrics write. The round log is the record; the row is rebuilt from it."""
        if self._metrics is None:
            return
        have = self._metrics.logged_rounds()
        lost = [r for r in records if r.t not in have]
        for rec in lost:
            self._metrics.backfill({**record_row(rec), "recovered": True})
        if lost:
            log.warning("metrics: rebuilt the rows of rounds %s from the round log (the AP "
                        "stopped between their commit and their metrics row)", [r.t for r in lost])

    # ------------------------------------------------------------------ rounds

    def _wait_for_members(self) -> None:
        deadline = time.monotonic() + self.s.start_timeout_s
        while not self._stop.is_set() and len(self._checked()) < self.s.min_nodes:
            if time.monotonic() >= deadline and self._checked():
                log.warning("starting with %d of %d nodes", len(self._members), self.s.min_nodes)
                return
            self._pump(self.s.poll_s)

    def _run_round(self, t: int) -> None:
        t0 = time.monotonic()
        seed = round_seed(self.s.master_seed, t)
        expected = self._current(t)
        self._round = _RoundState(t, seed, expected, sent_at=t0)
        self._broadcast(Round(t=t, seed=seed, deadline_s=self.s.ready_timeout_s, lr=self.s.lr))
        deadline = t0 + self.s.ready_timeout_s
        while not self._stop.is_set() and self._awaiting_ready():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._pump(min(self.s.poll_s, left))
        if self._stop.is_set():
            self._round = None
            return  # round t not committed: it re-runs after a restart
        ready = dict(self._round.ready)
        timing = self._round.ready_timing()
        left_out = dict(self._round.left_out)
        self._round = None
        t_ready = time.monotonic()
        plan = RoundPlan()
        if ready:
            plan = self._planner.plan(t, sorted(ready), timing)
            if plan.tx_sample >= 0:  # a radio PHY: every member sends its frame (or pilots)
                for k, m in list(self._members.items()):
                    self._send(m.peer, plan.schedule_for(t, k))
        result = self._receive(t, seed, plan, ready)
        t_phy = time.monotonic()
        eta = result.eta if result.eta is not None else plan.eta
        mu = result.mu if result.mu is not None else plan.mu
        model_hash = None
        send_hash = self.s.hash_every > 0 and (t + 1) % self.s.hash_every == 0
        # The replica's update is a sweep over the weights and hashing them another (0.5 GB on
        # OPT-125M): both before the commit only on the rounds whose hash is published (and
        # the last); otherwise the update runs after UPDATE has left, while the nodes apply
        # theirs. A JOIN at an unhashed round is checked by the next published hash instead.
        hash_now = self._replica is not None and (send_hash or t + 1 == self.s.rounds)
        if hash_now and self._replica is not None:  # hash_now implies a replica
            self._replica.apply_update(seed, result.g_hat, self.s.lr)
            model_hash = self._replica.model_hash()
        rec = RoundRecord(
            experiment=self.s.experiment, t=t, seed=seed, g_hat=result.g_hat, lr=self.s.lr,
            active=tuple(sorted(result.present)), eta=eta, sigma_a=plan.sigma_a, mu=mu,
            model_hash=model_hash, timestamp=time.time(),
        )
        self._log.append(rec)  # durable commit: before UPDATE leaves the AP
        self._broadcast(Update(t=t, seed=seed, g_hat=result.g_hat, lr=self.s.lr,
                               active=rec.active, expected_hash=model_hash if send_hash else None))
        if self._replica is not None and not hash_now:
            self._replica.apply_update(seed, result.g_hat, self.s.lr)
        for m in self._members.values():
            if m.next_round == t:
                m.next_round = t + 1
        missing = sorted(expected - ready.keys() - left_out.keys())
        if missing:
            log.warning("round %d: no READY from nodes %s before the deadline", t, missing)
        if self._metrics is not None:
            self._metrics({
                **record_row(rec), "expected": sorted(expected), "ready": sorted(ready),
                "missing": missing, "left_out": {str(k): v for k, v in sorted(left_out.items())},
                "ready_wait_s": t_ready - t0, "phy_s": t_phy - t_ready,
                "round_s": time.monotonic() - t0, "control_rtt_s": timing.control_s,
                "tx_sample": plan.tx_sample,
            })
        log.info("round %d committed: g_hat=%.6g, |S|=%d/%d", t, result.g_hat,
                 len(rec.active), len(expected))
        self._count_round(rec)

    def _awaiting_ready(self) -> bool:
        """Whether an expected node of the current round may still answer (neither its READY
        nor a reason it never will has arrived)."""
        r = self._round
        return r is not None and bool(r.expected - r.ready.keys() - r.left_out.keys())

    def _count_round(self, rec: RoundRecord, resumed: bool = False) -> None:
        """Count empty and partial rounds; stop the run after ``max_empty_rounds`` consecutive
        empty ones (a dead channel must fail the run, not finish it with no-op updates)."""
        full = self.s.node_count if self.s.node_count is not None else self.s.min_nodes
        if not rec.active:
            self.empty_rounds += 1
        elif len(rec.active) < full:
            self.partial_rounds += 1
        if resumed:
            return
        self._consecutive_empty = 0 if rec.active else self._consecutive_empty + 1
        limit = self.s.max_empty_rounds
        if limit and self._consecutive_empty >= limit:
            self.stop_reason = (
                f"{self._consecutive_empty} consecutive rounds ({rec.t - limit + 1}..{rec.t}) had "
                "no node present (no frame detected or no READY): is the channel emulator or "
                "the radio link down? (network.max_empty_rounds)")
            log.error("stopping the run: %s", self.stop_reason)
            self._stop.set()

    def _receive(self, t: int, seed: int, plan: RoundPlan, ready: dict[int, float | None]) -> PhyResult:
        if not ready:
            log.warning("round %d: no node ready; committing a no-op update (g_hat = 0)", t)
            return PhyResult(0.0, ())
        # While the PHY waits for samples the control plane stays live (heartbeats, LEAVEs).
        result = self._phy.receive(t, seed, plan, ready, idle=self._pump)
        if not math.isfinite(result.g_hat):
            log.error("round %d: PHY returned non-finite g_hat %r; committing g_hat = 0", t,
                      result.g_hat)
            return PhyResult(0.0, ())
        return result

    # ------------------------------------------------------------------ messages

    def _msg(self, body: Body) -> bytes:
        return encode(make(self.s.experiment, self._log.next_round, body))

    def _send(self, peer: bytes, body: Body) -> None:
        self._tx.send(peer, self._msg(body))

    def _broadcast(self, body: Body) -> None:
        data = self._msg(body)
        for m in list(self._members.values()):
            self._tx.send(m.peer, data)

    def _pump(self, timeout_s: float) -> None:
        """Receive and handle at most one message; send heartbeats; expire silent members."""
        now = time.monotonic()
        if now - self._last_hb >= self.s.heartbeat_s:
            self._last_hb = now
            self._broadcast(Heartbeat(node=AP_NODE_ID, next_round=self._log.next_round))
            self._expire_silent_members()
            for k, m in list(self._members.items()):  # a CLOCK_CHECK (or its report) lost
                if m.clock_check is not None:
                    self._check_clock(k, m)
        inbound = self._tx.recv(timeout_s)
        if inbound is not None:
            self._serve(inbound)
        self._reap_disconnected()

    def _reap_disconnected(self) -> None:
        """Members whose connection the transport reports closed (a killed node) are out at
        once: no wait for 3 missed heartbeats or the READY deadline. What they sent before
        closing (a LEAVE) is served first."""
        gone = self._tx.gone()
        if gone:
            drain_queued(self._tx.recv, self._serve)
        for peer in gone:
            for k, m in list(self._members.items()):
                if m.peer == peer:
                    self._remove_member(k, "its connection closed")

    def _computing(self, k: int) -> bool:
        """Whether node ``k`` owes the current round its READY."""
        r = self._round
        return r is not None and k in r.expected and k not in r.ready and k not in r.left_out

    def _remove_member(self, k: int, why: str, expected: bool = False) -> None:
        """Forget member ``k``; if the current round waits for its READY, stop waiting.
        ``expected``: a clean leave (INFO unless a round waited for it; else a WARNING)."""
        self._members.pop(k, None)
        r = self._round
        if r is not None and self._computing(k):
            r.left_out[k] = why
            log.warning("round %d: node %d is out of the round: %s", r.t, k, why)
        else:
            log.log(logging.INFO if expected else logging.WARNING, "node %d removed: %s", k, why)

    def _expire_silent_members(self) -> None:
        """Remove members silent for 3 heartbeats, judged after reading what is already queued:
        an AP held up (fsync, a slow round) must not take nodes whose messages wait for it for
        dead. A node computing its scalar for the current round sends nothing until its READY
        (one thread, two forward passes): it is bounded by the READY deadline instead, and a
        killed one is out at once when its connection closes (:meth:`_reap_disconnected`)."""
        drain_queued(self._tx.recv, self._serve)
        now = time.monotonic()
        dead = [k for k, m in self._members.items()
                if now - m.last_seen > 3 * self.s.heartbeat_s and not self._computing(k)]
        for k in dead:
            self._remove_member(k, f"silent for {now - self._members[k].last_seen:.1f} s")

    def _serve(self, inbound: Inbound) -> None:
        """Handle one inbound message. Whatever it holds, it is either served or logged with
        its peer and dropped: only an OperationalError (the round log failed) goes up."""
        try:
            self._serve_one(inbound)
        except OperationalError:
            raise
        except Exception as e:  # one message never stops the AP (KeyboardInterrupt does)
            self.dropped += 1
            log.error("dropped a message from peer %s: handling it raised %s: %s",
                      inbound.peer.hex()[:16], type(e).__name__, e, exc_info=True)

    def _serve_one(self, inbound: Inbound) -> None:
        try:
            msg = decode(inbound.data, self.s.experiment, MAX_MESSAGE_BYTES)
        except ProtocolError as e:
            self.dropped += 1
            log.warning("dropped a message from peer %s: %s", inbound.peer.hex()[:16], e)
            self._refuse_foreign_join(inbound)
            return
        try:
            self._handle(inbound, msg)
        except ProtocolError as e:  # a reply we could not build (e.g. oversized)
            self.dropped += 1
            log.warning("could not serve %s from peer %s: %s", msg.type, inbound.peer.hex()[:16], e)

    def _member_of(self, inbound: Inbound, node: int) -> _Member | None:
        m = self._members.get(node)
        if m is None or m.peer != inbound.peer:
            return None
        m.last_seen = time.monotonic()
        return m

    def _handle(self, inbound: Inbound, msg: Message) -> None:
        b = msg.body
        if isinstance(b, Join):
            self._on_join(inbound, b)
            return
        node = getattr(b, "node", None)
        m = self._member_of(inbound, node) if isinstance(node, int) else None
        if m is None:
            self.dropped += 1
            log.warning("dropped %s from a peer that has not joined (claims node %s)", msg.type, node)
            if not isinstance(b, Error):
                self._send(inbound.peer, Error(code="not_joined", detail="send JOIN first"))
            return
        if isinstance(b, Ready):
            self._on_ready(b)
        elif isinstance(b, CatchupRequest):
            if b.from_round > self._log.next_round:
                self.dropped += 1
                log.warning("dropped CATCHUP_REQUEST from node %d: from round %d, but only %d "
                            "rounds are committed", node, b.from_round, self._log.next_round)
                return
            self._on_catchup(m, b)
        elif isinstance(b, Heartbeat):
            if b.next_round > self._log.next_round:
                self.dropped += 1
                log.warning("dropped HEARTBEAT from node %d: it claims %d applied rounds, only %d "
                            "are committed", node, b.next_round, self._log.next_round)
                return
            # A heartbeat sent before the node applied the latest UPDATE arrives after the AP
            # advanced the member: never let it move the member back (it would be left out of
            # the next round and its READY dropped). A node that really fell behind catches up
            # when it sees the next ROUND.
            m.next_round = max(m.next_round, b.next_round)
        elif isinstance(b, Leave):
            self._remove_member(b.node, f"it left ({b.reason})", expected=True)
        elif isinstance(b, ClockReport):
            self._on_clock_report(m, b)
        else:
            self.dropped += 1
            log.warning("dropped %s from node %d: not a node-to-AP message", msg.type, node)

    def _on_ready(self, b: Ready) -> None:
        """Record a READY of the current round, or leave its node out with the reason."""
        for e in b.tx_events:
            log.warning("node %d reports its frame of round %d: %s (%s)", b.node, e.t, e.kind,
                        e.detail)
        r = self._round
        if r is None or b.t != r.t:
            self.dropped += 1
            log.warning("dropped READY for round %d from node %d (current: %s)",
                        b.t, b.node, None if r is None else r.t)
            return
        if b.node not in r.expected or b.node in r.ready or b.node in r.left_out:
            self.dropped += 1
            log.warning("dropped READY for round %d from node %d: %s", b.t, b.node,
                        "not expected in this round" if b.node not in r.expected else "a repeat")
            return
        why = self._ready_refusal(b)
        if why:
            self.dropped += 1
            r.left_out[b.node] = why
            log.warning("round %d: node %d left out: %s", r.t, b.node, why)
            return
        r.ready[b.node] = b.digital_scalar
        rtt = max(time.monotonic() - r.sent_at - b.compute_s, 0.0)
        late = any(e.kind in _LATE_KINDS for e in b.tx_events)
        r.timing[b.node] = (rtt, b.tx_prep_s, late, b.tx_slack_s)
        if b.spent_mu is not None:
            r.spent[b.node] = b.spent_mu

    def _ready_refusal(self, b: Ready) -> str:
        """Why a READY cannot count (empty: it counts). A PHY that takes the scalars in READY
        (baseband) says so with ``digital = True`` and may bound them with ``scalar_bound``."""
        if not b.scalar_ready:
            return "it has no scalar for this round (scalar_ready false)"
        if self._phy.digital and b.digital_scalar is None:
            return ("READY without its scalar, which this PHY takes from READY (is the node "
                    "running with the same radio.mode?)")
        bound = self._phy.scalar_bound
        if bound is not None and b.digital_scalar is not None and abs(b.digital_scalar) > bound:
            return f"scalar {b.digital_scalar!r} outside the clip bound +-{bound!r}"
        return ""

    def _refuse_foreign_join(self, inbound: Inbound) -> None:
        """A JOIN of another experiment id (a node started from another config) gets a
        JOIN_REJECT in its own id, naming the privacy terms that differ, instead of silence."""
        try:
            msg = decode(inbound.data, None, MAX_MESSAGE_BYTES)
        except ProtocolError:
            return
        if not isinstance(msg.body, Join) or msg.experiment == self.s.experiment:
            return
        j = msg.body
        why = (f"experiment id {msg.experiment!r} is not the AP's {self.s.experiment!r}: the "
               "node's config differs in run, model, task, zo, privacy, ota or nodes.count")
        diff = self._terms_refusal(j)
        reason = f"{diff}; {why}" if diff else why
        log.warning("JOIN of node %d refused: %s", j.node, reason)
        try:
            self._tx.send(inbound.peer, encode(make(msg.experiment, msg.t, JoinReject(node=j.node, reason=reason))))
        except ProtocolError as e:
            log.warning("could not answer the foreign JOIN: %s", e)

    def _terms_refusal(self, j: Join) -> str:
        """Why the node's privacy terms do not match the AP's (empty: they match)."""
        if self.s.terms is None:
            return ""
        if j.terms is None:
            return "the node sent no privacy terms (G, epsilon, delta, T); the AP requires them"
        diff = j.terms.differences(self.s.terms)
        return ("privacy terms differ (node vs AP): " + "; ".join(diff)) if diff else ""

    def _on_join(self, inbound: Inbound, j: Join) -> None:
        reason = self._join_refusal(inbound, j)
        if reason:
            log.warning("JOIN of node %d refused: %s", j.node, reason)
            self._send(inbound.peer, JoinReject(node=j.node, reason=reason))
            return
        self._members[j.node] = _Member(inbound.peer, j.next_round, time.monotonic(), j.key_id)
        log.info("node %d joined at its round %d (AP next round %d)", j.node, j.next_round,
                 self._log.next_round)
        r = self._round
        if r is not None and self._computing(j.node) and j.next_round < r.t:
            # A node JOINs again after it took the AP for gone (a cut link outlasting 3
            # heartbeats): behind the round, it catches up first and skips this one, so the
            # round must not wait for its READY until the deadline.
            r.left_out[j.node] = (f"it re-joined at its round {j.next_round}, behind this one: "
                                  "it catches up first")
            log.warning("round %d: node %d is out of the round: %s", r.t, j.node, r.left_out[j.node])
        self._send(inbound.peer, JoinAck(node=j.node, next_round=self._log.next_round,
                                         hash_every=self.s.hash_every))
        self._check_clock(j.node, self._members[j.node])
        self._announce_again(j.node)

    def _announce_again(self, k: int) -> None:
        """Send the current ROUND again to member ``k`` if the round waits for its READY and
        it has just (re-)joined at this round (and its clock is checked): a node that took the
        AP for gone (the AP busy longer than the node's patience: an evaluation, a long replica
        update) dropped the ROUND while re-joining. Once per round and node, with what is left
        of the deadline, so the round does not wait for it in vain."""
        r, m = self._round, self._members.get(k)
        if (r is None or m is None or m.clock_check is not None or m.next_round != r.t
                or not self._computing(k) or k in r.announced):
            return
        r.announced.add(k)
        left = max(r.sent_at + self.s.ready_timeout_s - time.monotonic(), 0.0)
        self._send(m.peer, Round(t=r.t, seed=r.seed, deadline_s=left, lr=self.s.lr))
        log.info("round %d announced again to node %d (it re-joined while the round waited for "
                 "it)", r.t, k)

    def _current(self, t: int) -> frozenset[int]:
        """Members that can take part in round t: at it (not catching up) and clock-checked."""
        return frozenset(k for k, m in self._members.items()
                         if m.next_round == t and m.clock_check is None)

    def _checked(self) -> list[int]:
        """Members whose radio's device time agrees with the AP's (or that need no check)."""
        return [k for k, m in self._members.items() if m.clock_check is None]

    def _check_clock(self, k: int, m: _Member) -> None:
        """Ask member ``k`` for its radio's device time (CLOCK_CHECK) when the AP's radio has a
        device clock: each radio set its time at a PPS edge from its own host's clock, and a
        host clock off by half a second or more labels the edge with another second, which
        nothing in a radio reports: every frame of that node would miss its window."""
        mine = self._phy.clock_report()
        if mine is None:
            m.clock_check = None
            return
        nonce = secrets.randbits(62)
        m.clock_check = (nonce, *mine)
        self._send(m.peer, ClockCheck(node=k, nonce=nonce))

    def _on_clock_report(self, m: _Member, b: ClockReport) -> None:
        """Accept member ``b.node`` for rounds if its device time lies within the interval the
        exchange brackets (from the CLOCK_CHECK leaving to this report arriving, on the AP's
        device clock) give or take ``clock_tolerance_s``; else refuse it in one line."""
        sent = m.clock_check
        if sent is None or sent[0] != b.nonce:
            self.dropped += 1
            log.info("dropped a CLOCK_REPORT of node %d for another check", b.node)
            return
        now = self._phy.clock_report()
        if now is None:
            m.clock_check = None
            return
        tol = self.s.clock_tolerance_s
        if b.device_time is None:
            why = ("the AP's radio has a device clock but the node's has none (the same "
                   "radio.mode on every host?)")
        elif sent[1] - tol <= b.device_time <= now[0] + tol:
            m.clock_check = None
            log.info("node %d: its radio's device time agrees with the AP's (within %.1f ms)",
                     b.node, (now[0] - sent[1] + 2 * tol) * 1e3)
            self._announce_again(b.node)
            return
        else:
            # midpoints of the brackets: each off by at most half the exchange's round trip
            off = b.device_time - (sent[1] + now[0]) / 2
            half_ms = (now[0] - sent[1]) / 2 * 1e3
            host = ("" if b.host_time is None else
                    f"; its host clock is {b.host_time - (sent[2] + now[1]) / 2:+.3f} s from the "
                    "AP host's")
            cause = ("a host clock off by half a second or more labels the PPS edge with another "
                     "second: sync the hosts' clocks (NTP/chrony) and restart the node"
                     if abs(off) >= 0.5 else
                     "is its radio's PPS input connected, and radio.clock_source 'external' or "
                     "'gpsdo' on every host?")
            why = (f"its radio's device time is {off:+.3f} s (± {half_ms:.1f} ms) from the "
                   f"AP's{host}: every frame "
                   f"would miss its window ({cause})")
        log.warning("node %d refused: %s", b.node, why)
        self._members.pop(b.node, None)
        self._send(m.peer, JoinReject(node=b.node, reason=why))

    def _join_refusal(self, inbound: Inbound, j: Join) -> str:
        who = identity_refusal(j.node, inbound, self.s.node_count, self._key_ids)
        if who:
            return who
        terms = self._terms_refusal(j)
        if terms:
            return terms
        if j.manifest_digest != self.s.manifest_digest:
            return (f"manifest digest mismatch: node has {j.manifest_digest!r}, "
                    f"experiment uses {self.s.manifest_digest!r} (different model/trainable set)")
        committed = self._log.next_round
        if j.next_round > committed:
            return (f"node has applied rounds up to {j.next_round - 1} but the AP has committed "
                    f"only {committed} rounds (different round log?)")
        if j.next_round > 0:
            prev = self._log.records(j.next_round - 1, limit=1)[0]
            # "" = the node cannot tell (a round of it is pending): checked at the next hash.
            if prev.model_hash is not None and j.model_hash and prev.model_hash != j.model_hash:
                return (f"model hash after round {j.next_round - 1} is {j.model_hash!r}, "
                        f"the round log says {prev.model_hash!r}")
        return ""

    def _on_catchup(self, m: _Member, req: CatchupRequest) -> None:
        recs = self._log.records(req.from_round, limit=self.s.catchup_page)
        # Page further down if one page of records would exceed the message size limit.
        while True:
            more = bool(recs) and recs[-1].t + 1 < self._log.next_round
            body = CatchupResponse(node=req.node, from_round=req.from_round, records=tuple(recs),
                                   more=more, next_round=self._log.next_round)
            data = self._msg(body) if len(recs) <= 1 else None
            if data is None:
                try:
                    data = self._msg(body)
                except ProtocolError:
                    recs = recs[: len(recs) // 2]
                    continue
            break
        self._tx.send(m.peer, data)
        if recs:
            m.next_round = recs[-1].t + 1
        log.info("catch-up for node %d: rounds %d..%d%s", req.node, req.from_round,
                 recs[-1].t if recs else req.from_round - 1, " (more)" if more else "")
