"""``pairzero channel``: the channel emulator as a process (loopback, or emulated USRPs).

Binds one ZeroMQ PULL socket per node (``network.sample_port_base + k``) and publishes the AP
stream on ``network.sample_port_base + K``; per-node gain, fractional delay, CFO, phase (and
fading) and AWGN at the AP from the ``channel`` section, seeded by ``run.seed``. Runs until
Ctrl-C / SIGTERM.

* ``radio.mode: loopback``: lockstep from sample 0; a node that stops sending is zero-filled
  after the READY deadline, so it never stalls the AP.
* ``radio.mode: usrp`` with every radio ``type=emulated``: the stream starts at the first
  node's device time, and follows the emulated radios' clocks; a radio silent for 1 s (of
  its clock) is zero-filled.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from pairzero.config import ConfigError, load_config
from pairzero.launch import busy_ports
from pairzero.phy.schedule import sample_addresses
from radio.emulator import ChannelEmulator

__all__ = ["cmd_channel"]

log = logging.getLogger(__name__)


def cmd_channel(args: argparse.Namespace) -> int:
    """CLI entry: ``pairzero channel``."""
    cfg = load_config(args.config, args.overrides)
    nodes, ap = sample_addresses(cfg)
    base, host = cfg.network.sample_port_base, cfg.radio.emulator_host()
    busy = busy_ports(host, list(range(base, base + cfg.nodes.count + 1)))
    if busy:  # checked here: a bind error inside the running flowgraph would only be logged
        raise OSError(f"sample ports {busy} on {host} cannot be bound (in use by another "
                      "emulator, or not this host's address: the emulated radios' emulator=HOST "
                      "must name the host running `pairzero channel`); choose "
                      "network.sample_port_base")
    try:
        emu = ChannelEmulator.for_experiment(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    emu.start()
    for k, ch in enumerate(emu.node_channels):
        log.info("node %d channel: %s", k, ch)
    print(f"channel emulator: {cfg.nodes.count} nodes at {nodes[0]}.., AP stream at {ap}, "
          f"SNR {cfg.channel.snr_db} dB, fading {cfg.channel.fading}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        absent = emu.absent_nodes()
        emu.stop()
        emu.wait()
        log.info("channel emulator stopped at sample %d (absent nodes %s)", emu.clock, absent)
    return 0
