"""The one place a run's PHY is built: baseband, loopback, emulated USRP or USRP.

The mode is decided once (:func:`pairzero.phy.mode.phy_mode`); everything above holds the object
built here and never asks ``radio.mode``::

    build_ap_phy(cfg)        # the AP's planner + receive chain (ApPhyPlanner)
    build_node_phy(cfg, k)   # node k's transmit chain (NodePhy)

Baseband builds the digital path (:mod:`pairzero.phy.baseband`: the scalars travel in READY and
the AP applies the simulated channel); the radio modes build the round protocol
(:mod:`pairzero.phy.round`) on the mode's front end: the loopback front end (ZeroMQ to the
channel emulator), or the USRP front end on gr-uhd or on its emulated stand-ins (``type=emulated``).
Nothing is imported from GNU Radio until a radio mode asks for it.
"""

from __future__ import annotations

import logging
from typing import Any

from pairzero.config import ConfigError, ExperimentConfig
from pairzero.phy.calibration_file import (
    NodeCalibration,
    load_ap_calibration,
    load_node_calibration,
)
from pairzero.phy.frontend import RadioFrontEnd
from pairzero.phy.mode import PhyMode, node_device_args, phy_mode
from pairzero.phy.round import ApRoundPhy, NodeRoundPhy
from pairzero.phy.schedule import sample_addresses
from pairzero.protocol.interfaces import ApPhyPlanner, NodePhy

__all__ = [
    "build_ap_phy",
    "build_node_phy",
    "build_ap_round_phy",
    "build_node_round_phy",
    "build_ap_frontend",
    "build_node_frontend",
    "node_device_args",
]

log = logging.getLogger(__name__)

#: How long a loopback node waits for its burst to be taken (s).
LOOPBACK_SEND_SLACK_S = 1.0
#: How long after a window is due the loopback AP gives up on it, beyond the READY deadline
#: (the lockstep emulator waits up to ``network.ready_timeout_s`` for a silent node, then
#: zero-fills it).
LOOPBACK_CAPTURE_MARGIN_S = 10.0


def build_ap_phy(cfg: ExperimentConfig) -> ApPhyPlanner:
    """The AP's planner and receive chain for the run's mode (one object: the plan and the
    receive of a round must see the same channel)."""
    if not phy_mode(cfg).over_the_air:
        from pairzero.phy.baseband import BasebandApPhy

        return BasebandApPhy(cfg)
    return build_ap_round_phy(cfg)


def build_node_phy(cfg: ExperimentConfig, node: int) -> NodePhy:
    """Node ``node``'s transmit chain for the run's mode."""
    if not phy_mode(cfg).over_the_air:
        from pairzero.phy.baseband import BasebandNodePhy

        return BasebandNodePhy()
    return build_node_round_phy(cfg, node)


def _radio_mode(cfg: ExperimentConfig, what: str) -> PhyMode:
    mode = phy_mode(cfg)
    if not mode.over_the_air:
        raise ConfigError(f"radio.mode: 'baseband' has no radio ({what}); use 'loopback' or 'usrp'")
    return mode


def _uhd_api(cfg: ExperimentConfig, mode: PhyMode, tx_address: str | None = None,
             rx_address: str | None = None) -> Any:
    """gr-uhd's stand-ins for emulated radios, or None: gr-uhd itself."""
    if mode.name != "emulated":
        return None
    from radio.emulated import EmulatedUhd

    # The emulator's channel gains hold at radio.tx_gain_db (see pairzero.phy.calibration_file).
    return EmulatedUhd(tx_address, rx_address, mode.rate_factor,
                       reference_tx_gain_db=cfg.radio.tx_gain_db)


def build_ap_frontend(cfg: ExperimentConfig) -> RadioFrontEnd:
    """The AP's receiver: the loopback emulator's AP stream, a USRP or an emulated USRP."""
    mode = _radio_mode(cfg, "the AP's receiver")
    if not mode.radios:
        from radio.loopback import LoopbackFrontEnd

        return LoopbackFrontEnd.for_ap(cfg)
    from radio.usrp import UsrpFrontEnd

    r = cfg.radio
    return UsrpFrontEnd("rx", r.ap_args, cfg.phy.sample_rate, r.center_freq_hz, r.rx_gain_db,
                        r.clock_source, uhd_api=_uhd_api(cfg, mode, rx_address=sample_addresses(cfg)[1]),
                        antenna=r.rx_antenna, args_key="radio.ap_args")


def build_node_frontend(cfg: ExperimentConfig, node: int,
                        calibration: NodeCalibration | None = None) -> RadioFrontEnd:
    """Node ``node``'s transmitter, its analog TX gain the calibration's (``radio.tx_gain_db``
    without one)."""
    mode = _radio_mode(cfg, f"node {node}'s transmitter")
    gain = cfg.radio.tx_gain_db if calibration is None else calibration.tx_gain_db
    if not mode.radios:
        from radio.loopback import LoopbackFrontEnd

        return LoopbackFrontEnd.for_node(cfg, node, tx_gain_db=gain)
    from radio.usrp import UsrpFrontEnd

    r = cfg.radio
    key = None if calibration is None else f"radio.calibration_file node {node} tx_gain_db"
    return UsrpFrontEnd("tx", node_device_args(cfg, node), cfg.phy.sample_rate, r.center_freq_hz,
                        gain, r.clock_source, gain_key=key,
                        uhd_api=_uhd_api(cfg, mode, tx_address=sample_addresses(cfg)[0][node]),
                        antenna=r.tx_antenna, args_key=f"radio.node_args[{node}]")


def build_ap_round_phy(cfg: ExperimentConfig, frontend: RadioFrontEnd | None = None) -> ApRoundPhy:
    """The AP's round protocol (:class:`pairzero.phy.round.ApRoundPhy`) on its front end
    (``frontend``: one already open; default: the mode's)."""
    mode = _radio_mode(cfg, "the AP's round protocol")
    load_ap_calibration(cfg)  # refuses a file made for another frequency, rate or radio
    fe = frontend if frontend is not None else build_ap_frontend(cfg)
    if mode.radios:
        # Radios share 10 MHz + PPS: precode after one pilot frame; frames at now + lead.
        return ApRoundPhy(cfg, fe, shared_reference=True, realtime=True, tx_lead_s=cfg.radio.tx_lead_s,
                          capture_slack_s=mode.host_seconds(cfg.radio.capture_slack_s))
    return ApRoundPhy(cfg, fe, shared_reference=False, realtime=False,
                      capture_slack_s=cfg.network.ready_timeout_s + LOOPBACK_CAPTURE_MARGIN_S)


def build_node_round_phy(cfg: ExperimentConfig, node: int,
                         frontend: RadioFrontEnd | None = None) -> NodeRoundPhy:
    """Node ``node``'s round protocol (:class:`pairzero.phy.round.NodeRoundPhy`), with its entry
    of ``radio.calibration_file`` applied (analog gain on the front end, digital scale, phase
    and timing advance on every burst)."""
    mode = _radio_mode(cfg, f"node {node}'s round protocol")
    cal = load_node_calibration(cfg, node)
    fe = frontend if frontend is not None else build_node_frontend(cfg, node, cal)
    slack = cfg.radio.capture_slack_s if mode.radios else LOOPBACK_SEND_SLACK_S
    return NodeRoundPhy(cfg, node, fe, send_slack_s=mode.host_seconds(slack), calibration=cal)
