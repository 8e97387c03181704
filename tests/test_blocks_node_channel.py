"""QA of :class:`radio.blocks.NodeChannel` (vector source -> block -> vector sink): one node's
gain, fractional delay and CFO, against the numpy reference channel."""

import numpy as np
import pytest

pytest.importorskip("gnuradio.gr")
from gnuradio import blocks, gr  # noqa: E402

from pairzero.phy.reference_channel import apply_channel  # noqa: E402
from radio.blocks import FIR_TAPS, NodeChannel, fractional_delay_taps  # noqa: E402


def _pulse(n=400, centre=150.0):
    k = np.arange(n)
    return (np.sinc((k - centre) / 4) * np.exp(-(((k - centre) / 40) ** 2))).astype(np.complex64)


def _run(x: np.ndarray, ch: NodeChannel) -> np.ndarray:
    tb = gr.top_block()
    src, snk = blocks.vector_source_c(x.tolist()), blocks.vector_sink_c()
    tb.connect(src, ch, snk)
    tb.run()
    return np.array(snk.data())


def test_node_channel_matches_numpy_reference_channel():
    # Prepare: a band-limited pulse through gain, fractional delay and CFO
    x = _pulse()
    gain, delay, cfo = 0.7 * np.exp(1j * 0.4), 2.3, 1e-3
    # Execute
    y = _run(x, NodeChannel(gain, delay, cfo))[(FIR_TAPS - 1) // 2 :]
    # Assert: same as the numpy model (CFO rotates at the TX sample index, before the delay)
    want = apply_channel([x.astype(complex)], [gain], [delay], [0.0], 0.0, np.random.default_rng(0))
    rot = np.exp(2j * np.pi * cfo * (np.arange(len(x)) - delay))
    n = len(y)
    assert np.max(np.abs(y - (want * rot)[:n])) < 2e-3


@pytest.mark.parametrize("fading_doppler", [0.0, 1e-3])
def test_node_channel_of_silence_is_silence_sample_for_sample(fading_doppler):
    # Prepare: a linear channel (gain, delay, CFO and fading all multiply or filter)
    ch = NodeChannel(0.5 - 0.2j, -1.7, 2e-3, fading_doppler=fading_doppler, seed=4)
    # Execute
    y = _run(np.zeros(1000, np.complex64), ch)
    # Assert: as many samples out as in, all exactly 0
    assert len(y) == 1000 and np.count_nonzero(y) == 0


def test_node_channel_of_no_input_produces_nothing():
    assert len(_run(np.zeros(0, np.complex64), NodeChannel(1.0, 0.5, 0.0))) == 0


def test_node_channel_passes_a_dc_level_at_the_gain_once_its_fir_has_filled():
    # Prepare: a constant input; the taps have unit DC gain, so the settled output is gain * 1
    gain = 0.8 * np.exp(-0.3j)
    taps = np.array(fractional_delay_taps(3.25, gain=gain))
    # float32 error bound: the taps' rounding plus FIR_TAPS accumulations, each at most 2^-24
    # of the sum of |terms|
    tol = (FIR_TAPS + 1) * np.abs(taps).sum() * 2.0**-24
    # Execute
    y = _run(np.ones(200, np.complex64), NodeChannel(gain, 3.25, 0.0))
    # Assert: from sample FIR_TAPS - 1 on every tap sees the input
    assert len(y) == 200
    assert np.max(np.abs(y[FIR_TAPS - 1 :] - gain)) < tol


def test_fractional_delay_taps_have_unit_dc_gain_times_the_gain():
    taps = np.array(fractional_delay_taps(2.6, gain=0.5j))
    assert len(taps) == FIR_TAPS and abs(taps.sum() - 0.5j) < 1e-12


def test_fractional_delay_taps_rejects_out_of_range_delay():
    with pytest.raises(ValueError, match="delay"):
        fractional_delay_taps(30.0)


def test_node_channel_rejects_a_cfo_outside_half_a_cycle_per_sample():
    with pytest.raises(ValueError, match="cfo"):
        NodeChannel(1.0, 0.0, 0.5)
