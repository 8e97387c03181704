"""The USRP sink's ``async_msgs`` (burst ACK, late burst, underflow): their format
(:func:`async_event_codes`, :func:`make_async_message`) and :class:`AsyncCollector`, the message
sink a sender waits on.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pmt
from gnuradio import gr

__all__ = ["ASYNC_PORT", "AsyncCollector", "async_event_codes", "make_async_message"]


ASYNC_PORT = pmt.intern("async_msgs")
_ASYNC_KEY = pmt.intern("uhd_async_msg")
_EVENT_CODE = pmt.intern("event_code")
_TIME_SPEC = pmt.intern("time_spec")


def async_event_codes(msg: pmt.pmt_t) -> tuple[list[str], float | None]:
    """Event codes (``burst_ack``, ``underflow``, ``time_error``, ...) and time (s, or None) of
    one message of ``uhd.usrp_sink``'s ``async_msgs`` port: ``(uhd_async_msg . {event_code:
    (codes...), time_spec: (secs . frac), channel: n})``; ([], None) for anything else."""
    if not (pmt.is_pair(msg) and pmt.eq(pmt.car(msg), _ASYNC_KEY) and pmt.is_dict(pmt.cdr(msg))):
        return [], None
    d = pmt.cdr(msg)
    codes = pmt.dict_ref(d, _EVENT_CODE, pmt.PMT_NIL)
    out = []
    while pmt.is_pair(codes):
        out.append(pmt.symbol_to_string(pmt.car(codes)))
        codes = pmt.cdr(codes)
    ts = pmt.dict_ref(d, _TIME_SPEC, pmt.PMT_NIL)
    when = None
    if pmt.is_pair(ts):
        when = float(pmt.to_long(pmt.car(ts))) + float(pmt.to_double(pmt.cdr(ts)))
    return out, when


def make_async_message(codes: Sequence[str], when: tuple[int, float] | None, channel: int = 0) -> pmt.pmt_t:
    """An ``async_msgs`` message as ``uhd.usrp_sink`` publishes it (see :func:`async_event_codes`)."""
    lst = pmt.PMT_NIL
    for c in codes:
        lst = pmt.list_add(lst, pmt.intern(c))
    d = pmt.dict_add(pmt.make_dict(), _EVENT_CODE, lst)
    if when is not None:
        d = pmt.dict_add(d, _TIME_SPEC, pmt.cons(pmt.from_long(int(when[0])), pmt.from_double(float(when[1]))))
    d = pmt.dict_add(d, pmt.intern("channel"), pmt.from_uint64(channel))
    return pmt.cons(_ASYNC_KEY, d)


class AsyncCollector(gr.basic_block):
    """Message sink for ``uhd.usrp_sink``'s ``async_msgs``: keeps the event codes for a sender
    to wait on (its own thread, so an event is seen the moment it arrives)."""

    def __init__(self) -> None:
        gr.basic_block.__init__(self, "pairzero_async_collector", in_sig=None, out_sig=None)
        self.message_port_register_in(ASYNC_PORT)
        self.set_msg_handler(ASYNC_PORT, self._on_async)
        self._events: list[tuple[list[str], float | None]] = []
        self._cond = threading.Condition()
        self.seen = 0

    def _on_async(self, msg: pmt.pmt_t) -> None:
        codes, when = async_event_codes(msg)
        if not codes:
            return
        with self._cond:
            self._events.append((codes, when))
            self.seen += 1
            self._cond.notify_all()

    def clear(self) -> None:
        """Forget the events received so far."""
        with self._cond:
            self._events.clear()

    def wait(self, timeout_s: float) -> list[tuple[list[str], float | None]]:
        """The events received since the last call (waiting up to ``timeout_s`` for one)."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._events), timeout=max(timeout_s, 0.0))
            out, self._events = self._events, []
            return out
