"""``pairzero calibrate``: power alignment in loopback (through the GNU Radio emulator) or on USRPs.

    pairzero calibrate --config configs/loopback.yaml --output runs/calibration.yaml [key=value ...]
"""

from __future__ import annotations

import argparse
import logging
import math
import socket
from pathlib import Path

import numpy as np

from calibration.core import CalibrationReport, calibration_entries, run_calibration
from pairzero.config import ExperimentConfig, config_to_dict, load_config
from pairzero.errors import OperationalError
from pairzero.phy import BurstReceiver, FrameLayout, build_node_burst
from pairzero.phy.calibration import (
    CalibrationFile,
    calibrate_burst,
    utc_now,
    write_calibration_file,
)
from pairzero.phy.rx import NodeEstimate
from pairzero.phy.schedule import TX_TAIL, capture_window, frame_stride
from pairzero.runinfo import git_revision

__all__ = ["cmd_calibrate", "calibrate_loopback"]

log = logging.getLogger(__name__)


def _free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def calibrate_loopback(cfg: ExperimentConfig) -> CalibrationReport:
    """Both calibration passes through the loopback channel emulator (seeded from ``run.seed``),
    over the same radio front ends and frame schedule as the testbed's rounds.

    The emulated radio has no analog TX gain stage: the TX-gain change is applied as the
    equivalent linear factor on the node's samples.
    """
    from radio.emulator import ChannelEmulator
    from radio.loopback import LoopbackFrontEnd

    k = cfg.nodes.count
    layout = FrameLayout(cfg.phy, k)
    rx = BurstReceiver(layout)
    nodes, ap_addr = [_free_address() for _ in range(k)], _free_address()
    emu = ChannelEmulator.from_config(cfg.channel, cfg.nodes, cfg.run.seed, nodes, ap_addr, node_timeout_s=0.5)
    stride = frame_stride(layout)
    clock = {"next": stride}
    emu.start()
    ap = LoopbackFrontEnd(rx_address=ap_addr, sample_rate=cfg.phy.sample_rate)
    txs = [LoopbackFrontEnd(tx_address=a, sample_rate=cfg.phy.sample_rate) for a in nodes]
    try:

        def measure(node: int, factor: complex, advance: float) -> NodeEstimate:
            n0 = clock["next"]
            clock["next"] += stride
            burst, at = calibrate_burst(build_node_burst(layout, node, frame_start=n0), n0, factor,
                                        advance)
            txs[node].send(burst, at, timeout_s=1.0)
            for j, t in enumerate(txs):  # the others stay silent but keep the clock moving
                if j != node:
                    t.advance(n0 + layout.length + TX_TAIL)
            start, length = capture_window(layout, n0)
            cap = ap.capture(start, length, timeout_s=10.0)
            if not cap.ok or cap.samples is None:
                raise OperationalError(f"calibration: no AP samples for node {node} at index {n0}: "
                                       + "; ".join(str(e) for e in cap.events))
            res = rx.process(cap.samples, start, expected_start=n0)
            if not res.detected:
                # With signal the preamble metric is about SNR / (1 + SNR) (pairzero.phy.rx).
                m = min(max(res.metric, 1e-12), 1 - 1e-12)
                raise OperationalError(
                    f"calibration: node {node}'s pilot frame was not detected at the AP (preamble "
                    f"metric {res.metric:.3g} < threshold {res.threshold:.3g}: about "
                    f"{10 * math.log10(m / (1 - m)):.1f} dB SNR per sample); raise radio.tx_gain_db "
                    "or channel.snr_db, or bring the node closer")
            est = res.nodes[node]
            if not est.present:
                raise OperationalError(
                    f"calibration: node {node}'s pilot was not detected at the AP (pilot statistic "
                    f"{est.statistic:.1f}, SNR {est.snr_db:.1f} dB); raise radio.tx_gain_db or "
                    "channel.snr_db, or bring the node closer")
            return est

        return run_calibration(measure, k, cfg.radio.tx_gain_db)
    finally:
        emu.stop()
        emu.wait()
        for t in txs:
            t.close()
        ap.close()


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Entry point: ``args.config`` (path or None), ``args.overrides`` (list of key=value),
    ``args.output`` (YAML path, default ``<output.dir>/calibration.yaml``). Returns an exit code."""
    cfg = load_config(args.config, list(getattr(args, "overrides", None) or []))
    if cfg.radio.mode == "baseband":
        log.error("calibrate: radio.mode 'baseband' has no radio to calibrate; use 'loopback' or 'usrp'")
        return 2
    if cfg.radio.mode != "loopback":
        from radio.usrp import find_usrp_devices

        if not find_usrp_devices():
            log.error("calibrate: radio.mode is 'usrp' but uhd_find_devices finds no USRP")
            return 2
        log.error("calibrate: on USRPs run the per-host edge/AP calibration services "
                  "(radio.usrp); a single-host USRP calibration is not implemented")
        return 2
    report = calibrate_loopback(cfg)
    out = Path(args.output) if getattr(args, "output", None) else Path(cfg.output.dir) / "calibration.yaml"
    meta: dict[str, object] = {
        "mode": cfg.radio.mode,
        "measured_tx_gain_db": cfg.radio.tx_gain_db,
        "spread_before_db": report.spread_before_db,
        "spread_after_db": report.spread_after_db,
        "amplitudes_after": [float(a) for a in report.amplitudes_after],
        "config": config_to_dict(cfg),
    }
    entries = calibration_entries(cfg, report.calibrations, report.verified)
    write_calibration_file(out, CalibrationFile(utc_now(), git_revision(), cfg.radio.mode,
                                                tuple(entries), meta))
    log.info(
        "calibration written to %s: spread %.2f dB -> %.2f dB over %d nodes (target amplitude %.3g)",
        out, report.spread_before_db, report.spread_after_db, cfg.nodes.count,
        float(np.min(report.amplitudes_after)),
    )
    return 0
