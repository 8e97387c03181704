"""What the testbed's GNU Radio blocks share: the emulator's FIR length, the stream buffer size,
the index tag a skipping source puts on its first sample after a skip, and the scheduler setting
of blocks that wait for data.
"""

from __future__ import annotations

import pmt
from gnuradio import gr

__all__ = ["FIR_TAPS", "STREAM_BUFFER_ITEMS", "INDEX_TAG", "IDLE_RETRY_MS", "no_scheduler_pause"]


FIR_TAPS = 41  # fractional-delay FIR length; group delay (FIR_TAPS - 1) // 2 samples
#: Output buffer (items) of the emulator's blocks: GNU Radio's default (32 KiB, 4096 complex
#: samples) splits each 5 ms of stream (5000 samples at 1 MS/s) over two
#: work() calls of every block, and each call of a Python block costs ~130 us.
STREAM_BUFFER_ITEMS = 1 << 14


#: Tag on the first sample a :class:`BurstSource` produces after skipping samples nobody asked
#: for (``demand``): the sample's index (uint64). :class:`IndexedSink` follows it.
INDEX_TAG = pmt.intern("pz_index")


#: How long (ms) the scheduler waits before calling a block again after its work() produced
#: nothing. GNU Radio's default, 250 ms, would hold a burst (or a window of samples) that much.
IDLE_RETRY_MS = 5


def no_scheduler_pause(block: gr.basic_block) -> None:
    """Let the scheduler call ``block`` again soon after it produced nothing (see
    :data:`IDLE_RETRY_MS`); sources that wait for bursts or samples need it."""
    setter = getattr(block, "set_blkd_input_timer_value", None)
    if setter is not None:
        setter(IDLE_RETRY_MS)
