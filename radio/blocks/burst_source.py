"""The emulator's source (:class:`BurstSource`): K output streams on the shared sample clock, fed
by the nodes' ``(start index, samples)`` messages over ZeroMQ PUSH -> PULL (message format in
:mod:`radio.blocks`); what no node sent is zero-filled, and a silent node is declared absent
after ``node_timeout_s``, so it never stalls the emulator.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import pmt
import zmq
from gnuradio import gr

from radio.blocks.common import FIR_TAPS, INDEX_TAG, STREAM_BUFFER_ITEMS, no_scheduler_pause

__all__ = ["BurstSource", "CONTINUOUS", "DEMAND_GUARD_S", "DEMAND_PAD_AFTER", "DEMAND_PAD_BEFORE"]

log = logging.getLogger(__name__)


WINDOW_POLL_MS = 5
IDLE_WAIT_S = 0.2  # longest a source work() call waits for node data before returning 0


#: Samples produced around a demanded window: before it, so the filters' state after a skip
#: (whatever preceded the skip) has left the taps by the window's first sample; after it, the
#: FIR's group delay.
DEMAND_PAD_BEFORE = 2 * FIR_TAPS
DEMAND_PAD_AFTER = FIR_TAPS
#: With no window pending, skipping stops this far (s of device time) behind the radios' time,
#: so a stream command still in flight finds its window not yet skipped.
DEMAND_GUARD_S = 0.05
CONTINUOUS = 2**62  # the end of a continuous stream's window


class BurstSource(gr.sync_block):
    """K zero-filled output streams fed by ZeroMQ PULL sockets bound at ``addresses``.

    ``lockstep`` True: the clock advances only as far as every live node has defined its
    stream (its ``horizon``), so unthrottled runs are deterministic; a node the clock has
    waited on for ``node_timeout_s`` (counted from its last message, from the moment the
    clock reached its horizon, or, without ``free_run_rate``, from the moment another live
    node's samples began to wait beyond the clock, whichever is latest: while every node is
    idle nobody is waited on) is declared absent (zero-filled) until it sends again.
    ``lockstep`` False: free-running clock (put a throttle after it); late samples are
    dropped with a warning. ``ap_ready``: when given, nothing is produced before it returns
    True (e.g. :meth:`IndexedSink.has_subscriber`), so the AP misses no sample. ``origin``:
    sample index of the first output sample; None: the device time in the first clock message
    (emulated USRPs, whose streams start at their device time, ~10^13 samples from 0).
    ``free_run_rate``: when every node is absent, the clock runs on at this many samples per
    second of host time from its last advance (radios: the AP keeps receiving noise with no
    transmitter on the air); None: it waits for a node.

    ``demand`` (emulated radios): a callable returning the AP radio's stream commands since the
    last call (``(start, end)`` device-sample windows, ``end`` None for a continuous stream;
    ``None`` for a stop; :meth:`IndexedSink.take_requests`). The block then produces only the
    samples those windows need (with :data:`DEMAND_PAD_BEFORE` / :data:`DEMAND_PAD_AFTER`) and
    moves its clock over the rest without producing them, as a USRP streams only what it was
    commanded to; the first sample after a skip carries :data:`INDEX_TAG`. The clock still
    follows the nodes' horizons (and never skips closer than :data:`DEMAND_GUARD_S` behind the
    radios' time while no window is pending), so a late sample is late as before.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        lockstep: bool = True,
        node_timeout_s: float = 1.0,
        ap_ready: Callable[[], bool] | None = None,
        origin: int | None = 0,
        free_run_rate: float | None = None,
        demand: Callable[[], list[tuple[int, int | None] | None]] | None = None,
        demand_guard: int = 0,
    ) -> None:
        if not addresses:
            raise ValueError("addresses: need at least one node address")
        if node_timeout_s <= 0:
            raise ValueError(f"node_timeout_s: {node_timeout_s!r} must be > 0")
        gr.sync_block.__init__(
            self, "pairzero_burst_source", in_sig=None, out_sig=[np.complex64] * len(addresses)
        )
        self.addresses = list(addresses)
        self.lockstep = lockstep
        self.node_timeout_s = node_timeout_s
        self.ap_ready = ap_ready
        if free_run_rate is not None and not free_run_rate > 0:
            raise ValueError(f"free_run_rate: {free_run_rate!r} must be > 0 (or None)")
        self.origin = origin
        self.clock = origin if origin is not None else 0
        self.free_run_rate = free_run_rate
        self._progress = (0.0, self.clock)  # (host time, clock) of the last advance
        k = len(addresses)
        self._pending: list[list[tuple[int, npt.NDArray[np.complex64]]]] = [[] for _ in range(k)]
        self._horizon = [0] * k
        self._last_seen = [0.0] * k
        # When the clock last caught up with each node's horizon: a node's silence counts from
        # the later of its last message and that moment. Counting from the last message alone
        # takes a live node for silent right after the emulator was held up by another one.
        self._waiting_since = [0.0] * k
        self._absent = [False] * k
        self._held_since: float | None = None  # when a live node's samples began to wait (lockstep)
        self._absent_log: list[tuple[int, int]] = []  # (node, clock) when declared absent
        self._lock = threading.Lock()
        self._socks: list[zmq.Socket] = []
        self._poller = zmq.Poller()
        self.demand = demand
        if demand_guard < 0:
            raise ValueError(f"demand_guard: {demand_guard!r} must be >= 0 samples")
        self.demand_guard = demand_guard  # samples: see DEMAND_GUARD_S
        self._windows: list[tuple[int, int]] = []  # demanded [start, end), padded
        self._device_now = 0  # latest device time in a node's clock message
        self._seam = False  # the next sample produced follows a skip: tag its index
        self.skipped = 0  # samples the clock passed without producing them (demand)
        self.produced = 0  # samples produced (per stream)
        self._bind()  # here, not in start(): a busy port is an error of the constructor
        no_scheduler_pause(self)
        self.set_min_output_buffer(STREAM_BUFFER_ITEMS)

    def _bind(self) -> None:
        for addr in self.addresses:
            s: zmq.Socket = zmq.Context.instance().socket(zmq.PULL)
            s.setsockopt(zmq.LINGER, 0)
            try:
                s.bind(addr)
            except zmq.ZMQError as e:
                s.close(0)
                self.stop()
                raise OSError(f"cannot bind {addr} (a node's sample input): {e}") from None
            self._socks.append(s)
            self._poller.register(s, zmq.POLLIN)

    def start(self) -> bool:
        if not self._socks:  # started again after a stop
            self._bind()
        now = time.monotonic()
        for i in range(len(self.addresses)):
            self._last_seen[i] = now
            self._waiting_since[i] = now
        self._progress = (now, self.clock)
        return True

    def stop(self) -> bool:
        for s in self._socks:
            self._poller.unregister(s)
            s.close(0)
        self._socks.clear()
        return True

    def absent_nodes(self) -> list[int]:
        """Nodes currently zero-filled because they went silent."""
        with self._lock:
            return [k for k, a in enumerate(self._absent) if a]

    def absent_events(self) -> list[tuple[int, int]]:
        """(node, sample index) each time a node was declared absent."""
        with self._lock:
            return list(self._absent_log)

    def _drain(self, timeout_ms: int) -> None:
        events = dict(self._poller.poll(timeout_ms))
        for k, s in enumerate(self._socks):
            if s not in events:
                continue
            while True:
                try:
                    header, payload = s.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                meta = json.loads(header)
                x = np.frombuffer(payload, dtype=np.complex64)
                start, horizon = int(meta["start"]), int(meta["horizon"])
                if self.origin is None and self.ap_ready is None and not len(x):
                    # The first clock message (no samples: the node's device time; a burst may
                    # be ahead of it) with the AP listening places the clock.
                    self.origin = self.clock = start
                    self._progress = (time.monotonic(), start)
                    log.info("stream origin at sample %d (node %d's device time)", start, k)
                if not len(x):  # a clock message: the radio's device time
                    self._device_now = max(self._device_now, start)
                if len(x):
                    if start < self.clock:
                        log.warning("node %d: %d late samples dropped (start %d < clock %d)",
                                    k, min(len(x), self.clock - start), start, self.clock)
                    self._pending[k].append((start, x))
                with self._lock:
                    self._horizon[k] = max(self._horizon[k], horizon, start + len(x))
                    self._last_seen[k] = time.monotonic()
                    if meta.get("gone"):  # the node's radio stopped streaming: no wait for it
                        if not self._absent[k]:
                            self._absent[k] = True
                            self._absent_log.append((k, self.clock))
                            log.info("node %d stopped its stream at sample %d", k, start)
                        continue
                    if self._absent[k]:
                        log.info("node %d is back at sample %d", k, self.clock)
                        self._absent[k] = False

    def _target(self, n_out: int) -> int:
        if not self.lockstep:
            return self.clock + n_out
        now = time.monotonic()
        with self._lock:
            held = 0.0  # since when a silent node holds back another's samples
            if self.free_run_rate is None:
                # A clock of nothing but the nodes' streams: while no live node has samples
                # beyond it, no one is waited on (every node idle: the AP evaluating, say), so
                # a silence counts only from when another node's samples are held back by it.
                ahead = any(h > self.clock for h, a in zip(self._horizon, self._absent, strict=True)
                            if not a)
                if not ahead:
                    self._held_since = None
                elif self._held_since is None:
                    self._held_since = now
                held = self._held_since if self._held_since is not None else now
            # (free_run_rate: the radios' time goes on, a silent node is waited on throughout)
            for k in range(len(self._socks)):
                silent_since = max(self._last_seen[k], self._waiting_since[k], held)
                if (not self._absent[k] and self._horizon[k] <= self.clock
                        and now - silent_since > self.node_timeout_s):
                    self._absent[k] = True
                    self._absent_log.append((k, self.clock))
                    # A node that has not sent anything yet is most likely still starting up.
                    log.log(logging.WARNING if self._horizon[k] > 0 else logging.INFO,
                            "node %d silent for %.1f s: zero-filled from sample %d",
                            k, self.node_timeout_s, self.clock)
            live = [h for h, a in zip(self._horizon, self._absent, strict=True) if not a]
        if live:
            return min(live)
        if self.free_run_rate is not None:  # no transmitter, but the radios' time goes on
            t, c = self._progress
            return max(self.clock, c + int((now - t) * self.free_run_rate))
        return self.clock

    def work(self, input_items: object, output_items: list[npt.NDArray[np.complex64]]) -> int:
        if self.ap_ready is not None:
            if not self.ap_ready():
                self._drain(WINDOW_POLL_MS)
                return 0
            self.ap_ready = None
            with self._lock:  # the wait for the nodes starts now, not when the block started
                self._waiting_since = [time.monotonic()] * len(self._waiting_since)
        if self.origin is None:
            self._drain(WINDOW_POLL_MS)
            if self.origin is None:
                return 0
        self._drain(0)
        n_out = len(output_items[0])
        n = self._advance(n_out)
        # Wait here (polling) rather than return 0 at once: the scheduler sleeps a long while
        # after a source produces nothing, which would add that latency to every frame.
        deadline = time.monotonic() + IDLE_WAIT_S
        while n <= 0 and time.monotonic() < deadline:
            self._drain(WINDOW_POLL_MS)
            n = self._advance(n_out)
        if n <= 0:
            return 0
        lo, hi = self.clock, self.clock + n
        if self._seam:
            self.add_item_tag(0, self.nitems_written(0), INDEX_TAG, pmt.from_uint64(lo))
            self._seam = False
        for k, out in enumerate(output_items):
            out[:n] = 0
            keep = []
            for start, x in self._pending[k]:
                a, b = max(start, lo), min(start + len(x), hi)
                if b > a:
                    out[a - lo : b - lo] = x[a - start : b - start]
                if start + len(x) > hi:
                    keep.append((start, x))
            self._pending[k] = keep
        self._passed(lo, hi)
        self.produced += n
        return n

    def _passed(self, lo: int, hi: int) -> None:
        """The clock moved from ``lo`` to ``hi``: the nodes whose horizon it reached wait from now."""
        now = time.monotonic()
        with self._lock:
            for k, h in enumerate(self._horizon):
                if lo < h <= hi:
                    self._waiting_since[k] = now
            if not all(self._absent):
                self._progress = (now, hi)
        self.clock = hi

    def _advance(self, n_out: int) -> int:
        """How many samples to produce now (at most ``n_out``); with ``demand``, first move the
        clock over the samples no window needs."""
        target = self._target(n_out)
        if self.demand is None:
            return min(n_out, target - self.clock)
        for req in self.demand():
            if req is None:  # stop: a continuous stream ends; windows already commanded stay
                self._windows = [w for w in self._windows if w[1] < CONTINUOUS]
            else:
                a, b = req
                self._windows.append((a - DEMAND_PAD_BEFORE, (b if b is not None else CONTINUOUS) + DEMAND_PAD_AFTER))
        c = self.clock
        self._windows = sorted(w for w in self._windows if w[1] > c)
        if not self._windows or self._windows[0][0] > c:
            # Nothing needed here: skip to the next window (with none, close behind device time).
            nxt = self._windows[0][0] if self._windows else self._device_now - self.demand_guard
            to = min(target, nxt)
            if to > c:
                for k in range(len(self._pending)):
                    self._pending[k] = [(s, x) for s, x in self._pending[k] if s + len(x) > to]
                self._passed(c, to)
                self.skipped += to - c
                self._seam = True
                c = to
        end = c  # end of the needed stretch the clock is in
        for a, b in self._windows:
            if a > end:
                break
            end = max(end, b)
        return min(n_out, target - c, end - c)
