"""Edge-node runtime (control plane): JOIN, then per round scalar -> READY -> transmit -> update.

State machine (one thread, one ClientTransport):

* not joined: send JOIN every ``join_retry_s`` (the AP may be down or restarting; libzmq
  reconnects underneath). JOIN_ACK -> joined; JOIN_REJECT -> :class:`JoinRejected`.
* joined, in sync (``next_round`` = the AP's round): ROUND t -> ``trainer.compute_scalar``
  -> READY (carrying the scalar only on the digital path; with a radio PHY its compute time
  and what the radio reported about its last frame) -> SCHEDULE t (radio PHY: the frame time
  and this node's precoding) -> ``phy.transmit``; UPDATE t ->
  ``trainer.apply_update(seed, g_hat, lr)``, ``next_round = t + 1``.
* behind (JOIN_ACK, UPDATE, ROUND or HEARTBEAT reveal that the AP has committed rounds this
  node has not applied): CATCHUP_REQUEST(from next_round) -> CATCHUP_RESPONSE -> the records
  are replayed in order through ``trainer.replay``; pages repeat until ``more`` is false.
  Rounds announced while catching up are skipped (the AP proceeds without this node).
* the AP silent for ``ap_timeout_s`` (or answering ERROR not_joined after a restart): back
  to not joined, i.e. re-JOIN with the current ``next_round``, then catch up.

Model-hash check: whenever an UPDATE or the last replayed record carries the AP's expected
hash, the node compares it with ``trainer.model_hash()``. On mismatch it stops with
:class:`ModelHashMismatch` (a clear error; the operator restarts it from initial weights and
it catches up from the log). Re-syncing by replay alone cannot repair a diverged model,
because replay starts from the node's current, already wrong, weights.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence

from pairzero.errors import OperationalError
from pairzero.protocol.interfaces import NodePhy, Trainer
from pairzero.protocol.messages import (
    Body,
    Calibrate,
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
    PrivacyTerms,
    ProtocolError,
    Ready,
    Round,
    RoundRecord,
    Schedule,
    Update,
    decode,
    encode,
    make,
)
from pairzero.protocol.transport import ClientTransport, drain_queued

__all__ = ["EdgeNode", "NodeError", "JoinRejected", "ModelHashMismatch"]

log = logging.getLogger(__name__)


class NodeError(OperationalError):
    """The node cannot continue; the message says why and what to do."""


class JoinRejected(NodeError):
    """The AP refused this node (wrong manifest, wrong key, round log mismatch...)."""


class ModelHashMismatch(NodeError):
    """This node's weights differ from the AP's expected hash: it has diverged."""


class EdgeNode:
    """One edge node's control loop. Call :meth:`run` in one thread; :meth:`stop` from any.

    ``key_id``: this node's CurveZMQ public key (Z85 text) or "" without CurveZMQ.
    ``next_round``: rounds already applied by ``trainer`` (0 for initial weights).
    ``terms``: the privacy terms the node holds itself to, sent in JOIN (the AP refuses other
    terms than its own). Times in seconds.
    """

    def __init__(
        self,
        node_id: int,
        experiment: str,
        transport: ClientTransport,
        trainer: Trainer,
        phy: NodePhy,
        key_id: str = "",
        next_round: int = 0,
        heartbeat_s: float = 2.0,
        ap_timeout_s: float | None = None,
        join_retry_s: float = 0.5,
        poll_s: float = 0.02,
        give_up_s: float = 0.0,
        terms: PrivacyTerms | None = None,
    ):
        if node_id < 0:
            raise ValueError(f"node_id: {node_id} must be >= 0")
        if next_round < 0:
            raise ValueError(f"next_round: {next_round} must be >= 0")
        for name, v in (("heartbeat_s", heartbeat_s), ("join_retry_s", join_retry_s),
                        ("poll_s", poll_s)):
            if not v > 0:
                raise ValueError(f"{name}: {v} must be > 0")
        if not give_up_s >= 0:
            raise ValueError(f"give_up_s: {give_up_s} must be >= 0 (0: never)")
        self.node_id = node_id
        self.experiment = experiment
        self._tx = transport
        self.trainer = trainer
        self._phy = phy
        self._key_id = key_id
        self.next_round = next_round
        self.heartbeat_s = heartbeat_s
        self.ap_timeout_s = ap_timeout_s if ap_timeout_s is not None else 3 * heartbeat_s
        self.join_retry_s = join_retry_s
        self.poll_s = poll_s
        self.give_up_s = give_up_s
        self.terms = terms
        self.joined = False
        self.rounds_participated = 0
        self.dropped = 0
        self._catchup_sent: float | None = None
        self._pending: tuple[int, float] | None = None  # (round, scalar) awaiting its SCHEDULE
        # (round, seed, scalar, compute s) of the last round answered: a repeated ROUND for it
        # (the AP re-sends ROUND to a node that re-joins while the round waits for it) is
        # answered with the same scalar instead of a second forward pass.
        self._answered: tuple[int, int, float, float] | None = None
        self._last_join = -1e9
        self._last_hb = 0.0
        self._last_ap = time.monotonic()
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask :meth:`run` to return (thread-safe)."""
        self._stop.set()

    def run(self, until_round: int | None = None, leave: bool = True) -> int:
        """Serve until stopped or ``next_round >= until_round``; return ``next_round``.

        Raises JoinRejected / ModelHashMismatch (NodeError) when the node must not go on.
        ``leave``: send LEAVE on a clean return.
        """
        try:
            while not self._stop.is_set():
                if until_round is not None and self.next_round >= until_round:
                    break
                self.step(self.poll_s)
        except OperationalError as e:  # its radio cannot go on (lost lock): say why, then stop
            if self.joined:
                with contextlib.suppress(ProtocolError):
                    self._send(Leave(node=self.node_id, reason=str(e)[:1000]))
            raise
        if leave and self.joined:
            self._send(Leave(node=self.node_id, reason="stopped"))
        return self.next_round

    # ------------------------------------------------------------------ loop

    def step(self, timeout_s: float) -> None:
        """Timers (JOIN retry, heartbeat, AP liveness, catch-up retry) and one message."""
        now = time.monotonic()
        if now - self._last_ap > self.ap_timeout_s:
            # Judge the AP after reading what it already sent: a node held up (a long forward
            # pass, a loaded machine) finds the AP's heartbeats queued, not missing.
            drain_queued(self._tx.recv, self._serve)
            now = time.monotonic()
        if self.joined and now - self._last_ap > self.ap_timeout_s:
            log.warning("node %d: AP silent for %.1f s; re-joining", self.node_id, now - self._last_ap)
            self.joined = False
        if self.give_up_s and now - self._last_ap > self.give_up_s:
            raise NodeError(
                f"node {self.node_id}: nothing from the AP for {now - self._last_ap:.0f} s "
                f"(give-up time {self.give_up_s:g} s, network.ap_give_up_s): stopping at round "
                f"{self.next_round}. Is the AP running and reachable, with this experiment's config?"
            )
        if not self.joined and now - self._last_join >= self.join_retry_s:
            self._last_join = now
            self._catchup_sent = None
            self._send(Join(node=self.node_id, manifest_digest=self.trainer.manifest_digest(),
                            model_hash=self.trainer.model_hash(), key_id=self._key_id,
                            next_round=self.next_round, terms=self.terms))
        if self.joined and now - self._last_hb >= self.heartbeat_s:
            self._last_hb = now
            self._send(Heartbeat(node=self.node_id, next_round=self.next_round))
        if self._catchup_sent is not None and now - self._catchup_sent > 2 * self.heartbeat_s:
            log.warning("node %d: catch-up response overdue; asking again", self.node_id)
            self._request_catchup()
        data = self._tx.recv(timeout_s)
        if data is not None:
            self._serve(data)

    def _serve(self, data: bytes) -> None:
        try:
            msg = decode(data, self.experiment)
        except ProtocolError as e:
            self.dropped += 1
            log.warning("node %d dropped a message: %s", self.node_id, e)
            return
        self._last_ap = time.monotonic()
        self._handle(msg.body)

    def _send(self, body: Body) -> bool:
        return self._tx.send(encode(make(self.experiment, self.next_round, body)))

    def _request_catchup(self) -> None:
        self._catchup_sent = time.monotonic()
        self._send(CatchupRequest(node=self.node_id, from_round=self.next_round))

    def _behind(self, ap_next: int) -> None:
        """The AP has committed up to ap_next-1: catch up unless already asking."""
        if ap_next > self.next_round and self._catchup_sent is None:
            log.info("node %d behind (at %d, AP at %d): catching up", self.node_id,
                     self.next_round, ap_next)
            self._request_catchup()

    # ------------------------------------------------------------------ handlers

    def _handle(self, b: Body) -> None:
        if isinstance(b, JoinReject):
            raise JoinRejected(f"node {self.node_id}: the AP refused to let it join: {b.reason}")
        if isinstance(b, JoinAck):
            if b.node != self.node_id:
                self.dropped += 1
                return
            if b.next_round < self.next_round:
                raise JoinRejected(
                    f"node {self.node_id} has applied {self.next_round} rounds but the AP has "
                    f"committed only {b.next_round}: not the same round log"
                )
            self.joined = True
            log.info("node %d joined (AP next round %d)", self.node_id, b.next_round)
            self._behind(b.next_round)
            return
        if isinstance(b, Error):
            if b.code == "not_joined":
                self.joined = False
                self._last_join = -1e9
            log.warning("node %d: AP error %s: %s", self.node_id, b.code, b.detail)
            return
        if not self.joined:
            self.dropped += 1
            return
        if isinstance(b, Heartbeat):
            self._behind(b.next_round)
        elif isinstance(b, Round):
            self._on_round(b)
        elif isinstance(b, Schedule):
            self._on_schedule(b)
        elif isinstance(b, Update):
            self._on_update(b)
        elif isinstance(b, CatchupResponse):
            self._on_catchup(b)
        elif isinstance(b, Calibrate):
            self._on_calibrate(b)
        elif isinstance(b, ClockCheck):
            if b.node != self.node_id:
                self.dropped += 1
                return
            dev, host = self._phy.clock_report() or (None, None)
            self._send(ClockReport(node=self.node_id, nonce=b.nonce, device_time=dev, host_time=host))
        else:
            self.dropped += 1
            log.warning("node %d dropped %s: not an AP-to-node message", self.node_id, type(b).__name__)

    def _on_round(self, r: Round) -> None:
        if r.t != self.next_round or self._catchup_sent is not None:
            self.dropped += 1
            log.info("node %d skips round %d (at round %d%s)", self.node_id, r.t, self.next_round,
                     ", catching up" if self._catchup_sent is not None else "")
            if r.t > self.next_round:
                self._behind(r.t)
            return
        prev = self._answered
        again = prev is not None and prev[:2] == (r.t, r.seed)
        if prev is not None and again:
            # Announced again (this node re-joined while the round waited for it): the scalar
            # is the one already computed; what the READY reports of the radio and the
            # privacy account is read afresh.
            log.info("node %d: round %d announced again: READY sent again", self.node_id, r.t)
            scalar, compute_s = prev[2], prev[3]
        else:
            t0 = time.monotonic()
            scalar = float(self.trainer.compute_scalar(r.t, r.seed))
            compute_s = time.monotonic() - t0
        digital = scalar if self._phy.digital else None
        last = self._phy.last_slack  # (round, slack s) of its last frame
        slack = min(max(last[1], -86400.0), 86400.0) if last is not None and last[0] == r.t - 1 else None
        ready = Ready(t=r.t, node=self.node_id, scalar_ready=True, digital_scalar=digital,
                      compute_s=min(compute_s, 86400.0),
                      tx_prep_s=min(float(self._phy.last_prep_s), 86400.0),
                      tx_slack_s=slack, tx_events=tuple(self._phy.take_events()),
                      spent_mu=self._phy.spent_mu())
        try:
            self._send(ready)
        except ProtocolError as e:  # non-finite scalar: do not take part
            log.error("node %d round %d: scalar %r not sendable (%s); skipping", self.node_id,
                      r.t, scalar, e)
            return
        self._answered = (r.t, r.seed, scalar, compute_s)
        if not again:
            self.rounds_participated += 1
        if self._phy.digital:
            self._phy.transmit(r.t, scalar, None)
        else:
            self._pending = (r.t, scalar)

    def _on_schedule(self, s: Schedule) -> None:
        """Send round t's frame: with the payload if this node computed its scalar for t and the
        AP precoded it, else pilots only (they keep the AP's channel estimate fresh)."""
        if s.node != self.node_id or s.t < self.next_round:
            self.dropped += 1
            return
        if self._phy.digital:
            self.dropped += 1
            log.warning("node %d: SCHEDULE for round %d, but this node runs without a radio "
                        "PHY: set the same radio.mode on the AP and the nodes", self.node_id, s.t)
            return
        scalar = None
        if self._pending is not None and self._pending[0] == s.t:
            scalar = self._pending[1]
        self._pending = None
        self._phy.transmit(s.t, scalar, s)

    def _on_calibrate(self, c: Calibrate) -> None:
        """``pairzero calibrate``: apply its calibration, send a pilot frame, say what was done."""
        if c.node != self.node_id:
            self.dropped += 1
            return
        self._send(self._phy.calibrate(c))

    def _on_update(self, u: Update) -> None:
        if u.t < self.next_round:
            self.dropped += 1
            return
        if u.t > self.next_round or self._catchup_sent is not None:
            self._behind(u.t + 1)
            return
        self.trainer.apply_update(u.seed, u.g_hat, u.lr)
        self.next_round = u.t + 1
        if u.expected_hash is not None:
            self._check_hash(u.t, u.expected_hash)

    def _on_catchup(self, c: CatchupResponse) -> None:
        if c.node != self.node_id:
            self.dropped += 1
            return
        recs: Sequence[RoundRecord] = [r for r in c.records if r.t >= self.next_round]
        if recs and any(r.t != self.next_round + i for i, r in enumerate(recs)):
            log.error("node %d: catch-up records not contiguous from %d; asking again",
                      self.node_id, self.next_round)
            self._request_catchup()
            return
        if recs:
            self.trainer.replay(recs)
            self.next_round = recs[-1].t + 1
            last_hash = recs[-1].model_hash
            if last_hash is not None:
                self._check_hash(recs[-1].t, last_hash)
            log.info("node %d replayed rounds %d..%d", self.node_id, recs[0].t, recs[-1].t)
        if c.more or self.next_round < c.next_round:
            self._request_catchup()
        else:
            self._catchup_sent = None

    def _check_hash(self, t: int, expected: str) -> None:
        mine = self.trainer.model_hash()
        if mine != expected:
            msg = (f"node {self.node_id}: model hash after round {t} is {mine}, the AP expects "
                   f"{expected}; this node has diverged. Restart it from the initial weights "
                   "(next_round=0): it will catch up from the round log.")
            log.error("%s", msg)
            raise ModelHashMismatch(msg)
