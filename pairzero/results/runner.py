"""``pairzero results``: run the experiment set and write ``docs/results.md`` from its result files::

    pairzero results                       # the full set (about 1.5 h on 2 cores), resumable
    pairzero results --quick               # every section, smaller (under 15 min on 2 cores)
    pairzero results --sections learning   # only some sections
    pairzero results --report-only         # rewrite the report from the files there are

One result file per parameter point under ``<out>/points/<section>/`` (see
:mod:`pairzero.results.store`); a rerun skips the points whose file says ``ok`` and runs the
missing and failed ones; the report (:mod:`pairzero.results.report`) and its figures are then
written from the files alone.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from pairzero.results.experiments import PRESETS, PointFailed, Preset, plan, runner_for, scratch_dir
from pairzero.results.report import write_report
from pairzero.results.store import is_done, save_point
from pairzero.runinfo import REPO_ROOT, git_revision

__all__ = ["run_results", "cmd_results", "SECTIONS", "DEFAULT_OUT", "DEFAULT_REPORT"]

log = logging.getLogger(__name__)

SECTIONS = ("communication", "privacy", "learning", "memory", "phy", "real_sweep", "real")
DEFAULT_OUT = {"full": REPO_ROOT / "docs" / "results", "quick": REPO_ROOT / "runs" / "results-quick",
               "tiny": REPO_ROOT / "runs" / "results-tiny"}
DEFAULT_REPORT = {"full": REPO_ROOT / "docs" / "results.md"}


def run_results(
    preset: Preset,
    out: Path,
    report: Path,
    sections: Sequence[str] = SECTIONS,
    *,
    force: bool = False,
    run: bool = True,
    echo: bool = True,
) -> dict[str, int]:
    """Run the missing points of ``preset`` (all with ``force``) and write the report.

    Returns counts: ``planned``, ``skipped`` (already done), ``ran``, ``failed``.
    """
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ValueError(f"--sections: {bad} not in {', '.join(SECTIONS)}")

    def say(msg: str) -> None:
        log.debug(msg)
        if echo:
            print(msg, flush=True)

    pts = plan(preset)
    todo = [p for p in pts if p.section in sections]
    counts = {"planned": len(todo), "skipped": 0, "ran": 0, "failed": 0}
    rev = git_revision()
    if rev.endswith("-dirty"):
        say(f"results: the work tree has uncommitted changes; result files record {rev}")
    t_all = time.monotonic()
    work = scratch_dir()
    try:
        for i, p in enumerate(todo, 1):
            tag = f"[{i}/{len(todo)}] {p.section}/{p.slug}"
            if not force and is_done(out, p):
                counts["skipped"] += 1
                continue
            if not run:  # --report-only: the report shows what is missing
                continue
            say(f"{tag} ...")
            t0 = time.monotonic()
            try:
                result, config, seed = runner_for(p)(p, preset, work)
            except (PointFailed, OSError, ValueError, RuntimeError, KeyError) as exc:
                log.debug("point %s failed:\n%s", p.slug, traceback.format_exc())
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                save_point(out, p, status="failed", result=None, config=None, git_revision=rev,
                           seed=None, wall_s=time.monotonic() - t0, error=msg)
                counts["failed"] += 1
                say(f"{tag}: not available: {msg}")
                continue
            save_point(out, p, status="ok", result=result, config=config, git_revision=rev,
                       seed=seed, wall_s=time.monotonic() - t0)
            counts["ran"] += 1
            say(f"{tag}: done in {time.monotonic() - t0:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = write_report(preset, out, report)
    say(f"results: {counts['ran']} ran, {counts['skipped']} already done, {counts['failed']} not "
        f"available; report {path} ({time.monotonic() - t_all:.0f} s)")
    return counts


def cmd_results(args: argparse.Namespace) -> int:
    """CLI entry: ``pairzero results``."""
    if args.log_level == "INFO":  # the points' own INFO lines would bury the progress lines
        logging.getLogger().setLevel(logging.WARNING)
    name = "quick" if args.quick else args.preset
    preset = PRESETS[name]
    out = Path(args.out) if args.out else DEFAULT_OUT[name]
    report = Path(args.report) if args.report else DEFAULT_REPORT.get(name, out / "results.md")
    sections = args.sections.split(",") if args.sections else SECTIONS
    counts = run_results(preset, out, report, sections, force=args.force, run=not args.report_only)
    return 1 if counts["failed"] and args.strict else 0
