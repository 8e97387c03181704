"""QA of :class:`radio.blocks.BurstSource` (the nodes' ZeroMQ messages -> block -> vector
sinks): bursts at their index, zeros elsewhere, a silent node zero-filled, and with ``demand``
only the windows a radio asked for."""

import json
import time

import numpy as np
import pmt
import pytest
import zmq

pytest.importorskip("gnuradio.gr")
from gnuradio import blocks, gr  # noqa: E402

from radio.blocks import DEMAND_PAD_AFTER, DEMAND_PAD_BEFORE, INDEX_TAG, BurstSource  # noqa: E402
from tests.qa_util import free_port  # noqa: E402


def test_burst_source_places_bursts_at_their_index_and_zero_fills():
    # Prepare: two node inputs, lockstep; node 0 sends a burst at 100, node 1 only advances
    addrs = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    src = BurstSource(addrs, lockstep=True, node_timeout_s=5.0)
    tb = gr.top_block()
    head0 = blocks.head(gr.sizeof_gr_complex, 300)
    head1 = blocks.head(gr.sizeof_gr_complex, 300)
    s0, s1 = blocks.vector_sink_c(), blocks.vector_sink_c()
    tb.connect((src, 0), head0, s0)
    tb.connect((src, 1), head1, s1)
    ctx = zmq.Context.instance()
    push = [ctx.socket(zmq.PUSH) for _ in addrs]
    tb.start()
    try:
        for p, a in zip(push, addrs, strict=True):
            p.connect(a)
        burst = (np.arange(10) + 1).astype(np.complex64)
        push[0].send_multipart([json.dumps({"start": 100, "horizon": 400}).encode(), burst.tobytes()])
        push[1].send_multipart([json.dumps({"start": 400, "horizon": 400}).encode(), b""])
        # Execute
        deadline = time.monotonic() + 5
        while (len(s0.data()) < 300 or len(s1.data()) < 300) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        tb.stop()
        tb.wait()
        for p in push:
            p.close(0)
    y0, y1 = np.array(s0.data()), np.array(s1.data())
    # Assert
    assert len(y0) == 300 and len(y1) == 300
    assert np.array_equal(y0[100:110], burst)
    assert np.count_nonzero(y0) == 10 and np.count_nonzero(y1) == 0


def test_burst_source_zero_fills_silent_node_after_timeout():
    addrs = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    # 1 s: node 0's first message (connect, handshake) must arrive well within it, or node 0
    # would be the first taken for silent.
    src = BurstSource(addrs, lockstep=True, node_timeout_s=1.0)
    tb = gr.top_block()
    heads = [blocks.head(gr.sizeof_gr_complex, 500) for _ in range(2)]
    sinks = [blocks.vector_sink_c() for _ in range(2)]
    for k in range(2):
        tb.connect((src, k), heads[k], sinks[k])
    push = zmq.Context.instance().socket(zmq.PUSH)
    tb.start()
    try:
        push.connect(addrs[0])
        push.send_multipart([json.dumps({"start": 600, "horizon": 600}).encode(), b""])
        deadline = time.monotonic() + 20
        while len(sinks[1].data()) < 500 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        tb.stop()
        tb.wait()
        push.close(0)
    # Node 1 never sent: it did not stall the stream, it was zero-filled and reported.
    assert len(sinks[1].data()) == 500
    assert src.absent_events()[0] == (1, 0)  # node 1 zero-filled from sample 0
    assert all(node == 0 for node, _ in src.absent_events()[1:])  # node 0 only after its horizon
    assert all(at >= 600 for node, at in src.absent_events() if node == 0)


def test_burst_source_does_not_take_a_live_node_for_silent_after_waiting_on_another():
    # Prepare: node 1 never sends, so the clock waits node_timeout_s on it before node 0's
    # burst goes out. Node 0's last message is then as old as the timeout, but the clock only
    # just reached its horizon: it must get a full timeout to send its next burst.
    timeout = 1.0
    addrs = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    src = BurstSource(addrs, lockstep=True, node_timeout_s=timeout)
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    src.start()
    out = [np.zeros(4096, np.complex64) for _ in addrs]
    burst = (np.arange(10) + 1).astype(np.complex64)
    try:
        push.connect(addrs[0])
        push.send_multipart([json.dumps({"start": 100, "horizon": 200}).encode(), burst.tobytes()])
        produced, deadline = 0, time.monotonic() + 10 * timeout
        while src.clock < 200 and time.monotonic() < deadline:  # drives work() as the scheduler would
            produced += src.work(None, out)
        caught_up = time.monotonic()
        src.work(None, out)  # nothing to produce: waits IDLE_WAIT_S (0.2 s < timeout), returns 0
        absent_after_wait = src.absent_nodes()
        elapsed = time.monotonic() - caught_up
        # Execute: node 0's next burst, well within a timeout of the clock reaching its horizon
        push.send_multipart([json.dumps({"start": 300, "horizon": 400}).encode(), burst.tobytes()])
        y = np.zeros(0, np.complex64)
        while src.clock < 400 and time.monotonic() < deadline:
            n = src.work(None, out)
            y = np.concatenate([y, out[0][:n]])
    finally:
        src.stop()
        push.close(0)
    # Assert
    assert produced == 200 and src.absent_events()[0] == (1, 0)
    assert elapsed < timeout, f"the idle work() call took {elapsed:.2f} s: test premise broken"
    assert absent_after_wait == [1]
    assert all(node == 1 for node, _ in src.absent_events())
    assert np.array_equal(y[100:110], burst)  # node 0's second burst, from sample 200 on


def test_burst_source_takes_no_node_for_silent_while_every_node_is_idle():
    # Prepare: both nodes define their streams to 200, then send nothing for twice the timeout
    # (the AP evaluating its model between rounds: nobody transmits, nobody is waited on)
    timeout = 1.0
    addrs = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    src = BurstSource(addrs, lockstep=True, node_timeout_s=timeout)
    push = [zmq.Context.instance().socket(zmq.PUSH) for _ in addrs]
    src.start()
    out = [np.zeros(4096, np.complex64) for _ in addrs]
    burst = (np.arange(10) + 1).astype(np.complex64)
    got = [np.zeros(0, np.complex64) for _ in addrs]

    def drive(until: int, deadline: float) -> None:
        while src.clock < until and time.monotonic() < deadline:
            n = src.work(None, out)
            for k in range(2):
                got[k] = np.concatenate([got[k], out[k][:n]])

    try:
        for p, a in zip(push, addrs, strict=True):
            p.setsockopt(zmq.LINGER, 0)
            p.connect(a)
            p.send_multipart([json.dumps({"start": 200, "horizon": 200}).encode(), b""])
        drive(200, time.monotonic() + 10)
        idle_until = time.monotonic() + 2 * timeout
        while time.monotonic() < idle_until:
            src.work(None, out)  # returns 0: nothing to produce
        absent_while_idle = src.absent_nodes()
        # Execute: node 0's frame, then node 1's a fraction of the timeout later
        push[0].send_multipart([json.dumps({"start": 300, "horizon": 400}).encode(), burst.tobytes()])
        src.work(None, out)
        time.sleep(timeout / 3)
        push[1].send_multipart([json.dumps({"start": 300, "horizon": 400}).encode(),
                                (2 * burst).tobytes()])
        drive(400, time.monotonic() + 10)
    finally:
        src.stop()
        for p in push:
            p.close(0)
    # Assert: nobody was zero-filled, and both frames are whole at their index
    assert absent_while_idle == [] and src.absent_events() == []
    assert np.array_equal(got[0][300:310], burst) and np.array_equal(got[1][300:310], 2 * burst)


def _run_until(tb: gr.top_block, sinks: list, n: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(len(s.data()) < n for s in sinks) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_burst_source_whose_nodes_send_only_their_clock_produces_exact_zeros_to_it():
    # Prepare: two nodes that send no samples, only their horizon (a silent radio's stream)
    addrs = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    src = BurstSource(addrs, lockstep=True, node_timeout_s=5.0)
    tb = gr.top_block()
    sinks = [blocks.vector_sink_c() for _ in addrs]
    for k, s in enumerate(sinks):
        tb.connect((src, k), blocks.head(gr.sizeof_gr_complex, 512), s)
    push = [zmq.Context.instance().socket(zmq.PUSH) for _ in addrs]
    tb.start()
    try:
        for p, a in zip(push, addrs, strict=True):
            p.connect(a)
            p.send_multipart([json.dumps({"start": 512, "horizon": 512}).encode(), b""])
        # Execute
        _run_until(tb, sinks, 512)
    finally:
        tb.stop()
        tb.wait()
        for p in push:
            p.close(0)
    # Assert: 512 zeros on each stream, nobody taken for absent
    assert [len(s.data()) for s in sinks] == [512, 512]
    assert all(np.count_nonzero(np.array(s.data())) == 0 for s in sinks)
    assert src.absent_events() == []


def test_burst_source_on_demand_produces_only_the_asked_window_and_tags_its_first_index():
    # Prepare: the radio asks for [1000, 1100); the node's burst fills it, its clock reaches 3000
    asked = [[(1000, 1100)]]
    addr = f"tcp://127.0.0.1:{free_port()}"
    src = BurstSource([addr], lockstep=True, node_timeout_s=5.0,
                      demand=lambda: asked.pop() if asked else [])
    first = 1000 - DEMAND_PAD_BEFORE
    n = (1100 + DEMAND_PAD_AFTER) - first  # the window with its pads
    tb = gr.top_block()
    snk = blocks.vector_sink_c()
    tb.connect(src, blocks.head(gr.sizeof_gr_complex, n), snk)
    push = zmq.Context.instance().socket(zmq.PUSH)
    burst = (np.arange(100) + 1).astype(np.complex64)
    tb.start()
    try:
        push.connect(addr)
        push.send_multipart([json.dumps({"start": 1000, "horizon": 3000}).encode(), burst.tobytes()])
        # Execute
        _run_until(tb, [snk], n)
    finally:
        tb.stop()
        tb.wait()
        push.close(0)
    y = np.array(snk.data())
    # Assert: the clock skipped to the padded window's start, tagged its index, and produced the
    # window: zeros, the burst at its place, zeros
    assert src.skipped == first and len(y) == n
    tags = [(t.offset, pmt.to_uint64(t.value)) for t in snk.tags() if pmt.eq(t.key, INDEX_TAG)]
    assert tags == [(0, first)]
    assert np.array_equal(y[DEMAND_PAD_BEFORE : DEMAND_PAD_BEFORE + 100], burst)
    assert np.count_nonzero(y) == 100


@pytest.mark.parametrize(("addresses", "timeout", "match"), [
    ([], 1.0, "addresses"), (["tcp://127.0.0.1:1"], 0.0, "node_timeout_s"),
])
def test_burst_source_refuses_no_nodes_and_a_timeout_not_above_zero(addresses, timeout, match):
    with pytest.raises(ValueError, match=match):
        BurstSource(addresses, node_timeout_s=timeout)
