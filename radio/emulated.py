"""The emulated USRP: stand-ins for gr-uhd's ``usrp_sink`` / ``usrp_source``, wired to the channel
emulator, for testing the USRP front end's own code without radios (``type=emulated``).

:class:`EmulatedUhd` has what :class:`radio.usrp.UsrpFrontEnd` takes from ``gnuradio.uhd``: the
two block constructors (same arguments) and the plain UHD types (``time_spec_t``,
``stream_cmd_t``, ``meta_range_t``, ``sensor_value_t``, taken from gr-uhd itself). The blocks
behave as a USRP does at that API boundary:

* **Clock.** The emulator is the air, on one shared reference (the emulated 10 MHz + PPS) that
  runs at ``rate_factor`` x real time (``radio.emulated_rate_factor``; below 1 on a loaded
  machine: every emulated device and deadline slows down together). PPS edges fall on whole
  reference seconds. Each radio has its own device clock over that reference
  (:class:`DeviceClock`: 0 at power-up, loaded by ``set_time_next_pps`` / ``set_time_now`` as a
  USRP's, running at ``1 + clock_drift_ppm * 1e-6`` times the reference) and its own host clock
  (:meth:`EmulatedUhd.host_clock`: the reference plus ``host_clock_offset_s``), which labels the
  PPS edges in :func:`radio.usrp.align_device_time`: a host 0.6 s off sets its radio a whole
  second off, as in a lab. A transmitter puts a burst whose ``tx_time`` is device sample n on the
  air at the reference sample where its device clock reads n; a receiver listens, for a window
  commanded at device sample n, from the reference sample where its own clock reads n, and tags
  ``rx_time`` in its own device time. Radios whose device times disagree therefore miss each
  other, silently, as on the air.
* **Oscillators** (:class:`radio.oscillator.LocalOscillator`). A transmitter's samples go on the
  air times ``exp(j phi_tx)``, a receiver's come off it times ``exp(-j phi_rx)``: a random phase
  at every ``set_center_freq`` (a PLL relocks at one), plus ``2 pi f t`` with ``f = cfo_hz +
  clock_drift_ppm * 1e-6 * center_freq``, plus a random walk of ``phase_walk_deg_per_s`` (std
  after 1 s). The draws come from ``seed`` (default: a hash of the role and the device args, so
  runs repeat; give each radio its own serial or seed). The channel emulator itself plays no
  carrier offset on emulated radios: these oscillators make it.
* **Rates and gains.** As UHD 4.3: a B2xx picks its master clock for the rate asked
  (:func:`b2xx_auto_master_clock`) unless ``master_clock_rate=`` is in the device args; an X3xx
  runs at 200 MHz (or ``master_clock_rate=`` 184.32e6 / 120e6); the DSP's decimation rounds the
  rate, and ``get_samp_rate`` says what was really set. ``get_gain_range`` is the model's
  (``model=b200`` / ``b210``: TX 0-89.75 dB, RX 0-76 dB; ``model=x310_ubx``: 0-31.5 dB);
  ``set_gain`` clips as UHD does.
* **Sensors.** ``ref_locked`` (mboard), ``lo_locked`` (channel), ``gps_time`` (with
  ``clock_source`` gpsdo).
* **TX** (``usrp_sink``): bursts by their ``tx_sob`` / ``tx_time`` / ``tx_eob`` tags, as gr-uhd
  reads them (:class:`EmulatedUsrpSink`). Samples reach the device ``transfer_delay_s`` after
  they are handed over (default per model: 1 ms for a B2xx on USB3, 0.2 ms for an X3xx on
  10 GbE); a timed burst that reaches it after its time is dropped with an async
  ``time_error``; a burst that runs dry gives ``underflow``; ``burst_ack`` comes once the last
  sample has gone out, plus the transfer back (``async_msgs`` port, the messages of gr-uhd).
  Between bursts the device declares its stream silent up to device time, so the emulator
  follows real time.
* **RX** (``usrp_source``): timed ``STREAM_MODE_NUM_SAMPS_AND_DONE`` and continuous commands;
  a command that arrives after its time is refused as gr-uhd logs it
  (``ERROR_CODE_LATE_COMMAND``: no samples); samples carry ``rx_time`` on the first one. An
  overflow (an injected one, or samples not read within ``RX_BUFFER_S``) halts a finite
  stream, as a B2xx / X3xx does: the host gets no more samples of the window (the front end's
  capture times out); a continuous stream goes on after the gap with a new ``rx_time``. The
  commands it accepts go on to the channel emulator (upstream on the AP stream), which
  computes only the windows commanded, as a USRP streams only those.

Device args (:data:`ARGS`; anything else, or a value out of range, is refused with one line naming
the key and what it allows): ``type=emulated``, ``serial``, ``name``, ``model``, the clock and
oscillator args above, ``seed``, ``master_clock_rate``, ``transfer_delay_s``, and the faults to
inject (counting from 1): ``late_command=N`` (the N-th stream command reaches the device after
its time), ``overflow=N`` (the device's buffer overflows in the N-th window),
``late_burst=N`` (the host stalls before handing the N-th burst over, until after its time),
``underflow=N`` (the host stalls inside the N-th burst), ``unlocked_ref=1``, ``unlocked_lo=1``,
``lose_lock_after_s=T`` (both sensors read false T s after the radio was opened),
``no_gpsdo=1`` (no GPSDO module: ``gpsdo`` as clock or time source is refused as UHD refuses
it), ``no_pps=1`` (nothing on the PPS input), ``tune_error=1`` (``set_center_freq`` raises). A model has its ports
(``get_antennas``: B2xx TX/RX, RX2; UBX also CAL) and carrier range (``get_freq_range``).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pmt
import zmq
from gnuradio import gr
from gnuradio import uhd as gr_uhd

from pairzero.phy.schedule import index_to_time, time_to_index
from radio.blocks import (
    ASYNC_PORT,
    CONTINUOUS,
    STREAM_CMD,
    STREAM_STOP,
    make_async_message,
    no_scheduler_pause,
)
from radio.oscillator import LocalOscillator
from radio.usrp import DEVICE_EPOCH_UNIX, parse_device_args

__all__ = [
    "ReferenceClock", "DeviceClock", "EmulatedArgs", "EmulatedUhd", "EmulatedUsrpSink",
    "EmulatedUsrpSource", "MODELS", "ARGS",
]

log = logging.getLogger(__name__)


#: B2xx (AD9361): the master clock's limits (Hz) and the one it starts at (UHD 4.3,
#: ad9361_device.cpp, ad936x_manager.cpp).
B2XX_MCR_RANGE = (220e3, 61.44e6)
B2XX_DEFAULT_MCR = 16e6
#: X3xx: the master clock rates the clocking supports (UHD 4.3, x300_clock_ctrl.cpp).
X3XX_MCRS = (200e6, 184.32e6, 120e6)


def _b2xx_decims() -> tuple[int, ...]:
    """Decimations (interpolations) the B2xx DDC (DUC) can make (UHD 4.3 rx/tx_dsp_core_3000
    ``get_host_rates``): 512 down to 260 in steps of 4, 256 to 130 in steps of 2, 128 to 1."""
    return (*range(512, 256, -4), *range(256, 128, -2), *range(128, 0, -1))


def _x3xx_decims() -> tuple[int, ...]:
    """Decimations the X3xx RFNoC DDC can make (UHD 4.3 ddc_block_control): CIC 1..255 times a
    cascade of up to 2 halfbands (x1, x2, x4)."""
    return tuple(sorted({(1 << hb) * cic for hb in range(3) for cic in range(1, 256)}))


@dataclass(frozen=True)
class DeviceModel:
    """What an emulated device model fixes: gain ranges (start, stop, step in dB), its master
    clock family ("b2xx": chosen automatically for the rate asked unless ``master_clock_rate=``
    is given; "x3xx": one of :data:`X3XX_MCRS`), the decimations its DSP makes, and the
    host-to-radio transfer time of its link (s: USB3 for a B2xx, 10 GbE for an X3xx)."""

    tx_gain: tuple[float, float, float]
    rx_gain: tuple[float, float, float]
    family: str
    decims: tuple[int, ...]
    transfer_s: float
    freq_range: tuple[float, float]
    tx_antennas: tuple[str, ...]
    rx_antennas: tuple[str, ...]


_B2XX = DeviceModel((0.0, 89.75, 0.25), (0.0, 76.0, 1.0), "b2xx", _b2xx_decims(), 1e-3,
                    (70e6, 6e9), ("TX/RX",), ("TX/RX", "RX2"))
MODELS = {
    "b200": _B2XX,
    "b210": _B2XX,
    "x310_ubx": DeviceModel((0.0, 31.5, 0.5), (0.0, 31.5, 0.5), "x3xx", _x3xx_decims(), 2e-4,
                            (10e6, 6e9), ("TX/RX", "CAL"), ("TX/RX", "RX2", "CAL")),
}


def b2xx_auto_master_clock(rate: float) -> float:
    """The master clock rate a B2xx picks for ``rate`` S/s on one channel when none was given
    (UHD 4.3 ``ad936x_manager::get_auto_tick_rate``): the rate times the largest power of two
    that stays within 61.44 MHz (but not 2 when the rate alone is already a valid clock).
    Raises RuntimeError for a rate above 61.44 MHz, as UHD does."""
    lo, hi = B2XX_MCR_RANGE
    base = math.floor(rate + 0.5)
    if base > hi:
        raise RuntimeError(f"Requested sampling rate ({rate / 1e6:.2f} Msps) exceeds maximum "
                           f"tick rate of {hi / 1e6:.2f} MHz.")
    multiplier = 1 << int(math.log2(hi / base))
    if multiplier == 2 and base >= lo:
        multiplier = 1
    return float(base * multiplier)


_FAULTS = ("late_command", "overflow", "late_burst", "underflow", "unlocked_ref", "unlocked_lo",
           "no_gpsdo", "no_pps", "tune_error")
#: Largest seed a ``seed=`` device arg may give (numpy seeds are unsigned; 2^63 - 1 as run.seed).
_MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class _Arg:
    """One device arg of an emulated radio: its parser (raises ValueError) and what is allowed."""

    parse: Callable[[str], Any]
    allowed: str


def _number(lo: float, hi: float) -> Callable[[str], float]:
    def parse(v: str) -> float:
        x = float(v)
        if not (math.isfinite(x) and lo <= x <= hi):
            raise ValueError(v)
        return x
    return parse


def _whole(lo: int, hi: int) -> Callable[[str], int]:
    def parse(v: str) -> int:
        x = int(v)
        if not lo <= x <= hi:
            raise ValueError(v)
        return x
    return parse


def _text(v: str) -> str:
    return v


#: The device args an emulated radio takes (``type=emulated,...``), each with what it allows.
ARGS: dict[str, _Arg] = {
    "type": _Arg(_text, "emulated"),
    "serial": _Arg(_text, "any text"),
    "name": _Arg(_text, "any text"),
    # the host whose channel emulator plays this radio's RF (read by RadioConfig.emulator_host,
    # which sets the sample addresses the stand-ins are given)
    "emulator": _Arg(_text, "a host name or address"),
    "model": _Arg(_text, " | ".join(sorted(MODELS))),
    "host_clock_offset_s": _Arg(_number(-86400.0, 86400.0), "a number of seconds in -86400..86400"),
    "clock_drift_ppm": _Arg(_number(-100.0, 100.0), "a number of ppm in -100..100"),
    "cfo_hz": _Arg(_number(-1e5, 1e5), "a number of Hz in -1e5..1e5"),
    "phase_walk_deg_per_s": _Arg(_number(0.0, 360.0), "a number of degrees in 0..360"),
    "seed": _Arg(_whole(0, _MAX_SEED), f"a whole number in 0..{_MAX_SEED}"),
    "master_clock_rate": _Arg(_number(1.0, 1e9), "a number of Hz (B2xx: 220e3..61.44e6; "
                              "X3xx: 200e6, 184.32e6 or 120e6)"),
    "transfer_delay_s": _Arg(_number(0.0, 1.0), "a number of seconds in 0..1"),
    "late_command": _Arg(_whole(1, 2**31), "a whole number >= 1 (the N-th stream command)"),
    "overflow": _Arg(_whole(1, 2**31), "a whole number >= 1 (the N-th window)"),
    "late_burst": _Arg(_whole(1, 2**31), "a whole number >= 1 (the N-th burst)"),
    "underflow": _Arg(_whole(1, 2**31), "a whole number >= 1 (the N-th burst)"),
    "unlocked_ref": _Arg(_whole(0, 1), "0 or 1"),
    "unlocked_lo": _Arg(_whole(0, 1), "0 or 1"),
    "no_gpsdo": _Arg(_whole(0, 1), "0 or 1"),
    "no_pps": _Arg(_whole(0, 1), "0 or 1"),
    "tune_error": _Arg(_whole(0, 1), "0 or 1"),
    "lose_lock_after_s": _Arg(_number(0.0, 1e6), "a number of seconds >= 0"),
}


@dataclass(frozen=True)
class EmulatedArgs:
    """An emulated radio's device args, parsed (see :data:`ARGS` and the module docstring)."""

    model: str = "b200"
    host_clock_offset_s: float = 0.0
    clock_drift_ppm: float = 0.0
    cfo_hz: float = 0.0
    phase_walk_deg_per_s: float = 0.0
    seed: int = 0
    master_clock_rate: float | None = None
    transfer_delay_s: float | None = None
    lose_lock_after_s: float | None = None
    faults: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, dev_args: str, role: str = "") -> EmulatedArgs:
        """Parse and check ``dev_args``; a problem is one ``RuntimeError`` line (as UHD raises for
        device args it cannot use) naming the key and what it allows. ``role`` ("tx" / "rx")
        enters the default seed: two radios never share an oscillator by accident."""
        try:
            args = parse_device_args(dev_args)
        except ValueError as e:
            raise RuntimeError(str(e)) from None
        if args.get("type") != "emulated":
            raise RuntimeError(f"device args {dev_args!r}: no emulated device (type=emulated)")
        unknown = sorted(set(args) - set(ARGS))
        if unknown:
            raise RuntimeError(f"device args {dev_args!r}: unknown keys {unknown} for an emulated "
                               f"device (known: {sorted(ARGS)})")
        values: dict[str, Any] = {}
        for key, v in args.items():
            spec = ARGS[key]
            try:
                values[key] = spec.parse(v)
            except ValueError:
                raise RuntimeError(f"device args {dev_args!r}: {key}={v!r} is not allowed; "
                                   f"allowed: {spec.allowed}") from None
        model = values.get("model", "b200")
        if model not in MODELS:
            raise RuntimeError(f"device args {dev_args!r}: model={model!r} is not allowed; "
                               f"allowed: {ARGS['model'].allowed}")
        seed = values.get("seed")
        if seed is None:  # reproducible: the same args (and role) draw the same oscillator
            digest = hashlib.sha256(f"{role}|{dev_args}".encode()).digest()
            seed = int.from_bytes(digest[:8], "little") & _MAX_SEED
        return cls(
            model=model,
            host_clock_offset_s=values.get("host_clock_offset_s", 0.0),
            clock_drift_ppm=values.get("clock_drift_ppm", 0.0),
            cfo_hz=values.get("cfo_hz", 0.0),
            phase_walk_deg_per_s=values.get("phase_walk_deg_per_s", 0.0),
            seed=seed,
            master_clock_rate=values.get("master_clock_rate"),
            transfer_delay_s=values.get("transfer_delay_s"),
            lose_lock_after_s=values.get("lose_lock_after_s"),
            faults={k: int(values[k]) for k in _FAULTS if k in values},
        )


#: A TX device declares its stream silent up to device time on ticks: every
#: ``ADVANCE_PERIOD_S`` (reference s; whole multiples, the same moments on every radio, so the
#: emulator's clock, the earliest of the radios' horizons, moves once per tick rather than once
#: per radio), and ``BURST_TAIL_SAMPLES`` after the end of each burst it sent, which is when
#: the AP's window around a frame (a 128-sample margin, and the emulator's FIR tail) can leave
#: the emulator.
ADVANCE_PERIOD_S = 0.02
BURST_TAIL_SAMPLES = 512
RX_BUFFER_S = 0.25  # host-side receive buffering of the emulated RX device (s of samples)


class ReferenceClock:
    """The emulated testbed's shared reference (10 MHz + PPS): reference seconds since the
    testbed epoch, ``(host time - epoch) x rate_factor``; PPS edges on whole reference seconds."""

    def __init__(self, rate_factor: float = 1.0) -> None:
        if not (math.isfinite(rate_factor) and 0 < rate_factor <= 1):
            raise ValueError(f"radio.emulated_rate_factor: {rate_factor!r} must be in (0, 1]")
        self.rate_factor = float(rate_factor)

    def now(self) -> float:
        """Reference seconds since the testbed epoch."""
        return (time.time() - DEVICE_EPOCH_UNIX) * self.rate_factor

    def host_clock(self) -> float:
        """True time (Unix s) on the reference's scale: a host whose clock is exact (and a
        GPSDO's ``gps_time``) reads this; :meth:`EmulatedUhd.host_clock` adds the host's error."""
        return DEVICE_EPOCH_UNIX + self.now()

    def index_now(self, rate: float) -> int:
        """The reference sample (at ``rate`` S/s) of the present moment."""
        return math.floor(self.now() * rate)

    def host_sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of reference time."""
        time.sleep(max(seconds, 0.0) / self.rate_factor)


class DeviceClock:
    """One device's time over the reference: ``(1 + drift) r + offset`` (s) at reference time
    ``r``, as a USRP's: its sample clock runs at ``1 + clock_drift_ppm * 1e-6`` times the
    reference (0 ppm on a shared 10 MHz), its time is 0 at power-up and is loaded at a PPS edge
    (``set_time_next_pps``) or at once (``set_time_now``). PPS edges are the reference's whole
    seconds. :meth:`to_reference` / :meth:`from_reference` translate sample indices between the
    device's time and the reference (the emulator's air)."""

    def __init__(self, ref: ReferenceClock, drift_ppm: float = 0.0) -> None:
        self.ref = ref
        self.scale = 1.0 + drift_ppm * 1e-6  # device s per reference s
        self._lock = threading.Lock()
        self._offset = -self.scale * ref.now()  # device time 0 at power-up
        self._pending: tuple[float, int] | None = None  # (value, reference second of the edge)

    def _settle(self, r: float) -> None:
        if self._pending is not None and r >= self._pending[1]:
            value, edge = self._pending
            self._offset = value - self.scale * edge
            self._pending = None

    def now(self) -> float:
        with self._lock:
            r = self.ref.now()
            self._settle(r)
            return self.scale * r + self._offset

    def last_pps(self) -> float:
        with self._lock:
            r = self.ref.now()
            self._settle(r)
            return self.scale * math.floor(r) + self._offset

    def set_next_pps(self, value: float) -> None:
        with self._lock:
            self._pending = (value, math.floor(self.ref.now()) + 1)

    def set_now(self, value: float) -> None:
        with self._lock:
            self._offset = value - self.scale * self.ref.now()
            self._pending = None

    def to_reference(self, index: int, rate: float) -> int:
        """The reference sample at which this device's clock reads sample ``index``."""
        with self._lock:
            self._settle(self.ref.now())
            return round((index - self._offset * rate) / self.scale)

    def from_reference(self, index: int, rate: float) -> int:
        """This device's sample index at reference sample ``index``."""
        with self._lock:
            self._settle(self.ref.now())
            return round(self.scale * index + self._offset * rate)


def _spec(seconds: float) -> Any:
    whole = math.floor(seconds)
    return gr_uhd.time_spec_t(int(whole), float(seconds - whole))


def _secs(spec: Any) -> float:
    return float(spec.get_full_secs()) + float(spec.get_frac_secs())


class _EmulatedRadio:
    """What both emulated blocks share: device args, clock, rate, frequency, gain, sensors."""

    def _init_radio(self, dev_args: str, ref: ReferenceClock, tx: bool) -> None:
        self.args = EmulatedArgs.parse(dev_args, "tx" if tx else "rx")
        model = self.args.model
        self.dev_args = dev_args
        self.model = MODELS[model]
        self.faults = dict(self.args.faults)
        self.ref = ref
        self.clock = DeviceClock(ref, self.args.clock_drift_ppm)
        self.lo = LocalOscillator(self.args.cfo_hz, self.args.clock_drift_ppm,
                                  self.args.phase_walk_deg_per_s, self.args.seed)
        self._tx = tx
        self._auto_mcr = self.model.family == "b2xx" and self.args.master_clock_rate is None
        default_mcr = B2XX_DEFAULT_MCR if self.model.family == "b2xx" else X3XX_MCRS[0]
        try:
            self._mcr = self._check_mcr(self.args.master_clock_rate or default_mcr)
        except RuntimeError as e:
            raise RuntimeError(f"device args {dev_args!r}: master_clock_rate: {e}") from None
        self._rate = 1e6
        self.transfer_s = (self.model.transfer_s if self.args.transfer_delay_s is None
                           else self.args.transfer_delay_s)
        self._freq = 0.0
        rng = self.model.tx_gain if tx else self.model.rx_gain
        self._gain_range = rng
        self._gain = rng[0]
        self.clock_source = "internal"
        self.time_source = "internal"
        self.auto_dc_offset = True
        self.antenna = self.get_antennas()[0] if tx else self.get_antennas()[-1]
        self._opened_at = ref.now()

    # -- clocking
    # (UHD's exceptions reach Python through gr-uhd as RuntimeError carrying UHD's text.)
    def set_clock_source(self, source: str, mboard: int = 0) -> None:
        if source not in ("internal", "external", "gpsdo"):
            raise RuntimeError(f"KeyError: update_clock_source: unknown source: {source}")
        if source == "gpsdo" and self.faults.get("no_gpsdo"):  # UHD 4.3 b200_impl.cpp
            raise RuntimeError("KeyError: update_clock_source: gpsdo selected, but no gpsdo detected!")
        self.clock_source = source

    def set_time_source(self, source: str, mboard: int = 0) -> None:
        if source not in ("internal", "external", "gpsdo") or (
                source == "gpsdo" and self.faults.get("no_gpsdo")):
            raise RuntimeError(f"KeyError: update_time_source: unknown source: {source}")
        self.time_source = source

    def get_time_now(self, mboard: int = 0) -> Any:
        return _spec(self.clock.now())

    def get_time_last_pps(self, mboard: int = 0) -> Any:
        if self.faults.get("no_pps") and self.time_source != "internal":
            return _spec(0.0)  # no edge ever latched
        return _spec(self.clock.last_pps())

    def set_time_next_pps(self, spec: Any) -> None:
        self.clock.set_next_pps(_secs(spec))

    def set_time_now(self, spec: Any, mboard: int = 0) -> None:
        self.clock.set_now(_secs(spec))

    def set_time_unknown_pps(self, spec: Any) -> None:
        self.clock.set_next_pps(_secs(spec))

    def now_index(self) -> int:
        return math.floor(self.clock.now() * self._rate)

    def to_reference(self, index: int) -> int:
        """The reference (air) sample at which this device's clock reads sample ``index``."""
        return self.clock.to_reference(index, self._rate)

    def from_reference(self, index: int) -> int:
        """This device's sample index at reference sample ``index``."""
        return self.clock.from_reference(index, self._rate)

    def host_seconds_until(self, index: int) -> float:
        return max(index / self._rate - self.clock.now(), 0.0) / self.ref.rate_factor

    # -- rate, frequency, gain
    def set_samp_rate(self, rate: float) -> None:
        """As UHD: a B2xx without ``master_clock_rate=`` first picks its master clock for the
        rate (:func:`b2xx_auto_master_clock`); then the DSP's decimation rounds the rate (a B2xx
        to the nearest rate it can make, an X3xx to the nearest decimation)."""
        rate = float(rate)
        if not rate > 0:
            raise RuntimeError(f"sample rate {rate!r} must be > 0")
        if self._auto_mcr:
            self._mcr = b2xx_auto_master_clock(rate)
        decims = self.model.decims
        if self.model.family == "b2xx":  # meta_range_t.clip over the rates
            d = min(decims, key=lambda k: abs(self._mcr / k - rate))
        else:  # ddc_block_control: clip over the decimations
            d = min(decims, key=lambda k: abs(k - self._mcr / rate))
        self._rate = self._mcr / d

    def get_clock_rate(self, mboard: int = 0) -> float:
        """The master clock rate (Hz)."""
        return self._mcr

    def set_clock_rate(self, rate: float, mboard: int = 0) -> None:
        """Set the master clock (as multi_usrp: a B2xx's automatic choice is then off)."""
        self._mcr = self._check_mcr(float(rate))
        self._auto_mcr = False

    def _check_mcr(self, mcr: float) -> float:
        if self.model.family == "b2xx":
            lo, hi = B2XX_MCR_RANGE
            if not lo <= mcr <= hi:
                raise RuntimeError(f"master clock rate {mcr:g} Hz is outside {lo:g}..{hi:g} Hz")
            return mcr
        for m in X3XX_MCRS:
            if abs(m - mcr) < 1.0:
                return m
        raise RuntimeError(f"master clock rate {mcr:g} Hz: an X3xx runs at "
                           + ", ".join(f"{m / 1e6:g} MHz" for m in X3XX_MCRS))

    def get_samp_rate(self) -> float:
        return self._rate

    def get_freq_range(self, chan: int = 0) -> Any:
        return gr_uhd.meta_range_t(*self.model.freq_range, 1.0)

    def set_center_freq(self, freq: float, chan: int = 0) -> None:
        """Tune (UHD clips a carrier outside the range to its edge); a new LO phase."""
        if self.faults.get("tune_error"):
            raise RuntimeError(f"RuntimeError: {self.model.family}: {'TX' if self._tx else 'RX'} "
                               "LO PLL did not lock after the retune")
        lo, hi = self.model.freq_range
        self._freq = min(max(float(freq), lo), hi)
        theta = self.lo.retune(self._freq, self.ref.now())  # the PLL settles at a random phase
        log.debug("%s tuned to %.6g Hz: LO phase %.1f deg", self.dev_args, freq, math.degrees(theta))

    def get_center_freq(self, chan: int = 0) -> float:
        return self._freq

    def get_gain_range(self, chan: int = 0) -> Any:
        return gr_uhd.meta_range_t(*self._gain_range)

    def set_gain(self, gain: float, chan: int = 0) -> None:
        lo, hi, step = self._gain_range
        clipped = min(max(float(gain), lo), hi)
        self._gain = lo + round((clipped - lo) / step) * step

    def get_gain(self, chan: int = 0) -> float:
        return self._gain

    def set_auto_dc_offset(self, enable: bool, chan: int = 0) -> None:
        self.auto_dc_offset = bool(enable)

    def get_antennas(self, chan: int = 0) -> list[str]:
        return list(self.model.tx_antennas if self._tx else self.model.rx_antennas)

    def set_antenna(self, antenna: str, chan: int = 0) -> None:
        """As UHD 4.3: a B2xx takes any TX antenna name silently (it has one TX port) and
        refuses an unknown RX one; an X3xx refuses an unknown port either way."""
        if antenna not in self.get_antennas() and not (self._tx and self.model.family == "b2xx"):
            raise RuntimeError(f"ValueError: {self.model.family}: unknown "
                               f"{'TX' if self._tx else 'RX'} antenna option: {antenna}")
        self.antenna = antenna

    def get_antenna(self, chan: int = 0) -> str:
        return self.antenna

    def _lock_lost(self) -> bool:
        """``lose_lock_after_s``: the reference (and the LO with it) unlocks that long after
        the radio was opened."""
        after = self.args.lose_lock_after_s
        return after is not None and self.ref.now() - self._opened_at >= after

    # -- sensors
    def get_mboard_sensor_names(self, mboard: int = 0) -> list[str]:
        return ["ref_locked"] + (["gps_time"] if self.clock_source == "gpsdo" else [])

    def get_mboard_sensor(self, name: str, mboard: int = 0) -> Any:
        if name == "ref_locked":
            locked = self.clock_source == "internal" or not (
                self.faults.get("unlocked_ref") or self._lock_lost())
            return gr_uhd.sensor_value_t("Ref", locked, "locked", "unlocked")
        if name == "gps_time" and self.clock_source == "gpsdo":
            return gr_uhd.sensor_value_t("GPS epoch time", int(math.floor(self.ref.host_clock())),
                                         "seconds", "%d")
        raise RuntimeError(f"no mboard sensor {name!r} on this device")

    def get_sensor_names(self, chan: int = 0) -> list[str]:
        return ["lo_locked"]

    def get_sensor(self, name: str, chan: int = 0) -> Any:
        if name == "lo_locked":
            locked = not (self.faults.get("unlocked_lo") or self._lock_lost())
            return gr_uhd.sensor_value_t("LO", locked, "locked", "unlocked")
        raise RuntimeError(f"no sensor {name!r} on this device")


@dataclass
class _TxBurst:
    number: int
    timed: bool  # a tx_time: on the air at its time; else as its samples reach the device
    index: int | None = None  # device sample index of the burst's first sample
    next: int | None = None  # device index of the next sample to place
    shift: int = 0  # reference index - device index: where the samples go on the air
    dropped: bool = False  # late (time_error): the device drops the rest of the burst
    dry: bool = False  # the device ran out of samples inside it (underflow)


class EmulatedUsrpSink(gr.sync_block, _EmulatedRadio):
    """``uhd.usrp_sink`` stand-in: bursts into the channel emulator (node stream), by the tags
    gr-uhd's sink reads (``gr-uhd/lib/usrp_sink_impl.cc``, GNU Radio 3.10): ``tx_time`` starts a
    timed burst (with or without ``tx_sob``); ``tx_sob`` alone starts a burst sent as soon as it
    reaches the device; ``tx_eob`` ends one (its sample included); samples outside any burst
    go out at once, as UHD sends them. Samples reach the device ``transfer_s`` after they are
    handed over (the host link); a timed burst whose time comes first is dropped with a
    ``time_error``; a burst that runs dry (its next samples not there when due, or no
    ``tx_eob``) gives an ``underflow`` and its later samples go out as they arrive (UHD's
    default underflow policy, next packet). ``burst_ack`` comes once the burst's last sample
    has gone out, plus the transfer back."""

    def __init__(self, dev_args: str, ref: ReferenceClock, address: str,
                 reference_gain_db: float | None = None) -> None:
        gr.sync_block.__init__(self, "pairzero_emulated_usrp_sink", in_sig=[np.complex64], out_sig=None)
        self._init_radio(dev_args, ref, tx=True)
        # The channel model's gain holds at this TX gain; another gain scales the samples by
        # 10^((gain - reference)/20) (None: the gain does not touch the samples).
        self.reference_gain_db = reference_gain_db
        self.message_port_register_out(ASYNC_PORT)
        self.address = address
        self._sock: zmq.Socket | None = None
        self._sock_lock = threading.Lock()
        # Burst state, the air and the async queue: the work thread places samples, the clock
        # thread declares silence and finds dry bursts; each check and its push are atomic.
        self._air_lock = threading.Lock()
        self._burst: _TxBurst | None = None
        self._bursts = 0
        self._async: list[tuple[int, list[str], int]] = []  # (due device index, codes, at index)
        self._tails: list[int] = []  # end index of every burst sent (see BURST_TAIL_SAMPLES)
        self._stop = threading.Event()
        self._tick = threading.Event()  # wakes the clock thread: something new to time, or stop
        self._thread: threading.Thread | None = None
        self.sent_bursts: list[int] = []  # start index of every burst placed whole (for tests)

    def _transfer(self) -> int:
        """The host-to-radio transfer (and back), in samples."""
        return math.ceil(self.transfer_s * self._rate)

    def _declare_now(self, gone: bool = False) -> None:
        """Tell the emulator this radio's stream is defined (silent) up to now, in reference
        samples; ``gone``: it stops streaming."""
        with self._air_lock:
            now = self.to_reference(self.now_index())
            self._push(now, np.zeros(0, np.complex64), now, gone)

    def _push(self, start: int, x: npt.NDArray[np.complex64], horizon: int, gone: bool = False) -> None:
        """To the emulator: samples at reference index ``start``, stream defined up to
        ``horizon`` (reference samples)."""
        with self._sock_lock:
            if self._sock is not None:
                meta = {"start": int(start), "horizon": int(horizon)}
                if gone:
                    meta["gone"] = True
                self._sock.send_multipart([json.dumps(meta).encode(), x.tobytes()])

    def _post(self, codes: list[str], at: int, due: int) -> None:
        """An async message about device sample ``at``, reaching the host at device index
        ``due`` (lock held)."""
        self._async.append((due, codes, at))
        self._tick.set()

    def start(self) -> bool:
        s: zmq.Socket = zmq.Context.instance().socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 100000)
        s.connect(self.address)
        self._sock = s
        # The stream is live from now: say so at once, not at the first tick (up to a period
        # later), or the emulator may still count this radio absent when the others' first
        # bursts arrive and run past this one's.
        self._declare_now()
        self._stop.clear()
        self._tick.clear()
        self._thread = threading.Thread(target=self._run_clock, name="emulated-tx-clock", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> bool:
        self._stop.set()
        self._tick.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._declare_now(gone=True)  # the emulator need not wait
        with self._sock_lock:
            if self._sock is not None:
                self._sock.close(linger=200)  # let the last message go out
                self._sock = None
        return True

    def _next_wake_s(self) -> float:
        """Host seconds until the clock thread is due: the next whole multiple of
        :data:`ADVANCE_PERIOD_S` of reference time, ``BURST_TAIL_SAMPLES`` after the end of a
        burst sent, an async message due, or the moment an open burst runs dry."""
        r = self.ref.now()
        wait = ADVANCE_PERIOD_S - r % ADVANCE_PERIOD_S
        with self._air_lock:
            due = [d for d, _, _ in self._async] + [e + BURST_TAIL_SAMPLES for e in self._tails]
            b = self._burst
            if b is not None and b.next is not None and not (b.dropped or b.dry):
                due.append(b.next)
        if due:
            wait = min(wait, max(min(due) / self._rate - self.clock.now(), 0.0))
        return wait / self.ref.rate_factor

    def _run_clock(self) -> None:
        """The stream is silence up to device time; an open burst whose samples ran out is an
        underflow; async messages go out when due."""
        while True:
            if self._tick.wait(self._next_wake_s()):  # something new to time: re-plan the wake
                self._tick.clear()
                if self._stop.is_set():
                    return
                continue
            self._declare_now()
            now = self.now_index()
            with self._air_lock:
                b = self._burst
                if b is not None and b.next is not None and not (b.dropped or b.dry) and b.next <= now:
                    self._underflow(b, now)
                ready = sorted(m for m in self._async if m[0] <= now)
                self._async = [m for m in self._async if m[0] > now]
                self._tails = [e for e in self._tails if e + BURST_TAIL_SAMPLES > now]
            for _, codes, at in ready:
                self.message_port_pub(ASYNC_PORT, make_async_message(codes, index_to_time(at, self._rate)))

    def _underflow(self, b: _TxBurst, now: int) -> None:
        """The device ran out of samples at ``b.next`` (lock held): the rest of the burst goes
        out as it arrives."""
        b.dry = True
        log.warning("U (underflow in the burst at device sample %s)", b.index)
        self._post(["underflow"], int(b.next or now), now + self._transfer())

    def _start_burst(self, index: int | None) -> None:
        """A new burst: timed at device sample ``index``, or (None) on the air as it arrives."""
        self._bursts += 1
        b = _TxBurst(self._bursts, index is not None)
        self._burst = b
        if index is None:
            return
        if self.faults.get("late_burst") == b.number:  # the host stalls past the burst's time
            time.sleep(self.host_seconds_until(index) + 0.005)
        with self._air_lock:
            arrives = self.now_index() + self._transfer()
            b.index = b.next = index
            b.shift = self.to_reference(index) - index
            if index <= arrives:
                b.dropped = True
                log.warning("L (late burst at device sample %d: it reached the device at %d)",
                            index, arrives)
                self._post(["time_error"], index, arrives + self._transfer())

    def _place(self, x: npt.NDArray[np.complex64]) -> None:
        if len(x) == 0:
            return
        if self._burst is None:  # samples outside a burst: UHD sends them at once
            log.warning("emulated USRP: %d samples outside a tagged burst go on the air at once",
                        len(x))
            self._start_burst(None)
        b = self._burst
        if b is None or b.dropped:
            return
        if self.faults.get("underflow") == b.number and b.next == b.index and len(x) > 1:
            half = len(x) // 2
            self._place(x[:half])
            time.sleep(self.host_seconds_until(b.next or 0) + 0.005)  # the host stalls mid-burst
            self._place(x[half:])
            return
        if self.reference_gain_db is not None and self._gain != self.reference_gain_db:
            x = (x * np.float32(10 ** ((self._gain - self.reference_gain_db) / 20))).astype(np.complex64)
        # On the air: at the reference sample where this device's clock reads b.next, through
        # this radio's LO (its retune phase, carrier offset and phase walk). Checked and handed
        # to the air under one lock with the clock thread's declarations of silence: a chunk
        # found in time is on the air before device time is declared past it.
        guess = None if b.next is None else b.next + b.shift
        turned = None if guess is None else x * self.lo.rotation(guess, len(x), self._rate, +1)
        with self._air_lock:
            arrives = self.now_index() + self._transfer()
            if b.next is None or b.next <= arrives:
                if b.next is not None and not b.dry:  # it arrives after its time: ran dry
                    self._underflow(b, arrives)
                b.next = arrives + 1
                b.shift = self.to_reference(b.next) - b.next
                if b.index is None:
                    b.index = b.next
            at = b.next + b.shift
            if at != guess:
                turned = x * self.lo.rotation(at, len(x), self._rate, +1)
            assert turned is not None
            self._push(at, np.ascontiguousarray(turned, dtype=np.complex64), at + len(x))
            b.next += len(x)

    def _end_burst(self) -> None:
        """``tx_eob``: the burst is complete; its ACK once its last sample has gone out."""
        b = self._burst
        self._burst = None
        if b is None or b.dropped or b.next is None:
            return
        with self._air_lock:
            self._tails.append(b.next)
            self._post(["burst_ack"], b.next, b.next + self._transfer())
        if not b.dry and b.index is not None:
            self.sent_bursts.append(b.index)

    def work(self, input_items: list[npt.NDArray[np.complex64]], output_items: object) -> int:
        x = input_items[0]
        n = len(x)
        base = self.nitems_read(0)
        tags = sorted(self.get_tags_in_window(0, 0, n), key=lambda t: t.offset)
        # Per sample offset, as gr-uhd's tag_work: tx_time makes the burst timed whether or
        # not tx_sob is there; tx_sob alone starts an untimed one; tx_eob ends one after its
        # sample.
        starts: dict[int, int | None] = {}
        ends: set[int] = set()
        for tag in tags:
            key = pmt.symbol_to_string(tag.key)
            rel = int(tag.offset - base)
            if key == "tx_time":
                whole = int(pmt.to_uint64(pmt.tuple_ref(tag.value, 0)))
                frac = float(pmt.to_double(pmt.tuple_ref(tag.value, 1)))
                starts[rel] = time_to_index(whole, frac, self._rate)
            elif key == "tx_sob" and pmt.to_bool(tag.value):
                starts.setdefault(rel, None)
            elif key == "tx_eob" and pmt.to_bool(tag.value):
                ends.add(rel)
        pos = 0
        for rel in sorted({*starts, *(e + 1 for e in ends)}):
            self._place(x[pos:rel])
            pos = rel
            if rel - 1 in ends:
                self._end_burst()
            if rel in starts:
                self._start_burst(starts[rel])
        self._place(x[pos:])
        return n


class EmulatedUsrpSource(gr.sync_block, _EmulatedRadio):
    """``uhd.usrp_source`` stand-in: timed windows of the channel emulator's AP stream."""

    def __init__(self, dev_args: str, ref: ReferenceClock, address: str,
                 issue_stream_cmd_on_start: bool = True) -> None:
        gr.sync_block.__init__(self, "pairzero_emulated_usrp_source", in_sig=None, out_sig=[np.complex64])
        self._init_radio(dev_args, ref, tx=False)
        self.address = address
        self._issue_on_start = issue_stream_cmd_on_start
        self._start_time: float | None = None
        self._lock = threading.Condition()
        self._req: tuple[int, int] | None = None  # (start, end) reference sample indices
        self._shift = 0  # device index - reference index of the window's samples
        self._halted = False  # an overflow halted the finite stream
        self._overflow_at = 0  # reference index of the injected overflow (overflow=N)
        self._overflow_gap = 1
        self._drop_until = 0  # end of the injected overflow's gap (reference index)
        self._queue: collections.deque[tuple[int, npt.NDArray[np.complex64]]] = collections.deque()
        self._queued = 0
        self._history: collections.deque[tuple[int, npt.NDArray[np.complex64]]] = collections.deque(maxlen=64)
        self._next_out: int | None = None  # index of the next sample out (None: tag the next one)
        self._commands = 0
        self._drop_packet = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Stream commands for the emulator: the receive thread owns the socket and sends them;
        # an inproc message wakes it.
        self._upstream: collections.deque[list[bytes]] = collections.deque()
        self._wake_address = f"inproc://pairzero-emulated-rx-{id(self)}"
        self._wake: zmq.Socket | None = None
        self._wake_lock = threading.Lock()
        no_scheduler_pause(self)

    def _send_upstream(self, msg: list[bytes]) -> None:
        self._upstream.append(msg)
        with self._wake_lock:
            if self._wake is not None:
                with contextlib.suppress(zmq.Again):  # wake-ups queued: the thread is on its way
                    self._wake.send(b"", zmq.NOBLOCK)

    def set_start_time(self, spec: Any) -> None:
        """Where the continuous stream issued at start begins (gr-uhd's ``start_time``)."""
        self._start_time = _secs(spec)

    def issue_stream_cmd(self, cmd: Any) -> None:
        """Accept a timed ``STREAM_MODE_NUM_SAMPS_AND_DONE`` or ``START_CONTINUOUS`` command,
        or ``STOP_CONTINUOUS``."""
        modes = gr_uhd.stream_mode_t
        mode = cmd.stream_mode
        if mode == modes.STREAM_MODE_STOP_CONTINUOUS:
            with self._lock:
                self._req = None
            self._send_upstream([STREAM_STOP])
            return
        if mode not in (modes.STREAM_MODE_NUM_SAMPS_AND_DONE, modes.STREAM_MODE_START_CONTINUOUS):
            raise RuntimeError(f"emulated USRP: stream mode {mode} is not emulated")
        self._commands += 1
        start = self.now_index() + 1 if cmd.stream_now else time_to_index(
            int(cmd.time_spec.get_full_secs()), float(cmd.time_spec.get_frac_secs()), self._rate)
        arrives = self.now_index()
        if self.faults.get("late_command") == self._commands:  # a slow control path
            arrives = start + 1
        if start <= arrives:
            log.warning("USRP Source Block caught rx error code: ERROR_CODE_LATE_COMMAND "
                        "(stream command for device sample %d reached the device at %d)", start, arrives)
            return
        # The window on the air: from the reference sample at which this device's clock reads
        # ``start`` (a device whose time is off listens at another moment than it was told).
        air = self.to_reference(start)
        end = air + int(cmd.num_samps) if mode == modes.STREAM_MODE_NUM_SAMPS_AND_DONE else CONTINUOUS
        self._send_upstream([STREAM_CMD, json.dumps(
            {"start": air, "end": end if end < CONTINUOUS else None}).encode()])
        with self._lock:
            self._req = (air, end)
            self._shift = start - air
            self._halted = False
            self._drop_packet = self.faults.get("overflow") == self._commands
            # where the injected overflow loses samples: mid-window (finite), or 50 ms in
            n = end - air if end < CONTINUOUS else int(0.1 * self._rate)
            self._overflow_at = air + n // 2
            self._overflow_gap = max(1, n // 32)
            self._drop_until = 0  # end of the injected gap (reference index)
            self._queue.clear()
            self._queued = 0
            self._next_out = None
            for s, x in self._history:  # samples that came before the command
                self._offer(s, x)

    def _offer(self, s: int, x: npt.NDArray[np.complex64]) -> None:
        """Queue the part of chunk (s, x) (reference samples) inside the requested window (lock
        held)."""
        if self._req is None or self._halted:
            return
        a, b = max(s, self._req[0]), min(s + len(x), self._req[1])
        if b <= a:
            return
        if self._drop_packet:  # the injected overflow: samples lost at m
            m = self._overflow_at
            if a <= m < b:
                self._drop_packet = False
                self._queue_part(a, x[a - s : m - s])
                self._overflow(m, self._overflow_gap)
                self._drop_until = m + self._overflow_gap
                if self._halted:
                    return
        if a < self._drop_until:  # inside the gap, which may run on into the next chunks
            a = min(self._drop_until, b)
            if b <= a:
                return
        if self._queued + (b - a) > int(RX_BUFFER_S * self._rate):  # not read in time
            self._overflow(a, b - a)
            return
        self._queue_part(a, x[a - s : b - s])

    def _overflow(self, at: int, lost: int) -> None:
        """Samples lost from reference sample ``at`` (the device's buffer overflowed; lock
        held). As a B2xx / X3xx: a finite stream (NUM_SAMPS_AND_DONE) is halted, the host sees
        no more samples of its window; a continuous one goes on after the gap (the next
        samples carry a new rx_time)."""
        finite = self._req is not None and self._req[1] < CONTINUOUS
        log.warning("O (emulated overflow at device sample %d: %s)", at + self._shift,
                    "the finite stream is halted" if finite else f"{lost} samples lost")
        if finite:
            self._halted = True
        self._lock.notify_all()

    def _queue_part(self, a: int, x: npt.NDArray[np.complex64]) -> None:
        """Queue samples from reference index ``a``: through this radio's LO (derotated by its
        phase), at device indices (lock held)."""
        if len(x) == 0:
            return
        x = (x * self.lo.rotation(a, len(x), self._rate, -1)).astype(np.complex64)
        self._queue.append((a + self._shift, x))
        self._queued += len(x)
        self._lock.notify_all()

    def _run_rx(self, wake: zmq.Socket) -> None:
        # XSUB, not SUB: the stream commands go upstream on the same link.
        sock: zmq.Socket = zmq.Context.instance().socket(zmq.XSUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 100000)
        sock.connect(self.address)
        sock.send(b"\x01")  # subscribe to everything
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(50))
                if wake in events:
                    while True:
                        try:
                            wake.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                while self._upstream:
                    sock.send_multipart(self._upstream.popleft())
                if sock not in events:
                    continue
                while True:
                    try:
                        head, payload = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    s = int(np.frombuffer(head, dtype=np.int64)[0])
                    x = np.frombuffer(payload, dtype=np.complex64)
                    with self._lock:
                        self._history.append((s, x))
                        self._offer(s, x)
        finally:
            sock.close(0)
            wake.close(0)

    def start(self) -> bool:
        self._stop.clear()
        wake: zmq.Socket = zmq.Context.instance().socket(zmq.PULL)
        wake.bind(self._wake_address)
        with self._wake_lock:
            self._wake = zmq.Context.instance().socket(zmq.PUSH)
            self._wake.setsockopt(zmq.LINGER, 0)
            self._wake.connect(self._wake_address)
        self._thread = threading.Thread(target=self._run_rx, args=(wake,), name="emulated-rx", daemon=True)
        self._thread.start()
        if self._issue_on_start:  # as gr-uhd: a continuous stream, now + 0.1 s or at start_time
            cmd = gr_uhd.stream_cmd_t(gr_uhd.stream_mode_t.STREAM_MODE_START_CONTINUOUS)
            cmd.stream_now = False
            t = self._start_time if self._start_time is not None else self.clock.now() + 0.1
            cmd.time_spec = _spec(t)
            self.issue_stream_cmd(cmd)
        return True

    def stop(self) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        with self._wake_lock:
            if self._wake is not None:
                self._wake.close(0)
                self._wake = None
        return True

    def work(self, input_items: object, output_items: list[npt.NDArray[np.complex64]]) -> int:
        out = output_items[0]
        with self._lock:
            if not self._queue:  # as UHD's recv: wait a little for a packet
                self._lock.wait(timeout=0.1)
            if not self._queue:
                return 0
            s, x = self._queue[0]
            n = min(len(out), len(x))
            out[:n] = x[:n]
            if self._next_out != s:  # first sample of the stream, or after a gap
                t = index_to_time(s, self._rate)
                self.add_item_tag(0, self.nitems_written(0), pmt.intern("rx_time"),
                                  pmt.make_tuple(pmt.from_uint64(t[0]), pmt.from_double(t[1])))
            if n == len(x):
                self._queue.popleft()
            else:
                self._queue[0] = (s + n, x[n:])
            self._queued -= n
            self._next_out = s + n
            return n


class EmulatedUhd:
    """What :class:`radio.usrp.UsrpFrontEnd` takes from ``gnuradio.uhd``, for ``type=emulated``.

    ``tx_address``: the emulator input of this node's stream; ``rx_address``: the emulator's AP
    stream. ``rate_factor``: device clocks run at this fraction of real time.
    ``reference_tx_gain_db``: the TX gain at which the emulator's channel gains hold
    (``radio.tx_gain_db``): a transmitter set to another gain scales its samples by
    10^((gain - reference)/20), as an analog gain stage would (None: gain has no effect).

    One instance stands for one host: :meth:`host_clock` is that host's clock, the reference
    plus the ``host_clock_offset_s`` of the device args its radio was opened with (the front end
    opens the radio, then labels PPS edges with this clock).
    """

    time_spec_t = gr_uhd.time_spec_t
    time_spec = gr_uhd.time_spec
    ALL_MBOARDS = gr_uhd.ALL_MBOARDS
    stream_cmd_t = gr_uhd.stream_cmd_t
    stream_mode_t = gr_uhd.stream_mode_t
    stream_args = gr_uhd.stream_args
    meta_range_t = gr_uhd.meta_range_t
    sensor_value_t = gr_uhd.sensor_value_t

    def __init__(self, tx_address: str | None = None, rx_address: str | None = None,
                 rate_factor: float = 1.0, reference_tx_gain_db: float | None = None) -> None:
        self.ref = ReferenceClock(rate_factor)
        self.reference_tx_gain_db = reference_tx_gain_db
        self.rate_factor = self.ref.rate_factor
        self.host_sleep = self.ref.host_sleep
        self.host_clock_offset_s = 0.0
        self.tx_address = tx_address
        self.rx_address = rx_address

    def usrp_sink(self, dev_args: str, stream_args: Any, length_tag: str = "") -> EmulatedUsrpSink:
        """The stand-in for ``uhd.usrp_sink(device_addr, stream_args, length_tag_name)``."""
        if self.tx_address is None:
            raise RuntimeError("emulated USRP: no emulator input for a transmitter")
        sink = EmulatedUsrpSink(dev_args, self.ref, self.tx_address, self.reference_tx_gain_db)
        self.host_clock_offset_s = sink.args.host_clock_offset_s
        return sink

    def usrp_source(self, dev_args: str, stream_args: Any,
                    issue_stream_cmd_on_start: bool = True) -> EmulatedUsrpSource:
        """The stand-in for ``uhd.usrp_source(device_addr, stream_args, issue_stream_cmd_on_start)``."""
        if self.rx_address is None:
            raise RuntimeError("emulated USRP: no emulator stream for a receiver")
        source = EmulatedUsrpSource(dev_args, self.ref, self.rx_address, issue_stream_cmd_on_start)
        self.host_clock_offset_s = source.args.host_clock_offset_s
        return source

    def host_clock(self) -> float:
        """This host's clock (Unix s), which labels PPS edges in
        :func:`radio.usrp.align_device_time`: the reference's plus ``host_clock_offset_s``, so a
        host 0.6 s off labels an edge a whole second off, as a lab host would."""
        return self.ref.host_clock() + self.host_clock_offset_s
