"""Where the channel emulator is: 127.0.0.1, or the ``emulator=HOST`` of emulated radios (the
lab rehearsal's air host), for the radios, the emulator and the launchers alike."""

from __future__ import annotations

import argparse

import pytest

from pairzero.config import ConfigError, load_config
from pairzero.launch import local_emulator
from pairzero.phy.mode import phy_mode
from pairzero.phy.schedule import sample_addresses

EMULATED = "configs/emulated_usrp.yaml"


def _radios(host: str | None, nodes: int = 4) -> list[str]:
    tail = f",emulator={host}" if host else ""
    return [f"radio.ap_args=type=emulated,serial=AP0000{tail}",
            "radio.node_args=[" + ", ".join(f'"type=emulated,serial=N{k}{tail}"' for k in range(nodes)) + "]"]


def test_emulated_radios_naming_an_emulator_host_send_their_samples_there() -> None:
    # Execute
    cfg = load_config(EMULATED, _radios("10.213.2.1"))
    nodes, ap = sample_addresses(cfg)
    # Assert: the radios and the emulator use that host; the launchers do not start their own
    assert cfg.radio.emulator_host() == "10.213.2.1" and not cfg.radio.emulator_is_local()
    assert nodes == [f"tcp://10.213.2.1:{5600 + k}" for k in range(4)]
    assert ap == "tcp://10.213.2.1:5604"
    assert not local_emulator(cfg)
    # ... and the run is a lab's, one host each: `pairzero calibrate` starts no nodes of its own
    # and takes network.ap_host as it is; `pairzero loopback` refuses it
    assert not phy_mode(cfg).single_host and phy_mode(cfg).needs_emulator


def test_without_an_emulator_host_everything_stays_on_this_machine() -> None:
    for cfg in (load_config(EMULATED), load_config(EMULATED, _radios(None)),
                load_config("configs/loopback.yaml")):
        assert cfg.radio.emulator_host() == "127.0.0.1"
        assert sample_addresses(cfg)[1].startswith("tcp://127.0.0.1:")
        assert local_emulator(cfg) and phy_mode(cfg).single_host


def test_radios_naming_different_emulators_are_refused() -> None:
    sets = _radios("10.213.2.1")
    sets[0] = "radio.ap_args=type=emulated,serial=AP0000,emulator=10.213.2.9"
    with pytest.raises(ConfigError, match="different channel emulators"):
        load_config(EMULATED, sets)


def test_channel_refuses_an_emulator_host_that_is_not_its_own_address(tmp_path) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the emulator cannot bind it
    from radio.emulator_cli import cmd_channel

    args = argparse.Namespace(config=EMULATED, overrides=_radios("192.0.2.1"))
    with pytest.raises(OSError, match="emulator=HOST must name the host running `pairzero channel`"):
        cmd_channel(args)
