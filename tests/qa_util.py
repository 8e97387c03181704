"""Helpers of the GNU Radio block tests (``tests/test_blocks_*.py``), in the manner of gr's qa
tests: a free TCP port for a block that binds one, and a message source that ends (so a
flowgraph whose message blocks it feeds ends with it, as ``message_strobe`` never does)."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import numpy as np
import pmt
from gnuradio import blocks, gr

OUT = pmt.intern("out")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MessageSource(gr.sync_block):
    """Publishes ``messages`` on its ``out`` port once, then is done (its one output stream,
    connect it to a null sink, only makes it a stream block the scheduler ends)."""

    def __init__(self, messages: Sequence[pmt.pmt_t]) -> None:
        gr.sync_block.__init__(self, "qa_message_source", in_sig=None, out_sig=[np.uint8])
        self.message_port_register_out(OUT)
        self._messages = list(messages)

    def work(self, input_items: object, output_items: object) -> int:
        for m in self._messages:
            self.message_port_pub(OUT, m)
        return -1  # WORK_DONE: its message neighbours are told, and end too


def feed_messages(tb: gr.top_block, messages: Sequence[pmt.pmt_t], block: gr.basic_block,
                  port: str) -> MessageSource:
    """Connect a :class:`MessageSource` of ``messages`` to ``block``'s message input ``port``.

    Keep the returned block referenced until the flowgraph has run: the flowgraph does not hold
    the Python object, and a Python block collected while its work() is scheduled crashes it."""
    src = MessageSource(messages)
    tb.connect(src, blocks.null_sink(gr.sizeof_char))
    tb.msg_connect(src, "out", block, port)
    return src
