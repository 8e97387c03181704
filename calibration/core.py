"""Power alignment (DESIGN.md section 7): pure maths + the measurement passes.

Each node sends a known pilot frame alone; the AP measures its received complex amplitude
and delay (:class:`pairzero.phy.NodeEstimate`). Node k then needs a gain change of
``20 log10(target / |h_k|)`` dB: the integer-step part goes to the radio's TX gain, the rest to
a digital scale (linear, <= ``max_digital_scale`` to keep DAC headroom), and the phase
``-angle(h_k)`` to a digital rotation, so every node arrives at ``target`` with phase 0. A
second pass with the correction applied measures the residual spread
``20 log10(max |h| / min |h|)`` (dB).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pairzero.phy.rx import NodeEstimate

__all__ = [
    "NodeCalibration",
    "compute_calibration",
    "spread_db",
    "correction_factor",
    "write_calibration",
    "load_calibration",
    "run_calibration",
    "CalibrationReport",
]


@dataclass(frozen=True)
class NodeCalibration:
    """Correction for one node: TX gain (dB, absolute), digital scale (linear) and phase (rad)."""

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
) -> list[NodeCalibration]:
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
            NodeCalibration(
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


def correction_factor(cal: NodeCalibration, measured_tx_gain_db: float) -> complex:
    """Complex factor the calibration multiplies a node's signal by, relative to the
    measurement pass: TX gain change x digital scale x phase rotation."""
    return complex(
        10 ** ((cal.tx_gain_db - measured_tx_gain_db) / 20)
        * cal.digital_scale
        * np.exp(1j * cal.digital_phase_rad)
    )


def write_calibration(path: str | Path, cals: Sequence[NodeCalibration], meta: dict[str, Any]) -> Path:
    """Write the calibration YAML the edge nodes load (``nodes: [{node, tx_gain_db, ...}]``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "nodes": [asdict(c) for c in cals]}
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def load_calibration(path: str | Path) -> list[NodeCalibration]:
    """Read a calibration YAML written by :func:`write_calibration`."""
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict) or "nodes" not in doc:
        raise ValueError(f"{path}: not a calibration file (no 'nodes' list)")
    return [NodeCalibration(**n) for n in doc["nodes"]]


Measure = Callable[[int, complex], NodeEstimate]
"""measure(node, tx_factor) -> that node's estimate when it alone sends its pilot scaled by tx_factor."""


@dataclass(frozen=True)
class CalibrationReport:
    """Both passes: corrections, spread before and after (dB)."""

    calibrations: list[NodeCalibration]
    spread_before_db: float
    spread_after_db: float
    amplitudes_after: list[float]


def run_calibration(
    measure: Measure,
    num_nodes: int,
    tx_gain_db: float,
    gain_step_db: float = 1.0,
    gain_range_db: tuple[float, float] = (0.0, 90.0),
) -> CalibrationReport:
    """Measurement pass, corrections, verification pass (nodes one at a time)."""
    first = [measure(k, 1.0) for k in range(num_nodes)]
    cals = compute_calibration(first, tx_gain_db, gain_step_db=gain_step_db, gain_range_db=gain_range_db)
    second = [measure(c.node, correction_factor(c, tx_gain_db)) for c in cals]
    after = [abs(e.gain) for e in second]
    return CalibrationReport(cals, spread_db([abs(e.gain) for e in first]), spread_db(after), after)
