"""The channel emulator's flowgraph as a whole (its blocks' own tests: tests/test_blocks_*.py):
throttled when free-running, and a busy port refused at construction."""

import socket
import time

import pytest
import zmq

pytest.importorskip("gnuradio.gr")

from tests.qa_util import free_port  # noqa: E402


@pytest.mark.e2e
def test_free_running_emulator_is_throttled_to_the_sample_rate():
    from radio.emulator import ChannelEmulator, NodeChannelParams

    addrs = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    emu = ChannelEmulator([NodeChannelParams(1.0, 0.0, 0.0)] * 2, 0.0, addrs,
                          f"tcp://127.0.0.1:{free_port()}", lockstep=False, throttle=True,
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
    nodes = [f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{port}"]
    ap = f"tcp://127.0.0.1:{free_port()}"
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
