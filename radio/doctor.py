"""``pairzero doctor``: first contact with this host's radio, before any run.

    pairzero doctor --config configs/radio.yaml --ap          # on the AP host
    pairzero doctor --config configs/radio.yaml --node-id 2   # on node 2's host
    pairzero doctor --config configs/emulated_usrp.yaml       # every radio of the config

Checks, for the radio (or radios) of the config this host runs:

1. the UHD images a B2xx loads at every power-up (firmware and FPGA) are in ``UHD_IMAGES_DIR``
   (or UHD's default, :data:`DEFAULT_IMAGES_DIR`); the line says how to fetch them
   (``uhd_images_downloader``, which needs the internet). An X3xx boots from its own flash;
   ``uhd_image_loader`` updates it;
2. the device its args name is attached (``uhd_find_devices`` in a subprocess: pyuhd never
   enters a process that imports gr-uhd), with its serial;
3. opened as the run opens it (:func:`radio.usrp.configure_radio`): clock and time source,
   the rate the device really makes, the carrier within its range, the gain within the
   daughterboard's, the antenna port among its ports, ``ref_locked`` and ``lo_locked``, and a
   PPS edge on the time input (external reference or GPSDO).

Every problem is one line naming the config key (on stderr), and the exit status is 1; with
none it prints what it found and exits 0. Emulated radios (``type=emulated``) need neither
images nor discovery; their faults come from their device args (``no_gpsdo=1``,
``unlocked_ref=1``, ``tune_error=1``, ``no_pps=1``...), so every check runs here too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairzero.config import ExperimentConfig, load_config
from pairzero.errors import EXIT_FAILED, EXIT_OK
from pairzero.phy.frontend import RadioError

__all__ = ["DEFAULT_IMAGES_DIR", "B2XX_IMAGES", "DoctorRadio", "run_doctor", "cmd_doctor"]

log = logging.getLogger(__name__)

#: Where UHD (and ``uhd_images_downloader``) keep the images on Debian, unless UHD_IMAGES_DIR
#: says otherwise.
DEFAULT_IMAGES_DIR = "/usr/share/uhd/images"
#: The images a B2xx loads at every power-up, by product (``uhd_find_devices`` says which).
B2XX_IMAGES = {
    "B200": ("usrp_b200_fw.hex", "usrp_b200_fpga.bin"),
    "B210": ("usrp_b200_fw.hex", "usrp_b210_fpga.bin"),
    "B200mini": ("usrp_b200_fw.hex", "usrp_b200mini_fpga.bin"),
    "B205mini": ("usrp_b200_fw.hex", "usrp_b205mini_fpga.bin"),
}
#: Lock sensors get this long (s) to read true.
LOCK_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class DoctorRadio:
    """One radio of the config: who runs it, the key of its device args, the args, TX or RX."""

    role: str
    args_key: str
    dev_args: str
    direction: str

    @property
    def emulated(self) -> bool:
        return _args(self.dev_args).get("type") == "emulated"


def _args(dev_args: str) -> dict[str, str]:
    from radio.usrp import parse_device_args

    try:
        return parse_device_args(dev_args)
    except ValueError:
        return {}


def radios_of(cfg: ExperimentConfig, ap: bool = False, node: int | None = None) -> list[DoctorRadio]:
    """The radios to check: the AP's (``ap``), node ``node``'s, or (neither) every radio."""
    from pairzero.phy.mode import node_device_args

    r = cfg.radio
    if node is not None and not 0 <= node < cfg.nodes.count:
        raise ValueError(f"--node-id: {node} is not a node of this config (0..{cfg.nodes.count - 1})")
    out = []
    if ap or node is None:
        out.append(DoctorRadio("AP", "radio.ap_args", r.ap_args, "rx"))
    nodes = range(cfg.nodes.count) if (node is None and not ap) else ([] if node is None else [node])
    for k in nodes:
        out.append(DoctorRadio(f"node {k}", f"radio.node_args[{k}]", node_device_args(cfg, k), "tx"))
    return out


def _images_dir() -> Path:
    return Path(os.environ.get("UHD_IMAGES_DIR") or DEFAULT_IMAGES_DIR)


def check_images(radios: list[DoctorRadio], found: dict[str, dict[str, str]],
                 images_dir: Path) -> list[str]:
    """One line if images a B2xx of ``radios`` loads at power-up are missing (``found``: the
    discovered device of each radio's args key, which says the product)."""
    missing: list[str] = []
    for radio in radios:
        if radio.emulated or _args(radio.dev_args).get("type") not in ("b200", None):
            continue
        product = found.get(radio.args_key, {}).get("product")
        if product in B2XX_IMAGES:
            need = [B2XX_IMAGES[product]]
        elif _args(radio.dev_args).get("type") == "b200":  # B200 or B210: either FPGA image
            need = [B2XX_IMAGES["B200"], B2XX_IMAGES["B210"]]
        else:
            continue
        have = {f for files in need for f in files if (images_dir / f).is_file()}
        if not any(set(files) <= have for files in need):
            for f in need[-1]:
                if f not in have and f not in missing:
                    missing.append(f)
    if not missing:
        return []
    return [f"UHD images: {images_dir} has no {', '.join(missing)} (a B2xx loads its firmware and "
            "FPGA image from there at every power-up): fetch them once with "
            "`uhd_images_downloader -t b2xx` (needs the internet; `scripts/setup.sh --radios` runs "
            "it), or set UHD_IMAGES_DIR to a directory that has them"]


def _matches(dev_args: str, device: dict[str, str]) -> bool:
    want = {k: v for k, v in _args(dev_args).items() if k in ("serial", "addr", "name", "type", "product")}
    return all(device.get(k, "").lower() == v.lower() for k, v in want.items())


def _describe(device: dict[str, str]) -> str:
    parts = [device.get("product") or device.get("type", "?")]
    parts += [f"{k} {device[k]}" for k in ("serial", "name", "addr") if device.get(k)]
    return " ".join(parts)


def probe(radio: DoctorRadio, cfg: ExperimentConfig, uhd_api: Any) -> tuple[list[str], str]:
    """Open the radio as the run would and check it; (problems, what was found)."""
    from radio.usrp import (
        RadioSettings,
        StartupChecks,
        configure_radio,
        open_radio,
        read_locks,
        wait_for_pps_edge,
    )

    r = cfg.radio
    rx = radio.direction == "rx"
    s = RadioSettings(radio.direction, radio.dev_args, cfg.phy.sample_rate, r.center_freq_hz,
                      r.rx_gain_db if rx else r.tx_gain_db, r.clock_source,
                      r.rx_antenna if rx else r.tx_antenna, radio.args_key)
    try:
        u = open_radio(uhd_api, s)
    except RadioError as e:
        return [str(e)], ""
    checks = StartupChecks(s.what, collect=True)
    sleep: Callable[[float], None] = getattr(uhd_api, "host_sleep", time.sleep)
    clock: Callable[[], float] = getattr(uhd_api, "host_clock", time.time)
    configure_radio(u, s, checks, LOCK_TIMEOUT_S, sleep)
    if r.clock_source != "internal" and not checks.failed("radio.clock_source"):
        try:
            wait_for_pps_edge(u, clock, sleep)
        except RadioError as e:
            checks.fail(f"radio.clock_source = {r.clock_source!r}: {e}", "radio.clock_source")
    info = []
    try:
        info.append(f"{float(u.get_samp_rate()) / 1e6:g} MS/s (master clock "
                    f"{float(u.get_clock_rate()) / 1e6:g} MHz)")
        info.append(f"{float(u.get_center_freq(0)) / 1e6:g} MHz")
        rng = u.get_gain_range(0)
        info.append(f"gain {float(u.get_gain(0)):g} dB ({float(rng.start()):g}..{float(rng.stop()):g})")
        info.append(f"ports {', '.join(u.get_antennas(0))}")
        info += [f"{name} {'true' if ok else 'FALSE'}" for name, _, ok in read_locks(u, r.clock_source)]
    except Exception as e:  # only what is printed; the checks above stand
        log.debug("%s: could not read back the settings: %s", s.what, e)
    return checks.problems, "; ".join(info)


def run_doctor(cfg: ExperimentConfig, ap: bool = False, node: int | None = None,
               find: Callable[[], list[dict[str, str]] | None] | None = None,
               images_dir: Path | None = None, uhd_api: Any = None,
               out: Callable[[str], None] = print) -> list[str]:
    """The checks of the module docstring; returns the problems (one line each) and prints
    (``out``) what was found. ``find`` / ``images_dir`` / ``uhd_api``: device discovery, the
    images directory and gr-uhd (tests replace them)."""
    from radio.usrp import find_usrp_devices

    radios = radios_of(cfg, ap, node)
    real = [x for x in radios if not x.emulated]
    problems: list[str] = []
    found: dict[str, dict[str, str]] = {}
    if real:
        devices = (find or find_usrp_devices)()
        if devices is None:
            problems.append("uhd_find_devices is not installed: install uhd-host "
                            "(`make setup` does) to find and use USRPs")
            devices = []
        out(f"devices found: {'; '.join(_describe(d) for d in devices) if devices else 'none'}")
        for radio in real:
            match = [d for d in devices if _matches(radio.dev_args, d)]
            if match:
                found[radio.args_key] = match[0]
            else:
                problems.append(f"{radio.role}: {radio.args_key} = {radio.dev_args!r}: no such "
                                "device attached (uhd_find_devices finds "
                                f"{'; '.join(_describe(d) for d in devices) or 'none'}): check "
                                "the USB / network cable, power, and the serial or address")
        problems += check_images(real, found, images_dir or _images_dir())
    for radio in radios:
        if not radio.emulated and radio.args_key not in found:
            continue  # not attached: nothing to open
        api = uhd_api
        if radio.emulated:
            from radio.emulated import EmulatedUhd

            unused = "tcp://127.0.0.1:9"  # the blocks are never started: no connection
            api = EmulatedUhd(unused, unused, cfg.radio.emulated_rate_factor, cfg.radio.tx_gain_db)
        elif api is None:
            from gnuradio import uhd  # gr-uhd only, never pyuhd

            api = uhd
        lines, info = probe(radio, cfg, api)
        problems += lines
        if not lines:
            where = "emulated" if radio.emulated else _describe(found[radio.args_key])
            out(f"{radio.role} ({radio.args_key}, {where}): ok: {info}")
    return problems


def cmd_doctor(args: argparse.Namespace) -> int:
    """``pairzero doctor``: one line per problem on stderr and status 1, or status 0."""
    cfg = load_config(args.config, args.overrides)
    problems = run_doctor(cfg, ap=args.ap, node=args.node_id)
    for line in problems:
        print(f"pairzero doctor: {line}", file=sys.stderr)
    if problems:
        return EXIT_FAILED
    print("pairzero doctor: all checks passed")
    return EXIT_OK
