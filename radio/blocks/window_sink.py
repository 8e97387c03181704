"""The samples of requested windows of device time after ``uhd.usrp_source``
(:class:`WindowSink`), placed by the source's ``rx_time`` tags.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pmt
from gnuradio import gr

__all__ = ["WindowSink"]

log = logging.getLogger(__name__)


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
