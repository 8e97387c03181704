"""Result files: one JSON file per parameter point, named by what defines the point.

Layout: ``<out>/points/<section>/<slug>-<hash>.json`` where ``hash`` is the first 10 hex digits
of SHA-256 over the point's defining parameters (sorted JSON). A point whose file exists with
``"status": "ok"`` is done and is skipped by a rerun; a failed point keeps its file (with the
reason, for the report) and is run again next time.

Every file holds the point's parameters, the resolved configuration or command it ran, the git
revision of the code that produced it, the seed, the wall time and the result itself, so a
number in the report can be traced to the file it came from and reproduced.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Point", "point_path", "load_point", "save_point", "is_done"]

_SLUG = re.compile(r"[^A-Za-z0-9_.=+-]+")


@dataclass(frozen=True)
class Point:
    """One parameter point of a section: ``params`` define it (and its file name)."""

    section: str
    slug: str
    params: dict[str, Any] = field(default_factory=dict)
    #: What the runner needs beyond ``params`` (a learning point's whole config, of which
    #: ``params`` keeps only the sections its kind reads); not part of the key or the file name.
    run_with: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """Hash of the defining parameters (10 hex digits)."""
        blob = json.dumps({"section": self.section, "params": self.params}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def name(self) -> str:
        """File stem: readable slug plus the parameter hash."""
        return f"{_SLUG.sub('_', self.slug)}-{self.key}"


def point_path(out: Path, point: Point) -> Path:
    """Where ``point``'s result file lives under the results directory ``out``."""
    return Path(out) / "points" / point.section / f"{point.name}.json"


def load_point(out: Path, point: Point) -> dict[str, Any] | None:
    """The stored record of ``point`` (any status), or None when it was never run."""
    path = point_path(out, point)
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a torn file (killed mid-write is prevented by save_point; be safe)
    return rec if isinstance(rec, dict) else None


def is_done(out: Path, point: Point) -> bool:
    """True when ``point`` has a result file with status ``ok``."""
    rec = load_point(out, point)
    return rec is not None and rec.get("status") == "ok"


def save_point(
    out: Path,
    point: Point,
    *,
    status: str,
    result: dict[str, Any] | None,
    config: Any,
    git_revision: str,
    seed: int | None,
    wall_s: float,
    error: str | None = None,
) -> Path:
    """Write ``point``'s record atomically (temp file + rename) and return its path."""
    if status not in ("ok", "failed"):
        raise ValueError(f"status: {status!r} is not 'ok' or 'failed'")
    path = point_path(out, point)
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {
        "section": point.section,
        "point": point.slug,
        "params": point.params,
        "status": status,
        "error": error,
        "result": result,
        "config": config,
        "git_revision": git_revision,
        "seed": seed,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 2),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path
