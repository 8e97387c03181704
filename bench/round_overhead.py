"""Per-round time of the loopback testbed split into compute, PHY and control plane.

    .venv/bin/python bench/round_overhead.py [--model opt-125m] [--rounds 8] [--nodes 3]

Runs ``pairzero loopback`` (AP, GNU Radio channel emulator and K edge-node processes, real
ZeroMQ control plane) on the given model and reads back what every process measured:

* a round's period P_t: time between the AP's commits of rounds t-1 and t (AP clock);
* compute C_t: the slowest node's ZO work for the round, i.e. its two forward passes with the
  perturbation sweeps (``compute_s``) plus its fused restore+update sweep of the previous round
  (``update_s``): the part that is inherent to zeroth-order training;
* PHY: the AP's capture + receiver (``phy_s``) plus the slowest node's frame build + hand-over
  to the emulator (``tx_s``);
* control plane and everything else: P_t - C_t - PHY (message latency, READY deadline waits,
  the AP's round log commit and its model replica update).

Only rounds with an over-the-air payload (from the third on) after the first payload round
are counted. Target: (PHY + control) / P <= 10% on opt-125m shapes.
Prints one JSON object (last line) and writes bench/results/round_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pairzero.launch import LoopbackFailed, run_loopback  # noqa: E402
from pairzero.runinfo import git_revision  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="opt-125m")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args()
    try:
        run = run_loopback([f"model.name={a.model}", f"run.rounds={a.rounds}", f"nodes.count={a.nodes}",
                            f"task.batch_size={a.batch}", "task.eval_every=100000",
                            "network.ready_timeout_s=120"])
    except LoopbackFailed as e:
        sys.exit(f"{e}\n{e.output}")
    rows = {r["round"] - 1: r for r in run.rows if "g_hat" in r}  # keyed by round index t
    nodes, wall = run.nodes, run.wall_s
    per_round = []
    for t in range(3, a.rounds):  # rounds 0-1 sound the channel; round 2 has no previous update
        period = rows[t]["time"] - rows[t - 1]["time"]
        comp = max(n["compute_s"].get(str(t), 0.0) + n["update_s"].get(str(t - 1), 0.0) for n in nodes)
        phy = rows[t]["phy_s"] + max(n["tx_s"].get(str(t), 0.0) for n in nodes)
        per_round.append({"t": t, "period_s": period, "compute_s": comp, "phy_s": phy,
                          "control_s": period - comp - phy, "active": rows[t]["active"]})
    tot = {k: sum(r[k] for r in per_round) for k in ("period_s", "compute_s", "phy_s", "control_s")}
    out = {
        "benchmark": "round_overhead", "git_revision": git_revision(), "command": run.command,
        "model": a.model, "nodes": a.nodes, "rounds": a.rounds, "batch": a.batch,
        "rounds_measured": len(per_round),
        "mean_round_s": tot["period_s"] / len(per_round),
        "compute_frac": tot["compute_s"] / tot["period_s"],
        "phy_frac": tot["phy_s"] / tot["period_s"],
        "control_frac": tot["control_s"] / tot["period_s"],
        "overhead_frac": (tot["phy_s"] + tot["control_s"]) / tot["period_s"],
        "target_overhead_frac": 0.10,
        "wall_s": round(wall, 1),
        "per_round": per_round,
    }
    out["meets_target"] = out["overhead_frac"] <= out["target_overhead_frac"]
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "round_overhead.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
