"""Radio front ends and the channel emulator: where samples meet hardware (or its emulation).

* :mod:`radio.loopback` -- the loopback front end (ZeroMQ to the channel emulator);
* :mod:`radio.usrp` -- the USRP front end (gr-uhd), device-time alignment at a PPS edge;
* :mod:`radio.emulated` -- stand-ins for gr-uhd's blocks: the emulated USRP (``type=emulated``);
* :mod:`radio.emulator` -- the channel emulator flowgraph; :mod:`radio.blocks` its blocks and
  the front ends' (the ``.grc`` files in ``grc_flowgraphs/`` use the same blocks);
* :mod:`radio.channel_cli` -- ``pairzero channel``, the emulator as a process.

The round protocol on top (:mod:`pairzero.phy.round`) sees only the front-end interface
(:mod:`pairzero.phy.frontend`); :func:`ap_phy` and :func:`node_phy` build it for a config.
"""

from __future__ import annotations

import logging
from typing import Any

from pairzero.config import ExperimentConfig
from pairzero.phy.calibration import NodeCalibration, load_ap_calibration, load_node_calibration
from pairzero.phy.frontend import RadioFrontEnd
from pairzero.phy.schedule import sample_addresses

log = logging.getLogger(__name__)

__all__ = ["ap_frontend", "node_frontend", "ap_phy", "node_phy", "node_device_args"]


def node_device_args(cfg: ExperimentConfig, node: int) -> str:
    """Device args of node ``node``'s radio (``radio.node_args``; emulated runs may omit them)."""
    r = cfg.radio
    if r.node_args:
        return r.node_args[node]
    return "type=emulated" if r.emulated() else ""


def _uhd_api(cfg: ExperimentConfig, tx_address: str | None = None, rx_address: str | None = None) -> Any:
    if cfg.radio.emulated():
        from radio.emulated import EmulatedUhd

        # The emulator's channel gains hold at radio.tx_gain_db (see pairzero.phy.calibration).
        return EmulatedUhd(tx_address, rx_address, cfg.radio.emulated_rate_factor,
                           reference_tx_gain_db=cfg.radio.tx_gain_db)
    return None  # gnuradio.uhd


def ap_frontend(cfg: ExperimentConfig) -> RadioFrontEnd:
    """The AP's receiver for ``radio.mode`` (loopback emulator stream, USRP or emulated USRP)."""
    if cfg.radio.mode == "loopback":
        from radio.loopback import LoopbackFrontEnd

        return LoopbackFrontEnd.for_ap(cfg)
    if cfg.radio.mode != "usrp":
        raise ValueError(f"radio.mode: {cfg.radio.mode!r} has no radio front end")
    from radio.usrp import UsrpFrontEnd

    r = cfg.radio
    return UsrpFrontEnd("rx", r.ap_args, cfg.phy.sample_rate, r.center_freq_hz, r.rx_gain_db,
                        r.clock_source, uhd_api=_uhd_api(cfg, rx_address=sample_addresses(cfg)[1]),
                        antenna=r.rx_antenna, args_key="radio.ap_args")


def node_frontend(cfg: ExperimentConfig, node: int,
                  calibration: NodeCalibration | None = None) -> RadioFrontEnd:
    """Node ``node``'s transmitter for ``radio.mode``, its analog TX gain the calibration's
    (``radio.tx_gain_db`` without one)."""
    gain = cfg.radio.tx_gain_db if calibration is None else calibration.tx_gain_db
    if cfg.radio.mode == "loopback":
        from radio.loopback import LoopbackFrontEnd

        return LoopbackFrontEnd.for_node(cfg, node, tx_gain_db=gain)
    if cfg.radio.mode != "usrp":
        raise ValueError(f"radio.mode: {cfg.radio.mode!r} has no radio front end")
    from radio.usrp import UsrpFrontEnd

    r = cfg.radio
    key = None if calibration is None else f"radio.calibration_file node {node} tx_gain_db"
    return UsrpFrontEnd("tx", node_device_args(cfg, node), cfg.phy.sample_rate, r.center_freq_hz,
                        gain, r.clock_source, gain_key=key,
                        uhd_api=_uhd_api(cfg, tx_address=sample_addresses(cfg)[0][node]),
                        antenna=r.tx_antenna, args_key=f"radio.node_args[{node}]")


def ap_phy(cfg: ExperimentConfig, frontend: RadioFrontEnd | None = None) -> Any:
    """The AP's round protocol (:class:`pairzero.phy.round.ApRoundPhy`) on its front end."""
    from pairzero.phy.round import ApRoundPhy

    load_ap_calibration(cfg)  # refuses a file made for another frequency, rate or radio
    fe = frontend if frontend is not None else ap_frontend(cfg)
    if cfg.radio.mode == "usrp":
        # Radios share 10 MHz + PPS: precode after one pilot frame; frames at now + lead.
        return ApRoundPhy(cfg, fe, shared_reference=True, realtime=True, tx_lead_s=cfg.radio.tx_lead_s,
                          capture_slack_s=cfg.radio.capture_slack_s / cfg.radio.emulated_rate_factor
                          if cfg.radio.emulated() else cfg.radio.capture_slack_s)
    # The lockstep emulator waits up to ready_timeout_s for a silent node before it zero-fills it.
    return ApRoundPhy(cfg, fe, shared_reference=False, realtime=False,
                      capture_slack_s=cfg.network.ready_timeout_s + 10.0)


def node_phy(cfg: ExperimentConfig, node: int, frontend: RadioFrontEnd | None = None) -> Any:
    """Node ``node``'s round protocol (:class:`pairzero.phy.round.NodeRoundPhy`), with its entry
    of ``radio.calibration_file`` applied (analog gain on the front end, digital scale, phase
    and timing advance on every burst)."""
    from pairzero.phy.round import NodeRoundPhy

    cal = load_node_calibration(cfg, node)
    fe = frontend if frontend is not None else node_frontend(cfg, node, cal)
    slack = cfg.radio.capture_slack_s if cfg.radio.mode == "usrp" else 1.0
    if cfg.radio.emulated():
        slack /= cfg.radio.emulated_rate_factor
    return NodeRoundPhy(cfg, node, fe, send_slack_s=slack, calibration=cal)
