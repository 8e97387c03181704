"""CurveZMQ key pairs for the AP and the edge nodes (``pairzero keys``).

Directory layout written by :func:`generate_keys` (ZeroMQ certificate files, Z85 text)::

    <out>/ap.key            AP public key        -> copy to every node host
    <out>/ap.key_secret     AP key pair          -> AP host only (mode 0600)
    <out>/node<k>.key       node k public key    -> AP host (its allow-list)
    <out>/node<k>.key_secret node k key pair     -> node k host only (mode 0600)

The AP admits exactly the public keys ``node<k>.key`` found in its keys directory and binds
each to node id ``k``: a node cannot join under another node's id.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import zmq.auth

from pairzero.protocol.transport import CurveClientKeys, CurveServerKeys, Inbound

__all__ = [
    "AP_KEY_NAME",
    "generate_keys",
    "load_server_keys",
    "load_client_keys",
    "node_key_ids",
    "identity_refusal",
    "cmd_keys",
]

log = logging.getLogger(__name__)

AP_KEY_NAME = "ap"
_NODE_RE = re.compile(r"^node(\d+)\.key$")


def generate_keys(out: str | Path, nodes: int, force: bool = False) -> list[Path]:
    """Create the AP key pair and ``nodes`` node key pairs in ``out``; return the files written.

    Refuses (ValueError) to overwrite existing keys unless ``force``: replacing enrolled keys
    silently would lock every node out.
    """
    if nodes < 1:
        raise ValueError(f"nodes: {nodes} must be >= 1")
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    names = [AP_KEY_NAME] + [f"node{k}" for k in range(nodes)]
    existing = [d / f"{n}.key_secret" for n in names if (d / f"{n}.key_secret").exists()]
    if existing and not force:
        raise ValueError(
            f"out: {str(d)!r} already holds keys ({existing[0].name}, ...); "
            "use a new directory or force=True to replace them"
        )
    written: list[Path] = []
    for n in names:
        pub, sec = zmq.auth.create_certificates(str(d), n)
        os.chmod(sec, 0o600)
        written += [Path(pub), Path(sec)]
    log.info("wrote CurveZMQ keys for the AP and %d nodes to %s", nodes, d)
    return written


def node_key_ids(keys_dir: str | Path) -> dict[bytes, int]:
    """Map enrolled node public key (Z85 bytes) -> node id, from ``node<k>.key`` files."""
    d = Path(keys_dir)
    if not d.is_dir():
        raise ValueError(f"keys_dir: {str(d)!r} is not a directory (run `pairzero keys`)")
    out: dict[bytes, int] = {}
    for p in sorted(d.iterdir()):
        m = _NODE_RE.match(p.name)
        if m:
            public, _ = zmq.auth.load_certificate(str(p))
            out[public] = int(m.group(1))
    return out


def load_server_keys(keys_dir: str | Path) -> tuple[CurveServerKeys, dict[bytes, int]]:
    """AP keys and the allow-list (public key -> node id) from ``keys_dir``."""
    d = Path(keys_dir)
    sec = d / f"{AP_KEY_NAME}.key_secret"
    if not sec.is_file():
        raise ValueError(f"keys_dir: {str(sec)!r} not found (run `pairzero keys --out {d}`)")
    public, secret = zmq.auth.load_certificate(str(sec))
    if secret is None:
        raise ValueError(f"keys_dir: {str(sec)!r} holds no secret key")
    ids = node_key_ids(d)
    if not ids:
        raise ValueError(f"keys_dir: {str(d)!r} holds no node<k>.key public keys")
    return CurveServerKeys(public, secret, frozenset(ids)), ids


def load_client_keys(keys_dir: str | Path, node: int) -> CurveClientKeys:
    """Node ``node``'s key pair and the AP public key from ``keys_dir``."""
    d = Path(keys_dir)
    sec = d / f"node{node}.key_secret"
    ap = d / f"{AP_KEY_NAME}.key"
    for p in (sec, ap):
        if not p.is_file():
            raise ValueError(f"keys_dir: {str(p)!r} not found (node {node})")
    public, secret = zmq.auth.load_certificate(str(sec))
    if secret is None:
        raise ValueError(f"keys_dir: {str(sec)!r} holds no secret key")
    server_public, _ = zmq.auth.load_certificate(str(ap))
    return CurveClientKeys(public, secret, server_public)


def identity_refusal(node: int, inbound: Inbound, node_count: int | None,
                     key_ids: Mapping[bytes, int] | None) -> str:
    """Why a JOIN claiming ``node`` cannot be who it says (empty: it can): an id outside the
    enrolled 0..node_count-1, or, with CurveZMQ (``key_ids``: public key -> node id), a key
    enrolled for another node. Every role that acts as the AP (training, calibration) asks."""
    if node < 0:
        return f"node id {node} is invalid"
    if node_count is not None and node >= node_count:
        return (f"node id {node} is not enrolled: this experiment has nodes "
                f"0..{node_count - 1} (nodes.count = {node_count})")
    if key_ids is not None:
        owner = key_ids.get((inbound.user_id or "").encode())
        if owner != node:
            return f"the authenticated key is enrolled for node {owner}, not node {node}"
    return ""


def cmd_keys(args: argparse.Namespace) -> int:
    """CLI: ``pairzero keys --out DIR --nodes N``; returns the process exit status."""
    try:
        files = generate_keys(args.out, int(args.nodes), force=bool(getattr(args, "force", False)))
    except ValueError as e:
        log.error("%s", e)
        return 2
    sys.stdout.write("".join(f"{p}\n" for p in files))
    return 0
