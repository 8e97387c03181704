"""``python -m rehearsal`` (``make rehearsal``): the worked example on namespaced hosts.

Runs the page's worked example once per network profile (``lan``, then ``campus`` with node
1's link cut for 3 x ``network.heartbeat_s`` once the AP has committed ``--cut-at-round``
rounds), prints one line per profile and writes ``<out>/summary.json``. Status 0 when every
run finished with every node bit-identical to the AP's replica and the files where the page
says; 1 otherwise (the failing step and its output named); 0 with one "skipped" line where
network namespaces cannot be made (not root, no ``ip``). Ctrl-C or SIGTERM removes everything
it made (processes, namespaces) before it exits; the hosts' directories stay under ``<out>``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rehearsal.netns import LabNetwork, netns_unavailable_reason
from rehearsal.profiles import PROFILES
from rehearsal.session import CutPlan, ProfileRun, RehearsalFailure, lab_values
from rehearsal.worked_example import WorkedExampleError, extract

__all__ = ["main", "rehearse", "REPO", "PAGE"]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
#: The page whose worked example runs.
PAGE = REPO / "docs" / "running_on_usrps.md"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def rehearse(profiles: list[str], out: Path, cut_node: str | None, cut_at_round: int,
             prefix: str | None = None, page: Path = PAGE,
             extra_args: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the page's worked example per profile; return the summary (also written to
    ``out/summary.json``). Raises RehearsalFailure / WorkedExampleError; always tidies up."""
    example = extract(page)
    nodes = [h for h in example.hosts if h != "ap"]
    if cut_node is not None and cut_node not in nodes:
        raise RehearsalFailure(f"--cut-node {cut_node}: the worked example's nodes are {nodes}")
    prefix = prefix or f"pzr{os.getpid()}"
    out.mkdir(parents=True, exist_ok=True)
    net = LabNetwork(prefix, len(nodes))
    runs: list[ProfileRun] = []
    results: dict[str, Any] = {"page": str(page), "git_revision": _git_revision(), "prefix": prefix,
                               "started_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                               "profiles": {}}
    t0 = time.monotonic()
    try:
        net.create()
        values = lab_values(net, len(nodes), extra_args)
        for node in nodes:
            net.intercept(node, values["AP_ADDR"])
        print(f"rehearsal: hosts {', '.join(net.hosts)} in namespaces {prefix}-*; the worked example "
              f"of {page.name} ({len(example.steps)} steps); files in {out}", flush=True)
        for i, name in enumerate(profiles):
            # A profile named again (alternating pairs, as the benchmark runs them) is another run.
            label = name if name not in profiles[:i] else f"{name}-{profiles[:i].count(name) + 1}"
            cut = CutPlan(cut_node, cut_at_round) if (cut_node and name == "campus") else None
            run = ProfileRun(example, net, PROFILES[name], out, REPO, values, cut=cut, label=label,
                             seed=i + 1, progress=lambda text: print(text, flush=True))
            runs.append(run)
            print(f"rehearsal: run {label}, {PROFILES[name].describe()}" + (
                f"; {cut_node}'s link cut after round {cut_at_round} for {cut.heartbeats:g} heartbeats"
                if cut else ""), flush=True)
            try:
                results["profiles"][label] = run.run()
            finally:
                run.stop()
            print(line(results["profiles"][label], _last_lan(results["profiles"])), flush=True)
    finally:
        for run in runs:
            run.stop()
        net.destroy()
        left = net.leftovers()
        if left:
            print(f"rehearsal: could not remove namespaces {left}", file=sys.stderr)
    done: dict[str, Any] = {}
    for label, r in results["profiles"].items():  # each run against the LAN run just before it
        lan = (_last_lan(done) or {}).get("round_period_median_s")
        p = r.get("round_period_median_s")
        r["period_vs_lan"] = round(p / lan, 3) if lan and p else None
        done[label] = r
    results["wall_s"] = round(time.monotonic() - t0, 1)
    (out / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def _last_lan(runs: dict[str, Any]) -> dict[str, Any] | None:
    """The latest LAN run's result among ``runs`` (in run order)."""
    lans = [r for r in runs.values() if r.get("profile") == "lan"]
    return lans[-1] if lans else None


def line(r: dict[str, Any], lan: dict[str, Any] | None) -> str:
    """One line of figures for a profile's result."""
    p, p90 = r["round_period_median_s"], r["round_period_p90_s"]
    vs = ""
    if lan is not None and r is not lan and lan.get("round_period_median_s"):
        vs = f" = {p / lan['round_period_median_s']:.2f} x lan"
    same = all(n["same_as_ap"] for n in r["nodes"].values())
    lost = sum(x["lost"] for x in r["relays"].values())
    text = (f"rehearsal: {r['run']:8s} {r['rounds']} rounds in {r['wall_s']:.0f} s; round period "
            f"{p * 1e3:.0f} ms median{vs} (p90 {p90 * 1e3:.0f} ms); {r['partial_rounds']} partial, "
            f"{r['empty_rounds']} empty; late frames {r['late_frames']}, READY timeouts "
            f"{r['ready_timeouts']}, window timeouts {r['window_timeouts']}; relay chunks held for "
            f"the RTO {lost}; every node {'=' if same else '!='} the AP's replica")
    if "cut" in r:
        c = r["cut"]
        text += (f"; cut {c['node']} after round {c['after_round']} for {c['duration_s']} s: "
                 f"{c['rounds_lost']} rounds without it, back in round {c['back_in_round']}, "
                 f"longest round {c['longest_round_s']} s")
    return text


def _git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rehearsal", description=__doc__.split("\n")[0])
    p.add_argument("--profiles", default="lan,campus",
                   help="comma-separated network profiles, run in this order; one named again is "
                        f"another run (default: %(default)s; known: {', '.join(PROFILES)})")
    p.add_argument("--out", type=Path, default=None,
                   help="directory for the hosts' files and summary.json (default: runs/rehearsal-<time>)")
    p.add_argument("--cut-node", default="node1", help="node whose link the campus run cuts ('' : none)")
    p.add_argument("--cut-at-round", type=int, default=20,
                   help="cut once the AP has committed this many rounds (default: %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    profiles = [s for s in args.profiles.split(",") if s]
    unknown = [s for s in profiles if s not in PROFILES]
    if unknown or not profiles:
        p.error(f"--profiles: unknown {unknown}; known: {', '.join(PROFILES)}")
    prefix = f"pzr{os.getpid()}"
    reason = netns_unavailable_reason(prefix)
    if reason is not None:
        print(f"rehearsal: skipped: {reason}")
        return 0
    out = args.out or REPO / "runs" / f"rehearsal-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        res = rehearse(profiles, out, args.cut_node or None, args.cut_at_round, prefix=prefix)
    except (RehearsalFailure, WorkedExampleError) as e:
        print(f"rehearsal: FAILED: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rehearsal: interrupted; everything it made is removed", file=sys.stderr)
        return 130
    print(f"rehearsal: passed in {res['wall_s']:.0f} s; summary in {out / 'summary.json'}")
    return 0
