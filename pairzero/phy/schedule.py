"""Where frames sit on the shared sample clock: the one place AP, nodes and emulator take it from.

* A frame of :class:`~pairzero.phy.frame.FrameLayout` is ``layout.length`` samples; consecutive
  frames are at least :func:`frame_stride` apart (a gap of :data:`FRAME_GAP` samples covers the
  emulator's zero tail after a burst, its FIR delay and the AP's capture margin).
* The AP captures :data:`CAPTURE_MARGIN` samples either side of a frame (:func:`capture_window`);
  the outer parts of those margins carry no node's signal (:func:`quiet_slices`): the receiver
  noise is measured there.
* Node k's samples go to ``tcp://<emulator host>:<sample_port_base + k>`` and the AP's stream
  comes from ``<sample_port_base + K>`` (:func:`sample_addresses`); the emulator host is
  127.0.0.1 unless emulated radios name another (``emulator=HOST`` device arg).
* On radios a sample index is device time x sample rate; :func:`index_to_time` converts exactly.
"""

from __future__ import annotations

from pairzero.config import ExperimentConfig
from pairzero.phy.frame import FrameLayout

__all__ = [
    "FRAME_GAP",
    "CAPTURE_MARGIN",
    "TX_TAIL",
    "frame_stride",
    "capture_window",
    "quiet_slices",
    "QUIET_GUARD",
    "sample_addresses",
    "index_to_time",
]

#: Zero samples a loopback node declares after its burst (its stream is defined up to there).
TX_TAIL = 256
#: Samples captured either side of a frame (covers the timing search range and the pulse tails).
CAPTURE_MARGIN = 128
#: Samples between the end of one frame and the start of the next, at least: > TX_TAIL + the
#: emulator's FIR delay (20) + CAPTURE_MARGIN, so a window never overlaps the next frame.
FRAME_GAP = 512


def frame_stride(layout: FrameLayout) -> int:
    """Samples between the starts of two consecutive frames at the closest."""
    return layout.length + FRAME_GAP


def capture_window(layout: FrameLayout, tx_sample: int) -> tuple[int, int]:
    """(start, length) of the AP's window around the frame sent at ``tx_sample``."""
    return tx_sample - CAPTURE_MARGIN, layout.length + 2 * CAPTURE_MARGIN


#: Samples beside a frame that filter tails may still reach (the emulator's fractional-delay FIR
#: spreads a burst 20 samples either side; a radio's DSP chain less), beyond the timing range.
QUIET_GUARD = 32


def quiet_slices(layout: FrameLayout) -> tuple[slice, slice]:
    """The parts of a :func:`capture_window` that no node's frame reaches (even at the largest
    timing offset the receiver searches, plus :data:`QUIET_GUARD` for filter tails): before and
    after the frame. Raises ValueError when the margins leave none."""
    guard = int(layout.phy.max_timing_offset) + 1 + QUIET_GUARD
    n = CAPTURE_MARGIN - guard
    if n < 8:
        raise ValueError(f"phy.max_timing_offset: {layout.phy.max_timing_offset!r} leaves {n} "
                         f"noise-only samples beside a frame; allowed: <= {CAPTURE_MARGIN - QUIET_GUARD - 9}")
    total = layout.length + 2 * CAPTURE_MARGIN
    return slice(0, n), slice(total - n, total)


def sample_addresses(cfg: ExperimentConfig) -> tuple[list[str], str]:
    """Sample-stream addresses: node k -> emulator, and emulator -> AP, on the emulator's host
    (``radio.emulator_host()``: 127.0.0.1, or the ``emulator=HOST`` of emulated radios; the
    emulator binds them there, the radios connect)."""
    base, k, host = cfg.network.sample_port_base, cfg.nodes.count, cfg.radio.emulator_host()
    return [f"tcp://{host}:{base + i}" for i in range(k)], f"tcp://{host}:{base + k}"


def index_to_time(index: int, sample_rate: float) -> tuple[int, float]:
    """Device time of sample ``index`` as (whole seconds, fraction): exact for an integer rate,
    where ``index / sample_rate`` as one double would lose sub-sample precision."""
    if index < 0:
        raise ValueError(f"index: {index!r} must be >= 0")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate: {sample_rate!r} must be > 0")
    if float(sample_rate).is_integer():
        whole, rem = divmod(int(index), int(sample_rate))
        return whole, rem / sample_rate
    secs = index / sample_rate
    return int(secs), secs - int(secs)


def time_to_index(whole: int, frac: float, sample_rate: float) -> int:
    """Sample index of device time (whole seconds, fraction), rounded to the nearest sample."""
    if float(sample_rate).is_integer():
        return int(whole) * int(sample_rate) + round(frac * sample_rate)
    return round((whole + frac) * sample_rate)
