"""Zadoff-Chu sequences: constant-amplitude preambles and pilots with ideal periodic autocorrelation."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["zadoff_chu", "node_roots"]


def zadoff_chu(length: int, root: int) -> npt.NDArray[np.complex128]:
    """Zadoff-Chu sequence ``exp(-j*pi*u*n*(n+1)/N)`` (odd N), unit amplitude, shape (N,).

    ``root`` must be coprime with ``length``; for a prime length every root 1..N-1 works and two
    different roots have cross-correlation of magnitude sqrt(N) (vs N for the autocorrelation).
    """
    if length < 3 or length % 2 == 0:
        raise ValueError(f"length: {length!r} is not allowed; a Zadoff-Chu length must be odd and >= 3")
    if not 0 < root < length or math.gcd(root, length) != 1:
        raise ValueError(
            f"root: {root!r} is not allowed for length {length}; it must be in 1..{length - 1} "
            "and coprime with the length"
        )
    n = np.arange(length, dtype=np.float64)
    return np.exp(-1j * np.pi * root * n * (n + 1) / length)


def node_roots(length: int, first_root: int, count: int) -> list[int]:
    """``count`` distinct roots coprime with ``length``, starting at ``first_root`` (cyclically).

    Node k's preamble uses the k-th root, so the AP can correlate against each node separately
    and add the correlation *energies*: detection then does not depend on the nodes' phases.
    """
    if count < 1:
        raise ValueError(f"count: {count!r} must be >= 1")
    roots: list[int] = []
    r = first_root
    for _ in range(length):
        r = (r - 1) % (length - 1) + 1  # keep 1..length-1
        if math.gcd(r, length) == 1 and r not in roots:
            roots.append(r)
            if len(roots) == count:
                return roots
        r += 1
    raise ValueError(
        f"count: {count} nodes need {count} roots coprime with length {length}; only {len(roots)} exist"
    )
