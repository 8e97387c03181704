"""Calibration over the control plane: the AP side of ``pairzero calibrate``.

The running ``pairzero edge`` processes (the ones that train) JOIN as they would join a training
AP; then, per pass::

    AP                                                    node k
    CALIBRATE(k, pass i, apply, gain, scale, phase,  -->  set them (apply), send a pilot-only
              advance, frame time n_i)                    frame at n_i in its slot
              <-- CAL_RESULT(k, i, gain as the radio set it, scale, phase, advance, sent)
    capture the frame (control plane served meanwhile): per node level |h_k| (dB), phase,
    delay (samples) and SNR (pairzero.phy.rx)
    residual spread within tolerance -> done; else new settings (:func:`next_settings`)

Pass 0 measures what the nodes run at start (nothing applied). ``--verify`` is pass 0 alone,
with the nodes started on the calibration file.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pairzero.config import ExperimentConfig, config_to_dict
from pairzero.errors import OperationalError
from pairzero.phy.calibration_file import (
    MAX_TIMING_ADVANCE,
    CalibrationFile,
    NodeCalibration,
    radio_identity,
    utc_now,
)
from pairzero.phy.round import ApRoundPhy
from pairzero.phy.rx import NodeEstimate
from pairzero.protocol.interfaces import ReadyTiming
from pairzero.protocol.keys import identity_refusal
from pairzero.protocol.messages import (
    AP_NODE_ID,
    Body,
    Calibrate,
    CalResult,
    Error,
    Heartbeat,
    Join,
    JoinAck,
    JoinReject,
    Leave,
    ProtocolError,
    decode,
    encode,
    make,
)
from pairzero.protocol.transport import Inbound, ServerTransport

__all__ = [
    "Setting",
    "Measurement",
    "next_settings",
    "default_target",
    "spreads",
    "ControlPlaneCalibrator",
    "calibration_entries",
    "calibration_file",
]

log = logging.getLogger(__name__)

#: Lead (s) of a calibration frame beyond the AP's device time, doubled on each retry.
FRAME_LEAD_S = 0.1
#: Tries of a calibration frame that a node's radio reported late.
FRAME_ATTEMPTS = 3


@dataclass(frozen=True)
class Setting:
    """What a node runs: analog TX gain (dB), digital scale (linear), phase (rad), timing
    advance (samples)."""

    tx_gain_db: float
    digital_scale: float = 1.0
    phase_rad: float = 0.0
    timing_advance_samples: float = 0.0

    def factor(self, reference_gain_db: float) -> float:
        """Linear amplitude relative to the channel model's reference gain, unit scale."""
        return float(10 ** ((self.tx_gain_db - reference_gain_db) / 20) * self.digital_scale)


@dataclass(frozen=True)
class Measurement:
    """One node in one pass: its estimate and the setting it ran."""

    node: int
    estimate: NodeEstimate
    setting: Setting

    @property
    def level_db(self) -> float:
        """Received level, dB re unit amplitude."""
        return float(20 * math.log10(max(abs(self.estimate.gain), 1e-300)))


def _wrap(a: float) -> float:
    return float(np.angle(np.exp(1j * a)))


def spreads(ms: Sequence[Measurement]) -> tuple[float, float, float]:
    """(level spread dB, phase spread deg, delay spread samples) over the nodes: max - min, the
    phases wrapped around their circular mean."""
    lv = [m.level_db for m in ms]
    g = np.array([m.estimate.gain for m in ms])
    mean = np.angle(np.sum(g / np.abs(g)))
    ph = [math.degrees(_wrap(float(np.angle(x)) - mean)) for x in g]
    dl = [m.estimate.delay for m in ms]
    return float(max(lv) - min(lv)), float(max(ph) - min(ph)), float(max(dl) - min(dl))


def default_target(ms: Sequence[Measurement], reference_gain_db: float,
                   gain_range_db: tuple[float, float]) -> float:
    """Target amplitude: the strongest node's level at the reference gain (``radio.tx_gain_db``,
    unit scale), lowered to the highest level every node reaches within its gain range."""
    natural = [abs(m.estimate.gain) / m.setting.factor(reference_gain_db) for m in ms]
    reach = [a * 10 ** ((gain_range_db[1] - reference_gain_db) / 20) for a in natural]
    return float(min(max(natural), min(reach)))


def next_settings(ms: Sequence[Measurement], target: float, reference_gain_db: float,
                  gain_range_db: tuple[float, float], gain_step_db: float) -> dict[int, Setting]:
    """Settings that bring every measured node to amplitude ``target`` with phase 0 and delay 0.

    Node k ran setting F_k (gain x scale, relative to the reference) and arrived with h_k and
    residual delay d_k: it needs F'_k = F_k target / |h_k|. The analog gain takes F'_k rounded
    up to whole ``gain_step_db`` steps (within ``gain_range_db``), the digital scale the rest
    (<= 1: DAC headroom; a node whose gain is clipped at the top stays below target); the phase
    turns by -angle(h_k), the advance grows by d_k.
    """
    if gain_step_db <= 0:
        raise ValueError(f"gain_step_db: {gain_step_db!r} must be > 0")
    if not target > 0:
        raise ValueError(f"target: {target!r} must be > 0")
    lo, hi = gain_range_db
    out = {}
    for m in ms:
        h = complex(m.estimate.gain)
        if abs(h) == 0:
            raise OperationalError(f"calibration: node {m.node} arrived with zero amplitude")
        need_db = 20 * math.log10(m.setting.factor(reference_gain_db) * target / abs(h))
        steps = math.ceil(need_db / gain_step_db - 1e-9)
        gain = float(min(max(reference_gain_db + steps * gain_step_db, lo), hi))
        scale = min(10 ** ((need_db - (gain - reference_gain_db)) / 20), 1.0)
        advance = m.setting.timing_advance_samples + m.estimate.delay
        if abs(advance) > MAX_TIMING_ADVANCE:
            raise OperationalError(
                f"calibration: node {m.node} would need a timing advance of {advance:.2f} samples, "
                f"beyond +-{MAX_TIMING_ADVANCE:g}: its delay is outside what the frame allows")
        out[m.node] = Setting(gain, float(scale), _wrap(m.setting.phase_rad - float(np.angle(h))),
                              float(advance))
    return out


class ControlPlaneCalibrator:
    """The AP side: JOINs of the edge processes, CALIBRATE passes, their pilot frames.

    ``phy``: the AP's round protocol on its radio (:func:`radio.factory.build_ap_round_phy`:
    its frame timing and receiver); ``key_ids``: CurveZMQ public key -> node id (None without CurveZMQ).
    """

    def __init__(self, cfg: ExperimentConfig, transport: ServerTransport, phy: ApRoundPhy,
                 experiment: str, key_ids: Mapping[bytes, int] | None = None) -> None:
        self.cfg = cfg
        self.k = cfg.nodes.count
        self.transport = transport
        self.phy = phy
        self.experiment = experiment
        self.key_ids = key_ids
        self.peers: dict[int, bytes] = {}
        self.results: dict[tuple[int, int], CalResult] = {}
        self.left: dict[int, str] = {}
        self._last_hb = 0.0

    # ------------------------------------------------------------------ control plane
    def _send(self, peer: bytes, body: Body) -> None:
        self.transport.send(peer, encode(make(self.experiment, 0, body)))

    def pump(self, timeout_s: float) -> None:
        """Serve the control plane for up to ``timeout_s`` (one message at most)."""
        now = time.monotonic()
        if now - self._last_hb >= self.cfg.network.heartbeat_s:
            self._last_hb = now
            for peer in self.peers.values():
                self._send(peer, Heartbeat(node=AP_NODE_ID, next_round=0))
        inbound = self.transport.recv(max(timeout_s, 0.0))
        if inbound is not None:
            self._serve(inbound)

    def _serve(self, inbound: Inbound) -> None:
        try:
            msg = decode(inbound.data, self.experiment)
        except ProtocolError as e:
            log.warning("calibration: dropped a message: %s", e)
            return
        b = msg.body
        if isinstance(b, Join):
            why = identity_refusal(b.node, inbound, self.k, self.key_ids)
            if why:
                log.warning("JOIN of node %d refused: %s", b.node, why)
                self._send(inbound.peer, JoinReject(node=b.node, reason=why))
                return
            self.peers[b.node] = inbound.peer
            self.left.pop(b.node, None)
            log.info("node %d joined for calibration", b.node)
            # No round log here: acknowledge the rounds the node says it applied (0 would make
            # a node that has trained take the session for another experiment's AP).
            self._send(inbound.peer, JoinAck(node=b.node, next_round=b.next_round, hash_every=0))
        elif isinstance(b, CalResult):
            if self.peers.get(b.node) == inbound.peer:
                self.results[(b.node, b.iteration)] = b
        elif isinstance(b, Leave):
            if self.peers.get(b.node) == inbound.peer:
                self.peers.pop(b.node)
                self.left[b.node] = b.reason
                log.warning("node %d left during calibration: %s", b.node, b.reason)
        elif isinstance(b, Heartbeat | Error):
            pass
        else:
            log.debug("calibration: ignored %s", msg.type)

    def wait_for_nodes(self, timeout_s: float) -> None:
        """Until every node has joined; :class:`OperationalError` naming the missing ones."""
        deadline = time.monotonic() + timeout_s
        while len(self.peers) < self.k:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(range(self.k)) - set(self.peers))
                raise OperationalError(
                    f"calibration: node(s) {missing} unreachable: no JOIN within {timeout_s:g} s "
                    f"(network.start_timeout_s); are their `pairzero edge` processes running with "
                    "this config?")
            self.pump(min(left, 0.1))
        log.info("calibration: all %d nodes joined", self.k)

    # ------------------------------------------------------------------ one pass
    def measure(self, iteration: int, settings: Mapping[int, Setting] | None) -> list[Measurement]:
        """One pilot frame from every node: with ``settings`` applied first (None: as they run).
        A frame a node could not send in time (its radio reports it late) is tried again with
        twice the lead, up to :data:`FRAME_ATTEMPTS` times: applying the same settings again
        changes nothing."""
        for attempt in range(FRAME_ATTEMPTS):
            lead_s = FRAME_LEAD_S * 2**attempt
            res = self._pilot_frame(iteration, settings, lead_s)
            failed = [r for r in res if not r.sent]
            if not failed:
                break
            r = failed[0]
            if attempt + 1 == FRAME_ATTEMPTS:
                raise OperationalError(f"calibration pass {iteration}: node {r.node} did not send "
                                       f"its pilot frame in {FRAME_ATTEMPTS} tries: {r.detail}")
            log.warning("calibration pass %d: node %d did not send its pilot frame (%s); again "
                        "with a %.0f ms lead", iteration, r.node, r.detail, 2 * lead_s * 1e3)
        rx = self.phy.last_rx
        if rx is None or not rx.detected:
            what = "no samples" if rx is None else (
                f"preamble metric {rx.metric:.3g} < threshold {rx.threshold:.3g}")
            raise OperationalError(f"calibration pass {iteration}: the pilot frame was not detected "
                                   f"at the AP ({what}); raise radio.tx_gain_db or check the nodes")
        est = {e.node: e for e in rx.nodes}
        out = []
        for r in res:
            e = est[r.node]
            if not e.present:
                raise OperationalError(
                    f"calibration pass {iteration}: node {r.node}'s pilot was not detected at the AP "
                    f"(pilot statistic {e.statistic:.1f}, SNR {e.snr_db:.1f} dB); raise its TX gain, "
                    "bring it closer, or check its antenna")
            out.append(Measurement(r.node, e, Setting(r.tx_gain_db, r.digital_scale, r.phase_rad,
                                                      r.timing_advance_samples)))
        lv, ph, dl = spreads(out)
        log.info("calibration pass %d: level spread %.2f dB, phase spread %.1f deg, timing spread "
                 "%.3f samples", iteration, lv, ph, dl)
        return out

    def _pilot_frame(self, iteration: int, settings: Mapping[int, Setting] | None,
                     lead_s: float) -> list[CalResult]:
        """Send CALIBRATE to every node for one frame ``lead_s`` ahead, receive it, collect the
        CAL_RESULTs (in node order)."""
        plan = self.phy.plan(iteration, [], ReadyTiming(control_s=lead_s))
        for k in range(self.k):
            self.results.pop((k, iteration), None)
            peer = self.peers.get(k)
            if peer is None:
                raise OperationalError(f"calibration: node {k} unreachable (it left: "
                                       f"{self.left.get(k, 'no JOIN')})")
            s = settings[k] if settings is not None else Setting(self.cfg.radio.tx_gain_db)
            self._send(peer, Calibrate(node=k, iteration=iteration, apply=settings is not None,
                                       tx_gain_db=s.tx_gain_db, digital_scale=s.digital_scale,
                                       phase_rad=s.phase_rad,
                                       timing_advance_samples=s.timing_advance_samples,
                                       tx_sample=plan.tx_sample))
        self.phy.receive(iteration, 0, plan, {}, idle=self.pump)
        deadline = time.monotonic() + self.cfg.network.ready_timeout_s
        while any((k, iteration) not in self.results for k in range(self.k)):
            if time.monotonic() > deadline:
                missing = [k for k in range(self.k) if (k, iteration) not in self.results]
                raise OperationalError(
                    f"calibration pass {iteration}: node(s) {missing} unreachable: no CAL_RESULT "
                    f"within {self.cfg.network.ready_timeout_s:g} s (network.ready_timeout_s)")
            self.pump(0.05)
        return [self.results[(k, iteration)] for k in range(self.k)]

    def run(self, tol_db: float, max_iter: int, target_amplitude: float | None,
            gain_range_db: tuple[float, float], gain_step_db: float, phase_tol_deg: float = 5.0,
            timing_tol: float = 0.25) -> tuple[list[Measurement], list[Measurement], float, int, bool]:
        """Pass 0, then corrected passes until within tolerance or ``max_iter`` corrections:
        (first pass, last pass, target amplitude, corrections made, converged)."""
        ref = self.cfg.radio.tx_gain_db
        first = last = self.measure(0, None)
        target = target_amplitude or default_target(first, ref, gain_range_db)
        log.info("calibration: target level %.2f dB re unit amplitude", 20 * math.log10(target))
        it = 0
        while True:
            lv, ph, dl = spreads(last)
            on_target = all(abs(m.level_db - 20 * math.log10(target)) <= tol_db for m in last)
            if it > 0 and lv <= tol_db and ph <= phase_tol_deg and dl <= timing_tol and on_target:
                return first, last, target, it, True
            if it >= max_iter:
                return first, last, target, it, False
            settings = next_settings(last, target, ref, gain_range_db, gain_step_db)
            it += 1
            last = self.measure(it, settings)


def calibration_entries(cfg: ExperimentConfig, ms: Sequence[Measurement]) -> list[NodeCalibration]:
    """The calibration file's entries: what each node ran in pass ``ms`` (its setting) under
    ``cfg`` (radio identity, centre frequency, sample rate), with the level and SNR measured."""
    return [NodeCalibration(
        node=m.node, radio=radio_identity(cfg, m.node), center_freq_hz=cfg.radio.center_freq_hz,
        sample_rate=cfg.phy.sample_rate, tx_gain_db=m.setting.tx_gain_db,
        digital_scale=m.setting.digital_scale, phase_rad=m.setting.phase_rad,
        timing_advance_samples=m.setting.timing_advance_samples, level_db=m.level_db,
        snr_db=float(m.estimate.snr_db)) for m in ms]


def calibration_file(cfg: ExperimentConfig, first: Sequence[Measurement],
                     last: Sequence[Measurement], target: float, passes: int, converged: bool,
                     tol_db: float, git_revision: str) -> CalibrationFile:
    """The file of a calibration run (:meth:`ControlPlaneCalibrator.run`'s result): the last
    pass's settings, and in ``meta`` the target level (dB), the spreads before and after, the
    passes made and whether they converged within ``tol_db``."""
    lv0, _, _ = spreads(first)
    lv, ph, dl = spreads(last)
    meta: dict[str, object] = {
        "target_level_db": 20 * math.log10(target), "spread_before_db": lv0,
        "spread_after_db": lv, "phase_spread_deg": ph, "timing_spread_samples": dl,
        "passes": passes, "converged": converged, "tol_db": tol_db,
        "levels_before_db": [m.level_db for m in first], "config": config_to_dict(cfg)}
    return CalibrationFile(utc_now(), git_revision, cfg.radio.mode,
                           tuple(calibration_entries(cfg, last)), meta)
