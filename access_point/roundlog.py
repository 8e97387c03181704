"""Durable round log of the access point: SQLite in WAL mode with ``synchronous=FULL``, hash
chained, with a head file outside the database that proves its length.

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
  rounds whose commit had returned.
* Integrity: each row carries a SHA-256 of its canonical content (``digest``) and a hash chain
  ``chain_t = SHA-256(chain_{t-1} || digest_t)`` (``chain_{-1}`` derives from the experiment
  id), so a row changed, removed or reordered anywhere breaks every later link.
* Length: SQLite cannot tell a log that lost its tail (a deleted ``-wal`` file, a damaged WAL
  frame in the middle, a zero-length file) from a shorter valid one: it opens them as
  valid logs. So after every commit the log writes a *head* file next to the database
  (``rounds.sqlite`` -> ``rounds.head``: experiment, rounds committed, last chain hash),
  atomically (temporary file, fsync, rename, fsync of the directory). :meth:`RoundLog.open`
  refuses, with :class:`RoundLogCorrupt` naming the file, a log shorter than its head, one
  whose chain at the head's round differs from the head's, a broken chain, and a log with
  rounds but no head: never a silent restart from an earlier round (the operator decides;
  nothing is silently dropped). A log one or more rounds *longer* than its head is the trace
  of a crash between a commit and the head's update: it is accepted and the head rewritten.
  A damaged log is inspected through a read-only connection, so refusing it leaves the
  database and its WAL exactly as found.
* Full disk, read-only directory: a commit that fails raises :class:`RoundLogError` (an
  :class:`~pairzero.errors.OperationalError`: one line, status 1) and stores nothing of the
  round (SQLite rolls the transaction back); the log stays at its last committed round and
  reopens once space is back.
* Backward compatibility: a log written before the chain existed (no ``chain`` column, no
  head) is upgraded on open with a warning: its length before the upgrade cannot be proven.

Commit order in the AP (see :mod:`access_point.orchestrator`): the PHY result fixes g_hat
-> the AP replica (if any) applies it and hashes -> :meth:`append` commits (database, then
head) -> UPDATE is broadcast. A crash before the commit re-runs round t after restart with the
same seed (nodes never received its UPDATE); a crash after the commit leaves nodes one round
behind, which they fill by catch-up from this log. No round is lost or applied twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pairzero import durable
from pairzero.durable import chain_link, write_atomic
from pairzero.errors import OperationalError
from pairzero.protocol.messages import RoundRecord

__all__ = [
    "RoundLog", "RoundLogError", "RoundLogCorrupt", "record_digest", "chain_link",
    "chain_genesis", "head_path_for",
]

log = logging.getLogger(__name__)

#: Value of ``meta.format`` in a hash-chained log (written by this version).
FORMAT = "2"
_HEAD_FORMAT = "pairzero-roundlog-head/1"
_COLUMNS = ("t", "experiment", "seed", "g_hat", "lr", "active", "eta", "sigma_a", "mu",
            "model_hash", "timestamp", "digest", "chain")

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
    digest TEXT NOT NULL,
    chain TEXT
);
"""

# SQLite result codes that say the file cannot be used as asked (space, permissions, I/O),
# as opposed to a file whose content is damaged.
_CORRUPT_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_FIX = ("free space or make the run directory writable, then restart the AP on this run "
        "directory: it resumes from the last committed round")


class RoundLogError(OperationalError):
    """The round log cannot be used as asked (wrong experiment, out-of-order append, a commit
    that failed on a full disk or a read-only directory)."""


class RoundLogCorrupt(RoundLogError):
    """The stored rounds fail their checksums or hash chain, are not contiguous, or are fewer
    than the head file proves were committed."""


def record_digest(rec: RoundRecord) -> str:
    """SHA-256 (hex) of a record's canonical JSON (floats by repr: exact)."""
    canon = json.dumps(
        [rec.experiment, rec.t, rec.seed, repr(rec.g_hat), repr(rec.lr), list(rec.active),
         repr(rec.eta), repr(rec.sigma_a), None if rec.mu is None else repr(rec.mu),
         rec.model_hash, repr(rec.timestamp)],
        separators=(",", ":"),
    )
    return hashlib.sha256(canon.encode()).hexdigest()


def chain_genesis(experiment: str) -> str:
    """The chain value before round 0 (hex): bound to the experiment id."""
    return durable.chain_genesis("pairzero-roundlog-chain\0" + experiment)


def head_path_for(path: str | Path) -> Path:
    """The head file of the log at ``path`` (``rounds.sqlite`` -> ``rounds.head``)."""
    return Path(path).with_suffix(".head")


@dataclass(frozen=True)
class _Head:
    experiment: str
    rounds: int
    chain: str


def _read_head(path: Path) -> _Head | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise RoundLogCorrupt(f"{path}: cannot read the round log's head file: {e}") from None
    try:
        obj = json.loads(text)
        if obj.get("format") != _HEAD_FORMAT:
            raise ValueError(f"format {obj.get('format')!r}")
        head = _Head(str(obj["experiment"]), int(obj["rounds"]), str(obj["chain"]))
        if head.rounds < 0 or len(bytes.fromhex(head.chain)) != 32:
            raise ValueError("rounds or chain out of range")
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise RoundLogCorrupt(f"{path}: the round log's head file is damaged ({e})") from None
    return head


def _sqlite_failure(p: Path, e: sqlite3.Error, doing: str) -> RoundLogError:
    """Map a SQLite error to a one-line refusal: damaged content vs unusable file."""
    name = getattr(e, "sqlite_errorname", "") or ""
    if name.startswith(_CORRUPT_CODES) or not isinstance(e, sqlite3.OperationalError):
        return RoundLogCorrupt(f"{p}: not a readable round log: {e}")
    return RoundLogError(f"{p}: cannot {doing}: {e} ({_FIX})")


@dataclass
class _Stored:
    """What an existing database holds, read through a read-only connection."""

    experiment: str | None
    format: str | None
    chained: bool  # has the chain column
    rows: list[tuple[object, ...]]  # full rows in t order


def _inspect(p: Path, verify: bool) -> _Stored:
    """Read an existing log without writing anything (no recovery write, no checkpoint)."""
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error as e:
        raise _sqlite_failure(p, e, "open the round log") from None
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if verify and tables:
            ok = con.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise RoundLogCorrupt(f"{p}: SQLite integrity check failed: {ok}")
        meta: dict[str, str] = {}
        if "meta" in tables:
            meta = {str(k): str(v) for k, v in con.execute("SELECT key, value FROM meta")}
        rows: list[tuple[object, ...]] = []
        chained = False
        if "rounds" in tables:
            cols = [r[1] for r in con.execute("PRAGMA table_info(rounds)")]
            chained = "chain" in cols
            sel = ", ".join(c for c in _COLUMNS if c in cols)
            rows = [tuple(r) for r in con.execute(f"SELECT {sel} FROM rounds ORDER BY t")]
            if not chained:
                rows = [(*r, None) for r in rows]
        return _Stored(meta.get("experiment"), meta.get("format"), chained, rows)
    except sqlite3.Error as e:
        raise _sqlite_failure(p, e, "read the round log") from None
    finally:
        con.close()


class RoundLog:
    """Append-only durable log of committed rounds for one experiment.

    Not thread-safe: the AP's single orchestrator thread owns it.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, experiment: str, next_round: int,
                 chain: str | None = None):
        self._conn = conn
        self.path = path
        self.head_path = head_path_for(path)
        self.experiment = experiment
        self._next = next_round
        self._chain = chain if chain is not None else chain_genesis(experiment)

    @classmethod
    def open(cls, path: str | Path, experiment: str, verify: bool = True) -> RoundLog:
        """Open (or create) the log at ``path`` for ``experiment``; verify it unless told not to.

        Raises RoundLogError if the file belongs to another experiment or cannot be written
        (read-only directory, full disk), RoundLogCorrupt if a row fails its checksum or the
        chain, the rounds are not 0..n-1, the log holds fewer rounds than its head file
        records, or SQLite reports corruption.
        """
        if not experiment:
            raise ValueError("experiment: must be a non-empty string")
        p = Path(path)
        head_path = head_path_for(p)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RoundLogError(f"{p.parent}: cannot create the run directory: {e}") from None
        head = _read_head(head_path)
        if head is not None and head.experiment != experiment:
            raise RoundLogError(f"{head_path}: round log belongs to experiment "
                                f"{head.experiment!r}, not {experiment!r}")
        size = p.stat().st_size if p.exists() else None
        if head is not None and head.rounds > 0 and not size:
            what = "is missing" if size is None else "is empty (zero length)"
            raise RoundLogCorrupt(
                f"{p}: the round log {what} but {head_path} records {head.rounds} committed "
                f"rounds; refusing to start over from round 0 (restore the log or use a new "
                "run directory)")
        stored = _inspect(p, verify) if size else _Stored(None, None, True, [])
        if stored.experiment is not None and stored.experiment != experiment:
            raise RoundLogError(
                f"{p}: round log belongs to experiment {stored.experiment!r}, not {experiment!r}")
        chain = cls._check_rows(p, experiment, stored, verify)
        count = len(stored.rows)
        legacy = count > 0 and not stored.chained
        if head is None and count > 0 and not legacy:
            raise RoundLogCorrupt(
                f"{p}: {count} committed rounds but no head file {head_path.name}: it proves "
                "the log's length and is written with every commit; refusing a log whose "
                "length cannot be checked (restore the head file or use a new run directory)")
        if head is not None:
            cls._check_head(p, head_path, head, stored, chain, count)
        conn = cls._connect(p, experiment, stored, legacy)
        rl = cls(conn, p, experiment, count, chain[-1] if chain else None)
        if legacy:
            log.warning("%s: written before the round log was hash chained: its %d rounds are "
                        "chained from now on, but whether rounds were lost before cannot be "
                        "proven", p, count)
        if head is None or head.rounds != count:
            if head is not None:
                log.warning("%s: %d rounds committed, its head recorded %d (a stop between a "
                            "commit and the head's update); head updated", p, count, head.rounds)
            try:
                rl._write_head()
            except OSError as e:
                conn.close()
                raise RoundLogError(f"{head_path}: cannot write the round log's head: {e} "
                                    f"({_FIX})") from None
        log.info("round log %s: %d committed rounds (next round %d)", p, count, count)
        return rl

    @staticmethod
    def _check_rows(p: Path, experiment: str, stored: _Stored, verify: bool) -> list[str]:
        """Contiguity, checksums and chain of the stored rows; returns the chain values."""
        rows = stored.rows
        if any(int(r[0]) != i for i, r in enumerate(rows)):  # type: ignore[call-overload]
            raise RoundLogCorrupt(f"{p}: {len(rows)} rounds stored but the last is "
                                  f"t={rows[-1][0]}: gap")
        chain: list[str] = []
        prev = chain_genesis(experiment)
        for r in rows:
            t, digest, stored_chain = int(r[0]), str(r[11]), r[12]  # type: ignore[call-overload]
            if verify and record_digest(RoundLog._row_to_record(r)) != digest:
                raise RoundLogCorrupt(f"{p}: round {t} fails its checksum")
            prev = chain_link(prev, digest)
            if stored.chained and stored_chain != prev:
                raise RoundLogCorrupt(f"{p}: the hash chain breaks at round {t} (this round or "
                                      "one before it was changed, removed or reordered)")
            chain.append(prev)
        return chain

    @staticmethod
    def _check_head(p: Path, head_path: Path, head: _Head, stored: _Stored, chain: list[str],
                    count: int) -> None:
        if count < head.rounds:
            raise RoundLogCorrupt(
                f"{p}: the round log holds {count} rounds but {head_path.name} records "
                f"{head.rounds} committed: rounds were lost (a deleted or damaged -wal file?); "
                f"refusing to resume from round {count} (restore the log or use a new run "
                "directory)")
        expected = chain[head.rounds - 1] if head.rounds else chain_genesis(head.experiment)
        if expected != head.chain:
            raise RoundLogCorrupt(
                f"{p}: the hash chain at round {head.rounds - 1} differs from {head_path.name}: "
                "not the log the head was written for, or its rounds were changed")

    @staticmethod
    def _connect(p: Path, experiment: str, stored: _Stored, legacy: bool) -> sqlite3.Connection:
        """The writable connection (WAL, synchronous=FULL); creates or upgrades the schema."""
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(str(p), isolation_level=None, check_same_thread=False)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RoundLogError(f"{p}: SQLite refused WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            cols = [r[1] for r in conn.execute("PRAGMA table_info(rounds)")]
            if "chain" not in cols:
                conn.execute("ALTER TABLE rounds ADD COLUMN chain TEXT")
            if legacy:
                prev = chain_genesis(experiment)
                for t, digest in list(conn.execute("SELECT t, digest FROM rounds ORDER BY t")):
                    prev = chain_link(prev, str(digest))
                    conn.execute("UPDATE rounds SET chain = ? WHERE t = ?", (prev, t))
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('experiment', ?)", (experiment,))
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (FORMAT,))
            conn.execute("COMMIT")
            return conn
        except sqlite3.Error as e:
            if conn is not None:
                conn.close()
            raise _sqlite_failure(p, e, "open the round log for writing") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise

    @property
    def next_round(self) -> int:
        """First round not yet committed (= number of committed rounds)."""
        return self._next

    def append(self, rec: RoundRecord) -> None:
        """Commit one round durably (fsynced before returning), then its head.

        Only ``next_round`` is accepted. A failed commit (full disk, read-only directory)
        raises RoundLogError and stores nothing of the round.
        """
        if rec.experiment != self.experiment:
            raise RoundLogError(f"record experiment {rec.experiment!r} != {self.experiment!r}")
        if rec.t != self._next:
            raise RoundLogError(
                f"round {rec.t} cannot be committed: the next round is {self._next} "
                "(rounds are committed exactly once, in order)"
            )
        digest = record_digest(rec)
        chain = chain_link(self._chain, digest)
        try:
            self._conn.execute(
                f"INSERT INTO rounds ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                (rec.t, rec.experiment, rec.seed, rec.g_hat, rec.lr, json.dumps(list(rec.active)),
                 rec.eta, rec.sigma_a, rec.mu, rec.model_hash, rec.timestamp, digest, chain),
            )  # autocommit (isolation_level=None): one fsynced transaction per round
        except sqlite3.Error as e:
            raise RoundLogError(
                f"{self.path}: round {rec.t} could not be committed: {e}; the log ends at "
                f"round {rec.t - 1} and stays consistent ({_FIX})") from None
        self._next += 1
        self._chain = chain
        try:
            self._write_head()
        except OSError as e:
            raise RoundLogError(
                f"{self.head_path}: round {rec.t} is committed to {self.path.name} but its head "
                f"could not be written: {e} (a restart accepts the log one round ahead of its "
                f"head; {_FIX})") from None

    def _write_head(self) -> None:
        """Replace the head file atomically and durably (:func:`pairzero.durable.write_atomic`)."""
        write_atomic(self.head_path, json.dumps({"format": _HEAD_FORMAT, "experiment": self.experiment,
                                                 "rounds": self._next, "chain": self._chain}) + "\n")

    def records(self, since: int = 0, limit: int | None = None) -> list[RoundRecord]:
        """Committed records with ``t >= since`` in round order (at most ``limit``)."""
        if since < 0:
            raise ValueError(f"since: {since} must be >= 0")
        q = f"SELECT {', '.join(_COLUMNS)} FROM rounds WHERE t >= ? ORDER BY t"
        args: tuple[int, ...] = (since,)
        if limit is not None:
            if limit < 1:
                raise ValueError(f"limit: {limit} must be >= 1")
            q += " LIMIT ?"
            args = (since, limit)
        try:
            return [self._row_to_record(r) for r in self._conn.execute(q, args)]
        except sqlite3.Error as e:
            raise RoundLogError(f"{self.path}: cannot read the round log: {e}") from None

    def last(self) -> RoundRecord | None:
        """The most recent committed record, or None for an empty log."""
        recs = self.records(self._next - 1) if self._next else []
        return recs[0] if recs else None

    def close(self) -> None:
        """Close the database (checkpoints the WAL)."""
        self._conn.close()

    @staticmethod
    def _row_to_record(r: Sequence[object]) -> RoundRecord:
        return RoundRecord(
            experiment=str(r[1]), t=int(r[0]), seed=int(r[2]), g_hat=float(r[3]),  # type: ignore[arg-type, call-overload]
            lr=float(r[4]), active=tuple(int(x) for x in json.loads(str(r[5]))),  # type: ignore[arg-type]
            eta=float(r[6]), sigma_a=float(r[7]),  # type: ignore[arg-type]
            mu=None if r[8] is None else float(r[8]),  # type: ignore[arg-type]
            model_hash=None if r[9] is None else str(r[9]),
            timestamp=float(r[10]),  # type: ignore[arg-type]
        )
