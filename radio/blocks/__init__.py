"""GNU Radio blocks of the testbed (Python; the per-sample DSP runs in gr C++ blocks), one file
per block; what they share is in :mod:`radio.blocks.common`.

Channel emulator (``radio.emulator``, ``grc_flowgraphs/loopback_channel.grc``):

* :class:`BurstSource` (``burst_source.py``) -- K output streams on the shared sample clock.
  Each node sends ``(start index, samples)`` messages over ZeroMQ PUSH -> PULL (a zero-filled
  stream, sent compressed); the block places them at their index and fills the rest with
  zeros. A node that stops sending is declared absent after ``node_timeout_s`` and
  zero-filled, so it never stalls the emulator (gr-zeromq sources return 0 items on timeout,
  which stalls ``add_cc``).
* :class:`IndexedSink` (``indexed_sink.py``) -- publishes the AP stream as ``(start index,
  samples)`` chunks over an XPUB socket (drops, never blocks, when the AP is slow or absent).
* :class:`NodeChannel` (``node_channel.py``) -- hier block: CFO rotator -> optional flat
  fading -> one FIR holding the complex gain and the fractional delay (windowed sinc), all
  C++ blocks.
* :class:`ChannelBank` (``channel_bank.py``) -- hier block: K node channels, their sum and the
  AP's AWGN.

Radio front ends (``radio.usrp``, ``grc_flowgraphs/{edge_tx,ap_rx}_usrp.grc``):

* :class:`BurstFeeder` (``burst_feeder.py``) -- source of timed bursts for ``uhd.usrp_sink``
  (``tx_sob``, ``tx_time``, ``tx_eob`` tags), idle in between; takes back the sink's
  ``async_msgs`` (burst ACK, late burst, underflow) for the sender to wait on, in an
  :class:`AsyncCollector` (``async_collector.py``).
* :class:`WindowSink` (``window_sink.py``) -- after ``uhd.usrp_source``: keeps the samples of
  requested windows of device time, placed by their ``rx_time`` tags (a second tag inside a
  window is an overflow).

Message format (both directions): multipart ``[header, payload]``; header is JSON
``{"start": int, "horizon": int}`` (EdgeTx -> emulator) or 8 bytes little-endian int64 start
(emulator -> AP); payload is raw little-endian complex64. Upstream on the AP stream (an XSUB
subscriber: the emulated USRP's receiver, :mod:`radio.emulated`): the radio's stream commands,
``[b"stream_cmd", JSON {"start": int, "end": int | null}]`` (a window of device samples; null:
continuous) or ``[b"stream_stop"]``; with ``demand``, the emulator produces only those windows.
"""

from radio.blocks.async_collector import (
    ASYNC_PORT,
    AsyncCollector,
    async_event_codes,
    make_async_message,
)
from radio.blocks.burst_feeder import TX_TAG_SOURCE, BurstFeeder
from radio.blocks.burst_source import (
    CONTINUOUS,
    DEMAND_GUARD_S,
    DEMAND_PAD_AFTER,
    DEMAND_PAD_BEFORE,
    BurstSource,
)
from radio.blocks.channel_bank import ChannelBank
from radio.blocks.common import FIR_TAPS, INDEX_TAG, STREAM_BUFFER_ITEMS, no_scheduler_pause
from radio.blocks.indexed_sink import STREAM_CMD, STREAM_STOP, IndexedSink
from radio.blocks.node_channel import NodeChannel, NodeChannelParams, fractional_delay_taps
from radio.blocks.window_sink import WindowSink

__all__ = [
    "BurstSource", "IndexedSink", "NodeChannel", "NodeChannelParams", "ChannelBank",
    "BurstFeeder", "AsyncCollector", "WindowSink", "async_event_codes", "make_async_message",
    "fractional_delay_taps", "no_scheduler_pause", "FIR_TAPS", "TX_TAG_SOURCE", "ASYNC_PORT",
    "INDEX_TAG", "STREAM_BUFFER_ITEMS", "STREAM_CMD", "STREAM_STOP", "CONTINUOUS",
    "DEMAND_GUARD_S", "DEMAND_PAD_AFTER", "DEMAND_PAD_BEFORE",
]
