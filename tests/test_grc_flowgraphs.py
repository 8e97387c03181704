"""The .grc flowgraphs are the flowgraphs that run.

Every .grc in grc_flowgraphs/ compiles with grcc (GNU Radio Companion's compiler) against the
project's block YAML; the generated code imports; and each generated flowgraph is checked
against what the testbed runs: the same blocks and connections (GNU Radio's flattened edge
list) as the channel emulator of ``pairzero channel`` and the USRP front ends, and it does the
same job: the generated edge TX and AP RX, with gr-uhd's blocks replaced by the emulated USRP's
(the only difference from a lab run), carry a burst through the emulator into the capture file.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("gnuradio.uhd")

pytestmark = pytest.mark.e2e  # starts processes or runs the channel emulator

ROOT = Path(__file__).resolve().parent.parent
GRC_DIR = ROOT / "grc_flowgraphs"
GRC_FILES = sorted(GRC_DIR.glob("*.grc"))
needs_grcc = pytest.mark.skipif(shutil.which("grcc") is None, reason="grcc not on PATH")


def _grcc(grc: Path, out: Path) -> Path:
    env = dict(os.environ, PYTHONPATH=str(ROOT), GRC_BLOCKS_PATH=str(GRC_DIR))
    proc = subprocess.run(
        ["grcc", "-o", str(out), str(grc)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / f"{grc.stem}.py"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _edges(tb) -> tuple[list[str], list[str]]:
    """Stream and message edges of a started flowgraph, block instance numbers removed."""
    def norm(text: str) -> list[str]:
        return sorted(re.sub(r"(\D)\d+:", r"\1:", line) for line in text.splitlines() if line)
    return norm(tb._impl.edge_list()), norm(tb._impl.msg_edge_list())


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_grcc
def test_grc_files_exist():
    names = {p.stem for p in GRC_FILES}
    assert {"loopback_channel", "edge_tx_usrp", "ap_rx_usrp"} <= names


@needs_grcc
@pytest.mark.parametrize("grc", GRC_FILES, ids=[p.stem for p in GRC_FILES])
def test_grc_compiles_and_generated_module_imports(grc, tmp_path):
    py = _grcc(grc, tmp_path)
    # Import in a fresh interpreter (the generated module imports gr-uhd for the radio ones).
    code = f"import importlib.util as u; s = u.spec_from_file_location('m', {str(py)!r}); m = u.module_from_spec(s); s.loader.exec_module(m); print(hasattr(m, 'main'))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


@needs_grcc
def test_loopback_channel_grc_is_the_emulator_pairzero_channel_runs(tmp_path):
    from pairzero.config import load_config
    from pairzero.phy.schedule import sample_addresses
    from radio.emulator import ChannelEmulator
    from radio.loopback import LoopbackFrontEnd

    # Prepare: a K = 3 experiment on free ports, its emulator as `pairzero channel` builds it
    base = _port()
    while any(_is_busy(p) for p in range(base, base + 4)):
        base = _port()
    over = ["nodes.count=3", f"network.sample_port_base={base}", f"network.control_port={base - 1}",
            "channel.snr_db=60", "channel.fading=none", "channel.max_delay_samples=0",
            "channel.max_cfo=0", "channel.random_phase=false"]
    cfg = load_config(None, over)
    conf = tmp_path / "exp.yaml"
    conf.write_text(yaml.safe_dump(_as_plain(load_config(None, over))))
    emu = ChannelEmulator.for_experiment(cfg)
    emu.start()
    want = _edges(emu.tb)
    emu.stop()
    emu.wait()
    time.sleep(0.5)  # ZeroMQ closes listeners asynchronously
    mod = _load(_grcc(GRC_DIR / "loopback_channel.grc", tmp_path))
    # Execute: the generated flowgraph on the same experiment carries node 1's burst to the AP
    tb = mod.loopback_channel(config=str(conf))
    tb.start()
    nodes, ap_addr = sample_addresses(cfg)
    ap, txs = LoopbackFrontEnd(rx_address=ap_addr), [LoopbackFrontEnd(tx_address=a) for a in nodes]
    try:
        got = _edges(tb)
        x = np.zeros(200, np.complex64)
        x[100] = 1.0  # an impulse at sample 600 from node 1 only
        txs[1].send(x, 500, timeout_s=1.0)
        for k in (0, 2):
            txs[k].advance(1000)
        cap = ap.capture(500, 300, timeout_s=10.0)
    finally:
        tb.stop()
        tb.wait()
        for fe in [ap, *txs]:
            fe.close()
    # Assert: the same blocks and connections (3 node channels, sum, noise), and it runs
    assert got == want
    assert sum(e.startswith("fir_filter") and "->add_cc:" in e for e in got[0]) == 3
    assert any(e.startswith("noise_source:0->add_cc:") for e in got[0])
    assert cap.ok and cap.samples is not None
    assert int(np.argmax(np.abs(cap.samples))) == 100
    assert abs(cap.samples[100]) == pytest.approx(1.0, abs=0.01)


def _is_busy(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _as_plain(cfg) -> dict:
    from pairzero.config import config_to_dict

    return config_to_dict(cfg)


@needs_grcc
def test_radio_grc_flowgraphs_are_the_front_ends_and_carry_a_burst_on_emulated_usrps(tmp_path, monkeypatch):
    from gnuradio import uhd

    from radio.emulated import EmulatedUhd
    from radio.emulator import ChannelEmulator, NodeChannelParams
    from radio.usrp import UsrpFrontEnd

    rate = 250e3
    node_addr, ap_addr = f"tcp://127.0.0.1:{_port()}", f"tcp://127.0.0.1:{_port()}"
    emu = ChannelEmulator([NodeChannelParams(1.0, 0.0, 0.0)], 0.0, [node_addr], ap_addr,
                          origin=None, node_timeout_s=1.0, free_run_rate=rate)
    api = EmulatedUhd(tx_address=node_addr, rx_address=ap_addr)
    # The only difference from a lab run: gr-uhd's block constructors are the emulated ones.
    monkeypatch.setattr(uhd, "usrp_sink", api.usrp_sink)
    monkeypatch.setattr(uhd, "usrp_source", api.usrp_source)
    tx_mod = _load(_grcc(GRC_DIR / "edge_tx_usrp.grc", tmp_path))
    rx_mod = _load(_grcc(GRC_DIR / "ap_rx_usrp.grc", tmp_path))
    rng = np.random.default_rng(3)
    burst = (rng.standard_normal(3000) + 1j * rng.standard_normal(3000)).astype(np.complex64) / 2
    burst_file, out_file = tmp_path / "burst.c64", tmp_path / "capture.c64"
    burst.tofile(burst_file)
    # The front ends' flowgraphs (the same emulated blocks), for the structure. On radios of
    # their own: they align device time to the testbed's epoch, the .grc files to the host
    # clock (sync: pc_clock), and one emulator session follows one time base.
    aside = EmulatedUhd(tx_address=f"tcp://127.0.0.1:{_port()}", rx_address=f"tcp://127.0.0.1:{_port()}")
    fes = [UsrpFrontEnd("tx", "type=emulated", rate, 915e6, 40.0, "internal", uhd_api=aside),
           UsrpFrontEnd("rx", "type=emulated", rate, 915e6, 30.0, "internal", uhd_api=aside)]
    want_tx, want_rx = _edges(fes[0].tb), _edges(fes[1].tb)
    for fe in fes:
        fe.close()
    emu.start()
    try:
        # Execute: the AP window opens 1.0 s after start-up, the burst goes 1.2 s after
        rx = rx_mod.ap_rx_usrp(dev_args="type=emulated", clock_source="internal", samp_rate=rate,
                               num_samples=int(0.4 * rate), lead_s=1.0, out_file=str(out_file))
        tx = tx_mod.edge_tx_usrp(dev_args="type=emulated", clock_source="internal", samp_rate=rate,
                                 burst_file=str(burst_file), lead_s=1.2)
        offset = round((tx.tx_time - rx.window_time) * rate)
        rx.start()
        tx.start()
        got_tx, got_rx = _edges(tx), _edges(rx)
        t0 = time.monotonic()
        tx.wait()  # ends after the radio's burst ACK
        rx.wait()  # ends once the window is written
        elapsed = time.monotonic() - t0
    finally:
        emu.stop()
        emu.wait()
    # Assert: the generated flowgraphs are the front ends' (blocks, stream and message edges)
    assert got_tx == want_tx and got_rx == want_rx
    assert got_tx[1] and "async_msgs" in got_tx[1][0]
    # ... the TX waited for its burst, the RX captured its timed window, the burst is in it at
    # its device time: each radio's time was set from its host's clock (sync: pc_clock), so
    # they differ by the host's latency between reading the clock and setting the device
    # (microseconds; a few ms on a loaded machine)
    assert elapsed < 5.0
    cap = np.fromfile(out_file, dtype=np.complex64)
    assert len(cap) == int(0.4 * rate)
    corr = np.abs(np.correlate(cap, burst, mode="valid"))
    at = int(np.argmax(corr))
    assert abs(at - offset) <= 0.005 * rate
    # ... whole, turned by the two radios' LO phases (each a random draw at its retune)
    seg = cap[at : at + len(burst)]
    lo = np.vdot(burst, seg) / np.vdot(burst, burst)
    assert abs(abs(lo) - 1) < 1e-4
    assert np.allclose(seg, lo * burst, atol=1e-5)
