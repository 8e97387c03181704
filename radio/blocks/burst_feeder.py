"""Timed bursts for ``uhd.usrp_sink`` (:class:`BurstFeeder`): ``tx_sob``, ``tx_time`` and
``tx_eob`` tags, idle in between; the sink's ``async_msgs`` come back to it for the sender to
wait on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pmt
from gnuradio import gr

from radio.blocks.async_collector import AsyncCollector
from radio.blocks.common import no_scheduler_pause

__all__ = ["BurstFeeder", "TX_TAG_SOURCE"]


TX_TAG_SOURCE = pmt.intern("pairzero_tx")


BURST_BUFFER_ITEMS = 1 << 16  # output buffer (items) of the TX burst feeder


@dataclass
class _Burst:
    samples: npt.NDArray[np.complex64]
    tx_time: tuple[int, float]
    pos: int = 0
    handed: threading.Event | None = None


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
