"""Figures of one rehearsal run, from the files and terminal logs the hosts were left with.

Pure functions over text and JSON (tested on their own): the AP's ``metrics.jsonl`` and
``summary.json``, the AP's and the nodes' terminal output, the relays' counts.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["round_rows", "round_periods", "CutEffect", "cut_effect", "ApLogCounts",
           "count_ap_log", "node_final_hash", "latest_metrics"]

_LATE_RE = re.compile(r"reports its frame of round \d+: (late_burst|underflow|late_schedule)")
_READY_TIMEOUT_RE = re.compile(r"round \d+: no READY from nodes \[")
_WINDOW_RE = re.compile(r"round \d+: frame at sample \d+ not received \(")
_LEAD_RE = re.compile(r"round \d+: \d+ node\(s\) reported a late frame: lead raised")
_NODE_DONE_RE = re.compile(r"node (\d+): stopped at round (\d+) \((\d+) rounds participated\), model ([0-9a-f]+)")


def round_rows(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The committed rounds' rows of a ``metrics.jsonl`` (not the round-0 evaluation row), by round."""
    rows = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        row = json.loads(line)
        if "active" in row and "time" in row:
            rows.append(row)
    return sorted(rows, key=lambda r: int(r["round"]))


def latest_metrics(ap_workdir: Path) -> Path | None:
    """The newest AP run directory's ``metrics.jsonl`` under ``ap_workdir/runs`` (None: none yet)."""
    found = sorted((ap_workdir / "runs").glob("*-ap-*/metrics.jsonl"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def round_periods(rows: list[dict[str, Any]]) -> list[float]:
    """Seconds between consecutive commits (the round period), from the rows' commit times."""
    return [float(b["time"]) - float(a["time"]) for a, b in zip(rows, rows[1:], strict=False)
            if int(b["round"]) == int(a["round"]) + 1]


@dataclass(frozen=True)
class CutEffect:
    """What a link cut cost. After the cut began, the rounds the node was still in (its frame
    was on the air already) are passed over; ``lost_rounds`` rounds were then committed without
    it, until ``back_round`` (metrics' 1-based round; None: never back; ``lost_rounds`` 0 and
    ``back_round`` None: it never left); ``longest_round_s`` is the longest commit-to-commit
    gap from the last commit before the cut to its return (or the run's end)."""

    node: int
    lost_rounds: int
    back_round: int | None
    longest_round_s: float


def cut_effect(rows: list[dict[str, Any]], node: int, cut_time: float) -> CutEffect:
    """The effect of cutting ``node``'s link at wall time ``cut_time`` (s since the epoch) on the
    AP's committed ``rows`` (:func:`round_rows`)."""
    after = [r for r in rows if float(r["time"]) >= cut_time]
    if not after:
        raise ValueError(f"cut_time: {cut_time!r} is after the last committed round")
    i = 0
    while i < len(after) and node in after[i]["active"]:
        i += 1  # committed after the cut with the node's frame already in
    lost = 0
    back = None
    for r in after[i:]:
        if node in r["active"]:
            back = int(r["round"])
            break
        lost += 1
    if lost == 0:
        back = None
    end = len(after) if back is None else next(j for j, r in enumerate(after) if int(r["round"]) == back) + 1
    before = [r for r in rows if float(r["time"]) < cut_time]
    times = ([float(before[-1]["time"])] if before else []) + [float(r["time"]) for r in after[:end]]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return CutEffect(node, lost, back, max(gaps) if gaps else 0.0)


@dataclass(frozen=True)
class ApLogCounts:
    """Counts of the AP's warning lines: frames nodes reported late (late_burst, underflow,
    late_schedule), rounds whose READY deadline passed without a node, windows not received
    within ``radio.capture_slack_s``, rounds whose lead was raised."""

    late_frames: int
    ready_timeouts: int
    window_timeouts: int
    lead_raised: int


def count_ap_log(text: str) -> ApLogCounts:
    """:class:`ApLogCounts` of an AP's terminal output."""
    return ApLogCounts(late_frames=len(_LATE_RE.findall(text)),
                       ready_timeouts=len(_READY_TIMEOUT_RE.findall(text)),
                       window_timeouts=len(_WINDOW_RE.findall(text)),
                       lead_raised=len(_LEAD_RE.findall(text)))


def node_final_hash(text: str, node: int) -> tuple[int, str] | None:
    """(rounds applied, model hash prefix) from node ``node``'s last "stopped at round" line."""
    found = [m for m in _NODE_DONE_RE.finditer(text) if int(m.group(1)) == node]
    if not found:
        return None
    m = found[-1]
    return int(m.group(2)), m.group(4)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]
