"""``pairzero calibrate``: power alignment in loopback (through the GNU Radio emulator) or on USRPs.

    pairzero calibrate --config configs/loopback.yaml --output runs/calibration.yaml [key=value ...]
"""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path

import numpy as np

from calibration.core import CalibrationReport, run_calibration, write_calibration
from pairzero.config import ExperimentConfig, config_to_dict, load_config
from pairzero.phy import BurstReceiver, FrameLayout, build_node_burst
from pairzero.phy.rx import NodeEstimate

__all__ = ["cmd_calibrate", "calibrate_loopback"]

log = logging.getLogger(__name__)


def _free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def calibrate_loopback(cfg: ExperimentConfig) -> CalibrationReport:
    """Both calibration passes through the loopback channel emulator (seeded from ``run.seed``).

    The emulated radio has no analog TX gain stage: the TX-gain change is applied as the
    equivalent linear factor on the node's samples.
    """
    from grc_flowgraphs.loopback import ApRx, ChannelEmulator, EdgeTx

    k = cfg.nodes.count
    layout = FrameLayout(cfg.phy, k)
    rx = BurstReceiver(layout)
    nodes, ap_addr = [_free_address() for _ in range(k)], _free_address()
    emu = ChannelEmulator.from_config(cfg.channel, k, cfg.run.seed, nodes, ap_addr, node_timeout_s=0.5)
    step = layout.length + 512
    clock = {"next": 1000}
    emu.start()
    ap = ApRx(ap_addr)
    txs = [EdgeTx(a) for a in nodes]
    try:

        def measure(node: int, factor: complex) -> NodeEstimate:
            n0 = clock["next"]
            clock["next"] += step
            burst = factor * build_node_burst(layout, node, frame_start=n0)
            txs[node].send(burst, n0)
            for j, t in enumerate(txs):  # the others stay silent but keep the clock moving
                if j != node:
                    t.advance(n0 + layout.length + 256)
            a = n0 - 128
            w = ap.capture(a, layout.length + 256, timeout_s=10.0)
            if w is None:
                raise RuntimeError(f"calibration: no AP samples for node {node} at index {n0}")
            res = rx.process(w, a, expected_start=n0)
            if not res.detected:
                raise RuntimeError(f"calibration: node {node}'s pilot frame not detected")
            return res.nodes[node]

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
        from grc_flowgraphs.radio import find_usrp_devices

        if not find_usrp_devices():
            log.error("calibrate: radio.mode is 'usrp' but uhd_find_devices finds no USRP")
            return 2
        log.error("calibrate: on USRPs run the per-host edge/AP calibration services "
                  "(grc_flowgraphs.radio); a single-host USRP calibration is not implemented")
        return 2
    report = calibrate_loopback(cfg)
    out = Path(args.output) if getattr(args, "output", None) else Path(cfg.output.dir) / "calibration.yaml"
    meta = {
        "mode": cfg.radio.mode,
        "measured_tx_gain_db": cfg.radio.tx_gain_db,
        "spread_before_db": report.spread_before_db,
        "spread_after_db": report.spread_after_db,
        "amplitudes_after": [float(a) for a in report.amplitudes_after],
        "config": config_to_dict(cfg),
    }
    write_calibration(out, report.calibrations, meta)
    log.info(
        "calibration written to %s: spread %.2f dB -> %.2f dB over %d nodes (target amplitude %.3g)",
        out, report.spread_before_db, report.spread_after_db, cfg.nodes.count,
        float(np.min(report.amplitudes_after)),
    )
    return 0
