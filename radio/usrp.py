"""The USRP front end (gr-uhd): one radio's sample clock, timed bursts and timed captures.

    fe = UsrpFrontEnd("tx", "type=b200,serial=31A1234", 1e6, 915e6, gain_db=40,
                      clock_source="external")          # a node's radio
    fe.send(burst, index, timeout_s=1.0)                 # -> SendReport (ACK, late, underflow)
    ap = UsrpFrontEnd("rx", "type=b200,serial=31A5678", 1e6, 915e6, gain_db=30)
    ap.capture(index, length, timeout_s=1.0, idle=pump)  # -> Capture (or timeout / overflow)

Flowgraphs (the same as ``grc_flowgraphs/edge_tx_usrp.grc`` and ``ap_rx_usrp.grc``, checked in a
test), built once and kept running::

    TX:  BurstFeeder --(tx_sob, tx_time, tx_eob)--> uhd.usrp_sink --async_msgs--> BurstFeeder
    RX:  uhd.usrp_source --(rx_time tags)--> WindowSink        (+ timed stream commands)

A sample index is device time x sample rate on every radio: the nodes and the AP share
10 MHz + PPS (or each has a GPSDO), and every radio sets its device time at a PPS edge
(:func:`align_device_time`) to the seconds since :data:`DEVICE_EPOCH_UNIX` that the edge marks.
With an external PPS the hosts' clocks must agree to well under half a second (NTP is ample):
a host labels the PPS edge it sees by its own clock. With a GPSDO the label is the GPS time.

At start the front end checks what a lab run most often gets wrong, each as one
:class:`~pairzero.phy.frontend.RadioError` naming the sensor or value: the ``ref_locked``
sensor (10 MHz reference) and the ``lo_locked`` sensor, the sample rate the device really runs
at (a rate its master clock cannot divide to is rounded silently by UHD), the gain against
the daughterboard's range (``get_gain_range``: a UBX stops at 31.5 dB). RX DC-offset
correction is turned off: the repeated payload sits near DC and the correction loop would eat
part of it.

``uhd_api`` is the module whose ``usrp_sink`` / ``usrp_source`` constructors make the radio
blocks: ``gnuradio.uhd`` on a lab's radios, :class:`radio.emulated.EmulatedUhd` for the
emulated USRP (``type=emulated`` device args). Nothing else differs.

Never import pyuhd (``import uhd``) in a process that imports this module: in GNU Radio 3.10.5
both register the same pybind11 types and the second import fails. Device discovery therefore
runs ``uhd_find_devices`` in a subprocess.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from gnuradio import gr

from pairzero.phy.frontend import Capture, EventKind, Idle, RadioError, RadioEvent, SendReport
from pairzero.phy.schedule import index_to_time, time_to_index
from radio.blocks import BurstFeeder, WindowSink, no_scheduler_pause

__all__ = [
    "find_usrp_devices", "align_device_time", "parse_device_args", "DEVICE_EPOCH_UNIX",
    "UsrpFrontEnd",
]

log = logging.getLogger(__name__)

#: Device time 0 (2026-01-01T00:00:00Z, in Unix seconds): device times stay near 10^7-10^8 s,
#: where a double still resolves nanoseconds, and every radio of a testbed counts from it.
DEVICE_EPOCH_UNIX = 1_767_225_600
PPS_WAIT_S = 1.5  # longest gap between two PPS edges we accept (nominal 1 s)
#: A stream command must reach the radio this long (s) before its time, or it is late.
COMMAND_MARGIN_S = 0.002
#: Longest wait (s) of a capture for its window's samples between two calls of its ``idle``.
CAPTURE_WAIT_S = 0.02


def parse_device_args(args: str) -> dict[str, str]:
    """UHD device args ``"type=b200,serial=3150ABC"`` as a dict (keys lower-case)."""
    out: dict[str, str] = {}
    for part in args.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"device args {args!r}: {part!r} is not key=value")
        k, v = part.split("=", 1)
        out[k.strip().lower()] = v.strip()
    return out


def find_usrp_devices(timeout_s: float = 10.0) -> list[str]:
    """Device descriptions reported by ``uhd_find_devices`` (empty when none or UHD absent)."""
    exe = shutil.which("uhd_find_devices")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        log.warning("uhd_find_devices timed out after %.0f s", timeout_s)
        return []
    blocks_ = out.stdout.split("-- UHD Device")[1:]
    return [b.strip() for b in blocks_ if "serial" in b]


def _wait_for_pps_edge(usrp: Any, clock: Callable[[], float], sleep: Callable[[float], None]) -> float:
    """Host time just after the next PPS edge the device sees (edges change get_time_last_pps)."""
    last = usrp.get_time_last_pps(0).get_real_secs()
    deadline = clock() + PPS_WAIT_S
    while clock() < deadline:
        sleep(0.005)
        if usrp.get_time_last_pps(0).get_real_secs() != last:
            return clock()
    raise RadioError(
        f"no PPS edge on the radio's time input within {PPS_WAIT_S} s: check the PPS cable, "
        "or set radio.clock_source to the reference actually connected ('external' or 'gpsdo')"
    )


def align_device_time(
    usrp: Any,
    time_source: str,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Set device time at the next PPS edge to the seconds since :data:`DEVICE_EPOCH_UNIX` that
    edge marks; return that value. Returns after the edge, when the time is in effect.

    ``external``: right after an edge, the next one is labelled round(host time) + 1 (the
    hosts' clocks must agree to well under half a second, and the PPS must not sit near the
    half-second of host time). ``gpsdo``: the label is the GPSDO's ``gps_time`` + 1, read just
    after an edge. ``internal``: no PPS; device time is set from the host clock now (a single
    device only: two hosts' times differ by their clock offset).
    """
    from gnuradio import uhd

    if time_source == "internal":
        now = clock() - DEVICE_EPOCH_UNIX
        usrp.set_time_now(uhd.time_spec_t(int(now), now - int(now)), 0)
        return int(now)
    if time_source not in ("external", "gpsdo"):
        raise ValueError(f"time_source: {time_source!r} is not 'internal', 'external' or 'gpsdo'")
    edge_host = _wait_for_pps_edge(usrp, clock, sleep)
    if time_source == "gpsdo":
        label = int(usrp.get_mboard_sensor("gps_time", 0).to_int()) + 1
    else:
        label = int(round(edge_host)) + 1
        frac = edge_host - math.floor(edge_host)
        if abs(frac - 0.5) < 0.1:
            log.warning("PPS edge at %.3f s past the host's second: hosts whose clocks differ by "
                        "more than %.0f ms may label it differently", frac, abs(frac - 0.5) * 1e3)
    value = label - DEVICE_EPOCH_UNIX
    usrp.set_time_next_pps(uhd.time_spec_t(value, 0.0))
    _wait_for_pps_edge(usrp, clock, sleep)  # the value is loaded at this edge
    got = usrp.get_time_last_pps(0).get_real_secs()
    if abs(got - value) > 1e-6:
        raise RadioError(f"device time at the PPS edge is {got} s, set {value} s: is the PPS stable?")
    log.info("device time aligned at a PPS edge: %d s since the testbed epoch (%s)", value, time_source)
    return value




class UsrpFrontEnd:
    """A USRP's sample clock, as a :class:`~pairzero.phy.frontend.RadioFrontEnd`.

    ``direction``: "tx" (an edge node: ``uhd.usrp_sink``) or "rx" (the AP: ``uhd.usrp_source``).
    ``gain_db``: analog gain, checked against the device's range. ``clock_source``: "external"
    (10 MHz + PPS), "gpsdo" or "internal" (one radio alone). ``clock`` / ``sleep``: the host
    clock that labels PPS edges (see :func:`align_device_time`). ``gain_key``: where the gain
    came from, for errors (default ``radio.tx_gain_db`` / ``radio.rx_gain_db``).
    """

    def __init__(
        self,
        direction: Literal["tx", "rx"],
        dev_args: str,
        sample_rate: float,
        center_freq_hz: float,
        gain_db: float,
        clock_source: str = "external",
        uhd_api: Any = None,
        lock_timeout_s: float = 2.0,
        gain_key: str | None = None,
    ) -> None:
        if direction not in ("tx", "rx"):
            raise ValueError(f"direction: {direction!r} is not 'tx' or 'rx'")
        if uhd_api is None:
            from gnuradio import uhd  # gr-uhd only, never pyuhd
            uhd_api = uhd
        self._uhd = uhd_api
        self.direction = direction
        self.dev_args = dev_args
        self.sample_rate = float(sample_rate)
        # Emulated radios may run slower than real time (radio.emulated_rate_factor).
        self.rate_factor = float(getattr(uhd_api, "rate_factor", 1.0))
        clock: Callable[[], float] = getattr(uhd_api, "host_clock", time.time)
        sleep: Callable[[float], None] = getattr(uhd_api, "host_sleep", time.sleep)
        stream_args = uhd_api.stream_args(cpu_format="fc32", channels=[0])
        what = f"radio {dev_args!r} ({'TX' if direction == 'tx' else 'RX'})"
        self._what = what
        self._gain_key = gain_key
        self._closed = False
        self.tb: gr.top_block | None = None
        try:
            if direction == "tx":
                self.usrp = uhd_api.usrp_sink(dev_args, stream_args, "")
            else:
                self.usrp = uhd_api.usrp_source(dev_args, stream_args, False)
        except RuntimeError as e:  # UHD: no device, or it could not be opened
            raise RadioError(f"{what}: cannot open the device: {e} (uhd_find_devices lists what "
                             "is attached)") from None
        self._configure(center_freq_hz, gain_db, clock_source, lock_timeout_s, sleep)
        align_device_time(self.usrp, clock_source, clock, sleep)
        self.tb = gr.top_block(f"pairzero_usrp_{direction}")
        if direction == "tx":
            self.feeder = BurstFeeder()
            self.tb.connect(self.feeder, self.usrp)
            self.tb.msg_connect((self.usrp, "async_msgs"), (self.feeder, "async_msgs"))
        else:
            self.window = WindowSink(self.sample_rate)
            self.tb.connect(self.usrp, self.window)
            # gr-uhd's source returns 0 items when no samples came within its receive timeout;
            # without this the scheduler would hold the next window up to 250 ms.
            no_scheduler_pause(self.usrp)
        self.tb.start()
        self._commands = 0

    # ------------------------------------------------------------------ start-up checks
    def _configure(self, freq: float, gain: float, source: str, lock_timeout_s: float,
                   sleep: Callable[[float], None]) -> None:
        u, what = self.usrp, self._what
        u.set_clock_source(source, 0)
        u.set_time_source(source, 0)
        u.set_samp_rate(self.sample_rate)
        actual = float(u.get_samp_rate())
        if abs(actual - self.sample_rate) > 1e-6 * self.sample_rate:
            raise RadioError(
                f"{what}: the device runs at {actual:.10g} S/s, not phy.sample_rate = "
                f"{self.sample_rate:.10g}: its master clock cannot make that rate exactly; choose "
                "a rate that divides it (e.g. 1e6, 500e3 or 250e3 on a B200)")
        u.set_center_freq(freq, 0)
        rng = u.get_gain_range(0)
        lo, hi = float(rng.start()), float(rng.stop())
        key = self._gain_key or ("radio.tx_gain_db" if self.direction == "tx" else "radio.rx_gain_db")
        if not lo <= gain <= hi:
            raise RadioError(f"{what}: {key} = {gain:g} dB is outside the device's gain range "
                             f"{lo:g}..{hi:g} dB (step {float(rng.step()):g} dB)")
        u.set_gain(gain, 0)
        if self.direction == "rx" and hasattr(u, "set_auto_dc_offset"):
            u.set_auto_dc_offset(False, 0)
        if source != "internal":
            self._wait_locked("ref_locked", lambda: u.get_mboard_sensor("ref_locked", 0),
                              u.get_mboard_sensor_names(0), lock_timeout_s, sleep,
                              f"the {source} 10 MHz reference (radio.clock_source) is not locked: "
                              "check the reference cable and the OctoClock/GPSDO")
        self._wait_locked("lo_locked", lambda: u.get_sensor("lo_locked", 0),
                          u.get_sensor_names(0), lock_timeout_s, sleep,
                          f"the LO does not lock at radio.center_freq_hz = {freq:.6g} Hz")

    def set_tx_gain(self, gain_db: float) -> float:
        """Set the analog TX gain (dB; calibration) within the device's range; returns the gain
        the device really set (UHD rounds to the daughterboard's step)."""
        if self.direction != "tx":
            raise ValueError("set_tx_gain: this front end is a receiver")
        rng = self.usrp.get_gain_range(0)
        lo, hi = float(rng.start()), float(rng.stop())
        if not lo <= gain_db <= hi:
            raise RadioError(f"{self._what}: TX gain {gain_db:g} dB is outside the device's gain "
                             f"range {lo:g}..{hi:g} dB (step {float(rng.step()):g} dB)")
        self.usrp.set_gain(gain_db, 0)
        return float(self.usrp.get_gain(0))

    @property
    def tx_gain_db(self) -> float:
        """The analog gain the device runs at (dB)."""
        return float(self.usrp.get_gain(0))

    def _wait_locked(self, name: str, read: Callable[[], Any], names: Any, timeout_s: float,
                     sleep: Callable[[float], None], why: str) -> None:
        if name not in list(names):
            log.info("%s: no %s sensor on this device: not checked", self._what, name)
            return
        deadline = time.monotonic() + timeout_s
        while not bool(read().to_bool()):
            if time.monotonic() > deadline:
                raise RadioError(f"{self._what}: sensor {name} is false after {timeout_s:g} s: {why}")
            sleep(0.05)

    # ------------------------------------------------------------------ clock
    def now_index(self) -> int:
        """Device time now x sample rate."""
        t = self.usrp.get_time_now(0)
        return time_to_index(int(t.get_full_secs()), float(t.get_frac_secs()), self.sample_rate)

    def seconds_until(self, index: int) -> float:
        """Host seconds until the device clock reaches sample ``index`` (0 if past)."""
        return max(index - self.now_index(), 0) / self.sample_rate / self.rate_factor

    def _time_spec(self, index: int) -> Any:
        return self._uhd.time_spec_t(*index_to_time(index, self.sample_rate))

    # ------------------------------------------------------------------ TX
    def send(self, burst: npt.NDArray[np.complexfloating], index: int, timeout_s: float = 1.0) -> SendReport:
        """Transmit ``burst`` at sample ``index``; wait for the radio's burst ACK (or the reason
        it has none) until ``timeout_s`` after the burst's end is due."""
        if self.direction != "tx":
            raise ValueError("send: this front end is a receiver (direction 'rx')")
        t0 = time.perf_counter()
        self.feeder.clear_async()
        now = self.now_index()
        if index <= now:
            ev = RadioEvent(EventKind.LATE_BURST, index, f"handed over at device sample {now}, "
                            f"{(now - index) / self.sample_rate * 1e3:.1f} ms after its time")
            return SendReport(index, False, (ev,), 0.0)
        handed = self.feeder.queue_burst(np.asarray(burst), index_to_time(index, self.sample_rate))
        end = index + len(burst)
        deadline = time.monotonic() + self.seconds_until(end) + timeout_s
        handed.wait(max(deadline - time.monotonic(), 0.0))
        handoff = time.perf_counter() - t0
        events: list[RadioEvent] = []
        acked = False
        while not acked and not events:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for codes, when in self.feeder.wait_async(min(left, 0.1)):
                at = None if when is None else round(when * self.sample_rate)
                if "time_error" in codes:
                    events.append(RadioEvent(EventKind.LATE_BURST, at, "the radio dropped the "
                                             "burst: it arrived after its tx_time (UHD time_error)"))
                if any(c.startswith("underflow") for c in codes):
                    events.append(RadioEvent(EventKind.UNDERFLOW, at, "the radio ran out of "
                                             "samples inside the burst (UHD underflow)"))
                acked = acked or "burst_ack" in codes
        if not acked and not events:
            events.append(RadioEvent(EventKind.NO_ACK, index, f"no burst ACK within {timeout_s:g} s "
                                     "of the burst's end"))
        return SendReport(index, acked and not events, tuple(events), handoff)

    # ------------------------------------------------------------------ RX
    def capture(self, index: int, length: int, timeout_s: float, idle: Idle | None = None) -> Capture:
        """Samples [index, index + length) by a timed stream command (NUM_SAMPS_AND_DONE);
        gives up ``timeout_s`` after the window's end is due."""
        if self.direction != "rx":
            raise ValueError("capture: this front end is a transmitter (direction 'tx')")
        uhd = self._uhd
        now = self.now_index()
        margin = math.ceil(COMMAND_MARGIN_S * self.sample_rate)
        if index <= now + margin:
            ev = RadioEvent(EventKind.LATE_COMMAND, index,
                            f"the window starts at device sample {index}, it is already {now}")
            return Capture(index, length, None, (ev,))
        self.window.expect(index, length)
        cmd = uhd.stream_cmd_t(uhd.stream_mode_t.STREAM_MODE_NUM_SAMPS_AND_DONE)
        cmd.num_samps = length
        cmd.stream_now = False
        cmd.time_spec = self._time_spec(index)
        self.usrp.issue_stream_cmd(cmd)
        self._commands += 1
        deadline = time.monotonic() + self.seconds_until(index + length) + timeout_s
        while True:
            filled, lost = self.window.window_state()
            if lost:
                self.window.cancel()
                gaps = ", ".join(f"{a}->{b}" for a, b in lost)
                ev = RadioEvent(EventKind.OVERFLOW, lost[0][0], f"samples lost inside the window "
                                f"(rx_time jumped {gaps}): frame discarded")
                return Capture(index, length, None, (ev,))
            w = self.window.take()
            if w is not None:
                log.debug("window at sample %d complete %.1f ms after its end", index,
                          (self.now_index() - index - length) / self.sample_rate * 1e3)
                return Capture(index, length, w)
            left = deadline - time.monotonic()
            if left <= 0:
                self.window.cancel()
                ev = RadioEvent(EventKind.TIMEOUT, index, f"{filled} of {length} samples within "
                                f"{timeout_s:g} s of the window's end: an overflow may have "
                                "halted the stream (a USRP stops a finite stream on overflow: "
                                "'O' in the log), or the stream command came late, or the "
                                "radio stopped streaming")
                return Capture(index, length, None, (ev,))
            # Wake the moment the window is complete (not on the control plane's next
            # message); the control plane is served between waits, without blocking.
            if idle is not None:
                idle(0.0)
            self.window.wait(min(left, CAPTURE_WAIT_S))

    def close(self) -> None:
        """Stop the flowgraph and release the radio (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.tb is not None:
            self.tb.stop()
            self.tb.wait()
