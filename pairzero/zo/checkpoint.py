"""ZO checkpoints: initial weights + manifest + the list of (seed, ĝ) rounds.

Under ZO training the model is a pure function of (initial weights, ordered list of
(seed, ĝ)) (DESIGN.md §1): a few bytes per round instead of a copy of θ.  A
:class:`ZOCheckpoint` is that list plus what is needed to replay it bit-identically: the
reference to the initial weights (and optionally their SHA-256), the manifest digest, and the
ZO hyper-parameters that enter the update (ε, lr, q, distribution, weight decay).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pairzero.config import ZOConfig
from pairzero.zo.engine import ZOEngine
from pairzero.zo.manifest import ManifestMismatch, check_manifest

__all__ = ["ZOCheckpoint", "tensors_sha256", "export_pretrained", "CHECKPOINT_FORMAT"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "pairzero-zo-checkpoint/1"
#: ZOConfig fields that change θ on replay (clip only acts before aggregation, kept for audit).
_REPLAY_FIELDS = ("epsilon", "lr", "perturbation", "num_perturbations", "weight_decay")


def tensors_sha256(tensors: Iterable[torch.Tensor]) -> str:
    """SHA-256 hex of the raw bytes of ``tensors`` in order (a fingerprint of θ)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _norm_ghat(g: Any) -> float | tuple[float, ...]:
    if isinstance(g, int | float):
        val: float | tuple[float, ...]
        val = float(g)
        ok = math.isfinite(val)
    else:
        val = tuple(float(x) for x in g)
        ok = all(math.isfinite(x) for x in val)
    if not ok:
        raise ValueError(f"g_hat: {g!r}, expected finite values")
    return val


@dataclass
class ZOCheckpoint:
    """Initial-weights reference, manifest digest, ZO config and the (seed, ĝ) records."""

    initial_weights: str
    manifest_digest: str
    zo: dict[str, Any]
    records: list[tuple[int, float | tuple[float, ...]]] = field(default_factory=list)
    initial_sha256: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_engine(
        cls, engine: ZOEngine, initial_weights: str, *, fingerprint: bool = True, **meta: Any
    ) -> ZOCheckpoint:
        """Start a checkpoint at the engine's current θ (its fingerprint stored if asked)."""
        return cls(
            initial_weights=initial_weights,
            manifest_digest=engine.manifest.digest,
            zo=dataclasses.asdict(engine.cfg),
            initial_sha256=tensors_sha256(engine.params) if fingerprint else None,
            meta=dict(meta),
        )

    def append(self, seed: int, g_hat: float | Sequence[float]) -> None:
        """Record one round (seed >= 0, ĝ finite)."""
        if not (isinstance(seed, int) and seed >= 0):
            raise ValueError(f"seed: {seed!r}, expected an int >= 0")
        self.records.append((seed, _norm_ghat(g_hat)))

    def zo_config(self) -> ZOConfig:
        """The ZOConfig stored in the checkpoint."""
        return ZOConfig(**self.zo)

    def check_engine(self, engine: ZOEngine) -> None:
        """Raise unless ``engine`` has this manifest and the same replay-relevant config."""
        check_manifest(engine.manifest, self.manifest_digest)
        for k in _REPLAY_FIELDS:
            if getattr(engine.cfg, k) != self.zo.get(k):
                raise ValueError(
                    f"zo.{k}: engine has {getattr(engine.cfg, k)!r}, checkpoint has "
                    f"{self.zo.get(k)!r}; replay needs the same value"
                )

    def apply_to(self, engine: ZOEngine, *, verify_initial: bool = True) -> None:
        """Replay all records on ``engine`` (whose model holds the initial weights)."""
        self.check_engine(engine)
        if verify_initial and self.initial_sha256 is not None:
            got = tensors_sha256(engine.params)
            if got != self.initial_sha256:
                raise ManifestMismatch(
                    f"initial weights: fingerprint {got[:16]}... differs from the checkpoint's "
                    f"{self.initial_sha256[:16]}... (load {self.initial_weights!r} unchanged)"
                )
        engine.replay(self.records)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (floats are written with repr, so they reload bit-exactly)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "initial_weights": self.initial_weights,
            "initial_sha256": self.initial_sha256,
            "manifest_digest": self.manifest_digest,
            "zo": self.zo,
            "records": [[s, list(g) if isinstance(g, tuple) else g] for s, g in self.records],
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> Path:
        """Write JSON to ``path`` (atomically: temp file + rename)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ZOCheckpoint:
        """Read a checkpoint written by :meth:`save`."""
        obj = json.loads(Path(path).read_text())
        if obj.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format: {obj.get('format')!r} in {path}, expected {CHECKPOINT_FORMAT!r}")
        ck = cls(
            initial_weights=obj["initial_weights"],
            manifest_digest=obj["manifest_digest"],
            zo=dict(obj["zo"]),
            initial_sha256=obj.get("initial_sha256"),
            meta=dict(obj.get("meta", {})),
        )
        for s, g in obj["records"]:
            ck.append(int(s), g)
        return ck


def export_pretrained(
    checkpoint: ZOCheckpoint,
    model: nn.Module,
    named_params: Iterable[tuple[str, nn.Parameter]],
    out_dir: str | Path,
    *,
    threads: int | None = None,
) -> Path:
    """Replay ``checkpoint`` on ``model`` (loaded from its initial weights) and save it.

    ``model`` must have ``save_pretrained`` (Hugging Face); ``named_params`` must give the
    manifest the checkpoint was made with.  Writes the model to ``out_dir`` and the checkpoint
    next to it as ``zo_checkpoint.json``; returns ``out_dir``.
    """
    save_pretrained = getattr(model, "save_pretrained", None)
    if save_pretrained is None:
        raise ValueError(f"model: {type(model).__name__} has no save_pretrained (not a Hugging Face model)")
    engine = ZOEngine(model, named_params, checkpoint.zo_config(), threads=threads)
    checkpoint.apply_to(engine)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_pretrained(out)
    checkpoint.save(out / "zo_checkpoint.json")
    log.info("exported %d replayed rounds to %s", len(checkpoint.records), out)
    return out
