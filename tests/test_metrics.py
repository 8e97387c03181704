"""One metrics module (pairzero.metrics): one round numbering for every writer and reader."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pairzero.metrics import (
    MemoryMetrics,
    MetricsWriter,
    read_metrics,
    record_row,
    round_index,
    round_rows,
    row_round,
)
from pairzero.protocol.messages import RoundRecord


def _rec(t: int) -> RoundRecord:
    return RoundRecord(experiment="e", t=t, seed=10 + t, g_hat=0.5 * t, lr=0.1, active=(0, 1),
                       eta=1.0, sigma_a=0.0, mu=None, model_hash=None, timestamp=1.0)


def test_a_rounds_row_counts_the_rounds_completed(tmp_path: Path) -> None:
    # Prepare: the evaluation before training, then rounds t = 0, 1, 2 as the orchestrator
    # hands them over (rebuilt from the log or live, the same row)
    w = MetricsWriter(tmp_path / "metrics.jsonl")
    w.write({"round": 0, "val_accuracy": 0.5})
    for t in range(3):
        w(record_row(_rec(t)))
    w.close()
    # Execute
    rows = read_metrics(tmp_path)  # the run directory or the file: the same rows
    # Assert: round 0 is the initial evaluation, round t's row is t + 1; t comes back
    assert rows == read_metrics(tmp_path / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert [round_index(r) for r in round_rows(tmp_path)] == [0, 1, 2]
    assert w.logged_rounds() == {0, 1, 2} and row_round(0) == 1
    assert rows[2]["seed"] == 11 and rows[2]["g_hat"] == 0.5


def test_rows_are_strict_json_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    w = MetricsWriter(p)
    w({"round": 1, "g_hat": 0.1, "sq_err": math.nan, "mse": [math.inf, 1.0]})
    w.close()
    with p.open("a") as f:
        f.write('{"round": 2, "g_h')  # a writer killed (or still writing) mid-line
    assert json.loads(p.read_text().splitlines()[0]) == {"round": 1, "g_hat": 0.1, "sq_err": None,
                                                         "mse": [None, 1.0]}
    assert read_metrics(p) == [{"round": 1, "g_hat": 0.1, "sq_err": None, "mse": [None, 1.0]}]


def test_no_metrics_file_is_named_in_one_line(tmp_path: Path) -> None:
    assert round_rows(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl in this directory"):
        read_metrics(tmp_path)


def test_memory_metrics_number_rounds_as_the_file_does() -> None:
    m = MemoryMetrics()
    m(record_row(_rec(4)))
    m.backfill({**record_row(_rec(2)), "recovered": True})
    assert m.logged_rounds() == {2, 4} and [r["round"] for r in m.rows] == [5, 3]
