"""QA of :class:`radio.blocks.IndexedSink` (vector source -> block -> a ZeroMQ subscriber): the AP
stream published as ``(index, samples)`` chunks on the shared sample clock, and the radio's
stream commands taken from upstream."""

import json
import time

import numpy as np
import pmt
import pytest
import zmq

pytest.importorskip("gnuradio.gr")
from gnuradio import blocks, gr  # noqa: E402

from radio.blocks import INDEX_TAG, STREAM_CMD, STREAM_STOP, BurstSource, IndexedSink  # noqa: E402
from tests.qa_util import free_port  # noqa: E402


def _subscribed(sink: IndexedSink, address: str, kind: int = zmq.SUB) -> zmq.Socket:
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(address)
    if kind == zmq.XSUB:
        sock.send(b"\x01")  # subscribe to everything
    deadline = time.monotonic() + 5
    while not sink.has_subscriber() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sink.has_subscriber()
    return sock


def _published(sock: zmq.Socket, n: int) -> dict[int, complex]:
    """Sample index -> sample, of the chunks received until ``n`` samples (or 1 s of silence)."""
    got: dict[int, complex] = {}
    while len(got) < n and sock.poll(1000):
        head, payload = sock.recv_multipart()
        start = int(np.frombuffer(head, np.int64)[0])
        for i, v in enumerate(np.frombuffer(payload, np.complex64)):
            got[start + i] = complex(v)
    return got


def test_indexed_sink_publishes_chunks_with_the_shared_sample_index():
    # Prepare: burst source (gated on the AP subscription) -> head(1000) -> indexed sink
    node, ap = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    x = (np.arange(1000) + 1j).astype(np.complex64)
    sink = IndexedSink(ap, index_offset=20)
    src = BurstSource([node], lockstep=True, ap_ready=sink.has_subscriber)
    tb = gr.top_block()
    tb.connect(src, blocks.head(gr.sizeof_gr_complex, 1000), sink)
    ctx = zmq.Context.instance()
    sub, push = ctx.socket(zmq.SUB), ctx.socket(zmq.PUSH)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    got = {}
    tb.start()
    try:
        sub.connect(ap)
        push.connect(node)
        push.send_multipart([json.dumps({"start": 0, "horizon": 1000}).encode(), x.tobytes()])
        # Execute
        while sum(len(v) for v in got.values()) < 1000 and sub.poll(5000):
            head, payload = sub.recv_multipart()
            got[int(np.frombuffer(head, np.int64)[0])] = np.frombuffer(payload, np.complex64)
    finally:
        tb.stop()
        tb.wait()
        sub.close(0)
        push.close(0)
    # Assert: chunks tile [-20, 980) and carry the input in order
    starts = sorted(got)
    assert starts[0] == -20
    assert np.array_equal(np.concatenate([got[s] for s in starts]), x)
    assert all(s + len(got[s]) == t for s, t in zip(starts, starts[1:], strict=False))


def test_indexed_sink_publishes_at_origin_minus_offset_and_follows_an_index_tag():
    # Prepare: 300 samples; the source skipped to index 5000 before item 100 (INDEX_TAG), the
    # sink's input lags the tag by index_offset = 20 items (the FIR's delay)
    address = f"tcp://127.0.0.1:{free_port()}"
    x = (np.arange(300) + 1j).astype(np.complex64)
    tag = gr.tag_t()
    tag.offset, tag.key, tag.value = 100, INDEX_TAG, pmt.from_uint64(5000)
    sink = IndexedSink(address, index_offset=20, origin=1000)
    tb = gr.top_block()
    tb.connect(blocks.vector_source_c(x.tolist(), False, 1, [tag]), sink)
    sub = _subscribed(sink, address)
    try:
        # Execute
        tb.run()
        got = _published(sub, 300)
    finally:
        sub.close(0)
    # Assert: items 0..119 at 980.., items 120.. (the tag's item + the offset) at 5000..
    want = {980 + q: complex(x[q]) for q in range(120)} | {5000 + q - 120: complex(x[q]) for q in range(120, 300)}
    assert got == want and sink.dropped == 0


def test_indexed_sink_of_an_empty_stream_publishes_nothing():
    address = f"tcp://127.0.0.1:{free_port()}"
    sink = IndexedSink(address)
    tb = gr.top_block()
    tb.connect(blocks.vector_source_c([], False), sink)
    sub = _subscribed(sink, address)
    try:
        tb.run()
        assert not sub.poll(200)
    finally:
        sub.close(0)
    assert sink.dropped == 0


def test_indexed_sink_takes_the_radios_stream_commands_and_rejects_malformed_ones():
    # Prepare: an XSUB subscriber, as the emulated USRP's receiver, sends commands upstream
    address = f"tcp://127.0.0.1:{free_port()}"
    sink = IndexedSink(address)
    xsub = _subscribed(sink, address, zmq.XSUB)
    try:
        # Execute
        xsub.send_multipart([STREAM_CMD, json.dumps({"start": 100, "end": 200}).encode()])
        xsub.send_multipart([STREAM_CMD, json.dumps({"start": 300, "end": None}).encode()])
        xsub.send_multipart([STREAM_CMD, json.dumps({"start": 5, "end": 5}).encode()])  # empty
        xsub.send_multipart([STREAM_STOP])
        got: list = []
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            got += sink.take_requests()
            time.sleep(0.005)
    finally:
        xsub.close(0)
        sink.stop()
    # Assert: in order, the malformed one counted, not passed on
    assert got == [(100, 200), (300, None), None] and sink.rejected == 1
