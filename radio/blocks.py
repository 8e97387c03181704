"""GNU Radio blocks of the testbed (Python; the per-sample DSP runs in gr C++ blocks).

Channel emulator (``radio.emulator``, ``grc_flowgraphs/loopback_channel.grc``):

* :class:`BurstSource` -- K output streams on the shared sample clock. Each node sends
  ``(start index, samples)`` messages over ZeroMQ PUSH -> PULL (a zero-filled stream, sent
  compressed); the block places them at their index and fills the rest with zeros. A node that
  stops sending is declared absent after ``node_timeout_s`` and zero-filled, so it never stalls
  the emulator (gr-zeromq sources return 0 items on timeout, which stalls ``add_cc``).
* :class:`IndexedSink` -- publishes the AP stream as ``(start index, samples)`` chunks over an
  XPUB socket (drops, never blocks, when the AP is slow or absent).
* :class:`NodeChannel` -- hier block: CFO rotator -> optional flat fading -> one FIR holding the
  complex gain and the fractional delay (windowed sinc), all C++ blocks.
* :class:`ChannelBank` -- hier block: K node channels, their sum and the AP's AWGN.

Radio front ends (``radio.usrp``, ``grc_flowgraphs/{edge_tx,ap_rx}_usrp.grc``):

* :class:`BurstFeeder` -- source of timed bursts for ``uhd.usrp_sink`` (``tx_sob``,
  ``tx_time``, ``tx_eob`` tags), idle in between; takes back the sink's ``async_msgs`` (burst
  ACK, late burst, underflow) for the sender to wait on.
* :class:`WindowSink` -- after ``uhd.usrp_source``: keeps the samples of requested windows of
  device time, placed by their ``rx_time`` tags (a second tag inside a window is an overflow).

Message format (both directions): multipart ``[header, payload]``; header is JSON
``{"start": int, "horizon": int}`` (EdgeTx -> emulator) or 8 bytes little-endian int64 start
(emulator -> AP); payload is raw little-endian complex64. Upstream on the AP stream (an XSUB
subscriber: the emulated USRP's receiver, :mod:`radio.emulated`): the radio's stream commands,
``[b"stream_cmd", JSON {"start": int, "end": int | null}]`` (a window of device samples; null:
continuous) or ``[b"stream_stop"]``; with ``demand``, the emulator produces only those windows.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pmt
import zmq
from gnuradio import analog, blocks, channels, filter, gr

__all__ = [
    "BurstSource", "IndexedSink", "NodeChannel", "NodeChannelParams", "ChannelBank",
    "BurstFeeder", "AsyncCollector", "WindowSink", "async_event_codes", "make_async_message",
    "fractional_delay_taps", "FIR_TAPS", "TX_TAG_SOURCE", "ASYNC_PORT", "no_scheduler_pause",
]

log = logging.getLogger(__name__)

FIR_TAPS = 41  # fractional-delay FIR length; group delay (FIR_TAPS - 1) // 2 samples
TX_TAG_SOURCE = pmt.intern("pairzero_tx")
WINDOW_POLL_MS = 5
IDLE_WAIT_S = 0.2  # longest a source work() call waits for node data before returning 0
#: Output buffer (items) of the emulator's blocks: GNU Radio's default (32 KiB, 4096 complex
#: samples) splits each 5 ms of stream (5000 samples at 1 MS/s) over two
#: work() calls of every block, and each call of a Python block costs ~130 us.
STREAM_BUFFER_ITEMS = 1 << 14
BURST_BUFFER_ITEMS = 1 << 16  # output buffer (items) of the TX burst feeder
#: Tag on the first sample a :class:`BurstSource` produces after skipping samples nobody asked
#: for (``demand``): the sample's index (uint64). :class:`IndexedSink` follows it.
INDEX_TAG = pmt.intern("pz_index")
STREAM_CMD = b"stream_cmd"
STREAM_STOP = b"stream_stop"
#: Samples produced around a demanded window: before it, so the filters' state after a skip
#: (whatever preceded the skip) has left the taps by the window's first sample; after it, the
#: FIR's group delay.
DEMAND_PAD_BEFORE = 2 * FIR_TAPS
DEMAND_PAD_AFTER = FIR_TAPS
#: With no window pending, skipping stops this far (s of device time) behind the radios' time,
#: so a stream command still in flight finds its window not yet skipped.
DEMAND_GUARD_S = 0.05
CONTINUOUS = 2**62  # the end of a continuous stream's window


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


@dataclass(frozen=True)
class NodeChannelParams:
    """One node's emulated channel: complex gain (linear), delay (samples), CFO (cycles/sample)."""

    gain: complex
    delay: float
    cfo: float


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
        self.fir = filter.fir_filter_ccc(1, fractional_delay_taps(delay, gain=gain))
        chain: list[gr.basic_block] = [self]
        if cfo != 0.0:  # radios on a shared reference have none: no rotator to run
            self.rotator = blocks.rotator_cc(2 * np.pi * cfo)
            chain.append(self.rotator)
        if fading_doppler > 0:
            self.fading = channels.fading_model(8, fading_doppler, False, 4.0, seed)
            chain.append(self.fading)
        chain += [self.fir, self]
        self.connect(*chain)
        for blk in chain[1:-1]:
            blk.set_min_output_buffer(STREAM_BUFFER_ITEMS)


class BurstSource(gr.sync_block):
    """K zero-filled output streams fed by ZeroMQ PULL sockets bound at ``addresses``.

    ``lockstep`` True: the clock advances only as far as every live node has defined its
    stream (its ``horizon``), so unthrottled runs are deterministic; a node the clock has
    waited on for ``node_timeout_s`` (counted from its last message or from the moment the
    clock reached its horizon, whichever is later) is declared absent (zero-filled) until it
    sends again. ``lockstep`` False: free-running clock (put a throttle after it); late samples are
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


class IndexedSink(gr.sync_block):
    """Publishes its input as ``(index, samples)`` chunks on an XPUB socket bound at ``address``.

    ``index_offset`` is subtracted from the running item count (the emulator's common FIR
    delay) and ``origin`` (the index of the first sample, or a callable giving it once known,
    e.g. the :class:`BurstSource`'s) added, so the published index is the shared sample clock;
    an :data:`INDEX_TAG` (the source skipped samples) sets the index from its sample on (its
    item ``index_offset`` later: the tag rides with the FIR's input, the FIR's output lags).
    :meth:`has_subscriber` tells (from any thread) whether an AP has subscribed;
    :meth:`take_requests` returns the stream commands its radio sent upstream (module docstring).
    """

    def __init__(self, address: str, index_offset: int = 0,
                 origin: int | Callable[[], int | None] = 0) -> None:
        gr.sync_block.__init__(self, "pairzero_indexed_sink", in_sig=[np.complex64], out_sig=None)
        self.address = address
        self.index_offset = index_offset
        self._origin = origin
        self._seams: collections.deque[tuple[int, int]] = collections.deque()  # (item, index - item)
        self._base: int | None = None  # index - item of the samples now published
        self._subscribed = False
        self._requests: list[tuple[int, int | None] | None] = []
        self._lock = threading.Lock()
        self.dropped = 0
        self.rejected = 0  # malformed upstream messages
        self._sock: zmq.Socket | None = None
        self._bind()  # here, not in start(): a busy port is an error of the constructor

    def _bind(self) -> None:
        s: zmq.Socket = zmq.Context.instance().socket(zmq.XPUB)
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
        """Read what came upstream: subscriptions, and the radio's stream commands (lock held)."""
        if self._sock is None:
            return
        while True:
            try:
                msg = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(msg) == 1 and msg[0][:1] in (b"\x00", b"\x01"):
                if msg[0][:1] == b"\x01":
                    self._subscribed = True
                continue
            try:
                self._requests.append(_stream_request(msg))
            except ValueError as e:
                self.rejected += 1
                log.warning("AP stream: upstream message dropped: %s", e)

    def take_requests(self) -> list[tuple[int, int | None] | None]:
        """The radio's stream commands since the last call: ``(start, end)`` (``end`` None:
        continuous) or None (stop); safe to call from another block's thread."""
        with self._lock:
            self._check_subscribers()
            out, self._requests = self._requests, []
            return out

    def has_subscriber(self) -> bool:
        """True once a subscriber (the AP) has joined; safe to call from another block's thread."""
        with self._lock:
            self._check_subscribers()
            return self._subscribed

    def work(self, input_items: list[npt.NDArray[np.complex64]], output_items: object) -> int:
        x = input_items[0]
        n = len(x)
        if callable(self._origin):  # known once the source produced its first sample
            self._origin = int(self._origin() or 0)
        if self._base is None:
            self._base = self._origin - self.index_offset
        q0 = self.nitems_read(0)
        for tag in sorted(self.get_tags_in_window(0, 0, n, INDEX_TAG), key=lambda t: t.offset):
            at = int(tag.offset) + self.index_offset
            self._seams.append((at, int(pmt.to_uint64(tag.value)) - int(tag.offset)))
        with self._lock:
            self._check_subscribers()
            pos = 0
            while pos < n:  # one chunk per stretch of contiguous indices
                while self._seams and self._seams[0][0] <= q0 + pos:
                    self._base = self._seams.popleft()[1] - self.index_offset
                end = n if not self._seams else min(n, self._seams[0][0] - q0)
                try:
                    assert self._sock is not None
                    self._sock.send_multipart([np.int64(self._base + q0 + pos).tobytes(),
                                               x[pos:end].tobytes()], zmq.NOBLOCK)
                except zmq.Again:
                    self.dropped += end - pos
                pos = end
        return n


def _stream_request(msg: list[bytes]) -> tuple[int, int | None] | None:
    """One upstream message of the AP stream as a stream command (see the module docstring)."""
    if msg == [STREAM_STOP]:
        return None
    if len(msg) != 2 or msg[0] != STREAM_CMD:
        raise ValueError(f"not a stream command ({len(msg)} parts, first {msg[0][:16]!r})")
    try:
        cmd = json.loads(msg[1])
        start, end = cmd["start"], cmd["end"]
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"stream command {msg[1][:80]!r}: {e}") from None
    def whole(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not whole(start) or start < 0 or not (end is None or (whole(end) and end > start)):
        raise ValueError(f"stream command {msg[1][:80]!r}: needs start >= 0 and end > start (or null)")
    return start, end


class ChannelBank(gr.hier_block2):
    """K node streams in, the AP's stream out: per node :class:`NodeChannel`, their sum, and
    complex AWGN of variance ``noise_var`` per sample (``noise_source_c``, seeded)."""

    def __init__(
        self,
        node_channels: Sequence[NodeChannelParams],
        noise_var: float,
        seed: int = 0,
        fading_doppler: float = 0.0,
    ) -> None:
        k = len(node_channels)
        if k < 1:
            raise ValueError("node_channels: need at least one node channel")
        if not (math.isfinite(noise_var) and noise_var >= 0):
            raise ValueError(f"noise_var: {noise_var!r} must be a finite number >= 0")
        gr.hier_block2.__init__(
            self,
            "pairzero_channel_bank",
            gr.io_signature(k, k, gr.sizeof_gr_complex),
            gr.io_signature(1, 1, gr.sizeof_gr_complex),
        )
        self.add = blocks.add_cc()
        self.noise = analog.noise_source_c(analog.GR_GAUSSIAN, float(np.sqrt(noise_var)), seed)
        self.channels = []
        for i, ch in enumerate(node_channels):
            blk = NodeChannel(ch.gain, ch.delay, ch.cfo, fading_doppler, seed=seed + 1 + i)
            self.channels.append(blk)
            self.connect((self, i), blk, (self.add, i))
        self.connect(self.noise, (self.add, k))
        self.connect(self.add, self)
        for blk in (self.add, self.noise):
            blk.set_min_output_buffer(STREAM_BUFFER_ITEMS)


# ----------------------------------------------------------------------------- radio front ends

ASYNC_PORT = pmt.intern("async_msgs")
_ASYNC_KEY = pmt.intern("uhd_async_msg")
_EVENT_CODE = pmt.intern("event_code")
_TIME_SPEC = pmt.intern("time_spec")


def async_event_codes(msg: pmt.pmt_t) -> tuple[list[str], float | None]:
    """Event codes (``burst_ack``, ``underflow``, ``time_error``, ...) and time (s, or None) of
    one message of ``uhd.usrp_sink``'s ``async_msgs`` port: ``(uhd_async_msg . {event_code:
    (codes...), time_spec: (secs . frac), channel: n})``; ([], None) for anything else."""
    if not (pmt.is_pair(msg) and pmt.eq(pmt.car(msg), _ASYNC_KEY) and pmt.is_dict(pmt.cdr(msg))):
        return [], None
    d = pmt.cdr(msg)
    codes = pmt.dict_ref(d, _EVENT_CODE, pmt.PMT_NIL)
    out = []
    while pmt.is_pair(codes):
        out.append(pmt.symbol_to_string(pmt.car(codes)))
        codes = pmt.cdr(codes)
    ts = pmt.dict_ref(d, _TIME_SPEC, pmt.PMT_NIL)
    when = None
    if pmt.is_pair(ts):
        when = float(pmt.to_long(pmt.car(ts))) + float(pmt.to_double(pmt.cdr(ts)))
    return out, when


def make_async_message(codes: Sequence[str], when: tuple[int, float] | None, channel: int = 0) -> pmt.pmt_t:
    """An ``async_msgs`` message as ``uhd.usrp_sink`` publishes it (see :func:`async_event_codes`)."""
    lst = pmt.PMT_NIL
    for c in codes:
        lst = pmt.list_add(lst, pmt.intern(c))
    d = pmt.dict_add(pmt.make_dict(), _EVENT_CODE, lst)
    if when is not None:
        d = pmt.dict_add(d, _TIME_SPEC, pmt.cons(pmt.from_long(int(when[0])), pmt.from_double(float(when[1]))))
    d = pmt.dict_add(d, pmt.intern("channel"), pmt.from_uint64(channel))
    return pmt.cons(_ASYNC_KEY, d)


#: How long (ms) the scheduler waits before calling a block again after its work() produced
#: nothing. GNU Radio's default, 250 ms, would hold a burst (or a window of samples) that much.
IDLE_RETRY_MS = 5


def no_scheduler_pause(block: gr.basic_block) -> None:
    """Let the scheduler call ``block`` again soon after it produced nothing (see
    :data:`IDLE_RETRY_MS`); sources that wait for bursts or samples need it."""
    setter = getattr(block, "set_blkd_input_timer_value", None)
    if setter is not None:
        setter(IDLE_RETRY_MS)


@dataclass
class _Burst:
    samples: npt.NDArray[np.complex64]
    tx_time: tuple[int, float]
    pos: int = 0
    handed: threading.Event | None = None


class AsyncCollector(gr.basic_block):
    """Message sink for ``uhd.usrp_sink``'s ``async_msgs``: keeps the event codes for a sender
    to wait on (its own thread, so an event is seen the moment it arrives)."""

    def __init__(self) -> None:
        gr.basic_block.__init__(self, "pairzero_async_collector", in_sig=None, out_sig=None)
        self.message_port_register_in(ASYNC_PORT)
        self.set_msg_handler(ASYNC_PORT, self._on_async)
        self._events: list[tuple[list[str], float | None]] = []
        self._cond = threading.Condition()
        self.seen = 0

    def _on_async(self, msg: pmt.pmt_t) -> None:
        codes, when = async_event_codes(msg)
        if not codes:
            return
        with self._cond:
            self._events.append((codes, when))
            self.seen += 1
            self._cond.notify_all()

    def clear(self) -> None:
        """Forget the events received so far."""
        with self._cond:
            self._events.clear()

    def wait(self, timeout_s: float) -> list[tuple[list[str], float | None]]:
        """The events received since the last call (waiting up to ``timeout_s`` for one)."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._events), timeout=max(timeout_s, 0.0))
            out, self._events = self._events, []
            return out


class _BurstSource(gr.sync_block):
    """The stream side of :class:`BurstFeeder`."""

    def __init__(self, collector: AsyncCollector, one_shot: bool, idle_wait_s: float) -> None:
        gr.sync_block.__init__(self, "pairzero_burst_feeder", in_sig=None, out_sig=[np.complex64])
        self._queue: queue.Queue[_Burst] = queue.Queue()
        self._cur: _Burst | None = None
        self._collector = collector
        self._one_shot = one_shot
        self._sent_one = False
        self._idle_wait_s = idle_wait_s  # longest wait in work() for a burst (also stop latency)
        no_scheduler_pause(self)
        # A whole frame in one work() call (K = 32 is ~35k samples): it reaches the radio
        # without waiting for the scheduler between pieces, which the frame's lead must cover.
        self.set_min_output_buffer(BURST_BUFFER_ITEMS)

    def work(self, input_items: object, output_items: list[npt.NDArray[np.complex64]]) -> int:
        if self._cur is None:
            if self._one_shot and self._sent_one and self._collector.seen:
                return -1  # WORK_DONE: the radio acknowledged the burst (or said why not)
            try:
                self._cur = self._queue.get(timeout=self._idle_wait_s)
            except queue.Empty:
                return 0
        b = self._cur
        out = output_items[0]
        n = min(len(out), len(b.samples) - b.pos)
        out[:n] = b.samples[b.pos : b.pos + n]
        at = self.nitems_written(0)
        if b.pos == 0:
            t = pmt.make_tuple(pmt.from_uint64(b.tx_time[0]), pmt.from_double(b.tx_time[1]))
            self.add_item_tag(0, at, pmt.intern("tx_sob"), pmt.PMT_T, TX_TAG_SOURCE)
            self.add_item_tag(0, at, pmt.intern("tx_time"), t, TX_TAG_SOURCE)
        b.pos += n
        if b.pos == len(b.samples):
            self.add_item_tag(0, at + n - 1, pmt.intern("tx_eob"), pmt.PMT_T, TX_TAG_SOURCE)
            self._cur = None
            self._sent_one = True
            if b.handed is not None:
                b.handed.set()
        return n


class BurstFeeder(gr.hier_block2):
    """Timed bursts for ``uhd.usrp_sink``: ``tx_sob`` + ``tx_time`` on a burst's first sample,
    ``tx_eob`` on its last; nothing in between bursts (a USRP does not underflow between
    bursts). Connect the sink's ``async_msgs`` back to the message input of the same name.

    ``queue_burst(samples, (whole s, frac s))`` returns an event set once the whole burst has
    been handed downstream; :meth:`wait_async` returns the sink's event codes (``burst_ack``,
    ``time_error``, ``underflow``...). ``one_shot`` (``edge_tx_usrp.grc``): send ``burst`` at
    device time ``tx_time`` once, then end the flowgraph when the radio has acknowledged it or
    said why not.
    """

    def __init__(self, burst: Sequence[complex] | None = None, tx_time: float = 0.0,
                 one_shot: bool = False, idle_wait_s: float = 0.1) -> None:
        gr.hier_block2.__init__(self, "pairzero_burst_feeder", gr.io_signature(0, 0, 0),
                                gr.io_signature(1, 1, gr.sizeof_gr_complex))
        self.message_port_register_hier_in("async_msgs")
        self.collector = AsyncCollector()
        self.source = _BurstSource(self.collector, one_shot, idle_wait_s)
        self.connect(self.source, self)
        self.msg_connect(self, "async_msgs", self.collector, "async_msgs")
        if burst is not None and len(burst):
            whole = int(tx_time)
            self.queue_burst(np.asarray(burst, dtype=np.complex64), (whole, tx_time - whole))

    def queue_burst(self, samples: npt.NDArray[np.complexfloating], tx_time: tuple[int, float]) -> threading.Event:
        """Queue one burst for device time ``tx_time``; the event is set when it is handed over."""
        x = np.ascontiguousarray(samples, dtype=np.complex64)
        if len(x) < 1:
            raise ValueError("samples: a burst needs at least one sample")
        ev = threading.Event()
        self.source._queue.put(_Burst(x, (int(tx_time[0]), float(tx_time[1])), 0, ev))
        return ev

    def clear_async(self) -> None:
        """Forget the async events received so far."""
        self.collector.clear()

    def wait_async(self, timeout_s: float) -> list[tuple[list[str], float | None]]:
        """Async events received since the last call (waiting up to ``timeout_s`` for one)."""
        return self.collector.wait(timeout_s)


@dataclass
class _Window:
    start: int
    length: int
    buf: npt.NDArray[np.complex64]
    filled: int = 0
    lost: list[tuple[int, int]] | None = None  # (expected index, index after the gap)


class WindowSink(gr.sync_block):
    """Keeps the samples of one requested window of device time from ``uhd.usrp_source``.

    The source tags the first sample of every stream (and of every buffer after an overflow)
    with ``rx_time`` (whole s, frac s); this block follows the device sample index from those
    tags. :meth:`expect` registers the window [start, start + length); a jump of ``rx_time``
    inside it (samples lost) is recorded in :meth:`window_state`. Samples before the first tag,
    or outside the window, are dropped.
    """

    def __init__(self, sample_rate: float = 1e6, start_time: float = -1.0, num_samples: int = 0,
                 out_file: str = "") -> None:
        gr.sync_block.__init__(self, "pairzero_window_sink", in_sig=[np.complex64], out_sig=None)
        if not sample_rate > 0:
            raise ValueError(f"sample_rate: {sample_rate!r} must be > 0")
        self.sample_rate = float(sample_rate)
        self._index: int | None = None  # device sample index of the next input item
        self._win: _Window | None = None
        self._cond = threading.Condition()
        self.samples_seen = 0
        # One shot (ap_rx_usrp.grc): the window at device time start_time, written to out_file
        # (complex64), then the flowgraph ends.
        self.out_file = out_file
        if start_time >= 0 and num_samples > 0:
            self.expect(round(start_time * self.sample_rate), num_samples)
        elif out_file:
            raise ValueError("out_file: a one-shot window needs start_time >= 0 and num_samples > 0")

    def expect(self, start: int, length: int) -> None:
        """Collect [start, start + length) from now on (replaces any earlier window)."""
        if length < 1:
            raise ValueError(f"length: {length!r} must be >= 1")
        with self._cond:
            self._win = _Window(int(start), int(length), np.zeros(length, dtype=np.complex64), 0, [])

    def cancel(self) -> None:
        """Stop collecting."""
        with self._cond:
            self._win = None

    def window_state(self) -> tuple[int, list[tuple[int, int]]]:
        """(samples of the window received, gaps seen inside it)."""
        with self._cond:
            w = self._win
            return (0, []) if w is None else (w.filled, list(w.lost or []))

    def take(self) -> npt.NDArray[np.complex64] | None:
        """The window's samples if it is complete (and forget it), else None."""
        with self._cond:
            w = self._win
            if w is None or w.filled < w.length:
                return None
            self._win = None
            return w.buf

    def wait(self, timeout_s: float) -> bool:
        """Wait until the window is complete or has lost samples (True), or ``timeout_s``
        passed (False). Returns at once when it already is, so no wake-up is missed."""
        def settled() -> bool:
            w = self._win
            return w is None or w.filled >= w.length or bool(w.lost)

        with self._cond:
            return self._cond.wait_for(settled, timeout=max(timeout_s, 0.0))

    def _place(self, x: npt.NDArray[np.complex64], index: int) -> None:
        w = self._win
        if w is None:
            return
        a, b = max(index, w.start), min(index + len(x), w.start + w.length)
        if b > a:
            w.buf[a - w.start : b - w.start] = x[a - index : b - index]
            w.filled += b - a

    def work(self, input_items: list[npt.NDArray[np.complex64]], output_items: object) -> int:
        x = input_items[0]
        n = len(x)
        base = self.nitems_read(0)
        tags = sorted(self.get_tags_in_window(0, 0, n, pmt.intern("rx_time")), key=lambda t: t.offset)
        with self._cond:
            pos = 0
            for tag in tags:
                rel = int(tag.offset - base)
                if self._index is not None and rel > pos:
                    self._place(x[pos:rel], self._index)
                    self._index += rel - pos
                pos = rel
                whole = int(pmt.to_uint64(pmt.tuple_ref(tag.value, 0)))
                frac = float(pmt.to_double(pmt.tuple_ref(tag.value, 1)))
                new = _time_to_index(whole, frac, self.sample_rate)
                w = self._win
                if (w is not None and 0 < w.filled < w.length and self._index is not None
                        and new != self._index and w.lost is not None):
                    w.lost.append((self._index, new))
                self._index = new
            if self._index is not None and n > pos:
                self._place(x[pos:], self._index)
                self._index += n - pos
            self.samples_seen += n
            self._cond.notify_all()
            w = self._win
            if self.out_file and w is not None and (w.filled >= w.length or w.lost):
                if w.lost:
                    log.error("window lost samples (rx_time jumped %s): not written", w.lost)
                else:
                    w.buf.tofile(self.out_file)
                    log.info("window of %d samples at device sample %d written to %s", w.length,
                             w.start, self.out_file)
                self._win = None
                return -1  # WORK_DONE: the one-shot capture is over
        return n


def _time_to_index(whole: int, frac: float, rate: float) -> int:
    if float(rate).is_integer():
        return whole * int(rate) + round(frac * rate)
    return round((whole + frac) * rate)
