"""The round log proves its own length: a hash chain over the records and a head file kept
outside the database. Every way a log can come back shorter (zero-length file, deleted or
damaged WAL, rows cut off) or altered (broken chain, missing head) is refused in one line that
names the file, never reopened as a valid log that restarts from an earlier round."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from access_point.orchestrator import ApSettings, Orchestrator
from access_point.roundlog import (
    RoundLog,
    RoundLogCorrupt,
    RoundLogError,
    chain_genesis,
    chain_link,
    head_path_for,
    record_digest,
)
from pairzero.config import load_config
from pairzero.errors import OperationalError
from pairzero.metrics import MetricsWriter, record_row
from pairzero.protocol.messages import RoundRecord
from pairzero.protocol.testing import ConstantPlanner, IdealApPhy
from pairzero.protocol.transport import InProcHub
from pairzero.runinfo import experiment_id, write_provenance
from tests.e2e_util import free_port_block

REPO = Path(__file__).resolve().parent.parent

EXP = "exp-chain"


def _rec(t: int, g: float = 0.1) -> RoundRecord:
    return RoundRecord(EXP, t, 1000 + t, g * (t + 1) / 3, 1e-4, (0, 2), 0.5, 0.0,
                       None if t % 2 else 0.25, f"{t:064x}", 1.7e9 + t)


def _crash_image(tmp_path: Path, rounds: int) -> tuple[Path, RoundLog]:
    """A copy of a live log (db, -wal, head) taken while its writer is still open, as a
    power loss or SIGKILL leaves it; every round is still in the WAL (no checkpoint yet)."""
    live = tmp_path / "live" / "rounds.sqlite"
    rl = RoundLog.open(live, EXP)
    for t in range(rounds):
        rl.append(_rec(t))
    img = tmp_path / "img"
    img.mkdir()
    for name in ("rounds.sqlite", "rounds.sqlite-wal", "rounds.head"):
        shutil.copy(live.parent / name, img / name)
    return img / "rounds.sqlite", rl


def _refusal(path: Path) -> str:
    with pytest.raises(RoundLogCorrupt) as info:
        RoundLog.open(path, EXP)
    msg = str(info.value)
    assert isinstance(info.value, OperationalError)  # `pairzero ap`: one line, status 1
    assert "\n" not in msg
    return msg


def test_head_file_records_length_and_chain_after_every_commit(tmp_path: Path) -> None:
    # Prepare
    p = tmp_path / "rounds.sqlite"
    rl = RoundLog.open(p, EXP)
    head0 = json.loads(head_path_for(p).read_text())
    # Execute
    for t in range(3):
        rl.append(_rec(t))
    head3 = json.loads(head_path_for(p).read_text())
    rl.close()
    # Assert: the chain is SHA-256(previous chain || record digest), from the experiment's genesis
    chain = chain_genesis(EXP)
    for t in range(3):
        chain = chain_link(chain, record_digest(_rec(t)))
    assert (head0["rounds"], head0["chain"]) == (0, chain_genesis(EXP))
    assert (head3["rounds"], head3["chain"], head3["experiment"]) == (3, chain, EXP)
    assert head_path_for(p) == tmp_path / "rounds.head"
    assert not list(tmp_path.glob("*.tmp")), "a temporary head file was left behind"


def test_zero_length_database_with_a_head_is_refused(tmp_path: Path) -> None:
    # Prepare
    p, live = _crash_image(tmp_path, 4)
    live.close()
    # Execute
    p.write_bytes(b"")
    Path(str(p) + "-wal").unlink()
    msg = _refusal(p)
    # Assert
    assert str(p) in msg and "zero length" in msg and "4 committed" in msg
    assert p.stat().st_size == 0, "the refused file was written to"


def test_deleted_database_with_a_head_is_refused(tmp_path: Path) -> None:
    p, live = _crash_image(tmp_path, 2)
    live.close()
    for f in p.parent.glob("rounds.sqlite*"):
        f.unlink()
    msg = _refusal(p)
    assert "missing" in msg and "2 committed" in msg
    assert not p.exists(), "a new empty log was created in place of the missing one"


def test_deleted_wal_file_is_refused_not_reopened_shorter(tmp_path: Path) -> None:
    # Prepare: the crash image's rounds are all in the WAL
    p, live = _crash_image(tmp_path, 5)
    # Execute
    Path(str(p) + "-wal").unlink()
    msg = _refusal(p)
    live.close()
    # Assert
    assert str(p) in msg and "holds 0 rounds" in msg and "records 5 committed" in msg


def test_corrupt_wal_frame_in_the_middle_is_refused_and_left_untouched(tmp_path: Path) -> None:
    # Prepare: flip one byte in the middle of the WAL (a frame of an early commit)
    p, live = _crash_image(tmp_path, 6)
    live.close()
    wal = Path(str(p) + "-wal")
    data = bytearray(wal.read_bytes())
    frame = 24 + 4096  # WAL frame header + page
    n_frames = (len(data) - 32) // frame
    assert n_frames >= 6
    data[32 + (n_frames // 2) * frame + 24 + 100] ^= 0xFF
    wal.write_bytes(bytes(data))
    # Execute
    msg = _refusal(p)
    # Assert: refused, and neither the database nor the WAL was checkpointed or truncated
    assert "records 6 committed" in msg and "rounds were lost" in msg
    assert wal.read_bytes() == bytes(data)


def test_log_cut_short_consistently_is_refused(tmp_path: Path) -> None:
    # Prepare: the last two rounds deleted with SQLite itself (a valid, shorter database)
    p = tmp_path / "rounds.sqlite"
    rl = RoundLog.open(p, EXP)
    for t in range(5):
        rl.append(_rec(t))
    rl.close()
    con = sqlite3.connect(p)
    con.execute("DELETE FROM rounds WHERE t >= 3")
    con.commit()
    con.close()
    # Execute
    msg = _refusal(p)
    # Assert
    assert "holds 3 rounds" in msg and "records 5 committed" in msg and "round 3" in msg


def test_rewritten_record_with_a_valid_checksum_breaks_the_chain(tmp_path: Path) -> None:
    # Prepare: round 2's g_hat changed and its own checksum recomputed to match
    p = tmp_path / "rounds.sqlite"
    rl = RoundLog.open(p, EXP)
    for t in range(5):
        rl.append(_rec(t))
    rl.close()
    forged = RoundRecord(**{**_rec(2).__dict__, "g_hat": 0.999})
    con = sqlite3.connect(p)
    con.execute("UPDATE rounds SET g_hat = ?, digest = ? WHERE t = 2",
                (forged.g_hat, record_digest(forged)))
    con.commit()
    con.close()
    # Execute
    msg = _refusal(p)
    # Assert
    assert "chain breaks at round 2" in msg


def test_log_with_rounds_but_no_head_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "rounds.sqlite"
    rl = RoundLog.open(p, EXP)
    rl.append(_rec(0))
    rl.close()
    head_path_for(p).unlink()
    msg = _refusal(p)
    assert "no head file" in msg and "rounds.head" in msg


def test_head_of_another_log_is_refused(tmp_path: Path) -> None:
    # Prepare: two logs of the same experiment and length but different rounds; heads swapped
    a, b = tmp_path / "a" / "rounds.sqlite", tmp_path / "b" / "rounds.sqlite"
    for path, g in ((a, 0.1), (b, 0.2)):
        rl = RoundLog.open(path, EXP)
        for t in range(3):
            rl.append(_rec(t, g))
        rl.close()
    shutil.copy(head_path_for(b), head_path_for(a))
    # Execute / Assert
    assert "differs from rounds.head" in _refusal(a)


def test_log_one_round_ahead_of_its_head_is_accepted_and_the_head_caught_up(tmp_path: Path) -> None:
    # Prepare: a stop between a commit and the head's update (the head still says 3 rounds)
    p = tmp_path / "rounds.sqlite"
    rl = RoundLog.open(p, EXP)
    for t in range(3):
        rl.append(_rec(t))
    old_head = head_path_for(p).read_bytes()
    rl.append(_rec(3))
    rl.close()
    head_path_for(p).write_bytes(old_head)
    # Execute
    again = RoundLog.open(p, EXP)
    # Assert
    assert again.next_round == 4
    assert json.loads(head_path_for(p).read_text())["rounds"] == 4
    again.append(_rec(4))
    again.close()
    assert RoundLog.open(p, EXP).next_round == 5


def test_log_of_the_previous_format_is_upgraded_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: a log as the version before the chain wrote it (no chain column, no head)
    p = tmp_path / "rounds.sqlite"
    con = sqlite3.connect(p)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE rounds (t INTEGER PRIMARY KEY, experiment TEXT NOT NULL, seed INTEGER NOT NULL,
            g_hat REAL NOT NULL, lr REAL NOT NULL, active TEXT NOT NULL, eta REAL NOT NULL,
            sigma_a REAL NOT NULL, mu REAL, model_hash TEXT, timestamp REAL NOT NULL,
            digest TEXT NOT NULL);
    """)
    con.execute("INSERT INTO meta VALUES ('experiment', ?)", (EXP,))
    for t in range(3):
        r = _rec(t)
        con.execute("INSERT INTO rounds VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (r.t, r.experiment, r.seed, r.g_hat, r.lr, json.dumps(list(r.active)), r.eta,
                     r.sigma_a, r.mu, r.model_hash, r.timestamp, record_digest(r)))
    con.commit()
    con.close()
    # Execute
    with caplog.at_level(logging.WARNING, logger="access_point.roundlog"):
        rl = RoundLog.open(p, EXP)
    rl.append(_rec(3))
    rl.close()
    # Assert: upgraded (chained, head written) and from then on guarded like any other log
    assert "cannot be proven" in caplog.text
    assert RoundLog.open(p, EXP).records(0) == [_rec(t) for t in range(4)]
    assert json.loads(head_path_for(p).read_text())["rounds"] == 4
    con = sqlite3.connect(p)
    con.execute("DELETE FROM rounds WHERE t = 3")
    con.commit()
    con.close()
    _refusal(p)


def test_head_of_another_experiment_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "rounds.sqlite"
    RoundLog.open(p, EXP).close()
    p.unlink()
    with pytest.raises(RoundLogError, match="rounds.head: round log belongs to experiment 'exp-chain'"):
        RoundLog.open(p, "another")


def test_metrics_rows_beyond_the_log_are_refused(tmp_path: Path) -> None:
    # Prepare: the log holds rounds 0-1 (its head agrees: e.g. both restored from an old
    # backup), but the metrics were written up to round 4
    rl = RoundLog.open(tmp_path / "rounds.sqlite", EXP)
    for t in range(2):
        rl.append(_rec(t))
    metrics_path = tmp_path / "metrics.jsonl"
    metrics_path.write_text("".join(json.dumps(record_row(_rec(t))) + "\n" for t in range(5)))
    metrics = MetricsWriter(metrics_path)
    orch = Orchestrator(ApSettings(EXP, 1, 10, "digest", 1e-4, heartbeat_s=0.2),
                        InProcHub().server(), rl, ConstantPlanner(), IdealApPhy(), metrics=metrics)
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = orch.run()
        except Exception as e:
            out["error"] = e

    # Execute: (no node ever joins: a run that is not refused waits, and is stopped)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(10)
    orch.stop()
    th.join(10)
    # Assert: refused before any round runs, naming both files
    assert isinstance(out.get("error"), RoundLogCorrupt), out
    msg = str(out["error"])
    assert "holds 2 rounds" in msg and "metrics.jsonl" in msg and "rounds 2, 3, 4" in msg
    assert rl.next_round == 2
    metrics.close()
    rl.close()


@pytest.mark.e2e
def test_ap_refuses_a_damaged_log_in_one_line_with_status_1(tmp_path: Path) -> None:
    # Prepare: a run directory whose log was truncated to zero length (its head says 3 rounds)
    port = free_port_block(2)
    overrides = ["radio.mode=baseband", "network.curve=false", f"network.control_port={port}",
                 f"network.sample_port_base={port + 1}"]
    cfg = load_config(None, overrides)
    run = tmp_path / "run"
    run.mkdir()
    write_provenance(cfg, run)
    rl = RoundLog.open(run / "rounds.sqlite", experiment_id(cfg))
    for t in range(3):
        rl.append(RoundRecord(experiment_id(cfg), t, t, 0.1, 1e-4, (0,), 0.5, 0.0, None, None, 1.0))
    rl.close()
    (run / "rounds.sqlite").write_bytes(b"")
    # Execute
    res = subprocess.run([sys.executable, "-m", "pairzero.cli", "ap", "--run-dir", str(run),
                          *(a for o in overrides for a in ("--set", o))],
                         cwd=REPO, capture_output=True, text=True, timeout=180)
    # Assert
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("pairzero ap:")]
    assert res.returncode == 1, res.stderr
    assert len(lines) == 1 and "rounds.sqlite" in lines[0] and "zero length" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (run / "summary.json").exists()
