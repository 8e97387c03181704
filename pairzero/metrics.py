"""Per-round metrics of a run (``metrics.jsonl``): the one writer, the one reader, one numbering.

Every command that trains writes its rows through :class:`MetricsWriter` (the AP of ``pairzero
ap`` / ``loopback``, ``pairzero simulate``) and every reader reads them with
:func:`read_metrics` (``pairzero report``, the results runner, the AP's resume, the tests).

Round numbering: a row's ``round`` is the number of rounds completed when it was written. The
evaluation of the initial weights is round 0; the row of round t (0-based: the t of the round
log, of the protocol messages and of the seed ``round_seed(seed, t)``) is round t + 1
(:func:`row_round`, :func:`round_index`). One JSON object per line, flushed per row, strict JSON
(a non-finite float is written as null).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Protocol, TextIO

from pairzero.errors import RunDirUnwritable
from pairzero.protocol.messages import RoundRecord
from pairzero.runinfo import open_jsonl_for_append

__all__ = [
    "METRICS_FILE",
    "row_round",
    "round_index",
    "record_row",
    "read_metrics",
    "round_rows",
    "progress_line",
    "RoundMetrics",
    "MetricsWriter",
    "MemoryMetrics",
]

log = logging.getLogger(__name__)

#: The metrics file of a run directory.
METRICS_FILE = "metrics.jsonl"


def row_round(t: int) -> int:
    """The ``round`` of the row of round t: rounds completed once it is committed."""
    return t + 1


def round_index(row: dict[str, Any]) -> int:
    """The round t (0-based) a row with ``g_hat`` was written for."""
    return int(row["round"]) - 1


def record_row(rec: RoundRecord) -> dict[str, Any]:
    """The metrics fields a round record holds (a row rebuilt from the round log has these)."""
    return {"round": row_round(rec.t), "seed": rec.seed, "g_hat": rec.g_hat,
            "active": list(rec.active), "eta": rec.eta, "sigma_a": rec.sigma_a, "mu": rec.mu,
            "lr": rec.lr, "model_hash": rec.model_hash, "time": rec.timestamp}


def _path(where: str | Path) -> Path:
    """The metrics file: ``where`` itself (a ``.jsonl`` file) or in the run directory ``where``."""
    p = Path(where)
    return p if p.suffix == ".jsonl" else p / METRICS_FILE


def read_metrics(where: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics file (``where``: the file or its run directory); a torn last line (a
    process killed, or still writing, mid-line) is skipped."""
    path = _path(where)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {path.name} in this directory (is it a run directory?)")
    rows = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                log.warning("%s: skipping a torn last line", path)
                continue
            raise ValueError(f"{path}:{i + 1}: not valid JSON") from None
    return rows


def round_rows(where: str | Path) -> list[dict[str, Any]]:
    """The per-round rows (those with ``g_hat``); none when there is no metrics file yet."""
    return [r for r in read_metrics(where) if "g_hat" in r] if _path(where).is_file() else []


def progress_line(row: dict[str, Any], rounds: int) -> str:
    """One human-readable line for a metrics row (simulate's or the AP's)."""
    parts = [f"round {row['round']:4d}/{rounds}"]
    if "train_loss" in row:
        parts.append(f"loss {row['train_loss']:.4f}")
    if "g_hat" in row:
        true = f" (true {row['g_true_mean']:+.3f})" if row.get("g_true_mean") is not None else ""
        parts.append(f"g_hat {row['g_hat']:+.3f}{true}")
    if "active" in row:
        parts.append(f"|S| {len(row['active'])}")
        if row.get("missing"):
            parts.append(f"missing {row['missing']}")
    elif "n_active" in row:
        parts.append(f"|S| {row['n_active']}")
    if "eta" in row and row["eta"] is not None:
        parts.append(f"eta {row['eta']:.3g} sigma_a {row['sigma_a']:.3g}")
    if row.get("eps_spent") is not None:
        parts.append(f"eps {row['eps_spent']:.3f}")
    if "val_accuracy" in row:
        parts.append(f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f}")
    parts.append(f"{row['elapsed_s']:.0f}s")
    return "  ".join(parts)


def _strict(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _strict(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_strict(x) for x in v]
    return v


class RoundMetrics(Protocol):
    """Where the orchestrator puts one row per committed round (and, on resume, finds the rows
    it has and rebuilds those lost between a commit and its row). ``where``: for messages."""

    where: str

    def __call__(self, row: dict[str, Any]) -> None:
        """Record the row of a committed round."""
        ...

    def logged_rounds(self) -> set[int]:
        """Rounds t (0-based) that have a row."""
        ...

    def backfill(self, row: dict[str, Any]) -> None:
        """Record the row of a committed round rebuilt from the round log."""
        ...


class MetricsWriter:
    """``metrics.jsonl`` of a run: appended to (a torn last line is cut first), one row per
    line, flushed per row. A failed write raises :class:`RunDirUnwritable` in one line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        try:
            self._f: TextIO = open_jsonl_for_append(self.path)
        except OSError as e:
            raise RunDirUnwritable.at(self.path, e) from None

    def write(self, row: dict[str, Any]) -> None:
        """Append one row."""
        try:
            self._f.write(json.dumps(_strict(row), allow_nan=False) + "\n")
            self._f.flush()
        except OSError as e:
            raise RunDirUnwritable.at(self.path, e) from None

    __call__ = write

    def logged_rounds(self) -> set[int]:
        return {round_index(r) for r in round_rows(self.path)}

    def backfill(self, row: dict[str, Any]) -> None:
        self.write(row)

    def close(self) -> None:
        try:
            self._f.close()
        except OSError as e:  # a full disk on the last flush; the row is rebuilt on resume
            log.warning("%s: %s", self.path, e)


class MemoryMetrics:
    """Rows kept in a list (tests, in-process runs)."""

    where = "the in-memory metrics"

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def __call__(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def logged_rounds(self) -> set[int]:
        return {round_index(r) for r in self.rows if "g_hat" in r}

    def backfill(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
