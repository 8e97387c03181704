"""``pairzero calibrate``: power, phase and timing alignment over the control plane.

    pairzero calibrate --config configs/loopback.yaml --output runs/cal.yaml [--set key=value ...]
    pairzero calibrate --config configs/loopback.yaml --verify --set radio.calibration_file=runs/cal.yaml

:func:`cmd_calibrate` is the AP of the running ``pairzero edge`` processes
(:mod:`calibration.session`); in loopback and on emulated USRPs it starts them and the channel
emulator itself. :func:`write_loopback_calibration` is the same measurement in one process,
without edge processes (two passes through the emulator; tests and benchmarks).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from calibration.core import CalibrationReport, calibration_entries, run_calibration
from calibration.session import ControlPlaneCalibrator, Measurement, spreads
from pairzero.config import ExperimentConfig, config_to_dict, load_config
from pairzero.errors import OperationalError
from pairzero.phy import BurstReceiver, FrameLayout, build_node_burst
from pairzero.phy.calibration import (
    CalibrationFile,
    NodeCalibration,
    calibrate_burst,
    load_ap_calibration,
    radio_identity,
    utc_now,
    write_calibration_file,
)
from pairzero.phy.mode import phy_mode
from pairzero.phy.rx import NodeEstimate
from pairzero.phy.schedule import TX_TAIL, capture_window, frame_stride
from pairzero.runinfo import git_revision

__all__ = ["cmd_calibrate", "calibrate_loopback", "write_loopback_calibration"]

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


def write_loopback_calibration(cfg: ExperimentConfig, out: str | Path) -> Path:
    """:func:`calibrate_loopback` for ``cfg``, written as a calibration file to ``out``."""
    report = calibrate_loopback(cfg)
    meta: dict[str, object] = {
        "mode": cfg.radio.mode,
        "measured_tx_gain_db": cfg.radio.tx_gain_db,
        "spread_before_db": report.spread_before_db,
        "spread_after_db": report.spread_after_db,
        "amplitudes_after": [float(a) for a in report.amplitudes_after],
        "config": config_to_dict(cfg),
    }
    entries = calibration_entries(cfg, report.calibrations, report.verified)
    path = write_calibration_file(out, CalibrationFile(utc_now(), git_revision(), cfg.radio.mode,
                                                       tuple(entries), meta))
    log.info("calibration written to %s: spread %.2f dB -> %.2f dB over %d nodes (target amplitude "
             "%.3g)", path, report.spread_before_db, report.spread_after_db, cfg.nodes.count,
             float(np.min(report.amplitudes_after)))
    return path


def _table(ms: Sequence[Measurement], target_db: float, tol_db: float, phase_tol_deg: float | None,
           timing_tol: float) -> tuple[str, list[int]]:
    """The per-node table and the nodes out of tolerance. Phases are relative to the nodes'
    circular mean (``phase_tol_deg`` None: not judged, a channel with CFO turns them)."""
    g = np.array([m.estimate.gain for m in ms])
    mean = np.angle(np.sum(g / np.abs(g)))
    rows = ["node  radio gain dB  level dB  dev dB  phase deg  delay smp  SNR dB  status"]
    bad = []
    for m in ms:
        dev = m.level_db - target_db
        ph = math.degrees(float(np.angle(np.exp(1j * (np.angle(m.estimate.gain) - mean)))))
        why = []
        if abs(dev) > tol_db:
            why.append(f"level {dev:+.2f} dB")
        if phase_tol_deg is not None and abs(ph) > phase_tol_deg:
            why.append(f"phase {ph:+.1f} deg")
        if abs(m.estimate.delay) > timing_tol:
            why.append(f"delay {m.estimate.delay:+.3f}")
        if why:
            bad.append(m.node)
        rows.append(f"{m.node:4d}  {m.setting.tx_gain_db:13.2f}  {m.level_db:8.2f}  {dev:+6.2f}  "
                    f"{ph:+9.1f}  {m.estimate.delay:+9.3f}  {m.estimate.snr_db:6.1f}  "
                    + ("OUT: " + ", ".join(why) if why else "ok"))
    return "\n".join(rows), bad


def _plot(ms: Sequence[Measurement], target_db: float, tol_db: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = [m.node for m in ms]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    axes[0].bar(nodes, [m.level_db - target_db for m in ms], color="tab:blue")
    axes[0].axhspan(-tol_db, tol_db, color="tab:green", alpha=0.15)
    axes[0].set(xlabel="node", ylabel="level - target (dB)")
    g = np.array([m.estimate.gain for m in ms])
    mean = np.angle(np.sum(g / np.abs(g)))
    axes[1].bar(nodes, np.degrees(np.angle(g * np.exp(-1j * mean))), color="tab:orange")
    axes[1].set(xlabel="node", ylabel="phase (deg)")
    axes[2].bar(nodes, [m.estimate.delay for m in ms], color="tab:purple")
    axes[2].set(xlabel="node", ylabel="delay (samples)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``pairzero calibrate``: over the control plane with the edge processes.

    In loopback and on emulated USRPs it starts the channel emulator and the K ``pairzero edge``
    processes itself (as ``pairzero loopback`` does) and acts as their AP; on USRPs it is the AP
    of the running ``pairzero edge`` processes. Writes ``--output`` (or, with ``--verify``,
    measures with ``radio.calibration_file`` applied). Returns 0, or 1 when the nodes did not
    converge / are out of tolerance (the nodes named)."""
    from pairzero.launch import Testbed, launch_testbed, ports_in_use
    from pairzero.protocol.keys import generate_keys, load_server_keys
    from pairzero.protocol.transport import ZmqServer
    from pairzero.runinfo import experiment_id, make_run_dir, write_provenance

    cfg = load_config(args.config, list(getattr(args, "overrides", None) or []))
    verify = bool(getattr(args, "verify", False))
    tol = float(getattr(args, "tol", 0.5))
    max_iter = int(getattr(args, "max_iter", 4))
    step = float(getattr(args, "gain_step", 1.0))
    target_db = getattr(args, "target_db", None)
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"--tol: {tol!r} must be > 0 (dB)")
    if not 0 <= max_iter <= 50:
        raise ValueError(f"--max-iter: {max_iter!r} must be in 0..50")
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"--gain-step: {step!r} must be > 0 (dB)")
    mode = phy_mode(cfg)
    if not mode.over_the_air:
        raise ValueError("radio.mode: 'baseband' has no radio to calibrate; use 'loopback' or 'usrp'")
    if verify:
        if cfg.radio.calibration_file is None:
            raise ValueError("--verify measures with radio.calibration_file applied: set it "
                             "(--set radio.calibration_file=FILE)")
        cal_file = load_ap_calibration(cfg)
    else:  # the nodes start uncalibrated, at radio.tx_gain_db
        cfg = dataclasses.replace(cfg, radio=dataclasses.replace(cfg.radio, calibration_file=None))
    local = mode.needs_emulator
    if local:
        if cfg.network.ap_host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"network.ap_host: {cfg.network.ap_host!r}; a local calibration runs "
                             "on 127.0.0.1")
        busy = ports_in_use(cfg)
        if busy:
            raise OSError(f"ports {busy} on {cfg.network.ap_host} are in use (another run?); pick "
                          "others with --set network.control_port=... --set network.sample_port_base=...")
        cfg = dataclasses.replace(cfg, zo=dataclasses.replace(cfg.zo, threads=1))
    run_dir = make_run_dir(cfg, "verify" if verify else "calibrate", getattr(args, "out", None))
    if local and cfg.network.curve:
        generate_keys(run_dir / "keys", cfg.nodes.count)
        cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network,
                                                                   keys_dir=str(run_dir / "keys")))
        write_provenance(cfg, run_dir)
    curve, key_ids = load_server_keys(cfg.network.keys_dir) if cfg.network.curve else (None, None)
    bed: Testbed | None = None
    transport = phy = None
    try:
        endpoint = f"tcp://{cfg.network.ap_host}:{cfg.network.control_port}"
        transport = ZmqServer(endpoint, curve=curve, heartbeat_s=cfg.network.heartbeat_s)
        if local:  # this command is the AP of the edge processes it starts
            bed = launch_testbed(cfg, run_dir, ap=False, log_level=getattr(args, "log_level", "INFO"),
                                 grace_s=10.0)
        from radio.factory import build_ap_round_phy

        phy = build_ap_round_phy(cfg)
        cal = ControlPlaneCalibrator(cfg, transport, phy, experiment_id(cfg), key_ids)
        cal.wait_for_nodes(cfg.network.start_timeout_s)
        # Phases hold from frame to frame only without carrier offsets (a shared reference).
        cfo_free = mode.radios or cfg.channel.max_cfo == 0.0
        phase_tol = 5.0 if cfo_free else None
        if verify:
            ms = cal.measure(0, None)
            meta_t = cal_file.meta.get("target_level_db") if cal_file is not None else None
            tgt = float(meta_t) if isinstance(meta_t, int | float) else float(
                np.median([m.level_db for m in ms]))
            table, bad = _table(ms, tgt, tol, phase_tol, 0.25)
            if phase_tol is None:
                table += "\n(phases not judged: channel.max_cfo > 0 turns them between frames)"
            png = run_dir / "calibration_verify.png"
            _plot(ms, tgt, tol, png, f"verify {cfg.radio.calibration_file}")
            print(f"calibration verify ({cfg.radio.calibration_file}, target {tgt:.2f} dB):\n{table}\n"
                  f"plot: {png}", flush=True)
            if bad:
                print(f"calibrate --verify: node(s) {bad} out of tolerance (level +-{tol:g} dB"
                      + (", phase +-5 deg" if phase_tol is not None else "") + ", delay +-0.25 "
                      "sample); re-run `pairzero calibrate`", flush=True)
                return 1
            return 0
        target = None if target_db is None else 10 ** (float(target_db) / 20)
        first, last, target, iters, ok = cal.run(tol, max_iter, target, mode.tx_gain_range_db, step,
                                                 phase_tol_deg=phase_tol if phase_tol else 360.0)
        tgt = 20 * math.log10(target)
        lv0, _, _ = spreads(first)
        lv, ph, dl = spreads(last)
        entries = [NodeCalibration(
            node=m.node, radio=radio_identity(cfg, m.node), center_freq_hz=cfg.radio.center_freq_hz,
            sample_rate=cfg.phy.sample_rate, tx_gain_db=m.setting.tx_gain_db,
            digital_scale=m.setting.digital_scale, phase_rad=m.setting.phase_rad,
            timing_advance_samples=m.setting.timing_advance_samples, level_db=m.level_db,
            snr_db=float(m.estimate.snr_db)) for m in last]
        meta: dict[str, object] = {
            "target_level_db": tgt, "spread_before_db": lv0, "spread_after_db": lv,
            "phase_spread_deg": ph, "timing_spread_samples": dl, "passes": iters, "converged": ok,
            "tol_db": tol, "levels_before_db": [m.level_db for m in first],
            "config": config_to_dict(cfg)}
        out = Path(args.output) if getattr(args, "output", None) else run_dir / "calibration.yaml"
        write_calibration_file(out, CalibrationFile(utc_now(), git_revision(), cfg.radio.mode,
                                                    tuple(entries), meta))
        table, bad = _table(last, tgt, tol, phase_tol, 0.25)
        if phase_tol is None:
            table += ("\n(phases not judged: with channel.max_cfo > 0 they turn between frames; "
                      "the round pilots re-measure them every frame)")
        _plot(last, tgt, tol, run_dir / "calibration.png", f"calibration {out}")
        print(f"calibration: {cfg.nodes.count} nodes, {iters} correction pass(es): level spread "
              f"{lv0:.2f} dB -> {lv:.2f} dB, phase spread {ph:.1f} deg, timing spread {dl:.3f} "
              f"samples (target {tgt:.2f} dB)\n{table}\nwritten to {out}", flush=True)
        if not ok:
            print(f"calibrate: not within tolerance after {iters} pass(es) (--max-iter); node(s) "
                  f"{bad or 'all'} off; the file holds the last pass", flush=True)
            return 1
        return 0
    finally:
        if bed is not None:
            bed.stop()
        if phy is not None:
            phy.close()
        if transport is not None:
            transport.close()
