"""An emulated radio's local oscillator as the air sees it (pure numpy, no GNU Radio).

A USRP's LO is synthesised from its reference (its own TCXO, a shared 10 MHz, or a GPSDO's). What
reaches the air from a transmitter, relative to the nominal carrier, is the baseband signal times
``exp(j phi(t))``; a receiver multiplies what it hears by ``exp(-j phi_rx(t))``. With

    phi(t) = theta_k + 2 pi f_off (t - t_k) + w(t - t_k)

* ``theta_k``: the phase the PLL settles at after the k-th retune (``set_center_freq``):
  uniform in [0, 2 pi), a new draw at every retune (a shared reference does not align LO
  phases: UHD's application notes on phase alignment, and DESIGN.md section 5);
* ``f_off = cfo_hz + clock_drift_ppm * 1e-6 * f_c``: the residual carrier offset of this radio's
  LO plus the offset its reference's frequency error makes at the carrier ``f_c`` (the same
  oscillator drives the sample clock and the LO);
* ``w``: slow phase wander (temperature, PLL), a Brownian motion (random walk) started at 0 at
  the retune, ``Var w(s) = (sigma s^(1/2))^2`` with ``sigma`` the walk's standard deviation
  after 1 s. It is drawn on a grid of :data:`WALK_STEP_S` and linearly interpolated in between
  (exact in distribution at the grid points; in between the std is at most that of one step,
  ``sigma * WALK_STEP_S^(1/2)``, a fraction of a degree for a few degrees per second).

Times ``t`` are reference seconds (the emulator's air: :class:`radio.emulated.ReferenceClock`).
Every draw comes from the radio's own seeded generators, in order, so a run is reproducible
whatever order the phases are asked for in.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import numpy.typing as npt

__all__ = ["LocalOscillator", "WALK_STEP_S", "WALK_KEEP_S"]

#: Grid step (s) of the phase walk.
WALK_STEP_S = 0.01
#: The walk's grid points are kept this far (s) behind the latest one asked for; phases asked
#: for earlier than that are held at the oldest kept point (no stream looks that far back).
WALK_KEEP_S = 120.0


class LocalOscillator:
    """One radio's LO phase over reference time (see the module docstring).

    ``cfo_hz``: residual carrier offset (Hz). ``drift_ppm``: the radio's reference error (ppm);
    adds ``drift_ppm * 1e-6 * f_c`` Hz at the tuned carrier ``f_c``. ``walk_deg_per_s``: the
    phase walk's standard deviation after 1 s (degrees; grows as the square root of time).
    ``seed``: the retune phases and the walk come from two independent streams of it.
    """

    def __init__(self, cfo_hz: float = 0.0, drift_ppm: float = 0.0, walk_deg_per_s: float = 0.0,
                 seed: int = 0) -> None:
        for name, v in (("cfo_hz", cfo_hz), ("drift_ppm", drift_ppm), ("walk_deg_per_s", walk_deg_per_s)):
            if not math.isfinite(v):
                raise ValueError(f"{name}: {v!r} must be a finite number")
        if walk_deg_per_s < 0:
            raise ValueError(f"walk_deg_per_s: {walk_deg_per_s!r} must be >= 0")
        self.cfo_hz = float(cfo_hz)
        self.drift_ppm = float(drift_ppm)
        self.sigma = math.radians(walk_deg_per_s)  # rad after 1 s
        phase_seq, walk_seq = np.random.SeedSequence(int(seed)).spawn(2)
        self._phase_rng = np.random.default_rng(phase_seq)
        self._walk_rng = np.random.default_rng(walk_seq)
        self._lock = threading.Lock()
        self.freq_hz = 0.0
        self.retunes = 0
        self.theta = 0.0  # phase right after the latest retune (rad)
        self.tune_s = 0.0  # reference time of the latest retune (s)
        self._walk = np.zeros(1)  # walk at grid points _base, _base + 1, ... since the retune
        self._base = 0

    @property
    def offset_hz(self) -> float:
        """The LO's carrier offset (Hz): ``cfo_hz + drift_ppm * 1e-6 * f_c``."""
        return self.cfo_hz + self.drift_ppm * 1e-6 * self.freq_hz

    def retune(self, freq_hz: float, at_s: float) -> float:
        """Tune to ``freq_hz`` at reference time ``at_s``: a new random phase (returned, rad),
        the walk restarts from 0."""
        with self._lock:
            self.freq_hz = float(freq_hz)
            self.theta = float(self._phase_rng.uniform(0.0, 2 * math.pi))
            self.tune_s = float(at_s)
            self._walk = np.zeros(1)
            self._base = 0
            self.retunes += 1
            return self.theta

    def _walk_at(self, since_tune_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The walk (rad) at these times since the retune (lock held)."""
        if self.sigma == 0.0 or len(since_tune_s) == 0:
            return np.zeros(len(since_tune_s))
        u = since_tune_s / WALK_STEP_S  # grid units
        need = int(math.floor(float(u.max()))) + 2  # grid points up to ceil(max) + 1
        have = self._base + len(self._walk)
        if need > have:
            steps = self._walk_rng.normal(0.0, self.sigma * math.sqrt(WALK_STEP_S), need - have)
            self._walk = np.concatenate([self._walk, self._walk[-1] + np.cumsum(steps)])
        keep = int(WALK_KEEP_S / WALK_STEP_S)
        if len(self._walk) > 2 * keep:
            cut = len(self._walk) - keep
            self._walk = self._walk[cut:]
            self._base += cut
        grid = np.arange(self._base, self._base + len(self._walk), dtype=np.float64)
        return np.interp(np.maximum(u, 0.0), grid, self._walk)

    def phase(self, t_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """LO phase (rad) at reference times ``t_s`` (s)."""
        with self._lock:
            dt = np.asarray(t_s, dtype=np.float64) - self.tune_s
            return self.theta + 2 * math.pi * self.offset_hz * dt + self._walk_at(dt)

    def phase_at(self, first: int, n: int, rate: float) -> npt.NDArray[np.float64]:
        """LO phase (rad) at ``n`` consecutive reference samples from index ``first`` (the
        sample clock at ``rate`` S/s): times since the retune computed from the index
        difference, so they keep sub-nanosecond precision ~10^13 samples from 0."""
        with self._lock:
            dt = (np.arange(n, dtype=np.float64) + (first - self.tune_s * rate)) / rate
            return self.theta + 2 * math.pi * self.offset_hz * dt + self._walk_at(dt)

    def rotation(self, first: int, n: int, rate: float, sign: int = 1) -> npt.NDArray[np.complex64]:
        """``exp(sign j phi)`` at ``n`` reference samples from ``first`` (complex64): +1 for a
        transmitter's LO, -1 for a receiver's."""
        ph = self.phase_at(first, n, rate)
        return np.exp(1j * sign * ph).astype(np.complex64)
