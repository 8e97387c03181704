"""Emulated radios with their own host clocks and oscillators (radio.emulated, device args).

The emulator is the air, on one reference sample clock; each emulated radio translates between
its own device time and that reference, and its samples pass through its own LO. What a lab
meets and these tests pin: a host whose clock is more than half a second off labels the PPS
edge a second off, so its radio transmits a second away from where the AP listens, and nothing
in either radio reports it; carrier offsets turn a burst at the rate of the difference of the
two LOs, continuously from one burst to the next; a retune moves the LO phase; a phase walk
reaches the air sample by sample. Statistics of the oscillator alone (walk variance, uniform
retune phases) are in tests/test_radio_oscillator.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("gnuradio.uhd")

from pairzero.phy.frontend import RadioError  # noqa: E402
from radio.emulated import DeviceClock, EmulatedUhd, ReferenceClock  # noqa: E402
from radio.usrp import UsrpFrontEnd  # noqa: E402
from tests.test_radio_emulated_usrp import PPS, RATE, _addr, _burst, _Testbed, _through_los  # noqa: E402


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


@pytest.mark.parametrize("offset", [0.6, 0.0001])
def test_a_host_clock_more_than_half_a_second_off_puts_its_radio_a_second_off(offset: float) -> None:
    # Pins: host_clock_offset_s is this host's clock error; align_device_time labels the PPS
    # edge with it (0.6 s: a whole second off; 0.1 ms, as NTP keeps hosts: the same second); a
    # radio transmits when ITS device clock reads the burst's time, and the AP listens when
    # its own does. On the old stand-in (one host clock, device indices shared by the
    # emulator) the device times came out 1 s apart and yet the burst landed in the AP's
    # window at the scheduled index.
    tb = _Testbed(node_args=f"type=emulated,host_clock_offset_s={offset}", **PPS)
    try:
        second = int(RATE)
        ahead = 1 if offset > 0.5 else 0
        skew = tb.node.now_index() - tb.ap.now_index()
        assert abs(skew - ahead * second) < 0.01 * RATE  # 10 ms for the two reads
        # Execute: the AP schedules a burst 1.3 s ahead of its device time and listens both
        # there and one second earlier
        x = _burst()
        n = tb.ap.now_index() + int(1.3 * RATE)
        sending = tb.send_later(x, n)
        early = tb.ap.capture(n - second - 64, len(x) + 128, timeout_s=1.0)
        scheduled = tb.ap.capture(n - 64, len(x) + 128, timeout_s=1.0)
        sending["thread"].join()
    finally:
        tb.close()
    # Assert: the radio saw nothing wrong (its burst went out at its own time, acknowledged)
    assert sending["rep"].sent and sending["rep"].events == ()
    assert early.ok and scheduled.ok
    assert early.samples is not None and scheduled.samples is not None
    hit, miss = (early, scheduled) if ahead else (scheduled, early)
    assert hit.samples is not None and miss.samples is not None
    # ... the burst is where the node's clock put it, sample-exact; the other window is silent
    assert np.allclose(hit.samples[64 : 64 + len(x)], _through_los(tb, x), atol=1e-5)
    assert np.abs(miss.samples).max() < 1e-6


def test_carrier_offsets_turn_bursts_at_the_difference_of_the_two_los() -> None:
    # Pins: cfo_hz on the transmitter (+30 Hz) and clock_drift_ppm on the receiver (0.02 ppm
    # of 915 MHz: 18.3 Hz), with the signs of physics: the AP hears exp(j 2 pi (f_tx - f_rx) t).
    # The phase slope within a burst, and the phase advance from one burst to the next (the
    # error a precoder from the last pilots meets), both follow 2 pi (f_tx - f_rx) dt.
    tb = _Testbed(node_args="type=emulated,cfo_hz=30", ap_args="type=emulated,clock_drift_ppm=0.02",
                  **PPS)
    f = 30.0 - 0.02e-6 * 915e6  # Hz
    x = np.full(20000, 0.5, dtype=np.complex64)
    try:
        n1, rep1, cap1 = tb.burst_in_window(x)
        n2, rep2, cap2 = tb.burst_in_window(x)
    finally:
        tb.close()
    assert rep1.sent and rep2.sent and cap1.ok and cap2.ok
    assert cap1.samples is not None and cap2.samples is not None
    ph1 = np.unwrap(np.angle(cap1.samples[64 : 64 + len(x)] / x))
    ph2 = np.unwrap(np.angle(cap2.samples[64 : 64 + len(x)] / x))
    assert np.allclose(np.abs(cap1.samples[64 : 64 + len(x)]), 0.5, atol=1e-5)
    want = 2 * math.pi * f / RATE  # rad per sample
    for ph in (ph1, ph2):
        slope = np.polyfit(np.arange(len(x)), ph, 1)[0]
        assert slope == pytest.approx(want, rel=1e-4)
        assert np.abs(ph - ph[0] - want * np.arange(len(x))).max() < 1e-4  # linear: no walk
    assert abs(_wrap(ph2[0] - ph1[0] - want * (n2 - n1))) < 1e-3


def test_a_phase_walk_reaches_the_air_sample_by_sample() -> None:
    # Pins the wiring: the transmitter's LO phase (here a walk of 30 deg after 1 s, seed 3) is
    # applied at the reference samples where its burst goes on the air. The walk's statistics
    # against the maths are pinned in tests/test_radio_oscillator.py.
    tb = _Testbed(node_args="type=emulated,phase_walk_deg_per_s=30,seed=3", **PPS)
    x = np.full(50000, 0.5, dtype=np.complex64)  # 0.2 s
    try:
        n, rep, cap = tb.burst_in_window(x)
        lo = tb.node.usrp.lo
        applied = lo.phase_at(tb.node.usrp.to_reference(n), len(x), RATE)
    finally:
        tb.close()
    assert rep.sent and cap.ok and cap.samples is not None
    got = np.unwrap(np.angle(cap.samples[64 : 64 + len(x)] / x))
    walk = applied - applied[0]
    assert np.ptp(walk) > 0.05  # it moved (3 degrees or more over the burst, this seed)
    assert np.allclose(got - got[0], walk, atol=1e-4)


def test_a_retune_moves_the_lo_phase() -> None:
    # Pins: the LO phase holds between bursts (no offset, no walk) until set_center_freq,
    # which draws a new phase, as a PLL relocks at one; the AP sees the difference.
    tb = _Testbed(node_args="type=emulated,seed=21")
    x = _burst()
    phases = []
    try:
        for retune in (False, False, True):
            if retune:
                before = tb.node.usrp.lo.theta
                tb.node.usrp.set_center_freq(915e6, 0)
                jump = tb.node.usrp.lo.theta - before
            n, rep, cap = tb.burst_in_window(x)
            assert rep.sent and cap.ok and cap.samples is not None
            # device times set from two host-clock reads ("internal"): the radios are off by
            # the host's latency between read and set, a few samples on a loaded machine
            at = int(np.argmax(np.abs(np.correlate(cap.samples, x, mode="valid"))))
            assert abs(at - 64) <= 32
            phases.append(float(np.angle(np.vdot(x, cap.samples[at : at + len(x)]))))
    finally:
        tb.close()
    assert abs(_wrap(phases[1] - phases[0])) < 1e-4
    assert abs(_wrap(phases[2] - phases[0] - jump)) < 1e-4
    assert abs(_wrap(jump)) > 0.05  # this seed's draw moves it


def test_a_drifting_sample_clock_runs_its_device_time_off_the_reference() -> None:
    # Pins clock_drift_ppm on device time: set at a PPS edge, then (1 + ppm 1e-6) device
    # seconds per reference second; indices translate both ways.
    class _Ref(ReferenceClock):
        t = 1000.2

        def now(self) -> float:
            return self.t

    ref = _Ref()
    clk = DeviceClock(ref, drift_ppm=50.0)
    clk.set_next_pps(5000.0)
    ref.t = 1001.0  # the edge
    assert clk.now() == pytest.approx(5000.0, abs=1e-9)
    ref.t = 1101.0  # 100 reference seconds later
    assert clk.now() == pytest.approx(5000.0 + 100.0 * (1 + 50e-6), abs=1e-9)
    assert clk.last_pps() == pytest.approx(clk.now(), abs=1e-9)
    rate = 1e6
    n = round(clk.now() * rate) + 12345
    r = clk.to_reference(n, rate)
    assert r == round(1101.0 * rate + 12345 / (1 + 50e-6))
    assert clk.from_reference(r, rate) == n


@pytest.mark.parametrize(("arg", "key", "allowed"), [
    ("host_clock_offset_s=abc", "host_clock_offset_s", "seconds"),
    ("cfo_hz=1e9", "cfo_hz", "Hz in -1e5..1e5"),
    ("phase_walk_deg_per_s=-1", "phase_walk_deg_per_s", "degrees in 0..360"),
    ("clock_drift_ppm=nan", "clock_drift_ppm", "ppm"),
    ("seed=1.5", "seed", "whole number"),
    ("overflow=0", "overflow", ">= 1"),
])
def test_a_bad_emulated_device_arg_is_one_line_naming_it_and_what_is_allowed(arg, key, allowed) -> None:
    with pytest.raises(RadioError) as e:
        UsrpFrontEnd("tx", f"type=emulated,{arg}", RATE, 915e6, 10.0, "internal",
                     uhd_api=EmulatedUhd(tx_address=_addr()))
    msg = str(e.value)
    assert "\n" not in msg and f"{arg.split('=')[0]}=" in msg and key in msg and allowed in msg
