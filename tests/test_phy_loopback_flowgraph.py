"""TX -> GNU Radio channel emulator -> AP RX over ZeroMQ on 127.0.0.1 (real flowgraph running)."""

import socket

import numpy as np
import pytest

pytest.importorskip("gnuradio.gr")

from grc_flowgraphs.loopback import ApRx, ChannelEmulator, EdgeTx, NodeChannelParams, ota_round  # noqa: E402
from pairzero.config import PhyConfig  # noqa: E402
from pairzero.phy import BurstReceiver, FrameLayout  # noqa: E402


def _addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _run(k, present, snr_db, seed, node_timeout_s=1.0):
    rng = np.random.default_rng(seed)
    chans = [
        NodeChannelParams(complex(np.exp(2j * np.pi * rng.random())), rng.uniform(-4, 4), rng.uniform(-1e-4, 1e-4))
        for _ in range(k)
    ]
    noise_var = 10 ** (-snr_db / 10)
    nodes, ap_addr = [_addr() for _ in range(k)], _addr()
    lay = FrameLayout(PhyConfig(), k)
    rx = BurstReceiver(lay)
    values = rng.uniform(-1, 1, k)
    emu = ChannelEmulator(chans, noise_var, nodes, ap_addr, seed=seed, node_timeout_s=node_timeout_s)
    ap, txs = None, []
    emu.start()
    try:
        ap = ApRx(ap_addr)
        txs = [EdgeTx(a) if i in present else None for i, a in enumerate(nodes)]
        res = ota_round(lay, txs, ap, rx, 1000, values, eta=1.0, timeout_s=10.0)
        absent = emu.absent_nodes()
    finally:
        emu.stop()
        emu.wait()
        for t in txs:
            if t is not None:
                t.close()
        if ap is not None:
            ap.close()
    return lay, res, values, noise_var, chans, absent


def _tolerance(lay, noise_var, values):
    # Same derivation as tests/test_phy_receiver.py: 5 sigma of noise + pilot-estimation error,
    # x1.5 for second-order phase terms.
    es = np.vdot(lay.payload_template, lay.payload_template).real
    ep = np.vdot(lay.pilot_template, lay.pilot_template).real
    return 7.5 * np.sqrt(noise_var / (2 * es) + np.sum(np.square(values)) * noise_var / (2 * ep))


def test_loopback_flowgraph_recovers_sum_for_four_nodes():
    # No node is silent here: a long timeout only keeps a stall of the machine from being
    # taken for one.
    lay, res, values, noise_var, chans, _ = _run(4, {0, 1, 2, 3}, 15.0, seed=11, node_timeout_s=5.0)
    assert res is not None and res.payload.detected
    assert res.payload.absent == []
    assert abs(res.payload.y.real - values.sum()) < _tolerance(lay, noise_var, values)
    for e, c in zip(res.estimates, chans, strict=True):
        assert abs(e.delay - c.delay) < 0.3
        assert abs(abs(e.gain) - 1.0) < 0.1


def test_loopback_flowgraph_dropped_node_does_not_stall_and_is_reported():
    # The emulator first waits node_timeout_s on the silent node. The live nodes' frames then
    # go out with their last message that old: they must not be taken for silent too, which
    # lost a live node's next pilot frame and biased the sum by a fixed 0.20 in about one run
    # in three (pinned by test_burst_source_does_not_take_a_live_node_for_silent_...).
    # node_timeout_s must exceed the AP's processing time between frames.
    lay, res, values, noise_var, _, absent = _run(4, {0, 2, 3}, 15.0, seed=12, node_timeout_s=2.0)
    assert res is not None, "the AP stalled on the silent node"
    assert res.payload.absent == [1]
    assert 1 in absent  # the emulator zero-filled it
    v = values[[0, 2, 3]]
    assert abs(res.payload.y.real - v.sum()) < _tolerance(lay, noise_var, v)
