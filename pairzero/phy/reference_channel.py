"""Numpy reference channel (the same model as the GNU Radio emulator) for tests and simulations.

Node k's stream x_k(n) (absolute sample index n from ``start_index``) reaches the AP as
``gain_k * exp(j 2 pi cfo_k n) * x_k`` delayed by ``delay_k`` samples (fractional, band-limited),
summed over nodes, plus complex AWGN of variance ``noise_var``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sync.estimation import fractional_shift

__all__ = ["apply_channel"]


def apply_channel(
    streams: Sequence[npt.NDArray[np.complexfloating]],
    gains: Sequence[complex],
    delays: Sequence[float],
    cfos: Sequence[float],
    noise_var: float,
    rng: np.random.Generator,
    start_index: int = 0,
) -> npt.NDArray[np.complex128]:
    """Sum of the K node streams (each shape (N,)) through their channels, plus AWGN; shape (N,)."""
    if not (len(streams) == len(gains) == len(delays) == len(cfos)):
        raise ValueError(
            f"streams/gains/delays/cfos: lengths {len(streams)}, {len(gains)}, {len(delays)}, "
            f"{len(cfos)} must be equal (one per node)"
        )
    if noise_var < 0:
        raise ValueError(f"noise_var: {noise_var!r} must be >= 0")
    n = len(streams[0])
    out = np.zeros(n, dtype=np.complex128)
    idx = start_index + np.arange(n)
    for x, g, d, f in zip(streams, gains, delays, cfos, strict=True):
        out += fractional_shift(complex(g) * np.exp(2j * np.pi * f * idx) * x, d)
    noise = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    return out + np.sqrt(noise_var / 2) * noise
