"""Seeds every process derives the same way (AP, edge nodes, simulate).

Round t's perturbation seed is chosen by the AP from the experiment seed; node k's mini-batch
of that round from the round seed and k. SHA-256 based, so independent of Python's hash
randomisation, numpy and torch versions; 63 bits so they fit a signed 64-bit integer.
"""

from __future__ import annotations

import hashlib

__all__ = ["MAX_SEED", "round_seed", "batch_seed", "warmup_seed"]

MAX_SEED = (1 << 63) - 1


def _h63(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & MAX_SEED


def round_seed(master_seed: int, t: int) -> int:
    """Perturbation seed of round ``t``: first 63 bits of SHA-256("pairzero-round:<seed>:<t>")."""
    if master_seed < 0 or t < 0:
        raise ValueError(f"master_seed={master_seed}, t={t}: both must be >= 0")
    return _h63(f"pairzero-round:{master_seed}:{t}")


def batch_seed(round_seed: int, node: int) -> int:
    """Seed of node ``node``'s mini-batch in the round whose perturbation seed is ``round_seed``."""
    return _h63(f"pairzero-batch:{round_seed}:{node}")


def warmup_seed(master_seed: int, w: int) -> int:
    """Perturbation seed of clip warm-up draw ``w`` (a stream apart from every round seed)."""
    if master_seed < 0 or w < 0:
        raise ValueError(f"master_seed={master_seed}, w={w}: both must be >= 0")
    return _h63(f"pairzero-clip-warmup:{master_seed}:{w}")
