"""First contact with a radio: ``pairzero doctor``, start-up errors as one line naming the
setting, antenna ports, and the lock polled between rounds (issue 20, item 5).

The lab config (configs/radio.yaml) runs here with no USRP and no UHD images: the doctor must
say so, one line each. The emulated radios take the lab's faults from their device args (a
B210 without its GPSDO, an unlocked reference, a PLL that does not lock, no PPS...), and each
must come out as ONE line naming the config key, never a traceback: from the doctor and from
the front end a run opens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("gnuradio.uhd")

from pairzero.cli import main  # noqa: E402
from pairzero.config import load_config  # noqa: E402
from pairzero.phy.frontend import EventKind, RadioError  # noqa: E402
from radio.doctor import check_images, radios_of  # noqa: E402
from radio.emulated import EmulatedUhd  # noqa: E402
from radio.usrp import UsrpFrontEnd, parse_uhd_find_devices  # noqa: E402
from tests.test_radio_emulated_usrp import RATE, _addr  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EMULATED = str(ROOT / "configs" / "emulated_usrp.yaml")
SCRIPT = shutil.which("pairzero", path=str(Path(sys.executable).parent))


@pytest.mark.e2e  # runs `pairzero doctor` as a process
def test_doctor_on_the_lab_config_names_the_missing_images_and_devices(tmp_path: Path) -> None:
    # The "done when" of issue 20: here, no USRP and an empty images directory
    env = {**os.environ, "UHD_IMAGES_DIR": str(tmp_path)}
    res = subprocess.run([SCRIPT, "doctor", "--config", str(ROOT / "configs" / "radio.yaml")],
                         capture_output=True, text=True, timeout=120, env=env)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    keys = ["radio.ap_args", *(f"radio.node_args[{k}]" for k in range(4))]
    if shutil.which("uhd_find_devices"):
        # one line per radio not attached, one for the images; nothing else
        assert len(lines) == 6, lines
        for key in keys:
            assert sum(key in ln and "no such device attached" in ln for ln in lines) == 1
        [images] = [ln for ln in lines if "UHD images" in ln]
        assert str(tmp_path) in images and "usrp_b210_fpga.bin" in images
        assert "uhd_images_downloader" in images
    else:
        assert any("uhd_find_devices is not installed" in ln for ln in lines)


def test_doctor_passes_on_the_emulated_lab(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--config", EMULATED]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert out.out.count(": ok: ") == 5  # the AP and four nodes
    assert "all checks passed" in out.out


@pytest.mark.parametrize(("who", "sets", "args", "fragments"), [
    # a B210 without the GPSDO module, asked for clock_source gpsdo: UHD's own words
    ("--ap", ["radio.clock_source=gpsdo"], "no_gpsdo=1",
     ["radio.clock_source = 'gpsdo'", "no gpsdo detected"]),
    (None, ["radio.clock_source=gpsdo"], "no_gpsdo=1", ["radio.clock_source = 'gpsdo'"]),
    ("--ap", [], "unlocked_ref=1", ["ref_locked", "radio.clock_source"]),
    ("--ap", [], "unlocked_lo=1", ["lo_locked", "radio.center_freq_hz"]),
    ("--ap", [], "tune_error=1", ["radio.center_freq_hz = 915000000.0", "PLL"]),
    ("--ap", [], "no_pps=1", ["radio.clock_source = 'external'", "no PPS edge"]),
    ("--ap", ["radio.rx_antenna=RX3"], "", ["radio.rx_antenna = 'RX3'", "TX/RX, RX2, CAL"]),
    # a B2xx has one TX port; UHD stores another name silently, the doctor does not
    (None, ["radio.tx_antenna=RX2"], "", ["radio.tx_antenna = 'RX2'", "(TX/RX)"]),
    (None, ["phy.sample_rate=3e6"], "master_clock_rate=32e6", ["phy.sample_rate", "2909090.9"]),
    ("--ap", ["radio.rx_gain_db=40"], "", ["radio.rx_gain_db = 40 dB", "0..31.5"]),
    ("--ap", ["radio.center_freq_hz=7e9"], "", ["radio.center_freq_hz = 7e+09", "1e+07..6e+09"]),
    ("--ap", [], "bogus=1", ["radio.ap_args", "unknown keys ['bogus']"]),
])
def test_each_fault_is_one_line_naming_the_setting(who, sets, args, fragments, capsys) -> None:
    # Prepare: the emulated lab with the fault in the AP's device args (or node 0's)
    if who == "--ap":
        base = "type=emulated,serial=AP0000,model=x310_ubx"
        over = [f"radio.ap_args={base}" + (f",{args}" if args else "")]
        argv = ["--ap"]
    else:
        base = "type=emulated,serial=NODE000,model=b210"
        nodes = [base + (f",{args}" if args else "")] + [f"type=emulated,serial=NODE00{k}" for k in (1, 2, 3)]
        over = ["radio.node_args=[" + ",".join(f'"{a}"' for a in nodes) + "]"]
        argv = ["--node-id", "0"]
    cmd = ["doctor", "--config", EMULATED, *argv]
    for o in [*over, *sets]:
        cmd += ["--set", o]
    # Execute
    rc = main(cmd)
    # Assert: status 1, exactly one line, naming the setting, no traceback
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 1
    assert len(lines) == 1, lines
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_check_images_wants_what_the_discovered_b2xx_loads(tmp_path: Path) -> None:
    cfg = load_config(str(ROOT / "configs" / "radio.yaml"))
    radios = radios_of(cfg, node=1)
    b210 = {radios[0].args_key: {"type": "b200", "product": "B210", "serial": "NODE001"}}
    assert "usrp_b200_fw.hex, usrp_b210_fpga.bin" in check_images(radios, b210, tmp_path)[0]
    (tmp_path / "usrp_b200_fw.hex").write_text("")
    assert "has no usrp_b210_fpga.bin (" in check_images(radios, b210, tmp_path)[0]
    (tmp_path / "usrp_b210_fpga.bin").write_text("")
    assert check_images(radios, b210, tmp_path) == []
    b200 = {radios[0].args_key: {"type": "b200", "product": "B200", "serial": "NODE001"}}
    assert "usrp_b200_fpga.bin" in check_images(radios, b200, tmp_path)[0]


def test_uhd_find_devices_output_is_read_into_fields() -> None:
    text = """[INFO] [UHD] linux; GNU C++ version 12.2.0; Boost_107400; UHD_4.3.0.0+ds1-5
--------------------------------------------------
-- UHD Device 0
--------------------------------------------------
Device Address:
    serial: 31A5678
    name: ap
    product: B210
    type: b200


--------------------------------------------------
-- UHD Device 1
--------------------------------------------------
Device Address:
    serial: 30F1234
    addr: 192.168.40.2
    product: X310
    type: x300
"""
    assert parse_uhd_find_devices(text) == [
        {"serial": "31A5678", "name": "ap", "product": "B210", "type": "b200"},
        {"serial": "30F1234", "addr": "192.168.40.2", "product": "X310", "type": "x300"},
    ]
    assert parse_uhd_find_devices("No UHD Devices Found") == []


@pytest.mark.parametrize(("args", "source", "antenna", "fragment"), [
    ("type=emulated,no_gpsdo=1", "gpsdo", "TX/RX", "radio.clock_source = 'gpsdo': KeyError"),
    ("type=emulated,tune_error=1", "internal", "TX/RX", "radio.center_freq_hz = 915000000.0"),
    ("type=emulated", "internal", "RX2", "radio.tx_antenna = 'RX2' is not a port"),
])
def test_a_start_up_fault_of_the_front_end_is_one_radio_error_naming_the_setting(
        args: str, source: str, antenna: str, fragment: str) -> None:
    # What `pairzero edge` opens: whatever UHD call fails, one RadioError (the CLI prints it
    # in one line, status 1; before, set_clock_source's RuntimeError was a crash)
    with pytest.raises(RadioError) as e:
        UsrpFrontEnd("tx", args, RATE, 915e6, 40.0, source, uhd_api=EmulatedUhd(tx_address=_addr()),
                     antenna=antenna, args_key="radio.node_args[0]")
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_a_lost_lock_is_found_between_rounds() -> None:
    # Pins check_lock(), the front end's poll for the round code: None while locked, a
    # LOST_LOCK event naming the sensor and the setting once the radio lost its lock
    t0 = time.monotonic()
    fe = UsrpFrontEnd("tx", "type=emulated,lose_lock_after_s=0.6", RATE, 915e6, 40.0, "internal",
                      uhd_api=EmulatedUhd(tx_address=_addr()))
    try:
        assert time.monotonic() - t0 < 0.5  # the test needs the radio open before the loss
        assert fe.check_lock() is None
        time.sleep(max(0.0, 0.7 - (time.monotonic() - t0)))
        ev = fe.check_lock()
    finally:
        fe.close()
    assert ev is not None and ev.kind == EventKind.LOST_LOCK
    assert "lo_locked is false (radio.center_freq_hz)" in ev.detail


def test_the_reference_lock_is_polled_on_an_external_reference() -> None:
    from radio.usrp import read_locks

    api = EmulatedUhd(tx_address=_addr())
    u = api.usrp_sink("type=emulated,lose_lock_after_s=0", None)
    u.set_clock_source("external")
    assert read_locks(u, "external") == [("ref_locked", "radio.clock_source", False),
                                         ("lo_locked", "radio.center_freq_hz", False)]
    assert [name for name, _, _ in read_locks(u, "internal")] == ["lo_locked"]
