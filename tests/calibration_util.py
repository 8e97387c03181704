"""``pairzero calibrate``'s one path (calibration.session) run in one process, for tests.

The AP side (:class:`~calibration.session.ControlPlaneCalibrator` on the AP's round protocol) and
K edge-node loops (:class:`~edge_node.runtime.EdgeNode` on the node round protocols, each in a
thread) talk over the in-process transport; the samples go through the channel emulator
flowgraph, started here. Everything but the processes is what ``pairzero calibrate`` runs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from calibration.session import ControlPlaneCalibrator, Measurement, calibration_file
from edge_node.runtime import EdgeNode
from pairzero.config import ExperimentConfig
from pairzero.phy.calibration_file import write_calibration_file
from pairzero.phy.mode import phy_mode
from pairzero.protocol.testing import QuadraticTrainer
from pairzero.protocol.transport import InProcHub

EXPERIMENT = "calibration-in-process"


@dataclass(frozen=True)
class Calibrated:
    """The passes of one calibration: the first (as the nodes started), the last, the target
    amplitude, the corrections made, whether they converged; and the file written."""

    first: list[Measurement]
    last: list[Measurement]
    target: float
    passes: int
    converged: bool
    path: Path


def calibrate_in_process(cfg: ExperimentConfig, out: Path, *, max_iter: int = 4,
                         tol_db: float = 0.5, gain_step_db: float = 1.0) -> Calibrated:
    """Calibrate ``cfg``'s nodes (loopback or emulated USRPs) and write the file to ``out``."""
    from radio.emulator import ChannelEmulator
    from radio.factory import build_ap_round_phy, build_node_round_phy

    mode = phy_mode(cfg)
    emu = ChannelEmulator.for_experiment(cfg)
    emu.start()
    hub = InProcHub()
    hb = cfg.network.heartbeat_s
    ap = build_ap_round_phy(cfg)
    phys = [build_node_round_phy(cfg, k) for k in range(cfg.nodes.count)]
    nodes = [EdgeNode(k, EXPERIMENT, hub.client(f"n{k}"), QuadraticTrainer(k), phys[k], heartbeat_s=hb)
             for k in range(cfg.nodes.count)]
    threads = [threading.Thread(target=n.run, name=f"edge{n.node_id}", daemon=True) for n in nodes]
    try:
        for th in threads:
            th.start()
        cal = ControlPlaneCalibrator(cfg, hub.server(), ap, EXPERIMENT)
        cal.wait_for_nodes(30.0)
        phase_tol = 5.0 if mode.radios or cfg.channel.max_cfo == 0.0 else 360.0
        first, last, target, passes, ok = cal.run(tol_db, max_iter, None, mode.tx_gain_range_db,
                                                  gain_step_db, phase_tol_deg=phase_tol)
        path = write_calibration_file(out, calibration_file(cfg, first, last, target, passes, ok,
                                                            tol_db, "test"))
        return Calibrated(first, last, target, passes, ok, path)
    finally:
        for n in nodes:
            n.stop()
        for th in threads:
            th.join(timeout=10.0)
        for p in [ap, *phys]:
            p.close()
        emu.stop()
        emu.wait()
