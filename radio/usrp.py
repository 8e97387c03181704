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
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from gnuradio import gr

from pairzero.phy.frontend import Capture, EventKind, Idle, RadioError, RadioEvent, SendReport
from pairzero.phy.schedule import index_to_time, time_to_index
from radio.blocks import BurstFeeder, WindowSink, no_scheduler_pause

__all__ = [
    "find_usrp_devices", "parse_uhd_find_devices", "align_device_time", "wait_for_pps_edge",
    "parse_device_args", "DEVICE_EPOCH_UNIX", "UsrpFrontEnd", "RadioSettings", "StartupChecks",
    "open_radio", "configure_radio", "read_locks", "UHD_ERRORS",
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


def parse_uhd_find_devices(text: str) -> list[dict[str, str]]:
    """The devices in ``uhd_find_devices``' output, each as its "Device Address" fields
    (``serial``, ``name``, ``product``, ``type``, ``addr``...)."""
    devices = []
    for block in text.split("-- UHD Device")[1:]:
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.strip().partition(":")
            if sep and key and " " not in key and value.strip():
                fields[key.strip().lower()] = value.strip()
        if fields:
            devices.append(fields)
    return devices


def find_usrp_devices(timeout_s: float = 10.0) -> list[dict[str, str]] | None:
    """The USRPs UHD finds on this host (``uhd_find_devices`` in a subprocess: never pyuhd in a
    process that imports gr-uhd); None when ``uhd_find_devices`` is not installed."""
    exe = shutil.which("uhd_find_devices")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        log.warning("uhd_find_devices timed out after %.0f s", timeout_s)
        return []
    return parse_uhd_find_devices(out.stdout)


def wait_for_pps_edge(usrp: Any, clock: Callable[[], float], sleep: Callable[[float], None]) -> float:
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
    edge_host = wait_for_pps_edge(usrp, clock, sleep)
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
    wait_for_pps_edge(usrp, clock, sleep)  # the value is loaded at this edge
    got = usrp.get_time_last_pps(0).get_real_secs()
    if abs(got - value) > 1e-6:
        raise RadioError(f"device time at the PPS edge is {got} s, set {value} s: is the PPS stable?")
    log.info("device time aligned at a PPS edge: %d s since the testbed epoch (%s)", value, time_source)
    return value


#: What UHD raises through gr-uhd's bindings: uhd::exception derives from std::runtime_error
#: (RuntimeError in Python), some calls surface ValueError / KeyError / IndexError.
UHD_ERRORS: tuple[type[Exception], ...] = (RuntimeError, ValueError, KeyError, LookupError)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


@dataclass(frozen=True)
class RadioSettings:
    """What a radio is opened with, and the config key each setting came from (every start-up
    problem names its key). ``direction``: "tx" (a node) or "rx" (the AP)."""

    direction: str
    dev_args: str
    sample_rate: float
    center_freq_hz: float
    gain_db: float
    clock_source: str = "external"
    antenna: str | None = None
    args_key: str = "device args"
    gain_key: str | None = None

    @property
    def what(self) -> str:
        return f"radio {self.dev_args!r} ({'TX' if self.direction == 'tx' else 'RX'})"

    @property
    def antenna_key(self) -> str:
        return "radio.tx_antenna" if self.direction == "tx" else "radio.rx_antenna"

    @property
    def gain_setting(self) -> str:
        return self.gain_key or ("radio.tx_gain_db" if self.direction == "tx" else "radio.rx_gain_db")


class StartupChecks:
    """Runs start-up steps: raises the first problem as :class:`RadioError`, or (``collect``,
    for ``pairzero doctor``) keeps every one, one line each."""

    def __init__(self, what: str, collect: bool = False) -> None:
        self.what = what
        self.collect = collect
        self.problems: list[str] = []
        self._failed: set[str] = set()

    def fail(self, line: str, key: str | None = None) -> None:
        """A problem (one line); with ``key``, only the first problem of that setting counts
        (a GPSDO that is not there fails the clock source, the time source and the lock)."""
        if key is not None:
            if key in self._failed:
                return
            self._failed.add(key)
        line = f"{self.what}: {line}"
        if not self.collect:
            raise RadioError(line)
        self.problems.append(line)

    def failed(self, key: str) -> bool:
        """A problem of setting ``key`` was found already."""
        return key in self._failed

    def call(self, key: str, value: Any, fn: Callable[[], Any], default: Any = None) -> Any:
        """``fn()``, a UHD call made for setting ``key = value``; what UHD raises becomes one
        line naming the setting."""
        try:
            return fn()
        except UHD_ERRORS as e:
            self.fail(f"{key} = {value!r}: {_one_line(e)}", key)
            return default


def open_radio(uhd_api: Any, s: RadioSettings) -> Any:
    """The gr-uhd block of the radio (``usrp_sink`` for TX, ``usrp_source`` for RX); a device
    UHD cannot open is one :class:`RadioError` naming the device args' key."""
    stream_args = uhd_api.stream_args(cpu_format="fc32", channels=[0])
    try:
        if s.direction == "tx":
            return uhd_api.usrp_sink(s.dev_args, stream_args, "")
        return uhd_api.usrp_source(s.dev_args, stream_args, False)
    except UHD_ERRORS as e:  # UHD: no device, no images, or args it cannot use
        raise RadioError(f"{s.what}: {s.args_key}: cannot open the device: {_one_line(e)} "
                         "(`pairzero doctor` checks the images and lists what is attached)") from None


def configure_radio(u: Any, s: RadioSettings, checks: StartupChecks, lock_timeout_s: float = 2.0,
                    sleep: Callable[[float], None] = time.sleep) -> None:
    """The start-up steps of a radio, each problem one line naming its config key: clock and
    time source, the sample rate the device really makes (UHD rounds silently), the carrier
    within the device's range, the gain within the daughterboard's, the antenna port among the
    device's, RX DC-offset correction off (the repeated payload sits near DC and the
    correction loop would eat part of it), and the ``ref_locked`` / ``lo_locked`` sensors."""
    source = s.clock_source
    checks.call("radio.clock_source", source, lambda: u.set_clock_source(source, 0))
    checks.call("radio.clock_source", source, lambda: u.set_time_source(source, 0))
    checks.call("phy.sample_rate", s.sample_rate, lambda: u.set_samp_rate(s.sample_rate))
    actual = checks.call("phy.sample_rate", s.sample_rate, lambda: float(u.get_samp_rate()))
    if actual is not None and abs(actual - s.sample_rate) > 1e-6 * s.sample_rate:
        checks.fail(f"the device runs at {actual:.10g} S/s, not phy.sample_rate = "
                    f"{s.sample_rate:.10g}: its master clock cannot make that rate exactly; choose "
                    "a rate that divides it (e.g. 1e6, 500e3 or 250e3 on a B200)", "phy.sample_rate")
    freq = s.center_freq_hz
    frange = checks.call("radio.center_freq_hz", freq, lambda: u.get_freq_range(0))
    if frange is not None and not float(frange.start()) <= freq <= float(frange.stop()):
        checks.fail(f"radio.center_freq_hz = {freq:.6g} Hz is outside the device's range "
                    f"{float(frange.start()):.6g}..{float(frange.stop()):.6g} Hz (UHD would tune to "
                    "the nearest edge)", "radio.center_freq_hz")
    else:
        checks.call("radio.center_freq_hz", freq, lambda: u.set_center_freq(freq, 0))
    rng = checks.call(s.gain_setting, s.gain_db, lambda: u.get_gain_range(0))
    if rng is not None:
        lo, hi = float(rng.start()), float(rng.stop())
        if not lo <= s.gain_db <= hi:
            checks.fail(f"{s.gain_setting} = {s.gain_db:g} dB is outside the device's gain range "
                        f"{lo:g}..{hi:g} dB (step {float(rng.step()):g} dB)", s.gain_setting)
        else:
            checks.call(s.gain_setting, s.gain_db, lambda: u.set_gain(s.gain_db, 0))
    if s.antenna is not None:
        ports = checks.call(s.antenna_key, s.antenna, lambda: list(u.get_antennas(0)), [])
        if s.antenna not in ports:
            checks.fail(f"{s.antenna_key} = {s.antenna!r} is not a port of this device "
                        f"({', '.join(ports) or 'none listed'})", s.antenna_key)
        else:
            checks.call(s.antenna_key, s.antenna, lambda: u.set_antenna(s.antenna, 0))
    if s.direction == "rx" and hasattr(u, "set_auto_dc_offset"):
        checks.call(s.args_key, s.dev_args, lambda: u.set_auto_dc_offset(False, 0))
    if source != "internal":
        names = checks.call("radio.clock_source", source, lambda: list(u.get_mboard_sensor_names(0)), [])
        _wait_locked(checks, "ref_locked", "radio.clock_source", source,
                     lambda: u.get_mboard_sensor("ref_locked", 0), names, lock_timeout_s, sleep,
                     f"the {source} 10 MHz reference (radio.clock_source) is not locked: "
                     "check the reference cable and the OctoClock/GPSDO")
    names = checks.call("radio.center_freq_hz", freq, lambda: list(u.get_sensor_names(0)), [])
    _wait_locked(checks, "lo_locked", "radio.center_freq_hz", freq, lambda: u.get_sensor("lo_locked", 0),
                 names, lock_timeout_s, sleep, f"the LO does not lock at radio.center_freq_hz = {freq:.6g} Hz")


def _wait_locked(checks: StartupChecks, name: str, key: str, value: Any, read: Callable[[], Any],
                 names: list[str], timeout_s: float, sleep: Callable[[float], None], why: str) -> None:
    if name not in names:
        log.info("%s: no %s sensor on this device: not checked", checks.what, name)
        return
    deadline = time.monotonic() + timeout_s
    while True:
        locked = checks.call(key, value, lambda: bool(read().to_bool()))
        if locked is None or locked:
            return
        if time.monotonic() > deadline:
            checks.fail(f"sensor {name} is false after {timeout_s:g} s: {why}", key)
            return
        sleep(0.05)


def read_locks(u: Any, clock_source: str) -> list[tuple[str, str, bool]]:
    """The lock sensors a radio has, read now: (sensor, the setting it concerns, locked):
    ``ref_locked`` (with an external reference or a GPSDO) and ``lo_locked``."""
    out = []
    if clock_source != "internal" and "ref_locked" in list(u.get_mboard_sensor_names(0)):
        out.append(("ref_locked", "radio.clock_source",
                    bool(u.get_mboard_sensor("ref_locked", 0).to_bool())))
    if "lo_locked" in list(u.get_sensor_names(0)):
        out.append(("lo_locked", "radio.center_freq_hz", bool(u.get_sensor("lo_locked", 0).to_bool())))
    return out


class UsrpFrontEnd:
    """A USRP's sample clock, as a :class:`~pairzero.phy.frontend.RadioFrontEnd`.

    ``direction``: "tx" (an edge node: ``uhd.usrp_sink``) or "rx" (the AP: ``uhd.usrp_source``).
    ``gain_db``: analog gain, checked against the device's range. ``clock_source``: "external"
    (10 MHz + PPS), "gpsdo" or "internal" (one radio alone). ``antenna``: the port
    (``radio.tx_antenna`` / ``radio.rx_antenna``; None: the device's default). ``args_key`` /
    ``gain_key``: where the device args and the gain came from, for errors (defaults "device
    args" and ``radio.tx_gain_db`` / ``radio.rx_gain_db``). Every start-up problem, whatever UHD
    call raises it, is one :class:`RadioError` naming its setting (:func:`configure_radio`).
    The host clock that labels PPS edges is ``uhd_api.host_clock`` when it has one (emulated
    radios), else the host's (see :func:`align_device_time`).
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
        antenna: str | None = None,
        args_key: str = "device args",
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
        self.clock_source = clock_source
        # Emulated radios may run slower than real time (radio.emulated_rate_factor).
        self.rate_factor = float(getattr(uhd_api, "rate_factor", 1.0))
        clock: Callable[[], float] = getattr(uhd_api, "host_clock", time.time)
        self._host_clock = clock
        sleep: Callable[[float], None] = getattr(uhd_api, "host_sleep", time.sleep)
        settings = RadioSettings(direction, dev_args, self.sample_rate, center_freq_hz, gain_db,
                                 clock_source, antenna, args_key, gain_key)
        self._settings = settings
        self._what = settings.what
        self._closed = False
        self.tb: gr.top_block | None = None
        self.usrp = open_radio(uhd_api, settings)
        configure_radio(self.usrp, settings, StartupChecks(self._what), lock_timeout_s, sleep)
        try:
            align_device_time(self.usrp, clock_source, clock, sleep)
        except UHD_ERRORS as e:
            raise RadioError(f"{self._what}: radio.clock_source = {clock_source!r}: setting device "
                             f"time failed: {_one_line(e)}") from None
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

    # ------------------------------------------------------------------ lock
    def check_lock(self) -> RadioEvent | None:
        """Read the radio's lock sensors now: ``ref_locked`` (on an external reference or a
        GPSDO) and ``lo_locked``. Returns a :class:`RadioEvent` of kind ``LOST_LOCK`` naming
        the sensor and the setting it concerns when one reads false, None when all read true
        (or the device has none). Call it between rounds, not during a capture or a burst (each
        read is a control transaction of about a millisecond). A radio that lost lock sends
        and hears at a frequency (or time) nobody planned: leave it out until it relocks."""
        try:
            locks = read_locks(self.usrp, self.clock_source)
        except UHD_ERRORS as e:
            return RadioEvent(EventKind.LOST_LOCK, self.now_index(),
                              f"{self._what}: the lock sensors cannot be read: {_one_line(e)}")
        lost = [(name, key) for name, key, ok in locks if not ok]
        if not lost:
            return None
        what = ", ".join(f"{name} is false ({key})" for name, key in lost)
        return RadioEvent(EventKind.LOST_LOCK, self.now_index(), f"{self._what}: {what}: "
                          "check the reference cable and the OctoClock/GPSDO")

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

    def clock_report(self) -> tuple[float, float] | None:
        """(device time s, host clock Unix s) read together: the host clock is the one that
        labelled the PPS edge the device time was set at (:func:`align_device_time`)."""
        t = self.usrp.get_time_now(0)
        return float(t.get_full_secs()) + float(t.get_frac_secs()), float(self._host_clock())

    def close(self) -> None:
        """Stop the flowgraph and release the radio (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.tb is not None:
            self.tb.stop()
            self.tb.wait()
