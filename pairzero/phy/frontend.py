"""The one interface between the round protocol and the samples: the radio front end.

A front end owns one radio's sample clock (device time x sample rate on a USRP, the emulator's
stream index in loopback) and offers three things::

    fe.now_index()                                  # sample index of "now" on the shared clock
    fe.send(burst, index, timeout_s)   -> SendReport   # a burst at a sample index, blocks until sent
    fe.capture(index, length, timeout_s, idle)      # -> Capture: the window, or why not

Things that go wrong on a radio are *events*, never hangs: a burst handed over too late for its
time (``late_burst``), a burst the radio ran out of samples in (``underflow``), a burst the radio
never confirmed (``no_ack``), receive samples lost (``overflow``: a jump of ``rx_time`` in a
continuous stream; a USRP halts a finite window instead, which ends as a ``timeout``),
a stream command that reached the radio after its time (``late_command``), a window that did not
arrive in time (``timeout``), a reference or LO found unlocked between rounds (``lost_lock``,
:meth:`RadioFrontEnd.check_lock`). Faults found at start (an unlocked reference or LO, a rate the device
rounded, a gain outside the daughterboard's range) raise :class:`RadioError` with the sensor or
value named.

Implementations (``radio`` package): loopback (ZeroMQ to the GNU Radio channel emulator), USRP
(gr-uhd) and the emulated USRP (the USRP front end's own code with stand-ins for the gr-uhd
blocks). Nothing here imports GNU Radio: the round protocol (:mod:`pairzero.phy.round`) is
testable with any object that has these methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt

from pairzero.errors import OperationalError

__all__ = [
    "EventKind",
    "RadioEvent",
    "SendReport",
    "Capture",
    "RadioError",
    "RadioFrontEnd",
    "Idle",
]


class EventKind(StrEnum):
    """What a front end reports about a burst or a capture."""

    LATE_BURST = "late_burst"  # TX: the burst reached the radio after its tx_time (dropped)
    UNDERFLOW = "underflow"  # TX: the radio ran out of samples inside the burst
    NO_ACK = "no_ack"  # TX: the radio never confirmed the end of the burst in time
    OVERFLOW = "overflow"  # RX: samples lost (the next buffer carries a new rx_time)
    LATE_COMMAND = "late_command"  # RX: the timed stream command came after its time
    TIMEOUT = "timeout"  # RX: the window did not arrive within the timeout
    LOST_LOCK = "lost_lock"  # reference or LO unlocked while running


@dataclass(frozen=True)
class RadioEvent:
    """One event: its kind, the sample index it concerns (None: unknown) and the radio's words."""

    kind: EventKind
    index: int | None
    detail: str

    def __str__(self) -> str:
        at = "" if self.index is None else f" at sample {self.index}"
        return f"{self.kind}{at}: {self.detail}"


@dataclass(frozen=True)
class SendReport:
    """What :meth:`RadioFrontEnd.send` knows once it returns.

    ``sent``: the radio took the whole burst at its time (acknowledged on USRPs);
    ``events``: what went wrong; ``handoff_s``: seconds spent handing the samples over.
    """

    index: int
    sent: bool
    events: tuple[RadioEvent, ...] = ()
    handoff_s: float = 0.0


@dataclass(frozen=True)
class Capture:
    """A received window [start, start + length) of the shared sample clock.

    ``samples`` is None when the window could not be had whole (``events`` says why: a timeout,
    a late stream command, an overflow inside the window).
    """

    start: int
    length: int
    samples: npt.NDArray[np.complex64] | None
    events: tuple[RadioEvent, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """The window arrived whole and contiguous."""
        return self.samples is not None


class RadioError(OperationalError):
    """The radio cannot be used as configured (the message names the sensor, value or range)."""


#: Called by a front end while it waits (seconds to wait at most): the AP passes its control-plane
#: pump so heartbeats and LEAVEs are served while samples are captured.
Idle = Callable[[float], None]


class RadioFrontEnd(Protocol):
    """One radio's sample clock; see the module docstring. Times in seconds of the host.

    ``rate_factor``: the radio's clock runs at this fraction of real time (1 for real radios and
    loopback; below 1 for emulated USRPs on a loaded machine); ``tx_gain_db``: the transmitter's
    analog gain (dB) as the radio runs it.
    """

    sample_rate: float
    rate_factor: float

    @property
    def tx_gain_db(self) -> float:
        """The analog TX gain the radio runs at (dB)."""
        ...

    def set_tx_gain(self, gain_db: float) -> float:
        """Set the analog TX gain (dB; calibration); returns the gain the radio really set.
        Raises ValueError / :class:`RadioError` for a gain outside the radio's range."""
        ...

    def now_index(self) -> int:
        """Sample index of the present moment on the shared clock."""
        ...

    def send(self, burst: npt.NDArray[np.complexfloating], index: int, timeout_s: float) -> SendReport:
        """Transmit ``burst`` so that its first sample is on the air at ``index``; return once
        the radio has sent it (or reported why not) or ``timeout_s`` has passed."""
        ...

    def capture(self, index: int, length: int, timeout_s: float, idle: Idle | None = None) -> Capture:
        """Receive [index, index + length); give up after ``timeout_s`` (``idle`` is called while
        waiting)."""
        ...

    def clock_report(self) -> tuple[float, float] | None:
        """(device time s, host clock Unix s) read together, for radios whose device clock runs
        in real time and was set at a PPS edge from the host clock (USRPs); None otherwise
        (the lockstep loopback emulator's stream index is no clock to compare)."""
        ...

    def check_lock(self) -> RadioEvent | None:
        """Read the radio's lock sensors now (reference, LO); a ``LOST_LOCK`` event naming the
        sensor when one is unlocked, None when locked or when the radio has none (loopback).
        For the round code to call between rounds, never during a burst or a capture."""
        ...

    def close(self) -> None:
        """Release the radio (idempotent)."""
        ...
