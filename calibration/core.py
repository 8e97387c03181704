"""Power alignment (DESIGN.md section 7): pure maths + the measurement passes.

Each node sends a known pilot frame alone; the AP measures its received complex amplitude
and delay (:class:`pairzero.phy.NodeEstimate`). Node k then needs a gain change of
``20 log10(target / |h_k|)`` dB: the integer-step part goes to the radio's TX gain, the rest to
a digital scale (linear, <= ``max_digital_scale`` to keep DAC headroom), the phase
``-angle(h_k)`` to a digital rotation and the delay to a timing advance, so every node arrives
at ``target`` with phase 0 on time. A second pass with the correction applied measures the
residual spread ``20 log10(max |h| / min |h|)`` (dB). The corrections become the entries of the
calibration file the nodes load (:func:`calibration_entries`, :mod:`pairzero.phy.calibration`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pairzero.config import ExperimentConfig
from pairzero.phy.calibration import NodeCalibration, radio_identity
from pairzero.phy.rx import NodeEstimate

__all__ = [
    "NodeCorrection",
    "compute_calibration",
    "spread_db",
    "correction_factor",
    "calibration_entries",
    "run_calibration",
    "CalibrationReport",
]


@dataclass(frozen=True)
class NodeCorrection:
    """Correction for one node: TX gain (dB, absolute), digital scale (linear), phase (rad) and
    the measured delay (samples: the timing advance), from the measured amplitude and phase."""

    node: int
    tx_gain_db: float
    digital_scale: float
    digital_phase_rad: float
    delay_samples: float
    measured_amplitude: float
    measured_phase_rad: float


def spread_db(amplitudes: Sequence[float]) -> float:
    """Received-power spread 20 log10(max/min) of linear amplitudes (dB); 0 for equal ones."""
    a = np.asarray(amplitudes, dtype=float)
    if a.size == 0 or np.any(a <= 0):
        raise ValueError(f"amplitudes: {list(a)} must be a non-empty list of positive values")
    return float(20 * np.log10(a.max() / a.min()))


def compute_calibration(
    estimates: Sequence[NodeEstimate],
    tx_gain_db: float,
    target_amplitude: float | None = None,
    gain_step_db: float = 1.0,
    gain_range_db: tuple[float, float] = (0.0, 90.0),
    max_digital_scale: float = 1.0,
) -> list[NodeCorrection]:
    """Per-node corrections from single-node pilot measurements taken at ``tx_gain_db``.

    ``target_amplitude`` defaults to the weakest node's amplitude x 10^(-gain_step_db/20) (the
    level every node can reach). The analog part is floored to ``gain_step_db`` steps so the
    digital scale stays in (10^(-step/20), 1]; the TX gain is clipped to ``gain_range_db`` and the
    digital scale to ``max_digital_scale`` (then the node ends up below target).
    """
    if not estimates:
        raise ValueError("estimates: need at least one node measurement")
    if gain_step_db <= 0:
        raise ValueError(f"gain_step_db: {gain_step_db!r} must be > 0")
    missing = [e.node for e in estimates if not e.present]
    if missing:
        raise ValueError(f"estimates: nodes {missing} were not detected; cannot calibrate them")
    amps = [abs(e.gain) for e in estimates]
    target = min(amps) * 10 ** (-gain_step_db / 20) if target_amplitude is None else target_amplitude
    if target <= 0:
        raise ValueError(f"target_amplitude: {target!r} must be > 0")
    out = []
    for e, a in zip(estimates, amps, strict=True):
        need_db = 20 * math.log10(target / a)
        analog = gain_step_db * math.ceil(need_db / gain_step_db)  # >= need: digital scale <= 1
        new_gain = float(np.clip(tx_gain_db + analog, *gain_range_db))
        digital = min(10 ** ((need_db - (new_gain - tx_gain_db)) / 20), max_digital_scale)
        out.append(
            NodeCorrection(
                node=e.node,
                tx_gain_db=new_gain,
                digital_scale=float(digital),
                digital_phase_rad=float(-np.angle(e.gain)),
                delay_samples=float(e.delay),
                measured_amplitude=float(a),
                measured_phase_rad=float(np.angle(e.gain)),
            )
        )
    return out


def correction_factor(cal: NodeCorrection, measured_tx_gain_db: float) -> complex:
    """Complex factor the calibration multiplies a node's signal by, relative to the
    measurement pass: TX gain change x digital scale x phase rotation."""
    return complex(
        10 ** ((cal.tx_gain_db - measured_tx_gain_db) / 20)
        * cal.digital_scale
        * np.exp(1j * cal.digital_phase_rad)
    )


def calibration_entries(
    cfg: ExperimentConfig,
    corrections: Sequence[NodeCorrection],
    verified: Sequence[NodeEstimate] | None = None,
) -> list[NodeCalibration]:
    """The calibration file's entries for ``corrections`` made under ``cfg`` (radio identity,
    centre frequency, sample rate); level and SNR from the verification pass when given."""
    after = {e.node: e for e in verified or ()}
    out = []
    for c in corrections:
        v = after.get(c.node)
        level = 20 * math.log10(abs(v.gain)) if v is not None and abs(v.gain) > 0 else None
        snr = float(v.snr_db) if v is not None and math.isfinite(v.snr_db) else None
        out.append(NodeCalibration(
            node=c.node, radio=radio_identity(cfg, c.node), center_freq_hz=cfg.radio.center_freq_hz,
            sample_rate=cfg.phy.sample_rate, tx_gain_db=c.tx_gain_db, digital_scale=c.digital_scale,
            phase_rad=c.digital_phase_rad, timing_advance_samples=c.delay_samples, level_db=level,
            snr_db=snr))
    return out


Measure = Callable[[int, complex, float], NodeEstimate]
"""measure(node, tx_factor, advance) -> that node's estimate when it alone sends its pilot scaled
by tx_factor, ``advance`` samples early."""


@dataclass(frozen=True)
class CalibrationReport:
    """Both passes: corrections, spread before and after (dB), the verification estimates."""

    calibrations: list[NodeCorrection]
    spread_before_db: float
    spread_after_db: float
    amplitudes_after: list[float]
    verified: list[NodeEstimate]


def run_calibration(
    measure: Measure,
    num_nodes: int,
    tx_gain_db: float,
    gain_step_db: float = 1.0,
    gain_range_db: tuple[float, float] = (0.0, 90.0),
) -> CalibrationReport:
    """Measurement pass, corrections, verification pass (nodes one at a time)."""
    first = [measure(k, 1.0, 0.0) for k in range(num_nodes)]
    cals = compute_calibration(first, tx_gain_db, gain_step_db=gain_step_db, gain_range_db=gain_range_db)
    second = [measure(c.node, correction_factor(c, tx_gain_db), c.delay_samples) for c in cals]
    after = [abs(e.gain) for e in second]
    return CalibrationReport(cals, spread_db([abs(e.gain) for e in first]), spread_db(after), after,
                             second)
