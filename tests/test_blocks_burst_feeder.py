"""QA of :class:`radio.blocks.BurstFeeder` (block -> vector sink, the radio's async messages
back in): timed bursts with ``tx_sob`` / ``tx_time`` / ``tx_eob``, nothing in between, and the
one-shot burst of ``edge_tx_usrp.grc`` that ends the flowgraph once the radio answered."""

import time

import numpy as np
import pmt
import pytest

pytest.importorskip("gnuradio.gr")
from gnuradio import blocks, gr  # noqa: E402

from radio.blocks import TX_TAG_SOURCE, BurstFeeder, make_async_message  # noqa: E402
from tests.qa_util import feed_messages  # noqa: E402


def _tags(sink: blocks.vector_sink_c) -> list[tuple[int, str, object]]:
    out = []
    for t in sink.tags():
        assert pmt.eq(t.srcid, TX_TAG_SOURCE)
        key = pmt.symbol_to_string(t.key)
        value = (pmt.to_uint64(pmt.tuple_ref(t.value, 0)), pmt.to_double(pmt.tuple_ref(t.value, 1))) \
            if key == "tx_time" else pmt.to_bool(t.value)
        out.append((int(t.offset), key, value))
    return sorted(out)


def test_burst_feeder_sends_each_burst_whole_with_its_time_and_end_tags():
    # Prepare: two bursts queued for device times 2.5 s and 3.75 s
    a = (np.arange(700) + 1j).astype(np.complex64)
    b = (-np.arange(300) - 2j).astype(np.complex64)
    feeder = BurstFeeder()
    handed = [feeder.queue_burst(a, (2, 0.5)), feeder.queue_burst(b, (3, 0.75))]
    tb = gr.top_block()
    snk = blocks.vector_sink_c()
    tb.connect(feeder, snk)
    # Execute (started and stopped: with no radio on its async_msgs input, the feeder's message
    # side waits for messages until stopped, so run() would not return)
    tb.start()
    deadline = time.monotonic() + 5
    while not all(ev.is_set() for ev in handed) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # three idle waits of the feeder: nothing more may come
    tb.stop()
    tb.wait()
    # Assert: the samples back to back (nothing between bursts), tagged as gr-uhd reads them
    assert np.array_equal(np.array(snk.data()), np.concatenate([a, b]))
    assert _tags(snk) == [(0, "tx_sob", True), (0, "tx_time", (2, 0.5)), (699, "tx_eob", True),
                          (700, "tx_sob", True), (700, "tx_time", (3, 0.75)), (999, "tx_eob", True)]
    assert all(ev.is_set() for ev in handed)


def test_burst_feeder_with_no_burst_sends_nothing():
    # Prepare / Execute: a feeder left idle for 0.3 s (three of its idle waits)
    feeder = BurstFeeder(idle_wait_s=0.1)
    snk = blocks.vector_sink_c()
    tb = gr.top_block()
    tb.connect(feeder, snk)
    tb.start()
    time.sleep(0.3)
    tb.stop()
    tb.wait()
    # Assert
    assert len(snk.data()) == 0 and snk.tags() == []


def test_burst_feeder_refuses_an_empty_burst():
    with pytest.raises(ValueError, match="samples"):
        BurstFeeder().queue_burst(np.zeros(0, np.complex64), (1, 0.0))


def test_one_shot_burst_feeder_ends_the_flowgraph_once_the_radio_has_answered():
    # Prepare: edge_tx_usrp.grc's feeder (burst at 1.5 s), the radio's ACK coming back
    burst = [1 + 1j, 2.0, 3.0]
    feeder = BurstFeeder(burst, tx_time=1.5, one_shot=True)
    tb = gr.top_block()
    snk = blocks.vector_sink_c()
    tb.connect(feeder, snk)
    source = feed_messages(tb, [make_async_message(["burst_ack"], (1, 0.5))], feeder, "async_msgs")
    # Execute: run() returns only when the feeder ended (no head, no stop)
    tb.run()
    del source  # referenced until the run ended (see feed_messages)
    # Assert
    assert np.array_equal(np.array(snk.data()), np.array(burst, np.complex64))
    assert _tags(snk) == [(0, "tx_sob", True), (0, "tx_time", (1, 0.5)), (2, "tx_eob", True)]
    assert feeder.wait_async(0.0) == [(["burst_ack"], 1.5)]
