"""Samples per second through the AP receiver chain and through the channel emulator (K = 8).

    .venv/bin/python bench/phy_throughput.py [--seconds 3]

Each measurement runs in its own subprocess pinned to one CPU core (os.sched_setaffinity; the
GNU Radio threads inherit it), unthrottled:

* rx: :class:`pairzero.phy.BurstReceiver` on K = 8 frames in noise. ``rx_msps`` is the
  operating mode: the AP's own window (frame + ``CAPTURE_MARGIN`` either side, imported from
  the loopback module the AP takes it from) and the scheduled index as ``expected_start``;
  ``rx_search_msps`` searches a 16-frame window blindly for the preamble (not what the AP
  runs; shown for the cost of a blind search).

Speed is judged as a ratio, not in absolute samples per second (which follow the machine's
load): ``rx_realtime_factor`` and ``emulator_realtime_factor`` are the rates over the
configured ``phy.sample_rate``; ``meets_target``: the receiver keeps up with its radio
(``rx_realtime_factor >= 1``). ``rx_realtime_factor_at_10msps`` is the same for a 10 Msps
radio (the design's headroom goal, 10 Msps on one core).
* emulator: the lockstep ChannelEmulator flowgraph, 8 nodes pushing 2^16-sample chunks over
  ZeroMQ, the AP subscribing; samples of the AP stream per second.

Prints one JSON object (last line) and writes bench/results/phy_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

K = 8


def _pin() -> int:
    core = sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {core})
    return core


def measure_rx(seconds: float) -> dict:
    from pairzero.config import PhyConfig
    from pairzero.phy import BurstReceiver, FrameLayout, build_node_burst
    from pairzero.phy.schedule import CAPTURE_MARGIN

    _pin()
    rng = np.random.default_rng(0)
    lay = FrameLayout(PhyConfig(), K)
    rx = BurstReceiver(lay)
    frame = sum(build_node_burst(lay, k) for k in range(K))
    margin = CAPTURE_MARGIN  # the AP captures frame + this many samples either side
    w = np.zeros(lay.length + 2 * margin, np.complex64)
    w[margin : margin + lay.length] = frame
    w += (0.1 * (rng.standard_normal(len(w)) + 1j * rng.standard_normal(len(w)))).astype(np.complex64)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        res = rx.process(w, 0, expected_start=margin)
        assert res.detected
        n += len(w)
    sched = n / (time.perf_counter() - t0) / 1e6
    big = np.tile(w, 16)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        assert rx.process(big).detected
        n += len(big)
    search = n / (time.perf_counter() - t0) / 1e6
    return {"rx_msps": sched, "rx_search_msps": search, "rx_window_samples": len(w)}


def measure_emulator(seconds: float) -> dict:
    from radio.emulator import ChannelEmulator, NodeChannelParams
    from radio.loopback import ApRx, EdgeTx

    _pin()

    def addr() -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"tcp://127.0.0.1:{s.getsockname()[1]}"

    rng = np.random.default_rng(1)
    chans = [NodeChannelParams(complex(np.exp(2j * np.pi * rng.random())), rng.uniform(-4, 4),
                               rng.uniform(-1e-4, 1e-4)) for _ in range(K)]
    nodes, ap_addr = [addr() for _ in range(K)], addr()
    emu = ChannelEmulator(chans, 0.01, nodes, ap_addr, seed=1)
    chunk = 1 << 16
    x = (rng.standard_normal(chunk) + 1j * rng.standard_normal(chunk)).astype(np.complex64)
    emu.start()
    ap, txs = ApRx(ap_addr), [EdgeTx(a, hwm=8) for a in nodes]
    try:
        sent = 0
        # Keep the nodes ahead of the AP by a few chunks; count what the AP receives.
        start, t0 = None, None
        got = 0
        deadline = time.perf_counter() + seconds + 5
        while time.perf_counter() < deadline:
            while sent < (ap.latest if ap.latest > 0 else 0) + 8 * chunk:
                for t in txs:
                    t.send(x, sent, tail=0)
                sent += chunk
            if not ap.poll(50):
                continue
            if t0 is None:
                start, t0 = ap.latest, time.perf_counter()
            elif time.perf_counter() - t0 >= seconds:
                got = ap.latest - start
                break
            ap._chunks.clear()  # noqa: SLF001
        elapsed = time.perf_counter() - t0 if t0 else float("nan")
    finally:
        emu.stop()
        emu.wait()
        for t in txs:
            t.close()
        ap.close()
    return {"emulator_msps": got / elapsed / 1e6, "emulator_nodes": K}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--worker", choices=["rx", "emulator"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fn = measure_rx if args.worker == "rx" else measure_emulator
        print(json.dumps(fn(args.seconds)))
        return
    result: dict = {"benchmark": "phy_throughput", "cores": 1, "target_rx_msps": 10.0}
    for worker in ("rx", "emulator"):
        proc = subprocess.run([sys.executable, __file__, "--worker", worker, "--seconds", str(args.seconds)],
                              capture_output=True, text=True, timeout=600, check=True)
        result.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    from pairzero.config import PhyConfig
    from pairzero.runinfo import git_revision

    rate_msps = PhyConfig().sample_rate / 1e6
    result["sample_rate_msps"] = rate_msps
    result["rx_realtime_factor"] = result["rx_msps"] / rate_msps
    result["emulator_realtime_factor"] = result["emulator_msps"] / rate_msps
    result["rx_realtime_factor_at_10msps"] = result["rx_msps"] / result["target_rx_msps"]
    result["meets_target"] = result["rx_realtime_factor"] >= 1.0
    result["git_revision"] = git_revision()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "phy_throughput.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
