"""Manifest of the trainable parameters that a ZO perturbation covers.

Every node regenerates the perturbation z from the round seed and this manifest, so all nodes
must agree on it exactly: parameter names, shapes, dtypes, their order, and the z-generation
scheme (chunk size, key derivation).  The manifest is hashed (SHA-256) and the digest is
compared when a node joins; a node with a different manifest would silently apply a
different z and drift away from the others.

Tied parameters (OPT's ``lm_head.weight`` is ``model.decoder.embed_tokens.weight``) share one
storage and are listed once, under the first name met, so they are perturbed once.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable
from dataclasses import dataclass

import torch

__all__ = [
    "Z_SCHEME",
    "ParamManifest",
    "ManifestMismatch",
    "build_manifest",
    "dedup_named_params",
    "check_manifest",
    "z_backend",
]

#: Identifier of the z-generation scheme (see :mod:`pairzero.zo.perturb`); part of the digest,
#: so nodes running an incompatible scheme are refused at join instead of drifting apart.
Z_SCHEME = "pairzero-z-v1;chunk=262144;key=sha256(digest|seed|j|param|chunk)"


def z_backend(dist: str) -> str:
    """What else the bits of z depend on, for distribution ``dist``; part of the digest.

    Gaussian z comes from torch's Box-Muller, which takes a vectorized path on x86 CPUs with
    AVX2/AVX512 and a scalar libm path otherwise (measured on torch 2.13: ``DEFAULT`` and
    ``AVX2`` give different low bits, ``AVX2`` and ``AVX512`` the same), and may change with
    the torch version: the tag names both, so mixed fleets are refused at join instead of
    drifting apart.  Rademacher z uses only mt19937 words and integer bit operations: CPU
    independent (tag ``rademacher/int``).
    """
    if dist == "rademacher":
        return "rademacher/int"
    if dist != "gaussian":
        raise ValueError(f"dist: {dist!r}, expected 'gaussian' or 'rademacher'")
    cap = torch.backends.cpu.get_cpu_capability()
    cls = "x86-avx2" if cap in ("AVX2", "AVX512") else f"{platform.machine()}-{cap}"
    return f"gaussian/torch-{torch.__version__.split('+')[0]}/{cls}"


class ManifestMismatch(ValueError):
    """Two nodes disagree on the trainable-parameter manifest (so their z would differ)."""


@dataclass(frozen=True)
class ParamManifest:
    """Ordered (name, shape, dtype) of the perturbed parameters, and its SHA-256 hex digest."""

    entries: tuple[tuple[str, tuple[int, ...], str], ...]
    digest: str
    scheme: str = Z_SCHEME

    @property
    def numel(self) -> int:
        """Total number of perturbed scalar values (elements)."""
        total = 0
        for _, shape, _ in self.entries:
            n = 1
            for s in shape:
                n *= s
            total += n
        return total

    def to_json(self) -> str:
        """Serialize (entries and digest) as JSON text."""
        return json.dumps(
            {"scheme": self.scheme, "entries": [[n, list(s), d] for n, s, d in self.entries],
             "digest": self.digest}
        )

    @classmethod
    def from_json(cls, text: str) -> ParamManifest:
        """Parse :meth:`to_json` output; the digest is recomputed and must match."""
        obj = json.loads(text)
        entries = tuple((str(n), tuple(int(x) for x in s), str(d)) for n, s, d in obj["entries"])
        scheme = str(obj["scheme"])
        digest = _digest(entries, scheme)
        if digest != obj["digest"]:
            raise ManifestMismatch(
                f"manifest digest {obj['digest']!r} does not match its entries and scheme "
                f"(recomputed {digest!r})"
            )
        return cls(entries=entries, digest=digest, scheme=scheme)


def _digest(entries: tuple[tuple[str, tuple[int, ...], str], ...], scheme: str) -> str:
    payload = json.dumps({"scheme": scheme, "entries": [[n, list(s), d] for n, s, d in entries]},
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def dedup_named_params(
    named_params: Iterable[tuple[str, torch.Tensor]],
) -> list[tuple[str, torch.Tensor]]:
    """Drop repeated tensors (same storage and offset: weight tying), keeping the first name."""
    seen: set[tuple[int, int | torch.SymInt]] = set()
    out: list[tuple[str, torch.Tensor]] = []
    for name, p in named_params:
        if not isinstance(p, torch.Tensor):
            raise ValueError(f"named_params: {name!r} is a {type(p).__name__}, expected a Tensor")
        key = (p.untyped_storage().data_ptr(), p.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        out.append((name, p))
    return out


def build_manifest(
    named_params: Iterable[tuple[str, torch.Tensor]], dist: str = "gaussian"
) -> ParamManifest:
    """Manifest of ``named_params`` in the given order; tied tensors are counted once.

    ``dist`` (the z distribution) selects the :func:`z_backend` tag in the scheme.
    """
    entries = tuple(
        (name, tuple(int(s) for s in p.shape), str(p.dtype).removeprefix("torch."))
        for name, p in dedup_named_params(named_params)
    )
    if not entries:
        raise ValueError("named_params: empty, expected at least one trainable parameter")
    scheme = f"{Z_SCHEME};{z_backend(dist)}"
    return ParamManifest(entries=entries, digest=_digest(entries, scheme), scheme=scheme)


def _describe_difference(local: ParamManifest, remote: ParamManifest) -> str:
    if local.entries == remote.entries and local.scheme != remote.scheme:
        return (
            f"same parameters, different z scheme: local {local.scheme!r} vs remote "
            f"{remote.scheme!r} (Gaussian z depends on the torch version and CPU class: use "
            "the same on every node, or zo.perturbation: rademacher)"
        )
    if len(local.entries) != len(remote.entries):
        head = f"{len(local.entries)} parameters here vs {len(remote.entries)} remote"
    else:
        head = f"{len(local.entries)} parameters on both sides"
    for i, (a, b) in enumerate(zip(local.entries, remote.entries, strict=False)):
        if a != b:
            return f"{head}; first difference at index {i}: local {a} vs remote {b}"
    if len(local.entries) != len(remote.entries):
        longer = local if len(local.entries) > len(remote.entries) else remote
        extra = longer.entries[min(len(local.entries), len(remote.entries))]
        side = "local" if longer is local else "remote"
        return f"{head}; first extra parameter ({side}): {extra}"
    return head


def check_manifest(local: ParamManifest, remote_digest: str | ParamManifest) -> None:
    """Raise :class:`ManifestMismatch` unless the remote manifest equals ``local``.

    ``remote_digest`` is the remote SHA-256 hex digest, or the remote :class:`ParamManifest`
    itself, in which case the error names the first differing parameter.
    """
    remote = remote_digest if isinstance(remote_digest, ParamManifest) else None
    digest = remote.digest if remote is not None else remote_digest
    if not isinstance(digest, str):
        raise ValueError(
            f"remote_digest: {type(remote_digest).__name__} given, expected a hex str or ParamManifest"
        )
    if digest == local.digest:
        return
    detail = (
        _describe_difference(local, remote)
        if remote is not None
        else f"{len(local.entries)} parameters / {local.numel} values here; only the remote digest is known"
    )
    raise ManifestMismatch(
        f"parameter manifest mismatch: local digest {local.digest[:16]}... vs remote "
        f"{digest[:16]}...: {detail}. Both sides must perturb the same parameters "
        f"(names, shapes, dtypes, order) with the same z scheme (local: {local.scheme!r})."
    )
