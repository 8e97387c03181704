"""QA of :class:`radio.blocks.ChannelBank` (K vector sources -> block -> vector sink): the sum of
the node channels, plus the AP's AWGN of the configured variance."""

import math

import numpy as np
import pytest

pytest.importorskip("gnuradio.gr")
from gnuradio import blocks, gr  # noqa: E402

from pairzero.phy.reference_channel import apply_channel  # noqa: E402
from radio.blocks import FIR_TAPS, ChannelBank, NodeChannelParams  # noqa: E402


def _run(streams: list[np.ndarray], bank: ChannelBank) -> np.ndarray:
    tb = gr.top_block()
    snk = blocks.vector_sink_c()
    for k, x in enumerate(streams):
        tb.connect(blocks.vector_source_c(x.tolist()), (bank, k))
    tb.connect(bank, snk)
    tb.run()
    return np.array(snk.data())


def _pulse(n: int, centre: float) -> np.ndarray:
    k = np.arange(n)
    return (np.sinc((k - centre) / 4) * np.exp(-(((k - centre) / 40) ** 2))).astype(np.complex64)


def test_channel_bank_sums_the_node_channels_as_the_numpy_reference_does():
    # Prepare: two nodes, no noise; each node channel is within 2e-3 of the reference per unit
    # gain (tests/test_blocks_node_channel.py), so the sum is within 2e-3 * sum |g_k|
    x = [_pulse(400, 150.0), _pulse(400, 220.0)]
    params = [NodeChannelParams(0.9 * np.exp(0.3j), 1.6, 0.0), NodeChannelParams(-0.4j, -2.2, 0.0)]
    # Execute
    y = _run(x, ChannelBank(params, noise_var=0.0))[(FIR_TAPS - 1) // 2 :]
    # Assert
    want = apply_channel([s.astype(complex) for s in x], [p.gain for p in params],
                         [p.delay for p in params], [0.0, 0.0], 0.0, np.random.default_rng(0))
    assert np.max(np.abs(y - want[: len(y)])) < 2e-3 * sum(abs(p.gain) for p in params)


def test_channel_bank_of_silent_nodes_is_its_noise_of_the_configured_variance():
    # Prepare: two silent nodes, complex AWGN of variance N0 = 0.5 per sample (n a multiple of 8:
    # why in the noiseless test below)
    n, n0 = 100_000, 0.5
    bank = ChannelBank([NodeChannelParams(1.0, 0.0, 0.0)] * 2, noise_var=n0, seed=3)
    # Execute
    y = _run([np.zeros(n, np.complex64)] * 2, bank)
    # Assert: E|y|^2 = N0, N0/2 per real dimension, zero mean. |y|^2 is exponential (std = its
    # mean): the estimate's std is N0/sqrt(n); a real part's variance estimate has std
    # (N0/2) sqrt(2/n); the mean's std is sqrt(N0/2n). Five standard deviations each.
    assert len(y) == n
    assert abs(np.mean(np.abs(y) ** 2) - n0) < 5 * n0 / math.sqrt(n)
    for part in (y.real, y.imag):
        assert abs(np.var(part) - n0 / 2) < 5 * (n0 / 2) * math.sqrt(2 / n)
        assert abs(np.mean(part)) < 5 * math.sqrt(n0 / 2 / n)


def test_channel_bank_noise_is_the_seeds():
    silent = [np.zeros(1024, np.complex64)]
    a = _run(silent, ChannelBank([NodeChannelParams(1.0, 0.0, 0.0)], 0.1, seed=7))
    b = _run(silent, ChannelBank([NodeChannelParams(1.0, 0.0, 0.0)], 0.1, seed=7))
    c = _run(silent, ChannelBank([NodeChannelParams(1.0, 0.0, 0.0)], 0.1, seed=8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_channel_bank_of_silent_nodes_without_noise_is_exactly_zero():
    # (a multiple of 8 samples: with the endless noise source on its other input, gr's add_cc
    # leaves a finite stream's last partial multiple of 8 behind, 500 in -> 496 out)
    y = _run([np.zeros(512, np.complex64)] * 3,
             ChannelBank([NodeChannelParams(0.5, 0.3, 1e-3)] * 3, noise_var=0.0))
    assert len(y) == 512 and np.count_nonzero(y) == 0


@pytest.mark.parametrize(("params", "noise_var", "match"), [
    ([], 0.0, "node_channels"),
    ([NodeChannelParams(1.0, 0.0, 0.0)], -1.0, "noise_var"),
    ([NodeChannelParams(1.0, 0.0, 0.0)], math.nan, "noise_var"),
])
def test_channel_bank_refuses_no_nodes_and_a_bad_noise_variance(params, noise_var, match):
    with pytest.raises(ValueError, match=match):
        ChannelBank(params, noise_var)
