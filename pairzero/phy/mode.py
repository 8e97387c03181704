"""Which PHY a run uses: decided once, from ``radio.mode`` and the radios' device args.

Four modes, one table (the rest of the code holds a :class:`PhyMode` and asks it what it needs,
never ``radio.mode == ...``)::

    mode       samples over the air   channel emulator   radio front end       hosts
    baseband   none: scalars in READY  -                  -                     one or many
    loopback   through the emulator    pairzero channel   ZeroMQ (lockstep)     one
    emulated   through the emulator    pairzero channel   USRP code, emulated   one
    usrp       through the air         -                  USRP (gr-uhd)         one per radio

``emulated`` is ``radio.mode: usrp`` with every device ``type=emulated``: the USRP front end's
own code against stand-ins for gr-uhd's blocks whose clocks run at the sample rate (times
``radio.emulated_rate_factor``) and whose samples go through the channel emulator.

Objects are built for a mode in one place, :mod:`radio.factory`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pairzero.config import ExperimentConfig

__all__ = [
    "PhyMode", "PhyModeName", "phy_mode", "node_device_args", "LOOPBACK_GAIN_RANGE_DB",
    "UHD_GAIN_RANGE_DB",
]

PhyModeName = Literal["baseband", "loopback", "emulated", "usrp"]

#: Analog TX gain range of the loopback radio (dB; that of ``radio.tx_gain_db``), any step.
LOOPBACK_GAIN_RANGE_DB = (0.0, 90.0)
#: The widest TX gain range a calibration may ask of a UHD radio (dB); each radio checks its
#: own daughterboard's range and reports the gain it set.
UHD_GAIN_RANGE_DB = (0.0, 90.0)

_DESCRIPTION: dict[PhyModeName, str] = {
    "baseband": "baseband OTA (scalars in READY, simulated channel at the AP)",
    "loopback": "GNU Radio channel emulator",
    "emulated": "emulated USRPs + GNU Radio channel emulator",
    "usrp": "USRPs",
}


@dataclass(frozen=True)
class PhyMode:
    """What a run's PHY is and needs (see the module docstring).

    ``rate_factor``: the radios' clocks run at this fraction of real time (emulated USRPs on a
    loaded machine; 1 otherwise). ``local_air``: emulated radios whose channel emulator runs on
    this machine (False: ``emulator=HOST`` in their device args names another host, as on the
    rehearsal's hosts: the radios are then treated as a lab's, one host each).
    """

    name: PhyModeName
    rate_factor: float = 1.0
    local_air: bool = True

    @property
    def over_the_air(self) -> bool:
        """Frames carry the scalars (SCHEDULE, pilots, calibration); False: they travel in READY."""
        return self.name != "baseband"

    @property
    def needs_emulator(self) -> bool:
        """The samples go through the channel emulator (``pairzero channel``) on this machine."""
        return self.name in ("loopback", "emulated")

    @property
    def radios(self) -> bool:
        """UHD radios (real or emulated): one shared 10 MHz + PPS reference (no carrier offset to
        refine), device clocks that run in real time (frames at now + a measured lead)."""
        return self.name in ("emulated", "usrp")

    @property
    def single_host(self) -> bool:
        """The whole testbed can run on this machine (``pairzero loopback``; ``pairzero
        calibrate`` starts its nodes itself)."""
        return self.name in ("baseband", "loopback") or (self.name == "emulated" and self.local_air)

    @property
    def tx_gain_range_db(self) -> tuple[float, float]:
        """The analog TX gains a calibration may set (dB)."""
        return LOOPBACK_GAIN_RANGE_DB if self.name == "loopback" else UHD_GAIN_RANGE_DB

    def describe(self) -> str:
        """A few words for progress lines."""
        return _DESCRIPTION[self.name]

    def host_seconds(self, device_s: float) -> float:
        """Seconds of the radios' clocks converted to host seconds."""
        return device_s / self.rate_factor


def phy_mode(cfg: ExperimentConfig) -> PhyMode:
    """The run's :class:`PhyMode` (the one place ``radio.mode`` is read outside config checks)."""
    mode = cfg.radio.mode
    if mode == "usrp" and cfg.radio.emulated():
        return PhyMode("emulated", rate_factor=cfg.radio.emulated_rate_factor,
                       local_air=cfg.radio.emulator_is_local())
    if mode in ("baseband", "loopback", "usrp"):
        return PhyMode(mode)
    raise ValueError(f"radio.mode: {mode!r} is invalid; allowed: 'baseband', 'loopback', 'usrp'")


def node_device_args(cfg: ExperimentConfig, node: int) -> str:
    """Device args of node ``node``'s radio (``radio.node_args``; emulated runs may omit them:
    ``type=emulated``; "" where the mode has no UHD radio)."""
    r = cfg.radio
    if r.node_args:
        return r.node_args[node]
    return "type=emulated" if phy_mode(cfg).name == "emulated" else ""
