"""Durable round log of the access point: SQLite in WAL mode with ``synchronous=FULL``.

The model is a pure function of (initial weights, ordered list of (seed, g_hat, lr)), so
this log is the checkpoint, the audit trail and what a node that missed rounds replays.

Guarantees
----------
* Rounds are stored contiguously from 0: :meth:`RoundLog.append` accepts only round
  ``next_round`` and raises otherwise, so a round can never be committed twice or skipped.
* A commit returns only after SQLite has fsynced the WAL (``synchronous=FULL``): a record
  that :meth:`append` returned for survives a crash or power loss of the AP.
* Torn tail: a crash in the middle of a commit leaves a WAL frame whose checksum fails;
  SQLite's recovery discards it (and everything after it), so reopening yields exactly the
  rounds whose commit had returned. Each row also carries a SHA-256 of its canonical content;
  :meth:`RoundLog.open` verifies every row and the contiguity of ``t`` and raises
  :class:`RoundLogCorrupt` naming the first bad round, rather than resume from a log that
  was altered underneath it (the operator decides; nothing is silently dropped).

Commit order in the AP (see :mod:`access_point.orchestrator`): the PHY result fixes g_hat
-> the AP replica (if any) applies it and hashes -> :meth:`append` commits -> UPDATE is
broadcast. A crash before the commit re-runs round t after restart with the same seed
(nodes never received its UPDATE); a crash after the commit leaves nodes one round behind,
which they fill by catch-up from this log. No round is lost or applied twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from pairzero.errors import OperationalError
from pairzero.protocol.messages import RoundRecord

__all__ = ["RoundLog", "RoundLogError", "RoundLogCorrupt", "record_digest"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    t INTEGER PRIMARY KEY,
    experiment TEXT NOT NULL,
    seed INTEGER NOT NULL,
    g_hat REAL NOT NULL,
    lr REAL NOT NULL,
    active TEXT NOT NULL,
    eta REAL NOT NULL,
    sigma_a REAL NOT NULL,
    mu REAL,
    model_hash TEXT,
    timestamp REAL NOT NULL,
    digest TEXT NOT NULL
);
"""


class RoundLogError(OperationalError):
    """The round log cannot be used as asked (wrong experiment, out-of-order append)."""


class RoundLogCorrupt(RoundLogError):
    """The stored rounds fail their checksums or are not contiguous."""


def record_digest(rec: RoundRecord) -> str:
    """SHA-256 (hex) of a record's canonical JSON (floats by repr: exact)."""
    canon = json.dumps(
        [rec.experiment, rec.t, rec.seed, repr(rec.g_hat), repr(rec.lr), list(rec.active),
         repr(rec.eta), repr(rec.sigma_a), None if rec.mu is None else repr(rec.mu),
         rec.model_hash, repr(rec.timestamp)],
        separators=(",", ":"),
    )
    return hashlib.sha256(canon.encode()).hexdigest()


class RoundLog:
    """Append-only durable log of committed rounds for one experiment.

    Not thread-safe: the AP's single orchestrator thread owns it.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, experiment: str, next_round: int):
        self._conn = conn
        self.path = path
        self.experiment = experiment
        self._next = next_round

    @classmethod
    def open(cls, path: str | Path, experiment: str, verify: bool = True) -> RoundLog:
        """Open (or create) the log at ``path`` for ``experiment``; verify it unless told not to.

        Raises RoundLogError if the file belongs to another experiment, RoundLogCorrupt if a
        row fails its checksum, the rounds are not 0..n-1, or SQLite reports corruption.
        """
        if not experiment:
            raise ValueError("experiment: must be a non-empty string")
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(p), isolation_level=None, check_same_thread=False)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RoundLogError(f"{p}: SQLite refused WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key='experiment'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('experiment', ?)", (experiment,))
            elif row[0] != experiment:
                conn.close()
                raise RoundLogError(
                    f"{p}: round log belongs to experiment {row[0]!r}, not {experiment!r}"
                )
            if verify:
                ok = conn.execute("PRAGMA quick_check").fetchone()[0]
                if ok != "ok":
                    conn.close()
                    raise RoundLogCorrupt(f"{p}: SQLite integrity check failed: {ok}")
            n = conn.execute("SELECT COUNT(*), COALESCE(MAX(t), -1) FROM rounds").fetchone()
        except sqlite3.DatabaseError as e:
            raise RoundLogCorrupt(f"{p}: not a readable round log: {e}") from None
        count, max_t = int(n[0]), int(n[1])
        if count != max_t + 1:
            conn.close()
            raise RoundLogCorrupt(f"{p}: {count} rounds stored but the last is t={max_t}: gap")
        rl = cls(conn, p, experiment, count)
        if verify:
            rl._verify_all()
        log.info("round log %s: %d committed rounds (next round %d)", p, count, count)
        return rl

    @property
    def next_round(self) -> int:
        """First round not yet committed (= number of committed rounds)."""
        return self._next

    def append(self, rec: RoundRecord) -> None:
        """Commit one round durably (fsynced before returning). Only ``next_round`` is accepted."""
        if rec.experiment != self.experiment:
            raise RoundLogError(f"record experiment {rec.experiment!r} != {self.experiment!r}")
        if rec.t != self._next:
            raise RoundLogError(
                f"round {rec.t} cannot be committed: the next round is {self._next} "
                "(rounds are committed exactly once, in order)"
            )
        self._conn.execute(
            "INSERT INTO rounds VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (rec.t, rec.experiment, rec.seed, rec.g_hat, rec.lr, json.dumps(list(rec.active)),
             rec.eta, rec.sigma_a, rec.mu, rec.model_hash, rec.timestamp, record_digest(rec)),
        )  # autocommit (isolation_level=None): one fsynced transaction per round
        self._next += 1

    def records(self, since: int = 0, limit: int | None = None) -> list[RoundRecord]:
        """Committed records with ``t >= since`` in round order (at most ``limit``)."""
        if since < 0:
            raise ValueError(f"since: {since} must be >= 0")
        q = "SELECT * FROM rounds WHERE t >= ? ORDER BY t"
        args: tuple[int, ...] = (since,)
        if limit is not None:
            if limit < 1:
                raise ValueError(f"limit: {limit} must be >= 1")
            q += " LIMIT ?"
            args = (since, limit)
        return [self._row_to_record(r) for r in self._conn.execute(q, args)]

    def last(self) -> RoundRecord | None:
        """The most recent committed record, or None for an empty log."""
        recs = self.records(self._next - 1) if self._next else []
        return recs[0] if recs else None

    def close(self) -> None:
        """Close the database (checkpoints the WAL)."""
        self._conn.close()

    def _verify_all(self) -> None:
        for t, rec_digest, rec in self._iter_with_digest():
            if record_digest(rec) != rec_digest:
                raise RoundLogCorrupt(f"{self.path}: round {t} fails its checksum")

    def _iter_with_digest(self) -> Sequence[tuple[int, str, RoundRecord]]:
        rows = self._conn.execute("SELECT * FROM rounds ORDER BY t").fetchall()
        return [(int(r[0]), str(r[11]), self._row_to_record(r)) for r in rows]

    @staticmethod
    def _row_to_record(r: Sequence[object]) -> RoundRecord:
        return RoundRecord(
            experiment=str(r[1]), t=int(r[0]), seed=int(r[2]), g_hat=float(r[3]),  # type: ignore[arg-type]
            lr=float(r[4]), active=tuple(int(x) for x in json.loads(str(r[5]))),  # type: ignore[arg-type]
            eta=float(r[6]), sigma_a=float(r[7]),  # type: ignore[arg-type]
            mu=None if r[8] is None else float(r[8]),  # type: ignore[arg-type]
            model_hash=None if r[9] is None else str(r[9]),
            timestamp=float(r[10]),  # type: ignore[arg-type]
        )

