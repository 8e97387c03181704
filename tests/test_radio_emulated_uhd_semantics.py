"""Where the emulated USRP follows UHD 4.3 / gr-uhd 3.10 rather than being kinder.

Each test pins one behaviour of the real stack, and each fails on the stand-in as it was before
(said in its comment): a B2xx chooses its master clock rate for the rate asked; an X3xx runs at
200 or 184.32 MHz and rounds the rate to a decimation; gr-uhd's sink honours ``tx_sob`` alone
(a burst sent at once), ends bursts at ``tx_eob`` and reports a burst that runs dry as an
underflow; a burst reaches the radio only after the host-to-radio transfer, and its ACK comes
once its last sample has gone out. The overflow of a finite stream is in
tests/test_radio_emulated_usrp.py.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pmt
import pytest

pytest.importorskip("gnuradio.uhd")

from gnuradio import gr  # noqa: E402

from pairzero.phy.frontend import EventKind, RadioError  # noqa: E402
from radio.blocks import AsyncCollector, no_scheduler_pause  # noqa: E402
from radio.emulated import EmulatedUhd, b2xx_auto_master_clock  # noqa: E402
from radio.emulator import ChannelEmulator, NodeChannelParams  # noqa: E402
from radio.usrp import UsrpFrontEnd, align_device_time  # noqa: E402
from tests.test_radio_emulated_usrp import RATE, _addr, _burst, _Testbed  # noqa: E402


@pytest.mark.parametrize(("rate", "mcr"), [
    (1e6, 32e6), (250e3, 32e6), (3e6, 48e6), (200e3, 51.2e6), (30.72e6, 30.72e6),
    (61.44e6, 61.44e6), (7.68e6, 61.44e6),
])
def test_a_b2xx_picks_its_master_clock_as_uhd_does(rate: float, mcr: float) -> None:
    # Pins UHD 4.3's rule (ad936x_manager::get_auto_tick_rate): the rate times the largest
    # power of two within 61.44 MHz, but not x2 when the rate itself is a valid clock
    assert b2xx_auto_master_clock(rate) == mcr


def test_a_b200_without_a_master_clock_rate_makes_3_msps_exactly() -> None:
    # Pins: with no master_clock_rate= a B200 chooses 48 MHz for 3 MS/s, which it divides
    # exactly. (The old stand-in fixed 32 MHz and refused 3 MS/s as 2.909 MS/s.)
    fe = UsrpFrontEnd("rx", "type=emulated", 3e6, 915e6, 10.0, "internal",
                      uhd_api=EmulatedUhd(rx_address=_addr()))
    try:
        assert fe.usrp.get_samp_rate() == 3e6
        assert fe.usrp.get_clock_rate() == 48e6
    finally:
        fe.close()


@pytest.mark.parametrize(("args", "rate", "fragment"), [
    # 200 MHz / 257: the RFNoC DDC makes odd decimations only up to 255 (CIC), above that
    # x2 / x4 halfbands: 256 -> 781.25 kS/s (the old stand-in divided by any integer: exact)
    ("type=emulated,model=x310_ubx", 200e6 / 257, r"781250 S/s"),
    # at 184.32 MHz, 1 MS/s is a decimation of 184.32: 184 -> 1.001739 MS/s
    ("type=emulated,model=x310_ubx,master_clock_rate=184.32e6", 1e6, r"1001739\.1"),
    # a B200 held at 32 MHz: its DDC makes odd decimations only up to 128: 32 MHz / 131 ->
    # 32 MHz / 132 (the old stand-in: exact)
    ("type=emulated,master_clock_rate=32e6", 32e6 / 131, r"242424\.24"),
])
def test_the_dsp_rounds_the_rate_to_a_decimation_it_makes(args: str, rate: float, fragment: str) -> None:
    with pytest.raises(RadioError, match=fragment + r".*phy.sample_rate"):
        UsrpFrontEnd("rx", args, rate, 915e6, 10.0, "internal", uhd_api=EmulatedUhd(rx_address=_addr()))


def test_an_x3xx_master_clock_it_cannot_run_is_one_line() -> None:
    # UHD: an X3xx runs at 200, 184.32 or 120 MHz
    with pytest.raises(RadioError, match=r"master_clock_rate.*200 MHz, 184\.32 MHz, 120 MHz") as e:
        UsrpFrontEnd("rx", "type=emulated,model=x310_ubx,master_clock_rate=150e6", 1e6, 915e6,
                      10.0, "internal", uhd_api=EmulatedUhd(rx_address=_addr()))
    assert "\n" not in str(e.value)


class _Gate(gr.sync_block):
    """A source that hands ``x`` (with its tags) over when :meth:`open` is called, and nothing
    before or after (the radio's stream stays live)."""

    def __init__(self) -> None:
        gr.sync_block.__init__(self, "gate", in_sig=None, out_sig=[np.complex64])
        self._go = threading.Event()
        self._x = np.zeros(0, np.complex64)
        self._tags: list[tuple[int, str, pmt.pmt_t]] = []
        self._pos = 0
        no_scheduler_pause(self)

    def open(self, x: np.ndarray, tags: list[tuple[int, str, pmt.pmt_t]]) -> None:
        self._x, self._tags = x.astype(np.complex64), tags
        self._go.set()

    def work(self, input_items: object, output_items: list[np.ndarray]) -> int:
        if not self._go.wait(0.005) or self._pos >= len(self._x):
            return 0
        out = output_items[0]
        n = min(len(out), len(self._x) - self._pos)
        out[:n] = self._x[self._pos : self._pos + n]
        base = self.nitems_written(0) - self._pos
        for off, key, value in self._tags:
            if self._pos <= off < self._pos + n:
                self.add_item_tag(0, base + off, pmt.intern(key), value)
        self._pos += n
        return n


class _RawTx:
    """A node radio fed by hand-made tags, as a user's own flowgraph would drive gr-uhd's sink
    (not through the front end), and the AP's front end, through the emulator; both radios'
    device time set at the same PPS edge (sample-exact)."""

    def __init__(self, node_args: str = "type=emulated,seed=1") -> None:
        self.node_addr, self.ap_addr = _addr(), _addr()
        self.emu = ChannelEmulator([NodeChannelParams(1.0, 0.0, 0.0)], 0.0, [self.node_addr],
                                   self.ap_addr, origin=None, node_timeout_s=0.5, sample_rate=RATE,
                                   free_run_rate=RATE, on_demand=True)
        self.emu.start()
        api = EmulatedUhd(tx_address=self.node_addr)
        self.sink = api.usrp_sink(node_args, None)
        self.sink.set_samp_rate(RATE)
        self.sink.set_center_freq(915e6)
        self.sink.set_time_source("external")
        aligned = threading.Thread(target=align_device_time,
                                   args=(self.sink, "external", api.host_clock, api.host_sleep))
        aligned.start()  # the two radios wait for their PPS edges at once
        self.ap = UsrpFrontEnd("rx", "type=emulated", RATE, 915e6, 30.0, "external",
                               uhd_api=EmulatedUhd(rx_address=self.ap_addr))
        aligned.join()
        self.collector = AsyncCollector()
        self.gate = _Gate()
        self.tb = gr.top_block()
        self.tb.connect(self.gate, self.sink)
        self.tb.msg_connect((self.sink, "async_msgs"), (self.collector, "async_msgs"))
        self.tb.start()
        deadline = time.monotonic() + 5.0  # the emulator's stream starts at the radio's first word
        while self.emu.source.origin is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def hand_over(self, x: np.ndarray, tags: list[tuple[int, str, pmt.pmt_t]]) -> None:
        self.handed_at = self.sink.now_index()
        self.gate.open(x, tags)

    def events(self, wait_s: float) -> list[str]:
        deadline = time.monotonic() + wait_s
        codes: list[str] = []
        while time.monotonic() < deadline:
            for c, _ in self.collector.wait(deadline - time.monotonic()):
                codes += c
        return codes

    def close(self) -> None:
        self.tb.stop()
        self.tb.wait()
        self.ap.close()
        self.emu.stop()
        self.emu.wait()


def test_tx_sob_alone_sends_a_burst_at_once_and_tx_eob_acknowledges_it() -> None:
    # Pins gr-uhd's sink: tx_sob without tx_time is an untimed burst, on the air as soon as it
    # reaches the radio (the handover + the transfer); tx_eob ends it with a burst_ack. (The
    # old stand-in ignored tx_sob: "samples outside any burst ignored", nothing on the air.)
    tx = _RawTx()
    x = _burst(2000)
    try:
        start = tx.ap.now_index() + int(0.05 * RATE)
        length = int(0.4 * RATE)
        got: dict = {}
        th = threading.Thread(target=lambda: got.update(cap=tx.ap.capture(start, length, 1.0)))
        th.start()
        time.sleep(0.1)
        tx.hand_over(x, [(0, "tx_sob", pmt.PMT_T), (len(x) - 1, "tx_eob", pmt.PMT_T)])
        codes = tx.events(0.3)
        th.join()
    finally:
        tx.close()
    cap = got["cap"]
    assert cap.ok and cap.samples is not None
    assert codes == ["burst_ack"]
    [sent] = tx.sink.sent_bursts
    # on the air where the radio says it sent it
    at = int(np.argmax(np.abs(np.correlate(cap.samples, x, mode="valid"))))
    assert at == sent - start
    # ... and that is once it reached the radio: after the handover plus the B200's 1 ms
    transfer = int(1e-3 * RATE)
    assert tx.handed_at + transfer < sent < tx.handed_at + transfer + int(0.05 * RATE)


def test_a_burst_without_tx_eob_runs_dry_as_an_underflow() -> None:
    # Pins: a timed burst whose samples stop without tx_eob makes the radio run dry: UHD's
    # async "underflow", no burst_ack. (The old stand-in held the burst open, silently.)
    tx = _RawTx()
    x = _burst(1000)
    try:
        t = tx.sink.now_index() + int(0.05 * RATE)
        whole, frac = divmod(t / RATE, 1.0)
        tx.hand_over(x, [(0, "tx_sob", pmt.PMT_T),
                         (0, "tx_time", pmt.make_tuple(pmt.from_uint64(int(whole)), pmt.from_double(frac)))])
        codes = tx.events(0.3)
    finally:
        tx.close()
    assert codes == ["underflow"]


def test_a_burst_handed_over_within_the_transfer_time_is_late() -> None:
    # Pins the host-to-radio transfer (transfer_delay_s; 30 ms here to be clear of a loaded
    # machine's jitter): a burst handed over 15 ms before its time reaches the radio after it
    # (time_error, nothing on the air); 80 ms ahead it goes out, and the ACK comes once its last
    # sample has gone out plus the transfer back. (The old stand-in took any burst ahead of
    # device time and acknowledged it 512 samples after its end.)
    tb = _Testbed(node_args="type=emulated,transfer_delay_s=0.03")
    x = _burst(2000)
    try:
        late = tb.node.send(x, tb.node.now_index() + int(0.015 * RATE), timeout_s=1.0)
        n = tb.node.now_index() + int(0.08 * RATE)
        t0, due = time.monotonic(), tb.node.seconds_until(n + len(x))
        ok = tb.node.send(x, n, timeout_s=1.0)
        acked_after = time.monotonic() - t0
    finally:
        tb.close()
    assert not late.sent and [e.kind for e in late.events] == [EventKind.LATE_BURST]
    assert ok.sent and ok.events == ()
    assert due + 0.03 - 0.005 <= acked_after <= due + 0.03 + 0.25


@pytest.mark.parametrize(("model", "transfer_s"), [("b210", 1e-3), ("x310_ubx", 2e-4)])
def test_the_transfer_time_defaults_to_the_models_link(model: str, transfer_s: float) -> None:
    # USB3 (B2xx) about a millisecond; 10 GbE (X3xx) less
    fe = UsrpFrontEnd("tx", f"type=emulated,model={model}", 1e6, 915e6, 10.0, "internal",
                      uhd_api=EmulatedUhd(tx_address=_addr()))
    try:
        assert fe.usrp.transfer_s == transfer_s
    finally:
        fe.close()
