"""The loopback / emulated-USRP channel emulator draws its per-node gains from the configured
channel model (pairzero.ota.fading.ChannelModel, the one `pairzero simulate` uses): path loss
from the node geometry, fading, phases."""

import numpy as np
import pytest

pytest.importorskip("gnuradio.gr")

from pairzero.config import load_config  # noqa: E402
from pairzero.ota.fading import ChannelModel  # noqa: E402
from radio.emulator import ChannelEmulator, draw_node_channels, emulator_arguments  # noqa: E402
from radio.loopback import LoopbackFrontEnd  # noqa: E402
from tests.e2e_util import free_port_block  # noqa: E402

DISTANCES = (10.0, 20.0, 40.0, 80.0)  # m; reference distance 10 m
ALPHA = 3.0  # path-loss exponent: levels 0, -9.03, -18.06, -27.09 dB
TAIL_P = 1e-7  # per-node probability that a measurement leaves its tolerance


def test_emulator_gains_are_the_channel_model_draw():
    # Prepare: Rayleigh fading with path loss over drawn distances, and with given ones
    for extra in (["nodes.min_distance_m=5", "nodes.max_distance_m=200"],
                  [f"nodes.distances_m=[{','.join(map(str, DISTANCES))}]"]):
        cfg = load_config(None, ["nodes.count=4", "channel.fading=rayleigh", "run.seed=11",
                                 f"channel.path_loss_exponent={ALPHA}", *extra])
        # Execute
        chans = draw_node_channels(cfg.channel, cfg.nodes, cfg.run.seed)
        model = ChannelModel.from_config(cfg.channel, cfg.nodes, cfg.run.seed)
        # Assert: the emulator's gain is the model's h (path loss x fading), nothing else
        np.testing.assert_array_equal([c.gain for c in chans], model.draw(0).h)
        assert all(abs(c.delay) <= cfg.channel.max_delay_samples for c in chans)
        assert all(abs(c.cfo) <= cfg.channel.max_cfo for c in chans)
    # ... the given distances set the large-scale levels: (d_ref / d)^alpha in power
    np.testing.assert_allclose(model.path_gain, (10.0 / np.array(DISTANCES)) ** ALPHA)
    # ... and the emulator the loopback and emulated-USRP runs start uses the same draw
    args = emulator_arguments(cfg)
    np.testing.assert_array_equal([c.gain for c in args["node_channels"]], model.draw(0).h)


def test_default_channel_has_no_path_loss_and_unit_mean_power():
    # Prepare: the default geometry (path_loss_exponent 0), Rayleigh, 1000 nodes
    cfg = load_config(None, ["nodes.count=1000", "channel.fading=rayleigh", "run.seed=3"])
    # Execute
    p = np.array([abs(c.gain) ** 2 for c in draw_node_channels(cfg.channel, cfg.nodes, 3)])
    # Assert: |h|^2 ~ Exp(1): mean 1 with std 1/sqrt(1000) = 0.032; 5 sigma = 0.16
    assert abs(p.mean() - 1.0) < 5 / np.sqrt(1000)


@pytest.mark.e2e
def test_emulator_received_levels_follow_the_path_loss():
    """Each node alone sends a constant unit amplitude through the running emulator; the AP's
    level per node is 20 log10 |h_k| = -10 alpha log10(d_k / d_ref) dB.

    Tolerance: the mean of M received samples is h_k + e, e ~ CN(0, N0/M) (the FIR has unit DC
    gain whatever the fractional delay; no CFO here), so | |mean| - |h_k| | <= |e| and
    P(|e| > r) = exp(-r^2 M / N0): r = sqrt(N0 ln(1/p) / M) for p = TAIL_P per node.
    """
    snr_db, m = 50.0, 1500
    base = free_port_block(5)
    cfg = load_config(None, [
        "nodes.count=4", "channel.fading=none", "channel.random_phase=true", "run.seed=2",
        f"channel.path_loss_exponent={ALPHA}", f"nodes.distances_m=[{','.join(map(str, DISTANCES))}]",
        f"channel.snr_db={snr_db}", "channel.max_cfo=0", "channel.max_delay_samples=4",
        f"network.sample_port_base={base}", f"network.control_port={base - 1}",
    ])
    emu = ChannelEmulator.for_experiment(cfg)
    from pairzero.phy.schedule import sample_addresses

    nodes, ap_addr = sample_addresses(cfg)
    emu.start()
    ap = LoopbackFrontEnd(rx_address=ap_addr)
    txs = [LoopbackFrontEnd(tx_address=a) for a in nodes]
    levels = []
    try:
        # Execute: node k's constant burst at 1000 + 4000 k, the others silent
        for k in range(4):
            n0 = 1000 + 4000 * k
            txs[k].send(np.ones(m + 200, np.complex64), n0, timeout_s=1.0)
            for j, t in enumerate(txs):
                if j != k:
                    t.advance(n0 + m + 1000)
            cap = ap.capture(n0 + 100, m, timeout_s=10.0)  # past the FIR's and the delay's edge
            assert cap.ok and cap.samples is not None
            levels.append(abs(np.mean(cap.samples.astype(np.complex128))))
    finally:
        emu.stop()
        emu.wait()
        for fe in [ap, *txs]:
            fe.close()
    # Assert: every level within its tolerance of the path loss, spread 27.1 dB (>= 20 dB)
    want = (10.0 / np.array(DISTANCES)) ** (ALPHA / 2)  # |h_k|, fading "none"
    r = np.sqrt(10 ** (-snr_db / 10) * np.log(1 / TAIL_P) / m)  # 3.3e-4
    np.testing.assert_array_less(np.abs(np.array(levels) - want), r)
    spread = 20 * np.log10(max(levels) / min(levels))
    assert spread > 20.0
    assert abs(spread - 10 * ALPHA * np.log10(8)) < 20 * np.log10((1 + r / want[-1]) / (1 - r / want[0]))
