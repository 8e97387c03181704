"""Round log: exactly-once ordered commits, reopen, torn WAL tail, checksum tampering; the
metrics JSONL next to it: torn last line cut, rows of committed rounds rebuilt on resume."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from access_point.orchestrator import ApSettings, Orchestrator
from access_point.roundlog import RoundLog, RoundLogCorrupt, RoundLogError
from pairzero.metrics import MetricsWriter, record_row, round_rows
from pairzero.protocol.messages import RoundRecord
from pairzero.protocol.testing import ConstantPlanner, IdealApPhy
from pairzero.protocol.transport import InProcHub

EXP = "exp-log"


def _rec(t: int, g: float = 0.1) -> RoundRecord:
    return RoundRecord(EXP, t, 1000 + t, g * (t + 1) / 3, 1e-4, (0, 2), 0.5, 0.0,
                       None if t % 2 else 0.25, f"{t:064x}", 1.7e9 + t)


def test_roundlog_commits_in_order_exactly_once_and_reopens(tmp_path: Path) -> None:
    # Prepare
    p = tmp_path / "log.sqlite"
    rl = RoundLog.open(p, EXP)
    # Execute
    for t in range(5):
        rl.append(_rec(t))
    with pytest.raises(RoundLogError, match="next round is 5"):
        rl.append(_rec(3))  # repeat
    with pytest.raises(RoundLogError, match="next round is 5"):
        rl.append(_rec(7))  # gap
    rl.close()
    again = RoundLog.open(p, EXP)
    # Assert
    assert again.next_round == 5
    assert again.records(0) == [_rec(t) for t in range(5)]  # exact floats, None kept
    assert [r.t for r in again.records(3)] == [3, 4]
    assert [r.t for r in again.records(1, limit=2)] == [1, 2]
    assert again.last() == _rec(4)
    assert sqlite3.connect(p).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


def test_roundlog_rejects_other_experiment(tmp_path: Path) -> None:
    RoundLog.open(tmp_path / "l.sqlite", EXP).close()
    with pytest.raises(RoundLogError, match="belongs to experiment 'exp-log'"):
        RoundLog.open(tmp_path / "l.sqlite", "another")


def test_roundlog_torn_wal_tail_recovers_committed_prefix(tmp_path: Path) -> None:
    # Prepare: a crash image = the db and its WAL copied while the writer is still open
    p = tmp_path / "live.sqlite"
    rl = RoundLog.open(p, EXP)
    for t in range(3):
        rl.append(_rec(t))
    crash = tmp_path / "crash"
    crash.mkdir()
    for suffix in ("", "-wal"):
        shutil.copy(str(p) + suffix, crash / ("log.sqlite" + suffix))
    shutil.copy(tmp_path / "live.head", crash / "log.head")  # its head: 3 rounds committed
    wal_after_3 = (crash / "log.sqlite-wal").stat().st_size
    rl.append(_rec(3))
    shutil.copy(str(p) + "-wal", crash / "log.sqlite-wal")
    full = (crash / "log.sqlite-wal").stat().st_size
    assert full > wal_after_3
    # Execute: the last commit's frames are torn in the middle
    with open(crash / "log.sqlite-wal", "r+b") as f:
        f.truncate(wal_after_3 + (full - wal_after_3) // 2)
    recovered = RoundLog.open(crash / "log.sqlite", EXP)
    # Assert: exactly the rounds committed before the torn write, and appending continues
    assert recovered.next_round == 3
    assert recovered.records(0) == [_rec(t) for t in range(3)]
    recovered.append(_rec(3, g=0.7))
    assert recovered.next_round == 4
    recovered.close()
    rl.close()


def test_roundlog_detects_tampered_record(tmp_path: Path) -> None:
    # Prepare
    p = tmp_path / "log.sqlite"
    rl = RoundLog.open(p, EXP)
    for t in range(4):
        rl.append(_rec(t))
    rl.close()
    con = sqlite3.connect(p)
    con.execute("UPDATE rounds SET g_hat = g_hat + 1e-12 WHERE t = 2")
    con.commit()
    con.close()
    # Execute / Assert
    with pytest.raises(RoundLogCorrupt, match="round 2 fails its checksum"):
        RoundLog.open(p, EXP)


def test_roundlog_detects_gap_and_garbage_file(tmp_path: Path) -> None:
    p = tmp_path / "log.sqlite"
    rl = RoundLog.open(p, EXP)
    for t in range(3):
        rl.append(_rec(t))
    rl.close()
    con = sqlite3.connect(p)
    con.execute("DELETE FROM rounds WHERE t = 1")
    con.commit()
    con.close()
    with pytest.raises(RoundLogCorrupt, match="gap"):
        RoundLog.open(p, EXP)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RoundLogCorrupt, match="not a readable round log"):
        RoundLog.open(junk, EXP)


def test_metrics_jsonl_torn_last_line_is_cut_before_appending(tmp_path: Path) -> None:
    # Prepare: an AP killed mid-write left half a row
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"round": 0, "g_hat": 0.5}\n{"round": 1, "g_h')
    # Execute
    m = MetricsWriter(p)
    m({"round": 1, "g_hat": 0.25})
    m.close()
    # Assert: every line is one JSON object; the torn one is gone
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    assert rows == [{"round": 0, "g_hat": 0.5}, {"round": 1, "g_hat": 0.25}]


def test_resumed_ap_rebuilds_metrics_rows_of_committed_rounds_from_the_log(tmp_path: Path) -> None:
    # Prepare: rounds 0-2 committed, but the AP died before writing the rows of rounds 1 and 2
    log_path, metrics_path = tmp_path / "log.sqlite", tmp_path / "metrics.jsonl"
    rl = RoundLog.open(log_path, EXP)
    for t in range(3):
        rl.append(_rec(t))
    metrics_path.write_text(json.dumps({**record_row(_rec(0)), "ready_wait_s": 0.1}) + "\n")
    metrics = MetricsWriter(metrics_path)
    settings = ApSettings(EXP, 1, 5, "digest", 1e-4, heartbeat_s=0.2)
    orch = Orchestrator(settings, InProcHub().server(), rl, ConstantPlanner(), IdealApPhy(),
                        metrics=metrics)
    # Execute: the restarted AP (no node joins; it is stopped once the rows are there)
    th = threading.Thread(target=orch.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 30
    while len(round_rows(metrics_path)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    orch.stop()
    th.join(30)
    metrics.close()
    rl.close()
    # Assert: one row per committed round, in order; the rebuilt ones are marked
    rows = round_rows(metrics_path)
    assert [r["round"] for r in rows] == [1, 2, 3]  # rounds completed: round t's row is t + 1
    assert [r.get("recovered", False) for r in rows] == [False, True, True]
    assert rows[2]["g_hat"] == _rec(2).g_hat and rows[2]["model_hash"] == _rec(2).model_hash
