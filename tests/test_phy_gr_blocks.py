"""GNU Radio QA-style tests of the loopback blocks (vector_source -> block -> vector_sink)."""

import json
import socket
import time

import numpy as np
import pytest
import zmq

gr_mod = pytest.importorskip("gnuradio.gr")
from gnuradio import blocks, gr  # noqa: E402

from pairzero.phy.reference_channel import apply_channel  # noqa: E402
from radio.blocks import FIR_TAPS, BurstSource, NodeChannel, fractional_delay_taps  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pulse(n=400, centre=150.0):
    k = np.arange(n)
    return (np.sinc((k - centre) / 4) * np.exp(-(((k - centre) / 40) ** 2))).astype(np.complex64)


def test_node_channel_matches_numpy_reference_channel():
    # Prepare: a band-limited pulse through gain, fractional delay and CFO
    x = _pulse()
    gain, delay, cfo = 0.7 * np.exp(1j * 0.4), 2.3, 1e-3
    tb = gr.top_block()
    src = blocks.vector_source_c(x.tolist())
    ch = NodeChannel(gain, delay, cfo)
    snk = blocks.vector_sink_c()
    tb.connect(src, ch, snk)
    # Execute
    tb.run()
    y = np.array(snk.data())[(FIR_TAPS - 1) // 2 :]
    # Assert: same as the numpy model (CFO rotates at the TX sample index, before the delay)
    want = apply_channel([x.astype(complex)], [gain], [delay], [0.0], 0.0, np.random.default_rng(0))
    want = want * 1.0  # no noise
    rot = np.exp(2j * np.pi * cfo * (np.arange(len(x)) - delay))
    n = len(y)
    assert np.max(np.abs(y - (want * rot)[:n])) < 2e-3


def test_fractional_delay_taps_rejects_out_of_range_delay():
    with pytest.raises(ValueError, match="delay"):
        fractional_delay_taps(30.0)


def test_burst_source_places_bursts_at_their_index_and_zero_fills():
    # Prepare: two node inputs, lockstep; node 0 sends a burst at 100, node 1 only advances
    addrs = [f"tcp://127.0.0.1:{_free_port()}" for _ in range(2)]
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
    addrs = [f"tcp://127.0.0.1:{_free_port()}" for _ in range(2)]
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
    addrs = [f"tcp://127.0.0.1:{_free_port()}" for _ in range(2)]
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


def test_indexed_sink_publishes_chunks_with_the_shared_sample_index():
    # Prepare: burst source (gated on the AP subscription) -> head(1000) -> indexed sink
    from radio.blocks import IndexedSink

    node, ap = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
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


@pytest.mark.e2e
def test_free_running_emulator_is_throttled_to_the_sample_rate():
    from radio.emulator import ChannelEmulator, NodeChannelParams

    addrs = [f"tcp://127.0.0.1:{_free_port()}" for _ in range(2)]
    emu = ChannelEmulator([NodeChannelParams(1.0, 0.0, 0.0)] * 2, 0.0, addrs,
                          f"tcp://127.0.0.1:{_free_port()}", lockstep=False, throttle=True,
                          sample_rate=200e3, wait_for_ap=False)
    emu.start()
    try:
        time.sleep(1.0)  # past start-up, when the throttle catches up on its schedule
        c0, t0 = emu.clock, time.monotonic()
        time.sleep(2.0)
        c1, t1 = emu.clock, time.monotonic()
    finally:
        emu.stop()
        emu.wait()
    rate = (c1 - c0) / (t1 - t0)
    # The throttle is an upper bound on the average rate; the source's clock may lead the
    # throttle by what the buffers between them hold (a few 8k-item buffers: < 0.1 of the
    # 400k items of the window). A loaded machine may run slower, so only the bound is
    # asserted, and that the emulator runs at all without any node (zero-filled, free-running).
    assert 0 < rate < 1.3 * 200e3


@pytest.mark.e2e
def test_emulator_on_a_busy_port_fails_at_construction_and_releases_its_ports():
    from radio.emulator import ChannelEmulator, NodeChannelParams

    # Prepare: node 1's port is taken
    busy = zmq.Context.instance().socket(zmq.PULL)
    busy.setsockopt(zmq.LINGER, 0)
    port = busy.bind_to_random_port("tcp://127.0.0.1")
    nodes = [f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{port}"]
    ap = f"tcp://127.0.0.1:{_free_port()}"
    try:
        # Execute / Assert: a clear error naming the address, before any flowgraph runs
        with pytest.raises(OSError, match=f"cannot bind tcp://127.0.0.1:{port}") as err:
            ChannelEmulator([NodeChannelParams(1.0, 0.0, 0.0)] * 2, 0.0, nodes, ap)
    finally:
        busy.close(0)
    # ... and it left no port bound, though the half-built emulator is still referenced (by
    # the traceback in `err`, as by any caller that keeps the exception): ZeroMQ closes
    # listeners in its I/O thread, soon rather than at once, so a loaded machine gets seconds
    for addr in (ap, nodes[0]):
        assert _bindable_within(int(addr.rsplit(":", 1)[1]), 10.0), f"{addr} still bound"
    assert err.value.__traceback__ is not None


def _bindable_within(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
        time.sleep(0.05)
