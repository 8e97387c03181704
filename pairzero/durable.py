"""What makes an append-only record provable: a hash chain over its entries and a head file.

Used by the AP's round log (:mod:`access_point.roundlog`) and by every privacy ledger
(:class:`pairzero.ota.charging.PrivacyLedger`, the AP's and each node's). A file system can
hand back a log that lost its tail (a deleted file, a truncated write-ahead log, a restored
backup) and it reads as a shorter, valid log; an edit in the middle reads as valid too. So:

* each entry carries ``chain_i = SHA-256(chain_{i-1} || digest_i)`` (``digest_i``: SHA-256 of
  the entry's canonical content), so a change, removal or reordering anywhere breaks every later
  link;
* after every append a *head* file beside the log records how many entries were committed and
  the chain value of the last one, replaced atomically (:func:`write_atomic`). A log shorter
  than its head, or whose chain at the head's length differs from the head's, is refused; a
  log *longer* than its head by what was appended after the head's last update is the trace
  of a stop between the two writes, and accepted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["chain_genesis", "chain_link", "canonical_digest", "write_atomic"]


def chain_genesis(label: str) -> str:
    """The chain value before the first entry (hex): SHA-256 of ``label``, which says what the
    log is (and, for the round log, of which experiment)."""
    return hashlib.sha256(label.encode()).hexdigest()


def chain_link(prev: str, digest: str) -> str:
    """``chain_i = SHA-256(chain_{i-1} || digest_i)`` over the raw 32-byte values (hex out)."""
    return hashlib.sha256(bytes.fromhex(prev) + bytes.fromhex(digest)).hexdigest()


def canonical_digest(entry: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a JSON object in canonical form (sorted keys, no spaces, floats by
    repr: exact), so that the same content always gives the same digest."""
    canon = json.dumps(dict(entry), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def write_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically and durably: a temporary file, fsync, rename,
    fsync of the directory (so the rename itself survives a power loss). Raises OSError."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
