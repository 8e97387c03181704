"""Loopback front end: a node's or the AP's side of the channel emulator (``radio.mode: loopback``).

The sample clock is the emulator's stream index. A node's stream is zero-filled: a burst is
``(start index, samples)`` followed by a short zero tail that defines the stream up to there;
the lockstep emulator advances only as far as every live node has defined its stream, so the
AP's window arrives whatever the timing of the processes, and nothing is ever late. The AP
subscribes to the emulator's stream and keeps what it needs of it.

    tx = LoopbackFrontEnd(tx_address="tcp://127.0.0.1:5600")     # node 0
    rx = LoopbackFrontEnd(rx_address="tcp://127.0.0.1:5603")     # the AP (K = 3)
    tx.send(burst, 1000, timeout_s=1.0); rx.capture(872, len(burst) + 256, timeout_s=5.0)
"""

from __future__ import annotations

import json
import logging
import math
import time

import numpy as np
import numpy.typing as npt
import zmq

from pairzero.config import ExperimentConfig
from pairzero.phy.frontend import Capture, EventKind, Idle, RadioEvent, SendReport
from pairzero.phy.mode import LOOPBACK_GAIN_RANGE_DB
from pairzero.phy.schedule import TX_TAIL, sample_addresses

__all__ = ["EdgeTx", "ApRx", "LoopbackFrontEnd", "LOOPBACK_GAIN_RANGE_DB"]


log = logging.getLogger(__name__)


class EdgeTx:
    """A node's loopback transmitter: bursts at sample indices on its zero-filled stream."""

    def __init__(self, address: str, hwm: int = 1000) -> None:
        self._sock: zmq.Socket = zmq.Context.instance().socket(zmq.PUSH)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.connect(address)
        self.horizon = 0  # the stream is defined (sent) up to this index

    def send(self, burst: npt.NDArray[np.complexfloating], start_index: int, tail: int = TX_TAIL) -> None:
        """Send ``burst`` to start at absolute sample ``start_index``; zeros follow for ``tail``."""
        if start_index < 0:
            raise ValueError(f"start_index: {start_index!r} must be >= 0")
        x = np.ascontiguousarray(burst, dtype=np.complex64)
        horizon = int(start_index + len(x) + tail)
        header = json.dumps({"start": int(start_index), "horizon": horizon})
        self._sock.send_multipart([header.encode(), x.tobytes()])
        self.horizon = max(self.horizon, horizon)

    def advance(self, horizon: int) -> None:
        """Declare the stream zero up to sample ``horizon`` (lets a lockstep emulator move on)."""
        self._sock.send_multipart([json.dumps({"start": int(horizon), "horizon": int(horizon)}).encode(), b""])
        self.horizon = max(self.horizon, int(horizon))

    def close(self) -> None:
        self._sock.close(0)


class ApRx:
    """The AP's loopback receiver: windows of the emulator's AP stream by index."""

    def __init__(self, address: str) -> None:
        self._sock: zmq.Socket = zmq.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 100000)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.connect(address)
        self._chunks: list[tuple[int, npt.NDArray[np.complex64]]] = []
        self.latest = -1  # index one past the newest received sample

    def poll(self, timeout_ms: int) -> bool:
        """Take in what has arrived (waiting up to ``timeout_ms``); True if anything did."""
        if not self._sock.poll(timeout_ms):
            return False
        while True:
            try:
                head, payload = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            start = int(np.frombuffer(head, dtype=np.int64)[0])
            x = np.frombuffer(payload, dtype=np.complex64)
            self._chunks.append((start, x))
            self.latest = max(self.latest, start + len(x))

    def capture(self, start: int, length: int, timeout_s: float = 5.0,
                idle: Idle | None = None) -> npt.NDArray[np.complex64] | None:
        """Samples [start, start+length) of the AP stream, or None if they did not arrive in time.

        Older samples are discarded; a later window can still be captured afterwards.
        """
        if length <= 0:
            raise ValueError(f"length: {length!r} must be > 0")
        deadline = time.monotonic() + timeout_s
        end = start + length
        while self.latest < end:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not self.poll(int(min(left, 0.02) * 1000) + 1) and idle is not None:
                idle(0.0)
        out = np.zeros(length, dtype=np.complex64)
        covered = 0
        keep = []
        for s, x in self._chunks:
            a, b = max(s, start), min(s + len(x), end)
            if b > a:
                out[a - start : b - start] = x[a - s : b - s]
                covered += b - a
            if s + len(x) > end:
                keep.append((s, x))
        self._chunks = keep
        if covered < length:
            log.warning("AP capture [%d, %d): %d samples missing (dropped or before subscription)",
                        start, end, length - covered)
        return out

    def close(self) -> None:
        self._sock.close(0)


class LoopbackFrontEnd:
    """Radio front end over the channel emulator: a node's transmitter, the AP's receiver, or
    both (calibration and benchmarks in one process).

    ``tx_gain_db``: the transmitter's emulated analog gain; its samples leave scaled by
    10^((tx_gain_db - reference_gain_db)/20) (the emulator's channel gains hold at the
    reference, ``radio.tx_gain_db``; both 0 by default: no scaling)."""

    rate_factor = 1.0  # the lockstep emulator's clock: no real time to fall behind

    def __init__(self, tx_address: str | None = None, rx_address: str | None = None,
                 sample_rate: float = 1e6, tx_gain_db: float = 0.0,
                 reference_gain_db: float = 0.0) -> None:
        if tx_address is None and rx_address is None:
            raise ValueError("tx_address/rx_address: give at least one")
        if not math.isfinite(reference_gain_db):
            raise ValueError(f"reference_gain_db: {reference_gain_db!r} must be a finite number (dB)")
        self.sample_rate = sample_rate
        self.reference_gain_db = float(reference_gain_db)
        self.set_tx_gain(tx_gain_db)
        self.tx = EdgeTx(tx_address) if tx_address is not None else None
        self.rx = ApRx(rx_address) if rx_address is not None else None

    def set_tx_gain(self, tx_gain_db: float) -> float:
        """The emulated analog TX gain (dB): samples leave scaled by
        10^((tx_gain_db - reference_gain_db)/20), the channel model holding at the reference.
        Range :data:`LOOPBACK_GAIN_RANGE_DB` (as the configs' ``radio.tx_gain_db``); returns the
        gain set."""
        lo, hi = LOOPBACK_GAIN_RANGE_DB
        if not (math.isfinite(tx_gain_db) and lo <= tx_gain_db <= hi):
            raise ValueError(f"tx_gain_db: {tx_gain_db!r} dB is outside the loopback radio's range "
                             f"{lo:g}..{hi:g} dB")
        self.tx_gain_db = float(tx_gain_db)
        self.gain_factor = 10 ** ((self.tx_gain_db - self.reference_gain_db) / 20)
        return self.tx_gain_db

    @classmethod
    def for_node(cls, cfg: ExperimentConfig, node: int, tx_gain_db: float | None = None) -> LoopbackFrontEnd:
        """Node ``node``'s transmitter at ``network.sample_port_base + node``; its analog gain
        ``tx_gain_db`` (default ``radio.tx_gain_db``, where the channel model holds)."""
        gain = cfg.radio.tx_gain_db if tx_gain_db is None else tx_gain_db
        return cls(tx_address=sample_addresses(cfg)[0][node], sample_rate=cfg.phy.sample_rate,
                   tx_gain_db=gain, reference_gain_db=cfg.radio.tx_gain_db)

    @classmethod
    def for_ap(cls, cfg: ExperimentConfig) -> LoopbackFrontEnd:
        """The AP's receiver at ``network.sample_port_base + nodes.count``."""
        return cls(rx_address=sample_addresses(cfg)[1], sample_rate=cfg.phy.sample_rate)

    def now_index(self) -> int:
        """Where this side stands on the emulator's clock: the transmitter's stream end, or the
        newest sample the AP has seen (the lockstep emulator has no time of its own)."""
        if self.rx is not None:
            self.rx.poll(0)
            return max(self.rx.latest, 0)
        assert self.tx is not None
        return self.tx.horizon

    def send(self, burst: npt.NDArray[np.complexfloating], index: int, timeout_s: float = 1.0) -> SendReport:
        """Place the burst at ``index`` on this node's stream (the emulator waits for it)."""
        if self.tx is None:
            raise ValueError("send: this loopback front end has no transmitter (tx_address)")
        t0 = time.perf_counter()
        if index < self.tx.horizon:
            ev = RadioEvent(EventKind.LATE_BURST, index,
                            f"stream already defined up to sample {self.tx.horizon}")
            return SendReport(index, False, (ev,), 0.0)
        self.tx.send(burst if self.gain_factor == 1.0 else self.gain_factor * burst, index)
        return SendReport(index, True, (), time.perf_counter() - t0)

    def advance(self, index: int) -> None:
        """Declare this node's stream silent up to ``index``."""
        if self.tx is not None:
            self.tx.advance(index)

    def capture(self, index: int, length: int, timeout_s: float, idle: Idle | None = None) -> Capture:
        """The AP stream [index, index + length); gives up ``timeout_s`` after the call."""
        if self.rx is None:
            raise ValueError("capture: this loopback front end has no receiver (rx_address)")
        w = self.rx.capture(index, length, timeout_s, idle)
        if w is None:
            ev = RadioEvent(EventKind.TIMEOUT, index,
                            f"the emulator's stream reached sample {self.rx.latest} of "
                            f"{index + length} within {timeout_s:.1f} s (is `pairzero channel` running?)")
            return Capture(index, length, None, (ev,))
        return Capture(index, length, w)

    def clock_report(self) -> tuple[float, float] | None:
        """No device clock: the lockstep emulator's stream index."""
        return None

    def check_lock(self) -> RadioEvent | None:
        """The emulator's streams have no oscillators to lock: always None."""
        return None

    def close(self) -> None:
        for part in (self.tx, self.rx):
            if part is not None:
                part.close()
