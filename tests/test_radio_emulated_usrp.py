"""The USRP front end (radio.usrp.UsrpFrontEnd) on the emulated USRP (radio.emulated).

Everything here is the front end's own code (gr-uhd calls, start-up checks, device time,
timed bursts with tx tags, timed stream commands, rx_time tags, async events) with the gr-uhd
blocks replaced by the emulated ones, whose samples go through the running channel emulator.
Faults are injected through the device args as a lab would meet them: a stream command that
reaches the radio late, a lost packet, a host that stalls before or inside a burst, an unlocked
reference or LO. Each ends in its event or error, within a bounded time.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import numpy as np
import pytest
import zmq

pytest.importorskip("gnuradio.uhd")

from pairzero.phy.frontend import EventKind, RadioError  # noqa: E402
from radio.blocks import DEMAND_PAD_AFTER, DEMAND_PAD_BEFORE  # noqa: E402
from radio.emulated import EmulatedUhd  # noqa: E402
from radio.emulator import ChannelEmulator, NodeChannelParams  # noqa: E402
from radio.usrp import UsrpFrontEnd  # noqa: E402

pytestmark = pytest.mark.e2e  # starts processes or runs the channel emulator

RATE = 250e3  # a rate a B200's 32 MHz master clock divides to (x 1/128)


def _addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class _Testbed:
    """Channel emulator (one node, unit channel, no noise), AP and node on emulated USRPs.
    ``on_demand``: the emulator computes only the AP's commanded windows (as experiments run
    it, :func:`radio.emulator.emulator_arguments`)."""

    def __init__(self, node_args: str = "type=emulated", ap_args: str = "type=emulated",
                 clock_source: str = "internal", on_demand: bool = True) -> None:
        self.node_addr, self.ap_addr = _addr(), _addr()
        self.emu = ChannelEmulator([NodeChannelParams(1.0, 0.0, 0.0)], 0.0, [self.node_addr],
                                   self.ap_addr, origin=None, node_timeout_s=1.0, sample_rate=RATE,
                                   on_demand=on_demand)
        self.emu.start()
        # Both radios open at once, as on two hosts (with a PPS each waits ~2 s for its edges).
        opened: dict[str, Any] = {}

        def open_ap() -> None:
            try:
                opened["ap"] = UsrpFrontEnd("rx", ap_args, RATE, 915e6, 30.0, clock_source,
                                            uhd_api=EmulatedUhd(rx_address=self.ap_addr))
            except BaseException as e:  # re-raised below, in the test's thread
                opened["error"] = e

        th = threading.Thread(target=open_ap)
        th.start()
        try:
            opened["node"] = UsrpFrontEnd("tx", node_args, RATE, 915e6, 40.0, clock_source,
                                          uhd_api=EmulatedUhd(tx_address=self.node_addr))
        except BaseException as e:
            opened.setdefault("error", e)
        th.join()
        if "error" in opened:
            for fe in (opened.get("ap"), opened.get("node")):
                if fe is not None:
                    fe.close()
            self.emu.stop()
            self.emu.wait()
            raise opened["error"]
        self.ap, self.node = opened["ap"], opened["node"]
        # The emulator's stream starts at the first node message it sees with the AP listening.
        deadline = time.monotonic() + 5.0
        while self.emu.source.origin is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.02)

    def send_later(self, x: np.ndarray, n: int) -> dict:
        """The node sends in its own thread (as its own process would) while the AP captures."""
        out: dict = {}
        th = threading.Thread(target=lambda: out.update(rep=self.node.send(x, n, timeout_s=1.0)))
        th.start()
        out["thread"] = th
        return out

    def burst_in_window(self, x: np.ndarray) -> tuple[int, Any, Any]:
        """The node sends ``x`` 50 ms ahead while the AP captures it with 64 samples either
        side: (its sample index, the node's SendReport, the AP's Capture)."""
        n = self.node.now_index() + int(0.05 * RATE)
        sending = self.send_later(x, n)
        cap = self.ap.capture(n - 64, len(x) + 128, timeout_s=1.0)
        sending["thread"].join()
        return n, sending["rep"], cap

    def close(self) -> None:
        self.node.close()
        self.ap.close()
        self.emu.stop()
        self.emu.wait()


@pytest.fixture
def testbed(request: pytest.FixtureRequest):
    tb = _Testbed(**getattr(request, "param", {}))
    yield tb
    tb.close()


#: Radios whose device time was set at the same PPS edge: sample-exact on one clock. (Set from
#: each host's clock at once, "internal", two radios differ by the microseconds between the
#: two settings, as real ones do, so a burst may land a sample off.)
PPS = {"clock_source": "external"}


def _through_los(tb: _Testbed, x: np.ndarray) -> np.ndarray:
    """``x`` as the AP hears it on a unit channel with no carrier offset or phase walk: turned
    by the node's LO phase (a random draw at its retune) and back by the AP's."""
    return x * np.exp(1j * (tb.node.usrp.lo.theta - tb.ap.usrp.lo.theta))


def _burst(n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(5)
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64) / 2


@pytest.mark.parametrize("testbed", [PPS], indirect=True)
def test_a_timed_burst_arrives_at_its_sample_index(testbed: _Testbed) -> None:
    # Prepare / Execute: a burst 50 ms ahead of the node's device time
    x = _burst()
    _, rep, cap = testbed.burst_in_window(x)
    # Assert: acknowledged by the radio; the AP's window holds it sample-exact at n (unit
    # channel, integer delay: the emulator's FIR is a pure delay that the AP stream undoes),
    # turned by the two LOs' retune phases
    assert rep.sent and rep.events == ()
    assert cap.ok and cap.samples is not None
    assert np.allclose(cap.samples[64 : 64 + len(x)], _through_los(testbed, x), atol=1e-5)
    assert np.abs(cap.samples[:60]).max() < 1e-6 and np.abs(cap.samples[-60:]).max() < 1e-6


@pytest.mark.parametrize("testbed", [{"on_demand": False, **PPS}], indirect=True)
def test_a_timed_burst_arrives_at_its_sample_index_in_a_continuous_stream(testbed: _Testbed) -> None:
    # The emulator computing every sample (not only the commanded windows): the same result
    test_a_timed_burst_arrives_at_its_sample_index(testbed)
    assert testbed.emu.source.skipped == 0


@pytest.mark.parametrize("testbed", [PPS], indirect=True)
def test_the_emulator_computes_only_the_windows_the_ap_commanded(testbed: _Testbed) -> None:
    # Prepare: a burst inside the AP's window, then one the AP does not listen to
    x = _burst()
    n, _, cap = testbed.burst_in_window(x)
    m = testbed.node.now_index() + int(0.05 * RATE)
    assert testbed.node.send(x, m, timeout_s=1.0).sent
    # Execute: a window of silence 50 ms after the second burst
    cap2 = testbed.ap.capture(testbed.ap.now_index() + int(0.05 * RATE), 500, timeout_s=1.0)
    # Assert: both windows are exact (samples at their indices after the skips), and the
    # emulator computed those two windows with their filter pads and nothing else: not the
    # second burst, not the ~0.2 s of device time around them
    src = testbed.emu.source
    assert cap.ok and cap.samples is not None
    assert np.allclose(cap.samples[64 : 64 + len(x)], _through_los(testbed, x), atol=1e-5)
    assert cap2.ok and cap2.samples is not None and np.abs(cap2.samples).max() < 1e-6
    needed = len(x) + 128 + 500 + 2 * (DEMAND_PAD_BEFORE + DEMAND_PAD_AFTER)
    assert needed - DEMAND_PAD_AFTER <= src.produced <= needed
    assert src.skipped >= m - n


@pytest.mark.parametrize("testbed", [PPS], indirect=True)
def test_malformed_stream_commands_are_dropped_and_logged(testbed: _Testbed, caplog) -> None:
    # Prepare: another subscriber of the AP stream sends garbage upstream
    bad = [[b"stream_cmd", b"{not json"], [b"stream_cmd", b'{"start": -5, "end": 3}'],
           [b"stream_cmd", b'{"start": 10, "end": 5}'], [b"hello"]]
    sock = zmq.Context.instance().socket(zmq.XSUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(testbed.ap_addr)
    try:
        sock.send(b"\x01")
        for msg in bad:
            sock.send_multipart(msg)
        # Execute: the AP's own window after them
        with caplog.at_level(logging.WARNING, logger="radio.blocks"):
            x = _burst()
            _, _, cap = testbed.burst_in_window(x)
    finally:
        sock.close()
    # Assert: each dropped with one WARNING line, and the emulator served the window
    assert testbed.emu.sink.rejected == len(bad)
    assert sum("upstream message dropped" in r.getMessage() for r in caplog.records) == len(bad)
    assert cap.ok and cap.samples is not None
    assert np.allclose(cap.samples[64 : 64 + len(x)], _through_los(testbed, x), atol=1e-5)


def test_two_radios_aligned_at_a_pps_edge_share_device_time() -> None:
    # Prepare / Execute: both radios on the external reference: device time set at a PPS edge
    tb = _Testbed(clock_source="external")
    try:
        a, b = tb.ap.now_index(), tb.node.now_index()
        c = tb.ap.now_index()
        # Assert: the same clock to within the time between the reads
        assert a <= b <= c + 1
        assert tb.ap.usrp.auto_dc_offset is False  # RX DC-offset correction turned off
    finally:
        tb.close()


@pytest.mark.parametrize("testbed", [{"ap_args": "type=emulated,late_command=1"}], indirect=True)
def test_a_late_stream_command_times_out_with_one_event(testbed: _Testbed) -> None:
    # Prepare: the AP's first stream command reaches the radio after its time (a slow
    # control path); the radio refuses it as gr-uhd does (ERROR_CODE_LATE_COMMAND)
    n = testbed.ap.now_index() + int(0.05 * RATE)
    t0 = time.monotonic()
    # Execute
    cap = testbed.ap.capture(n, 1000, timeout_s=0.5)
    # Assert: no samples, a timeout event, and no hang (window due in 50 ms + 0.5 s of slack)
    assert not cap.ok
    assert [e.kind for e in cap.events] == [EventKind.TIMEOUT]
    assert time.monotonic() - t0 < 3.0
    # The next command is fine
    n = testbed.ap.now_index() + int(0.05 * RATE)
    assert testbed.ap.capture(n, 1000, timeout_s=1.0).ok


def test_a_window_already_past_is_a_late_command_at_once(testbed: _Testbed) -> None:
    n = testbed.ap.now_index() - 100
    cap = testbed.ap.capture(n, 1000, timeout_s=5.0)
    assert not cap.ok and [e.kind for e in cap.events] == [EventKind.LATE_COMMAND]


@pytest.mark.parametrize("testbed", [{"ap_args": "type=emulated,overflow=1"}], indirect=True)
def test_an_overflow_halts_a_finite_stream_and_the_capture_ends_on_its_deadline(testbed: _Testbed) -> None:
    # Pins UHD's semantics: a B2xx / X3xx halts a NUM_SAMPS_AND_DONE stream on overflow; the
    # host sees no more samples of that window (no rx_time jump), so the capture ends on its
    # deadline with a reason that names the overflow. (The old stand-in resumed the stream
    # after a gap with a new rx_time: an OVERFLOW event at once.)
    x = _burst(4000)
    t0 = time.monotonic()  # before the window's time is taken: `waited` may not overstate
    n = testbed.node.now_index() + int(0.05 * RATE)
    sending = testbed.send_later(x, n)
    # Execute
    cap = testbed.ap.capture(n, len(x), timeout_s=0.5)
    waited = time.monotonic() - t0
    sending["thread"].join()
    # Assert: the frame is lost with the reason, after the window's end + the timeout
    assert not cap.ok
    assert [e.kind for e in cap.events] == [EventKind.TIMEOUT]
    assert "2000 of 4000 samples" in cap.events[0].detail  # the half before the overflow
    assert "overflow may have halted the stream" in cap.events[0].detail
    assert waited >= 0.05 + len(x) / RATE + 0.5 - 0.01
    # The next window streams again
    m = testbed.ap.now_index() + int(0.05 * RATE)
    assert testbed.ap.capture(m, 1000, timeout_s=1.0).ok


@pytest.mark.parametrize("testbed", [{"ap_args": "type=emulated,overflow=1"}], indirect=True)
def test_an_overflow_in_a_continuous_stream_resumes_it_with_a_new_rx_time(testbed: _Testbed) -> None:
    # Pins the other half of UHD's semantics: a continuous stream is restarted after an
    # overflow, so the samples after the gap carry a new rx_time, which the window sink
    # records as a jump. (The old stand-in never lost samples of a continuous stream.)
    uhd = testbed.ap._uhd
    start = testbed.ap.now_index() + int(0.05 * RATE)
    length = int(0.1 * RATE)
    testbed.ap.window.expect(start, length)
    cmd = uhd.stream_cmd_t(uhd.stream_mode_t.STREAM_MODE_START_CONTINUOUS)
    cmd.stream_now = False
    cmd.time_spec = testbed.ap._time_spec(start)
    testbed.ap.usrp.issue_stream_cmd(cmd)
    try:
        testbed.ap.window.wait(1.0)
        _, lost = testbed.ap.window.window_state()
    finally:
        stop = uhd.stream_cmd_t(uhd.stream_mode_t.STREAM_MODE_STOP_CONTINUOUS)
        testbed.ap.usrp.issue_stream_cmd(stop)
        testbed.ap.window.cancel()
    gap = length // 32
    assert lost == [(start + length // 2, start + length // 2 + gap)]


@pytest.mark.parametrize("testbed", [{"node_args": "type=emulated,late_burst=1"}], indirect=True)
def test_a_burst_handed_over_after_its_time_is_reported_late(testbed: _Testbed) -> None:
    # Prepare: the node's host stalls before its first burst reaches the radio
    x = _burst()
    n = testbed.node.now_index() + int(0.02 * RATE)
    # Execute
    rep = testbed.node.send(x, n, timeout_s=1.0)
    # Assert: dropped by the radio (async time_error), nothing of it on the air
    assert not rep.sent
    assert [e.kind for e in rep.events] == [EventKind.LATE_BURST]
    cap = testbed.ap.capture(testbed.ap.now_index() + 2000, 1000, timeout_s=1.0)
    assert cap.ok  # the radio goes on
    assert testbed.node.usrp.sent_bursts == []
    # The next burst is on time and acknowledged
    n = testbed.node.now_index() + int(0.05 * RATE)
    assert testbed.node.send(x, n, timeout_s=1.0).sent


@pytest.mark.parametrize("testbed", [{"node_args": "type=emulated,underflow=1"}], indirect=True)
def test_a_host_stalling_inside_a_burst_is_an_underflow(testbed: _Testbed) -> None:
    x = _burst(4000)
    n = testbed.node.now_index() + int(0.05 * RATE)
    rep = testbed.node.send(x, n, timeout_s=1.0)
    assert not rep.sent
    assert [e.kind for e in rep.events] == [EventKind.UNDERFLOW]


def test_a_burst_whose_time_has_passed_is_not_sent(testbed: _Testbed) -> None:
    rep = testbed.node.send(_burst(), testbed.node.now_index() - 10, timeout_s=1.0)
    assert not rep.sent and [e.kind for e in rep.events] == [EventKind.LATE_BURST]


@pytest.mark.parametrize(
    ("args", "source", "fragment"),
    [
        ("type=emulated,unlocked_ref=1", "external", "ref_locked"),
        ("type=emulated,unlocked_lo=1", "internal", "lo_locked"),
    ],
)
def test_an_unlocked_reference_or_lo_stops_the_start_naming_the_sensor(args, source, fragment) -> None:
    t0 = time.monotonic()
    with pytest.raises(RadioError, match=fragment):
        UsrpFrontEnd("tx", args, RATE, 915e6, 10.0, source, uhd_api=EmulatedUhd(tx_address=_addr()),
                     lock_timeout_s=0.3)
    assert time.monotonic() - t0 < 5.0


def test_a_rate_the_device_cannot_make_is_refused_with_the_rate_it_would_run_at() -> None:
    # 3 MS/s from a B200 held at a 32 MHz master clock (master_clock_rate= in its args): UHD
    # would silently run at 32e6/11 = 2.909 MS/s. (Without it a B200 picks 48 MHz itself and
    # makes 3 MS/s exactly: tests/test_radio_emulated_uhd_semantics.py.)
    with pytest.raises(RadioError, match=r"2909090\.9.*phy.sample_rate"):
        UsrpFrontEnd("rx", "type=emulated,master_clock_rate=32e6", 3e6, 915e6, 10.0, "internal",
                     uhd_api=EmulatedUhd(rx_address=_addr()))


def test_a_gain_outside_the_daughterboards_range_is_refused() -> None:
    # A UBX stops at 31.5 dB; 40 dB would be clipped silently by UHD
    with pytest.raises(RadioError, match=r"radio.tx_gain_db = 40 dB .*0\.\.31\.5 dB"):
        UsrpFrontEnd("tx", "type=emulated,model=x310_ubx", RATE, 915e6, 40.0, "internal",
                     uhd_api=EmulatedUhd(tx_address=_addr()))


def test_unknown_emulated_device_args_are_refused() -> None:
    with pytest.raises(RadioError, match="unknown keys"):
        UsrpFrontEnd("tx", "type=emulated,lateburst=1", RATE, 915e6, 10.0, "internal",
                     uhd_api=EmulatedUhd(tx_address=_addr()))


def test_rounds_of_an_emulated_usrp_experiment_add_the_nodes_scalars_over_the_air() -> None:
    # Prepare: configs/emulated_usrp.yaml (K = 4, Rayleigh gains, delays up to +-4 samples) at
    # 30 dB, its emulator and the AP's and nodes' round protocol on their emulated radios
    from pairzero.config import load_config
    from pairzero.protocol.interfaces import ReadyTiming
    from radio.factory import build_ap_phy, build_node_phy
    from tests.e2e_util import free_port_block

    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    cfg = load_config(root / "configs" / "emulated_usrp.yaml", [
        f"network.sample_port_base={free_port_block(5)}", "privacy.enabled=false",
        "channel.snr_db=30.0"])
    k = cfg.nodes.count
    emu = ChannelEmulator.for_experiment(cfg)
    emu.start()
    ap, nodes = build_ap_phy(cfg), [build_node_phy(cfg, i) for i in range(k)]
    g = np.array([0.4, -0.9, 0.7, 0.2])
    out = []
    try:
        for t in range(4):
            # Execute: each node sends in its own thread (its own process in a run); 100 ms of
            # control-plane time in the lead, as a loaded 2-core machine may need
            plan = ap.plan(t, list(range(k)), ReadyTiming(control_s=0.1))
            sends = [threading.Thread(target=nodes[i].transmit,
                                      args=(t, float(g[i]), plan.schedule_for(t, i)))
                     for i in range(k)]
            for th in sends:
                th.start()
            res = ap.receive(t, t, plan, dict.fromkeys(range(k)))
            for th in sends:
                th.join(timeout=5.0)
            out.append((plan, res, ap.noise_var_y))
    finally:
        for phy in [ap, *nodes]:
            phy.frontend.close()
        emu.stop()
        emu.wait()
    # Assert: one pilot frame, then every node precoded and the sum of the scalars at the AP,
    # within 5 sigma of the receiver noise (1 dB allowance for imperfect sync, as bench/phy_nmse)
    assert out[0][1].present == ()
    for plan, res, n0 in out[1:]:
        assert res.present == tuple(range(k))
        assert abs(res.g_hat - g.mean()) < 5 * np.sqrt(1.26 * n0 / 2) / (k * plan.eta)
