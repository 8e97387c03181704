"""QA of :class:`radio.blocks.AsyncCollector` (a message source -> block): it keeps the event
codes of ``uhd.usrp_sink``'s ``async_msgs`` messages, in order, and nothing of other messages."""

import pmt
import pytest

pytest.importorskip("gnuradio.gr")
from gnuradio import gr  # noqa: E402

from radio.blocks import ASYNC_PORT, AsyncCollector, async_event_codes, make_async_message  # noqa: E402
from tests.qa_util import feed_messages  # noqa: E402

#: Messages on the port that are no UHD async event: a symbol, a PDU, a dict without the key.
NOT_EVENTS = [pmt.intern("burst_ack"), pmt.cons(pmt.make_dict(), pmt.init_u8vector(2, [1, 2])),
              pmt.cons(pmt.intern("uhd_async_msg"), pmt.intern("underflow"))]


def _collect(messages: list) -> AsyncCollector:
    tb = gr.top_block()
    collector = AsyncCollector()
    source = feed_messages(tb, messages, collector, pmt.symbol_to_string(ASYNC_PORT))
    tb.run()  # ends when the source is done: it tells its message neighbours
    del source  # referenced until the run ended (see feed_messages)
    return collector


def test_async_collector_keeps_the_events_in_order_with_their_device_time():
    # Prepare: an ACK at device time 3.25 s, a message that is no event, an underflow (no time)
    messages = [make_async_message(["burst_ack"], (3, 0.25)), NOT_EVENTS[0],
                make_async_message(["underflow", "time_error"], None, channel=1)]
    # Execute
    collector = _collect(messages)
    # Assert
    assert collector.seen == 2
    assert collector.wait(0.0) == [(["burst_ack"], 3.25), (["underflow", "time_error"], None)]
    assert collector.wait(0.0) == []  # taken


def test_async_collector_of_messages_that_are_no_events_keeps_nothing():
    collector = _collect(NOT_EVENTS)
    assert collector.seen == 0 and collector.wait(0.05) == []


def test_async_collector_clear_forgets_what_came():
    collector = _collect([make_async_message(["burst_ack"], None)])
    collector.clear()
    assert collector.wait(0.0) == [] and collector.seen == 1


def test_async_event_codes_reads_what_make_async_message_writes():
    assert async_event_codes(make_async_message(["late_packet"], (12, 0.5))) == (["late_packet"], 12.5)
    assert all(async_event_codes(m) == ([], None) for m in NOT_EVENTS)
