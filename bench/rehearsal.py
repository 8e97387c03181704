"""Round period per network profile against the LAN profile, measured side by side in one run.

    .venv/bin/python bench/rehearsal.py [--repeats 2] [--out DIR]     # root (network namespaces)

Runs the lab rehearsal (``rehearsal.cli.rehearse``, what ``make rehearsal`` runs): the worked
example of docs/running_on_usrps.md on namespaced hosts (AP, two nodes, the air), in
alternating pairs on the same machine: ``lan`` (0.2 ms one way), then ``campus`` (5-20 ms one
way, 0.5 % of relayed chunks held for a 200 ms RTO, tbf 20 Mbit/s, node 1's link cut for 3 x
``network.heartbeat_s``), ``--repeats`` times. 200 rounds each (configs/radio.yaml),
``opt-tiny``, emulated radios. The machine is shared: a pair's two runs see the load of the
same few minutes, so each pair gives one ratio.

A round's period is the time between the AP's commits of consecutive rounds (its
``metrics.jsonl``; rounds 1-3, pilots and the first payload, left out). The figure is each
pair's campus median over its LAN median, and their median; the campus period is also given
without the rounds from the cut to the node's return. Target: the campus median within the
LAN median + 4 x the profile's largest one-way delay (a round's ROUND, READY, SCHEDULE and
UPDATE each cross the control plane once), in the median pair. Also: what the cut cost, late
frames, READY and window timeouts, relayed chunks held for the RTO. Prints one JSON object
(last line) and writes bench/results/rehearsal.json and bench/results/rehearsal.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rehearsal import summary  # noqa: E402
from rehearsal.cli import rehearse  # noqa: E402
from rehearsal.netns import netns_unavailable_reason  # noqa: E402
from rehearsal.profiles import PROFILES  # noqa: E402

OUT = ROOT / "bench" / "results"
CROSSINGS = 4  # ROUND, READY, SCHEDULE, UPDATE


def _periods(run: dict[str, Any], skip_cut: bool) -> list[float]:
    rows = summary.round_rows((Path(run["ap_run_dir"]) / "metrics.jsonl").read_text().splitlines())
    rows = [r for r in rows if int(r["round"]) > 3]  # pilots, the first payload and update
    if skip_cut and "cut" in run:
        c = run["cut"]
        lo, hi = int(c["after_round"]), int(c["back_in_round"] or rows[-1]["round"])
        rows = [r for r in rows if not lo < int(r["round"]) <= hi]
    return summary.round_periods(rows)


def _plot(res: dict[str, Any], runs: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    names = list(runs)
    data = [[p * 1e3 for p in _periods(runs[n], skip_cut=False)] for n in names]
    a.boxplot(data, tick_labels=names, showfliers=True)
    a.set_yscale("log")
    a.set_ylabel("round period (ms)")
    a.set_title("round period per run (pairs in run order)")
    for n in names:
        rows = summary.round_rows((Path(runs[n]["ap_run_dir"]) / "metrics.jsonl").read_text().splitlines())
        xs = [int(r["round"]) for r in rows[1:]]
        ys = [(float(q["time"]) - float(p["time"])) * 1e3 for p, q in zip(rows, rows[1:], strict=False)]
        b.plot(xs, ys, ".", ms=2, label=n)
        if "cut" in runs[n]:
            c = runs[n]["cut"]
            b.axvspan(c["after_round"], c["back_in_round"] or xs[-1], color="red", alpha=0.08)
    b.set_yscale("log")
    b.set_xlabel("round (red: node 1 cut until it is back)")
    b.set_ylabel("period (ms)")
    b.legend(fontsize=7, ncol=2)
    b.set_title(f"campus / lan median, per pair: {', '.join(f'{r:.2f}' for r in res['ratio_per_pair'])}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=2, help="pairs of runs, lan then campus (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="directory for the hosts' files (default: a temporary one)")
    args = p.parse_args()
    if not 1 <= args.repeats <= 10:
        p.error(f"--repeats: {args.repeats} must be in 1..10")
    reason = netns_unavailable_reason(f"pzb{os.getpid()}")
    if reason is not None:
        print(json.dumps({"benchmark": "rehearsal", "skipped": reason}))
        return 0
    with tempfile.TemporaryDirectory(prefix="pairzero-rehearsal-") as tmp:
        out = args.out or Path(tmp)
        res = rehearse(["lan", "campus"] * args.repeats, out, cut_node="node1", cut_at_round=20,
                       prefix=f"pzb{os.getpid()}")
        runs = res["profiles"]
        labels = list(runs)
        pairs = []
        for lan_label, campus_label in zip(labels[0::2], labels[1::2], strict=True):
            lan = summary.median(_periods(runs[lan_label], skip_cut=False))
            campus = summary.median(_periods(runs[campus_label], skip_cut=False))
            clean = summary.median(_periods(runs[campus_label], skip_cut=True))
            assert lan and campus and clean
            pairs.append({"lan": lan_label, "campus": campus_label, "lan_median_s": lan,
                          "campus_median_s": campus, "campus_without_cut_median_s": clean,
                          "ratio": campus / lan, "cut": runs[campus_label].get("cut")})
        prof = PROFILES["campus"]
        allowance = CROSSINGS * (prof.delay_s + prof.jitter_s)
        mid = sorted(pairs, key=lambda q: q["ratio"])[(len(pairs) - 1) // 2]
        result: dict[str, Any] = {
            "benchmark": "rehearsal", "git_revision": res["git_revision"], "repeats": args.repeats,
            "ratio_per_pair": [q["ratio"] for q in pairs],
            "ratio_campus_to_lan": summary.median([q["ratio"] for q in pairs]),
            "median_pair": {k: mid[k] for k in ("lan_median_s", "campus_median_s", "campus_without_cut_median_s")},
            "target_campus_max_s": mid["lan_median_s"] + allowance,
            "target_met": mid["campus_median_s"] <= mid["lan_median_s"] + allowance,
            "pairs": pairs, "profiles": {n: PROFILES[n].describe() for n in ("lan", "campus")},
            "late_frames": {n: r["late_frames"] for n, r in runs.items()},
            "ready_timeouts": {n: r["ready_timeouts"] for n, r in runs.items()},
            "window_timeouts": {n: r["window_timeouts"] for n, r in runs.items()},
            "partial_rounds": {n: r["partial_rounds"] for n, r in runs.items()},
            "relay_chunks_held_for_rto": {n: sum(x["lost"] for x in r["relays"].values()) for n, r in runs.items()},
            "wall_s": {**{n: r["wall_s"] for n, r in runs.items()}, "total": res["wall_s"]},
            "every_node_same_as_ap": all(x["same_as_ap"] for r in runs.values() for x in r["nodes"].values()),
        }
        OUT.mkdir(parents=True, exist_ok=True)
        _plot(result, runs, OUT / "rehearsal.png")
    (OUT / "rehearsal.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
