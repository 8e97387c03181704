"""The emulator's sink (:class:`IndexedSink`): publishes the AP stream as ``(start index,
samples)`` chunks over an XPUB socket, and takes the AP radio's stream commands that come
upstream (message format in :mod:`radio.blocks`).
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pmt
import zmq
from gnuradio import gr

from radio.blocks.common import INDEX_TAG

__all__ = ["IndexedSink", "STREAM_CMD", "STREAM_STOP"]

log = logging.getLogger(__name__)


STREAM_CMD = b"stream_cmd"
STREAM_STOP = b"stream_stop"


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
