"""QA of :class:`radio.blocks.WindowSink` (a tagged vector source -> block): the samples of a
requested window of device time, placed by the ``rx_time`` tags of ``uhd.usrp_source``."""

import numpy as np
import pmt
import pytest

pytest.importorskip("gnuradio.gr")
from gnuradio import blocks, gr  # noqa: E402

from radio.blocks import WindowSink  # noqa: E402

RATE = 1e6


def _rx_time(offset: int, whole: int, frac: float) -> gr.tag_t:
    tag = gr.tag_t()
    tag.offset, tag.key = offset, pmt.intern("rx_time")
    tag.value = pmt.make_tuple(pmt.from_uint64(whole), pmt.from_double(frac))
    return tag


def _run(x: np.ndarray, tags: list, sink: WindowSink, repeat: bool = False) -> WindowSink:
    tb = gr.top_block()
    tb.connect(blocks.vector_source_c(x.tolist(), repeat, 1, tags), sink)
    tb.run()
    return sink


def _stream(n: int) -> np.ndarray:
    return (np.arange(n) + 1j * (np.arange(n) % 7)).astype(np.complex64)


def test_window_sink_keeps_exactly_the_window_of_device_time():
    # Prepare: 2000 samples whose first is at device time 5.000100 s (sample 5_000_100 at
    # 1 MS/s); the window [5_000_600, 5_001_100)
    x = _stream(2000)
    sink = WindowSink(RATE)
    sink.expect(5_000_600, 500)
    # Execute
    _run(x, [_rx_time(0, 5, 100e-6)], sink)
    # Assert: complete, no gap, and the samples 500..999 of the stream
    assert sink.wait(0.0) and sink.window_state() == (500, [])
    assert np.array_equal(sink.take(), x[500:1000])
    assert sink.take() is None and sink.samples_seen == 2000  # taken, forgotten


def test_window_sink_records_a_jump_of_rx_time_inside_the_window_as_lost_samples():
    # Prepare: an overflow at item 800: the radio's next tag says 5_001_000 (200 samples lost)
    x = _stream(2000)
    sink = WindowSink(RATE)
    sink.expect(5_000_600, 1000)
    # Execute
    _run(x, [_rx_time(0, 5, 100e-6), _rx_time(800, 5, 1000e-6)], sink)
    # Assert: the gap (expected index, index after it) is reported, the window stays incomplete:
    # 300 samples before the gap (5_000_600..5_000_899), 600 after it (5_001_000..5_001_599)
    filled, lost = sink.window_state()
    assert lost == [(5_000_900, 5_001_000)] and filled == 300 + 600 and sink.take() is None
    assert sink.wait(0.0)  # settled: a waiter sees the loss at once


def test_window_sink_without_an_rx_time_tag_places_nothing():
    # Prepare / Execute: samples with no device time (before the radio's first tag)
    sink = WindowSink(RATE)
    sink.expect(0, 100)
    _run(_stream(1000), [], sink)
    # Assert: nothing placed, the window still waits
    assert sink.window_state() == (0, []) and sink.take() is None and not sink.wait(0.0)
    assert sink.samples_seen == 1000


def test_window_sink_of_an_empty_stream_sees_nothing():
    sink = WindowSink(RATE)
    sink.expect(0, 10)
    _run(np.zeros(0, np.complex64), [], sink)
    assert sink.samples_seen == 0 and sink.window_state() == (0, [])


def test_one_shot_window_sink_writes_its_window_and_ends_the_flowgraph(tmp_path):
    # Prepare: ap_rx_usrp.grc's sink, window of 300 samples at device time 7.0002 s; an endless
    # (repeating) source, so only the sink can end the run
    x = _stream(1000)
    out = tmp_path / "window.c64"
    sink = WindowSink(RATE, start_time=7.0002, num_samples=300, out_file=str(out))
    # Execute
    _run(x, [_rx_time(0, 7, 0.0)], sink, repeat=True)
    # Assert
    assert np.array_equal(np.fromfile(out, np.complex64), x[200:500])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sample_rate": 0.0}, "sample_rate"), ({"out_file": "x.c64"}, "out_file"),
])
def test_window_sink_refuses_a_bad_rate_and_a_one_shot_without_a_window(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WindowSink(**kwargs)
