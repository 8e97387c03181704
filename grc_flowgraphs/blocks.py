"""GNU Radio blocks of the loopback testbed (Python; the per-sample DSP runs in gr C++ blocks).

* :class:`BurstSource` -- K output streams on the shared sample clock. Each node sends
  ``(start index, samples)`` messages over ZeroMQ PUSH -> PULL (a zero-filled stream, sent
  compressed); the block places them at their index and fills the rest with zeros. A node that
  stops sending is declared absent after ``node_timeout_s`` and zero-filled, so it never stalls
  the emulator (gr-zeromq sources return 0 items on timeout, which stalls ``add_cc``).
* :class:`IndexedSink` -- publishes the AP stream as ``(start index, samples)`` chunks over an
  XPUB socket (drops, never blocks, when the AP is slow or absent).
* :class:`NodeChannel` -- hier block: CFO rotator -> optional flat fading -> one FIR holding the
  complex gain and the fractional delay (windowed sinc), all C++ blocks.

Message format (both directions): multipart ``[header, payload]``; header is JSON
``{"start": int, "horizon": int}`` (EdgeTx -> emulator) or 8 bytes little-endian int64 start
(emulator -> AP); payload is raw little-endian complex64.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import zmq
from gnuradio import blocks, channels, filter, gr

__all__ = ["BurstSource", "IndexedSink", "NodeChannel", "fractional_delay_taps", "FIR_TAPS"]

log = logging.getLogger(__name__)

FIR_TAPS = 41  # fractional-delay FIR length; group delay (FIR_TAPS - 1) // 2 samples
WINDOW_POLL_MS = 5
IDLE_WAIT_S = 0.2  # longest a source work() call waits for node data before returning 0


def fractional_delay_taps(delay: float, ntaps: int = FIR_TAPS, gain: complex = 1.0) -> list[complex]:
    """Windowed-sinc FIR delaying by ``(ntaps-1)/2 + delay`` samples, times ``gain``.

    ``|delay|`` must stay below ``(ntaps-1)/2 - 4`` so the Blackman-windowed sinc keeps its
    main lobes inside the filter.
    """
    half = (ntaps - 1) // 2
    if ntaps % 2 == 0 or ntaps < 9:
        raise ValueError(f"ntaps: {ntaps!r} must be odd and >= 9")
    if abs(delay) > half - 4:
        raise ValueError(f"delay: {delay!r} samples is outside +-{half - 4} allowed for {ntaps} taps")
    n = np.arange(ntaps) - half - delay
    w = np.blackman(ntaps + 2)[1:-1]  # no zero end taps
    h = np.sinc(n) * w
    h /= h.sum()  # unit DC gain
    return list(complex(gain) * h)


class NodeChannel(gr.hier_block2):
    """One node's flat channel: ``gain * exp(j 2 pi cfo n) * x(n - delay)``, optional fading.

    Output index n holds the input delayed by ``FIR_TAPS//2 + delay`` samples; the emulator
    subtracts the common ``FIR_TAPS//2``. ``fading_doppler`` > 0 adds gr-channels'
    sum-of-sinusoids Rayleigh fading (normalised Doppler, cycles/sample), seeded.
    """

    def __init__(
        self,
        gain: complex = 1.0,
        delay: float = 0.0,
        cfo: float = 0.0,
        fading_doppler: float = 0.0,
        seed: int = 0,
    ) -> None:
        gr.hier_block2.__init__(
            self,
            "pairzero_node_channel",
            gr.io_signature(1, 1, gr.sizeof_gr_complex),
            gr.io_signature(1, 1, gr.sizeof_gr_complex),
        )
        if not -0.5 < cfo < 0.5:
            raise ValueError(f"cfo: {cfo!r} must be in (-0.5, 0.5) cycles/sample")
        if fading_doppler < 0:
            raise ValueError(f"fading_doppler: {fading_doppler!r} must be >= 0")
        self.rotator = blocks.rotator_cc(2 * np.pi * cfo)
        self.fir = filter.fir_filter_ccc(1, fractional_delay_taps(delay, gain=gain))
        chain: list[gr.basic_block] = [self, self.rotator]
        if fading_doppler > 0:
            self.fading = channels.fading_model(8, fading_doppler, False, 4.0, seed)
            chain.append(self.fading)
        chain += [self.fir, self]
        self.connect(*chain)


class BurstSource(gr.sync_block):
    """K zero-filled output streams fed by ZeroMQ PULL sockets bound at ``addresses``.

    ``lockstep`` True: the clock advances only as far as every live node has defined its
    stream (its ``horizon``), so unthrottled runs are deterministic; a node the clock has
    waited on for ``node_timeout_s`` (counted from its last message or from the moment the
    clock reached its horizon, whichever is later) is declared absent (zero-filled) until it
    sends again. ``lockstep`` False: free-running clock (put a throttle after it); late samples are
    dropped with a warning. ``ap_ready``: when given, nothing is produced before it returns
    True (e.g. :meth:`IndexedSink.has_subscriber`), so the AP misses no sample.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        lockstep: bool = True,
        node_timeout_s: float = 1.0,
        ap_ready: Callable[[], bool] | None = None,
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
        self.clock = 0
        k = len(addresses)
        self._pending: list[list[tuple[int, npt.NDArray[np.complex64]]]] = [[] for _ in range(k)]
        self._horizon = [0] * k
        self._last_seen = [0.0] * k
        # When the clock last caught up with each node's horizon: a node's silence counts from
        # the later of its last message and that moment. Counting from the last message alone
        # takes a live node for silent right after the emulator was held up by another one.
        self._waiting_since = [0.0] * k
        self._absent = [False] * k
        self._absent_log: list[tuple[int, int]] = []  # (node, clock) when declared absent
        self._lock = threading.Lock()
        self._socks: list[zmq.Socket] = []
        self._poller = zmq.Poller()
        self._bind()  # here, not in start(): a busy port is an error of the constructor

    def _bind(self) -> None:
        for addr in self.addresses:
            s = zmq.Context.instance().socket(zmq.PULL)
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
                if len(x):
                    if start < self.clock:
                        log.warning("node %d: %d late samples dropped (start %d < clock %d)",
                                    k, min(len(x), self.clock - start), start, self.clock)
                    self._pending[k].append((start, x))
                with self._lock:
                    self._horizon[k] = max(self._horizon[k], horizon, start + len(x))
                    self._last_seen[k] = time.monotonic()
                    if self._absent[k]:
                        log.info("node %d is back at sample %d", k, self.clock)
                        self._absent[k] = False

    def _target(self, n_out: int) -> int:
        if not self.lockstep:
            return self.clock + n_out
        now = time.monotonic()
        with self._lock:
            for k in range(len(self._socks)):
                silent_since = max(self._last_seen[k], self._waiting_since[k])
                if (not self._absent[k] and self._horizon[k] <= self.clock
                        and now - silent_since > self.node_timeout_s):
                    self._absent[k] = True
                    self._absent_log.append((k, self.clock))
                    # A node that has not sent anything yet is most likely still starting up.
                    log.log(logging.WARNING if self._horizon[k] > 0 else logging.INFO,
                            "node %d silent for %.1f s: zero-filled from sample %d",
                            k, self.node_timeout_s, self.clock)
            live = [h for h, a in zip(self._horizon, self._absent, strict=True) if not a]
        return min(live) if live else self.clock

    def work(self, input_items: object, output_items: list[npt.NDArray[np.complex64]]) -> int:
        if self.ap_ready is not None:
            if not self.ap_ready():
                self._drain(WINDOW_POLL_MS)
                return 0
            self.ap_ready = None
            with self._lock:  # the wait for the nodes starts now, not when the block started
                self._waiting_since = [time.monotonic()] * len(self._waiting_since)
        self._drain(0)
        n_out = len(output_items[0])
        n = min(n_out, self._target(n_out) - self.clock)
        # Wait here (polling) rather than return 0 at once: the scheduler sleeps a long while
        # after a source produces nothing, which would add that latency to every frame.
        deadline = time.monotonic() + IDLE_WAIT_S
        while n <= 0 and time.monotonic() < deadline:
            self._drain(WINDOW_POLL_MS)
            n = min(n_out, self._target(n_out) - self.clock)
        if n <= 0:
            return 0
        lo, hi = self.clock, self.clock + n
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
        now = time.monotonic()
        with self._lock:
            for k, h in enumerate(self._horizon):
                if lo < h <= hi:
                    self._waiting_since[k] = now
        self.clock = hi
        return n


class IndexedSink(gr.sync_block):
    """Publishes its input as ``(index, samples)`` chunks on an XPUB socket bound at ``address``.

    ``index_offset`` is subtracted from the running item count (the emulator's common FIR
    delay), so the published index is the shared sample clock. :meth:`has_subscriber` tells
    (from any thread) whether an AP has subscribed.
    """

    def __init__(self, address: str, index_offset: int = 0) -> None:
        gr.sync_block.__init__(self, "pairzero_indexed_sink", in_sig=[np.complex64], out_sig=None)
        self.address = address
        self.index_offset = index_offset
        self.count = 0
        self._subscribed = False
        self._lock = threading.Lock()
        self.dropped = 0
        self._sock: zmq.Socket | None = None
        self._bind()  # here, not in start(): a busy port is an error of the constructor

    def _bind(self) -> None:
        s = zmq.Context.instance().socket(zmq.XPUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 100000)
        try:
            s.bind(self.address)
        except zmq.ZMQError as e:
            s.close(0)
            raise OSError(f"cannot bind {self.address} (the AP sample stream): {e}") from None
        self._sock = s

    def start(self) -> bool:
        with self._lock:
            if self._sock is None:  # started again after a stop
                self._bind()
        return True

    def stop(self) -> bool:
        with self._lock:
            if self._sock is not None:
                self._sock.close(0)
                self._sock = None
        return True

    def _check_subscribers(self) -> None:
        if self._sock is None:
            return
        while True:
            try:
                msg = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self._subscribed = True

    def has_subscriber(self) -> bool:
        """True once a subscriber (the AP) has joined; safe to call from another block's thread."""
        with self._lock:
            self._check_subscribers()
            return self._subscribed

    def work(self, input_items: list[npt.NDArray[np.complex64]], output_items: object) -> int:
        x = input_items[0]
        index = self.count - self.index_offset
        with self._lock:
            self._check_subscribers()
            try:
                assert self._sock is not None
                self._sock.send_multipart([np.int64(index).tobytes(), x.tobytes()], zmq.NOBLOCK)
            except zmq.Again:
                self.dropped += len(x)
        self.count += len(x)
        return len(x)
