"""``pairzero calibrate``: power, phase and timing alignment over the control plane.

    pairzero calibrate --config configs/loopback.yaml --output runs/cal.yaml [--set key=value ...]
    pairzero calibrate --config configs/loopback.yaml --verify --set radio.calibration_file=runs/cal.yaml

:func:`cmd_calibrate` is the AP of the running ``pairzero edge`` processes
(:mod:`calibration.session`, the one calibration path); in loopback and on emulated USRPs it
starts them and the channel emulator itself (:func:`pairzero.launch.launch_testbed`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from calibration.session import ControlPlaneCalibrator, Measurement, calibration_file, spreads
from pairzero.config import ExperimentConfig, load_config
from pairzero.phy.calibration_file import (
    CalibrationFile,
    load_ap_calibration,
    write_calibration_file,
)
from pairzero.phy.mode import PhyMode, phy_mode
from pairzero.runinfo import git_revision

__all__ = ["cmd_calibrate"]

log = logging.getLogger(__name__)

#: Delay tolerance of the table (samples).
TIMING_TOL = 0.25
#: Phase tolerance (deg) where phases hold from frame to frame.
PHASE_TOL_DEG = 5.0


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


@dataclasses.dataclass(frozen=True)
class _Options:
    """The command's arguments, checked."""

    verify: bool
    tol: float
    max_iter: int
    step: float
    target_db: float | None
    output: str | None
    out: str | None
    log_level: str

    @classmethod
    def of(cls, args: argparse.Namespace) -> _Options:
        o = cls(verify=bool(getattr(args, "verify", False)), tol=float(getattr(args, "tol", 0.5)),
                max_iter=int(getattr(args, "max_iter", 4)), step=float(getattr(args, "gain_step", 1.0)),
                target_db=getattr(args, "target_db", None), output=getattr(args, "output", None),
                out=getattr(args, "out", None), log_level=getattr(args, "log_level", "INFO"))
        if not (math.isfinite(o.tol) and o.tol > 0):
            raise ValueError(f"--tol: {o.tol!r} must be > 0 (dB)")
        if not 0 <= o.max_iter <= 50:
            raise ValueError(f"--max-iter: {o.max_iter!r} must be in 0..50")
        if not (math.isfinite(o.step) and o.step > 0):
            raise ValueError(f"--gain-step: {o.step!r} must be > 0 (dB)")
        return o


def _prepare(cfg: ExperimentConfig, o: _Options, mode: PhyMode) -> tuple[ExperimentConfig, Path]:
    """The config the session runs (the nodes uncalibrated unless verifying; one thread per
    process on this machine) and its run directory (with keys of its own on this machine)."""
    from pairzero.launch import ports_in_use
    from pairzero.protocol.keys import generate_keys
    from pairzero.runinfo import make_run_dir, write_provenance

    if o.verify:
        if cfg.radio.calibration_file is None:
            raise ValueError("--verify measures with radio.calibration_file applied: set it "
                             "(--set radio.calibration_file=FILE)")
    else:  # the nodes start uncalibrated, at radio.tx_gain_db
        cfg = dataclasses.replace(cfg, radio=dataclasses.replace(cfg.radio, calibration_file=None))
    if mode.single_host:
        if cfg.network.ap_host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"network.ap_host: {cfg.network.ap_host!r}; a local calibration runs "
                             "on 127.0.0.1")
        busy = ports_in_use(cfg)
        if busy:
            raise OSError(f"ports {busy} on {cfg.network.ap_host} are in use (another run?); pick "
                          "others with --set network.control_port=... --set network.sample_port_base=...")
        cfg = dataclasses.replace(cfg, zo=dataclasses.replace(cfg.zo, threads=1))
    run_dir = make_run_dir(cfg, "verify" if o.verify else "calibrate", o.out)
    if mode.single_host and cfg.network.curve:
        generate_keys(run_dir / "keys", cfg.nodes.count)
        cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network,
                                                                   keys_dir=str(run_dir / "keys")))
        write_provenance(cfg, run_dir)
    return cfg, run_dir


def _verify(cfg: ExperimentConfig, cal: ControlPlaneCalibrator, o: _Options, run_dir: Path,
            cal_file: CalibrationFile | None, phase_tol: float | None) -> int:
    """``--verify``: one pass as the nodes run, the table against the file's target."""
    ms = cal.measure(0, None)
    meta_t = cal_file.meta.get("target_level_db") if cal_file is not None else None
    tgt = float(meta_t) if isinstance(meta_t, int | float) else float(np.median([m.level_db for m in ms]))
    table, bad = _table(ms, tgt, o.tol, phase_tol, TIMING_TOL)
    if phase_tol is None:
        table += "\n(phases not judged: channel.max_cfo > 0 turns them between frames)"
    png = run_dir / "calibration_verify.png"
    _plot(ms, tgt, o.tol, png, f"verify {cfg.radio.calibration_file}")
    print(f"calibration verify ({cfg.radio.calibration_file}, target {tgt:.2f} dB):\n{table}\n"
          f"plot: {png}", flush=True)
    if bad:
        print(f"calibrate --verify: node(s) {bad} out of tolerance (level +-{o.tol:g} dB"
              + (f", phase +-{PHASE_TOL_DEG:g} deg" if phase_tol is not None else "")
              + f", delay +-{TIMING_TOL:g} sample); re-run `pairzero calibrate`", flush=True)
        return 1
    return 0


def _calibrate(cfg: ExperimentConfig, cal: ControlPlaneCalibrator, o: _Options, run_dir: Path,
               mode: PhyMode, phase_tol: float | None) -> int:
    """Passes until within tolerance; the file of the last pass, its table and plot."""
    target = None if o.target_db is None else 10 ** (float(o.target_db) / 20)
    first, last, target, iters, ok = cal.run(o.tol, o.max_iter, target, mode.tx_gain_range_db, o.step,
                                             phase_tol_deg=phase_tol if phase_tol else 360.0)
    tgt = 20 * math.log10(target)
    lv0, _, _ = spreads(first)
    lv, ph, dl = spreads(last)
    out = Path(o.output) if o.output else run_dir / "calibration.yaml"
    write_calibration_file(out, calibration_file(cfg, first, last, target, iters, ok, o.tol,
                                                 git_revision()))
    table, bad = _table(last, tgt, o.tol, phase_tol, TIMING_TOL)
    if phase_tol is None:
        table += ("\n(phases not judged: with channel.max_cfo > 0 they turn between frames; "
                  "the round pilots re-measure them every frame)")
    _plot(last, tgt, o.tol, run_dir / "calibration.png", f"calibration {out}")
    print(f"calibration: {cfg.nodes.count} nodes, {iters} correction pass(es): level spread "
          f"{lv0:.2f} dB -> {lv:.2f} dB, phase spread {ph:.1f} deg, timing spread {dl:.3f} "
          f"samples (target {tgt:.2f} dB)\n{table}\nwritten to {out}", flush=True)
    if not ok:
        print(f"calibrate: not within tolerance after {iters} pass(es) (--max-iter); node(s) "
              f"{bad or 'all'} off; the file holds the last pass", flush=True)
        return 1
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``pairzero calibrate``: over the control plane with the edge processes.

    In loopback and on emulated USRPs it starts the channel emulator and the K ``pairzero edge``
    processes itself (as ``pairzero loopback`` does) and acts as their AP; on USRPs it is the AP
    of the running ``pairzero edge`` processes. Writes ``--output`` (or, with ``--verify``,
    measures with ``radio.calibration_file`` applied). Returns 0, or 1 when the nodes did not
    converge / are out of tolerance (the nodes named)."""
    from pairzero.launch import Testbed, launch_testbed
    from pairzero.protocol.keys import load_server_keys
    from pairzero.protocol.transport import ZmqServer
    from pairzero.runinfo import experiment_id
    from radio.factory import build_ap_round_phy

    cfg = load_config(args.config, list(getattr(args, "overrides", None) or []))
    o = _Options.of(args)
    mode = phy_mode(cfg)
    if not mode.over_the_air:
        raise ValueError("radio.mode: 'baseband' has no radio to calibrate; use 'loopback' or 'usrp'")
    cal_file = load_ap_calibration(cfg) if o.verify and cfg.radio.calibration_file else None
    cfg, run_dir = _prepare(cfg, o, mode)
    curve, key_ids = load_server_keys(cfg.network.keys_dir) if cfg.network.curve else (None, None)
    bed: Testbed | None = None
    transport = phy = None
    try:
        endpoint = f"tcp://{cfg.network.ap_host}:{cfg.network.control_port}"
        transport = ZmqServer(endpoint, curve=curve, heartbeat_s=cfg.network.heartbeat_s)
        if mode.single_host:  # this command is the AP of the edge processes it starts
            bed = launch_testbed(cfg, run_dir, ap=False, log_level=o.log_level, grace_s=10.0)
        phy = build_ap_round_phy(cfg)
        cal = ControlPlaneCalibrator(cfg, transport, phy, experiment_id(cfg), key_ids)
        cal.wait_for_nodes(cfg.network.start_timeout_s)
        # Phases hold from frame to frame only without carrier offsets (a shared reference).
        phase_tol = PHASE_TOL_DEG if mode.radios or cfg.channel.max_cfo == 0.0 else None
        if o.verify:
            return _verify(cfg, cal, o, run_dir, cal_file, phase_tol)
        return _calibrate(cfg, cal, o, run_dir, mode, phase_tol)
    finally:
        if bed is not None:
            bed.stop()
        if phy is not None:
            phy.close()
        if transport is not None:
            transport.close()
