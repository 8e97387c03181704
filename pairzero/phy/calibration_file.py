"""The calibration file: what power, phase and timing alignment measured, and what the nodes apply.

``pairzero calibrate`` writes it to ``radio.calibration_file``; every edge node loads its own
entry at start, sets its radio's analog TX gain to ``tx_gain_db`` and sends every burst as

    x_cal(n) = digital_scale * exp(j phase_rad) * x(n + timing_advance_samples)

(the burst leaves ``timing_advance_samples`` early, fractional advance band-limited), so that all
nodes reach the AP at the same level, phase and time. The AP checks the file against its config
at start and refuses it, in one line naming the field, when it was made for another centre
frequency, sample rate or radio; it warns when the file is older than
``radio.calibration_max_age_h``. The file (YAML)::

    format: pairzero-calibration/1
    created_utc: '2026-12-04T06:30:00Z'     # when it was measured (ISO 8601, UTC)
    git_revision: 2835670...                 # of the code that measured it
    mode: loopback                           # radio.mode it was measured in
    nodes:
    - node: 0                                # node id
      radio: loopback-0                      # radio serial (device args serial=), or the
                                             # loopback / emulated radio's id
      center_freq_hz: 915000000.0            # radio.center_freq_hz
      sample_rate: 1000000.0                 # phy.sample_rate (S/s)
      tx_gain_db: 43.0                       # analog TX gain to set (dB)
      digital_scale: 0.912                   # linear amplitude factor on the samples, (0, 1]
      phase_rad: -2.17                       # rotation of the samples (rad)
      timing_advance_samples: 1.37           # send this much early (samples, |.| <= 16)
      level_db: -27.4                        # received level when measured (dB re unit amplitude)
      snr_db: 31.2                           # pilot SNR when measured (dB)
    meta: {...}                              # free-form: what the measurement saw

A radio's analog gain is relative to the channel the experiment describes: in loopback and on
emulated USRPs the channel model's gain h_k holds at ``radio.tx_gain_db``, and a TX gain g dB
multiplies the node's samples by 10^((g - radio.tx_gain_db)/20).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from pairzero.config import ExperimentConfig
from pairzero.phy.mode import node_device_args, phy_mode

__all__ = [
    "FORMAT",
    "MAX_TIMING_ADVANCE",
    "CalibrationError",
    "NodeCalibration",
    "CalibrationFile",
    "read_calibration_file",
    "write_calibration_file",
    "radio_identity",
    "check_calibration",
    "load_node_calibration",
    "load_ap_calibration",
    "calibrate_burst",
    "analog_gain_factor",
    "utc_now",
]

log = logging.getLogger(__name__)

#: The ``format`` line of a calibration file of this version.
FORMAT = "pairzero-calibration/1"
#: Largest |timing advance| (samples): the frame gap leaves room for 2 x (16 + 16) samples of
#: padding around an advanced burst (pairzero.phy.schedule.FRAME_GAP).
MAX_TIMING_ADVANCE = 16.0
#: Zero samples kept either side of an advanced burst for the band-limited shift's tails.
_ADVANCE_PAD = 16
#: Centre frequencies closer than this (Hz) are the same tuning.
FREQ_TOL_HZ = 1.0


class CalibrationError(ValueError):
    """A calibration file is malformed, or made for another frequency, rate or radio (the
    message is one line naming the file and the field)."""


@dataclass(frozen=True)
class NodeCalibration:
    """One node's entry; units in the module docstring."""

    node: int
    radio: str
    center_freq_hz: float
    sample_rate: float
    tx_gain_db: float
    digital_scale: float = 1.0
    phase_rad: float = 0.0
    timing_advance_samples: float = 0.0
    level_db: float | None = None
    snr_db: float | None = None

    def factor(self) -> complex:
        """The complex factor on the samples: digital_scale * exp(j phase_rad)."""
        return complex(self.digital_scale * np.exp(1j * self.phase_rad))

    def describe(self) -> str:
        """One line for the logs."""
        return (f"radio {self.radio}, {self.center_freq_hz / 1e6:.6g} MHz, "
                f"{self.sample_rate / 1e6:.6g} MS/s: TX gain {self.tx_gain_db:g} dB, digital scale "
                f"{self.digital_scale:.4g} ({20 * math.log10(self.digital_scale):+.2f} dB), phase "
                f"{math.degrees(self.phase_rad):+.1f} deg, timing advance "
                f"{self.timing_advance_samples:+.3f} samples")


@dataclass(frozen=True)
class CalibrationFile:
    """A whole file: when, by which code, in which mode, and one entry per node."""

    created_utc: dt.datetime
    git_revision: str
    mode: str
    nodes: tuple[NodeCalibration, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)
    path: str = ""

    def entry(self, node: int) -> NodeCalibration | None:
        """Node ``node``'s entry (None if the file has none)."""
        for n in self.nodes:
            if n.node == node:
                return n
        return None

    def age_h(self, now: dt.datetime | None = None) -> float:
        """Hours since the measurement."""
        now = now or utc_now()
        return (now - self.created_utc).total_seconds() / 3600.0


def utc_now() -> dt.datetime:
    """Now, UTC, to the second."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


# ----------------------------------------------------------------------------- YAML


_NODE_FIELDS = {f.name: f for f in dataclasses.fields(NodeCalibration)}
_TOP_KEYS = ("format", "created_utc", "git_revision", "mode", "nodes", "meta")


def _unknown(where: str, keys: Iterable[str], allowed: Sequence[str]) -> None:
    for k in keys:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CalibrationError(f"{where}: unknown key {k!r}{hint}; allowed keys: "
                                   + ", ".join(allowed))


def _check(where: str, key: str, v: Any, allowed: str, ok: Any = None) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
            or (ok is not None and not ok(float(v))):
        raise CalibrationError(f"{where}.{key}: {v!r} is invalid; allowed: {allowed}")
    return float(v)


def _optional(where: str, key: str, v: Any, allowed: str) -> float | None:
    return None if v is None else _check(where, key, v, allowed)


def _node_from_dict(where: str, d: Any) -> NodeCalibration:
    if not isinstance(d, dict):
        raise CalibrationError(f"{where}: expected a mapping of node fields, got {d!r}")
    _unknown(where, d, list(_NODE_FIELDS))
    required = [n for n, f in _NODE_FIELDS.items() if f.default is dataclasses.MISSING]
    missing = [n for n in required if n not in d]
    if missing:
        raise CalibrationError(f"{where}: missing key {missing[0]!r} (required: {', '.join(required)})")
    node = d["node"]
    if isinstance(node, bool) or not isinstance(node, int) or node < 0:
        raise CalibrationError(f"{where}.node: {node!r} is invalid; allowed: an integer >= 0")
    radio = d["radio"]
    if not isinstance(radio, str) or not radio.strip():
        raise CalibrationError(f"{where}.radio: {radio!r} is invalid; allowed: a non-empty string "
                               "(the radio's serial, or loopback-<k> / emulated-<k>)")
    pos = "a finite number > 0"
    return NodeCalibration(
        node=node,
        radio=radio,
        center_freq_hz=_check(where, "center_freq_hz", d["center_freq_hz"], pos + " (Hz)",
                              lambda x: x > 0),
        sample_rate=_check(where, "sample_rate", d["sample_rate"], pos + " (S/s)", lambda x: x > 0),
        tx_gain_db=_check(where, "tx_gain_db", d["tx_gain_db"], "a finite number (dB)"),
        digital_scale=_check(where, "digital_scale", d.get("digital_scale", 1.0),
                             "0 < scale <= 1 (linear amplitude; the DAC's headroom)",
                             lambda x: 0 < x <= 1),
        phase_rad=_check(where, "phase_rad", d.get("phase_rad", 0.0), "a finite number (rad)"),
        timing_advance_samples=_check(
            where, "timing_advance_samples", d.get("timing_advance_samples", 0.0),
            f"a number in -{MAX_TIMING_ADVANCE:g}..{MAX_TIMING_ADVANCE:g} (samples)",
            lambda x: abs(x) <= MAX_TIMING_ADVANCE),
        level_db=_optional(where, "level_db", d.get("level_db"), "null or a finite number (dB)"),
        snr_db=_optional(where, "snr_db", d.get("snr_db"), "null or a finite number (dB)"),
    )


def _parse_time(where: str, v: Any) -> dt.datetime:
    if isinstance(v, dt.datetime):
        t = v
    elif isinstance(v, str):
        try:
            t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            t = None  # type: ignore[assignment]
    else:
        t = None  # type: ignore[assignment]
    if t is None or t.tzinfo is None:
        raise CalibrationError(f"{where}.created_utc: {v!r} is invalid; allowed: an ISO 8601 time "
                               "with its zone, e.g. '2026-12-04T06:30:00Z'")
    return t.astimezone(dt.UTC)


def calibration_from_dict(doc: Any, where: str = "calibration file") -> CalibrationFile:
    """Validate a parsed file (every error names ``where`` and the key)."""
    if not isinstance(doc, dict):
        raise CalibrationError(f"{where}: not a calibration file (expected a mapping with "
                               f"'format: {FORMAT}')")
    _unknown(where, doc, list(_TOP_KEYS))
    if doc.get("format") != FORMAT:
        raise CalibrationError(f"{where}.format: {doc.get('format')!r} is not supported; allowed: "
                               f"{FORMAT!r} (re-run `pairzero calibrate`)")
    for key in ("created_utc", "git_revision", "mode", "nodes"):
        if key not in doc:
            raise CalibrationError(f"{where}: missing key {key!r}")
    if not isinstance(doc["git_revision"], str):
        raise CalibrationError(f"{where}.git_revision: {doc['git_revision']!r} is not a string")
    if doc["mode"] not in ("loopback", "usrp"):
        raise CalibrationError(f"{where}.mode: {doc['mode']!r} is invalid; allowed: 'loopback', 'usrp'")
    raw = doc["nodes"]
    if not isinstance(raw, list) or not raw:
        raise CalibrationError(f"{where}.nodes: expected a non-empty list of node entries")
    nodes = tuple(_node_from_dict(f"{where}.nodes[{i}]", d) for i, d in enumerate(raw))
    ids = [n.node for n in nodes]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise CalibrationError(f"{where}.nodes: node {dup[0]} has more than one entry")
    meta = doc.get("meta") or {}
    if not isinstance(meta, dict):
        raise CalibrationError(f"{where}.meta: expected a mapping, got {meta!r}")
    return CalibrationFile(_parse_time(where, doc["created_utc"]), doc["git_revision"], doc["mode"],
                           nodes, meta)


def calibration_to_dict(cal: CalibrationFile) -> dict[str, Any]:
    """The YAML document of ``cal`` (plain types)."""
    return {
        "format": FORMAT,
        "created_utc": cal.created_utc.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_revision": cal.git_revision,
        "mode": cal.mode,
        "nodes": [{k: (float(v) if isinstance(v, float | np.floating) else v)
                   for k, v in dataclasses.asdict(n).items()} for n in cal.nodes],
        "meta": dict(cal.meta),
    }


def write_calibration_file(path: str | Path, cal: CalibrationFile) -> Path:
    """Write ``cal`` to ``path`` (YAML, parents made; replaced atomically)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(yaml.safe_dump(calibration_to_dict(cal), sort_keys=False))
    tmp.replace(p)
    return p


def read_calibration_file(path: str | Path) -> CalibrationFile:
    """Read and validate a calibration file; :class:`CalibrationError` names the file and key."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise CalibrationError(f"radio.calibration_file: {str(p)!r} does not exist (run `pairzero "
                               "calibrate` to make it, or set radio.calibration_file: null)") from None
    except OSError as e:
        raise CalibrationError(f"radio.calibration_file: cannot read {str(p)!r}: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CalibrationError(f"{p}: not YAML: {str(e).splitlines()[0]}") from None
    return dataclasses.replace(calibration_from_dict(doc, str(p)), path=str(p))


# ----------------------------------------------------------------------------- checks


def radio_identity(cfg: ExperimentConfig, node: int) -> str:
    """The radio node ``node`` transmits with, as a calibration file names it: the ``serial=``
    of its device args on USRPs (the whole args string when they name no serial), or
    ``loopback-<node>`` / ``emulated-<node>`` for the loopback and emulated radios."""
    mode = phy_mode(cfg)
    if not mode.radios:  # the loopback radio (baseband has none to calibrate)
        return f"{mode.name}-{node}"
    args = node_device_args(cfg, node)
    parts = dict(p.strip().partition("=")[::2] for p in args.split(",") if p.strip())
    parts = {k.strip().lower(): v.strip() for k, v in parts.items()}
    if parts.get("serial"):
        return parts["serial"]
    if parts.get("type") == "emulated":
        return f"emulated-{node}"
    return args.strip()


def check_calibration(cal: CalibrationFile, cfg: ExperimentConfig, nodes: Iterable[int],
                      now: dt.datetime | None = None) -> None:
    """Refuse ``cal`` for ``cfg`` (one-line :class:`CalibrationError` naming the field) when an
    entry of ``nodes`` is missing or was made for another centre frequency, sample rate or
    radio; warn when the file is older than ``radio.calibration_max_age_h``."""
    where = f"radio.calibration_file {cal.path or '(unsaved)'}"
    for k in nodes:
        e = cal.entry(k)
        if e is None:
            have = ", ".join(str(n.node) for n in cal.nodes)
            raise CalibrationError(f"{where}: node {k} has no entry (the file covers nodes {have}); "
                                   "re-run `pairzero calibrate` with every node")
        if abs(e.center_freq_hz - cfg.radio.center_freq_hz) > FREQ_TOL_HZ:
            raise CalibrationError(
                f"{where}: node {k}'s center_freq_hz {e.center_freq_hz:.10g} Hz does not match "
                f"radio.center_freq_hz {cfg.radio.center_freq_hz:.10g} Hz; recalibrate at this frequency")
        if not math.isclose(e.sample_rate, cfg.phy.sample_rate, rel_tol=1e-9):
            raise CalibrationError(
                f"{where}: node {k}'s sample_rate {e.sample_rate:.10g} S/s does not match "
                f"phy.sample_rate {cfg.phy.sample_rate:.10g} S/s; recalibrate at this rate")
        want = radio_identity(cfg, k)
        if e.radio != want:
            raise CalibrationError(
                f"{where}: node {k}'s radio {e.radio!r} does not match this node's radio {want!r} "
                "(serial in radio.node_args); recalibrate with these radios")
    max_age = cfg.radio.calibration_max_age_h
    age = cal.age_h(now)
    if max_age > 0 and age > max_age:
        log.warning("%s is %.1f h old (radio.calibration_max_age_h = %g): gains and LO phases "
                    "drift; re-run `pairzero calibrate`", where, age, max_age)
    elif age < -1.0 / 60:
        log.warning("%s was made %.1f h in the future: is this host's clock right?", where, -age)


def load_node_calibration(cfg: ExperimentConfig, node: int) -> NodeCalibration | None:
    """Node ``node``'s entry of ``radio.calibration_file``, checked against ``cfg`` and logged;
    None when the config names no file."""
    if cfg.radio.calibration_file is None:
        return None
    cal = read_calibration_file(cfg.radio.calibration_file)
    check_calibration(cal, cfg, [node])
    e = cal.entry(node)
    assert e is not None  # check_calibration refused a file without it
    log.info("node %d: calibration %s (measured %s, git %s): %s", node, cal.path,
             cal.created_utc.strftime("%Y-%m-%dT%H:%M:%SZ"), cal.git_revision[:12], e.describe())
    return e


def load_ap_calibration(cfg: ExperimentConfig) -> CalibrationFile | None:
    """``radio.calibration_file`` checked for every node of ``cfg`` (the AP's start-up check);
    None when the config names no file."""
    if cfg.radio.calibration_file is None:
        return None
    cal = read_calibration_file(cfg.radio.calibration_file)
    check_calibration(cal, cfg, range(cfg.nodes.count))
    log.info("AP: calibration %s (measured %s, %.1f h ago, git %s) matches %d nodes at %.6g MHz, "
             "%.6g MS/s", cal.path, cal.created_utc.strftime("%Y-%m-%dT%H:%M:%SZ"), cal.age_h(),
             cal.git_revision[:12], cfg.nodes.count, cfg.radio.center_freq_hz / 1e6,
             cfg.phy.sample_rate / 1e6)
    return cal


# ----------------------------------------------------------------------------- applying


def analog_gain_factor(tx_gain_db: float, reference_gain_db: float) -> float:
    """Linear amplitude of an analog TX gain relative to the gain at which the channel model's
    h_k holds (``radio.tx_gain_db``): loopback and emulated radios apply it to the samples."""
    return float(10 ** ((tx_gain_db - reference_gain_db) / 20))


def calibrate_burst(x: npt.NDArray[np.complexfloating], index: int, factor: complex = 1.0,
                    advance: float = 0.0) -> tuple[npt.NDArray[np.complex64], int]:
    """``factor * x`` sent ``advance`` samples early: (samples, index to send them at).

    The samples are padded with zeros either side and shifted band-limited
    (:func:`sync.estimation.fractional_shift`), so sample m of ``x`` is on the air at
    ``index + m - advance``; the result starts ``pad`` samples before ``index``.
    """
    if abs(advance) > MAX_TIMING_ADVANCE:
        raise ValueError(f"advance: {advance!r} samples is outside +-{MAX_TIMING_ADVANCE:g}")
    y = complex(factor) * np.asarray(x, dtype=np.complex128)
    if advance == 0.0:
        return y.astype(np.complex64), index
    from sync.estimation import fractional_shift

    pad = int(math.ceil(abs(advance))) + _ADVANCE_PAD
    padded = np.concatenate([np.zeros(pad), y, np.zeros(pad)])
    return fractional_shift(padded, -advance).astype(np.complex64), index - pad
