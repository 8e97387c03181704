"""Round period on emulated USRPs vs the loopback emulator, measured side by side.

    .venv/bin/python bench/round_period.py [--rounds 60] [--repeats 3]

Runs ``pairzero loopback --config configs/emulated_usrp.yaml`` (AP + K = 4 nodes, ``opt-tiny``)
twice per repeat, alternating: once as shipped (``radio.mode: usrp`` on ``type=emulated``
devices: the USRP front end's code, device clocks in real time, frames timed at device now +
measured control-plane latency + ``radio.tx_lead_s``) and once with ``radio.mode=loopback``
(the lockstep emulator), everything else the same: seeds, channel, model, nodes.

A round's period is the time between the AP's commits of rounds t-1 and t (AP clock); the
first rounds (pilots, and the first payload) are left out. The figure is the ratio of the
median periods (target: at most 1.5). It also reports both runs' final validation loss (the
same rounds and seeds: the emulated radios should learn as the loopback does), and the CPU
time each run took (AP, nodes and emulator, start-up included) per round. With ``--seeds``
each pair runs at its own ``run.seed`` (both modes the same): the loopback runs' spread over
the seeds is the seed-to-seed spread the emulated radios' final loss is compared with
(``learning``: per seed, usrp minus loopback, against that spread).
Prints one JSON object (last line) and writes bench/results/round_period.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pairzero.launch import LoopbackFailed, LoopbackRun, run_loopback  # noqa: E402
from pairzero.runinfo import git_revision  # noqa: E402

CONFIG = ROOT / "configs" / "emulated_usrp.yaml"
SKIP = 3  # rounds 1..3 (pilots, first payload, first update) are not counted
TARGET = 1.5


def _loopback(sets: list[str], config: Path | None = None) -> LoopbackRun:
    """``pairzero loopback`` with ``sets``; exit with its output if it fails."""
    try:
        return run_loopback(sets, config)
    except LoopbackFailed as e:
        sys.exit(f"{e}\n{e.output}")


def _run(mode: str, rounds: int, extra: list[str]) -> dict:
    sets = [f"run.rounds={rounds}", f"task.eval_every={rounds}",
            *(["radio.mode=loopback"] if mode == "loopback" else []), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = _loopback(sets, CONFIG)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    rows, cmd, wall, config = run.rows, run.command, run.wall_s, run.config
    commits = {r["round"]: r for r in rows if "g_hat" in r}
    periods = [commits[t]["time"] - commits[t - 1]["time"] for t in range(SKIP + 1, rounds + 1)]
    evals = [r for r in rows if "val_loss" in r]
    active = [len(commits[t]["active"]) for t in range(SKIP + 1, rounds + 1)]
    return {
        "mode": mode, "command": cmd, "wall_s": round(wall, 1),
        "median_round_s": statistics.median(periods), "mean_round_s": statistics.fmean(periods),
        # CPU of the whole run (AP, nodes, emulator; start-up included) per round
        "cpu_s": round(cpu_s, 2), "cpu_s_per_round": cpu_s / rounds,
        "p90_round_s": sorted(periods)[int(0.9 * (len(periods) - 1))],
        "median_phy_s": statistics.median(commits[t]["phy_s"] for t in range(SKIP + 1, rounds + 1)),
        "rounds_with_every_node": sum(a == max(active) for a in active), "rounds_measured": len(periods),
        "val_loss_start": evals[0]["val_loss"], "val_loss_end": evals[-1]["val_loss"],
        "resolved_config": config,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3, help="alternating pairs of runs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for both runs (repeatable)")
    ap.add_argument("--seeds", type=lambda x: [int(v) for v in x.split(",")], default=None,
                    help="run.seed of each pair, comma-separated (default: the config's, every pair)")
    a = ap.parse_args()
    if a.seeds is not None and len(a.seeds) != a.repeats:
        sys.exit(f"--seeds: {len(a.seeds)} given for --repeats {a.repeats}")
    if a.rounds <= SKIP + 2:
        sys.exit(f"--rounds: {a.rounds} is too few (at least {SKIP + 3})")
    runs: list[dict] = []
    for i in range(a.repeats):
        for mode in ("usrp", "loopback"):
            print(f"[{i + 1}/{a.repeats}] {mode}: {a.rounds} rounds ...", file=sys.stderr, flush=True)
            seed = [] if a.seeds is None else [f"run.seed={a.seeds[i]}"]
            runs.append({**_run(mode, a.rounds, [*a.set, *seed]),
                         "seed": None if a.seeds is None else a.seeds[i]})
            r = runs[-1]
            print(f"    median round {r['median_round_s'] * 1e3:.0f} ms, val loss "
                  f"{r['val_loss_start']:.4f} -> {r['val_loss_end']:.4f}", file=sys.stderr, flush=True)
    med = {m: statistics.median(r["median_round_s"] for r in runs if r["mode"] == m)
           for m in ("usrp", "loopback")}
    out = {
        "benchmark": "round_period", "git_revision": git_revision(), "config": str(CONFIG.relative_to(ROOT)),
        "rounds": a.rounds, "repeats": a.repeats, "overrides": a.set,
        "median_round_s": med, "ratio_usrp_to_loopback": med["usrp"] / med["loopback"],
        "target_ratio": TARGET, "runs": runs,
    }
    out["meets_target"] = out["ratio_usrp_to_loopback"] <= TARGET
    if a.seeds is not None:
        lb = [r["val_loss_end"] for r in runs if r["mode"] == "loopback"]
        us = [r["val_loss_end"] for r in runs if r["mode"] == "usrp"]
        spread = max(lb) - min(lb)
        out["learning"] = {
            "seeds": a.seeds, "val_loss_end_usrp": us, "val_loss_end_loopback": lb,
            "usrp_minus_loopback": [u - v for u, v in zip(us, lb, strict=True)],
            "loopback_seed_spread": spread,
            "within_spread": all(abs(u - v) <= spread for u, v in zip(us, lb, strict=True)),
        }
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "round_period.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}))


if __name__ == "__main__":
    main()
