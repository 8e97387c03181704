"""Vectorised synchronisation maths: correlation, fractional timing, CFO, LS channel gain.

All functions are pure and work on numpy arrays of complex baseband samples. Units: delays in
samples (fractional allowed), frequencies in cycles/sample, gains as linear complex amplitudes.
No per-sample Python loops: correlations go through the FFT.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = [
    "xcorr_valid",
    "parabolic_offset",
    "fractional_shift",
    "cfo_ml",
    "cfo_ml_batch",
    "ls_gain",
    "detection_threshold",
    "presence_threshold",
]

CArray = npt.NDArray[np.complexfloating]


def _nfft(n: int) -> int:
    return 1 << max(1, math.ceil(math.log2(n)))


def xcorr_valid(r: CArray, t: CArray) -> npt.NDArray[np.complex128]:
    """Sliding correlation ``c[tau] = sum_n r[tau+n] * conj(t[n])``, tau = 0..len(r)-len(t).

    Shapes: r (N,), t (L,) with L <= N -> c (N-L+1,). Computed with one FFT pair.
    """
    n, m = len(r), len(t)
    if m > n:
        raise ValueError(f"t: template length {m} exceeds the signal length {n}")
    nfft = _nfft(n + m)
    c = np.fft.ifft(np.fft.fft(r, nfft) * np.conj(np.fft.fft(t, nfft)))
    return c[: n - m + 1]


def parabolic_offset(y_left: float, y_mid: float, y_right: float) -> float:
    """Fractional peak position in [-0.5, 0.5] of a parabola through three equally spaced values."""
    den = y_left - 2.0 * y_mid + y_right
    if den >= 0.0:  # not a maximum (flat or convex): no refinement
        return 0.0
    return min(0.5, max(-0.5, 0.5 * float(y_left - y_right) / float(den)))


def fractional_shift(x: CArray, delay: float, length: int | None = None) -> npt.NDArray[np.complex128]:
    """``x`` delayed by ``delay`` samples (fractional allowed, may be negative), band-limited.

    The shift is a linear phase ramp in the frequency domain over a zero-padded FFT, so the
    signal must be (nearly) band-limited and zero at its edges (true for pulse-shaped bursts).
    Output shape (length,) (default len(x)); samples shifted past either end are lost.
    """
    n = len(x)
    length = n if length is None else length
    nfft = _nfft(max(n, length) + int(math.ceil(abs(delay))) + 16)
    f = np.fft.fftfreq(nfft, 1.0)  # d: numpy 1.24's stub lacks its default (1.0)
    y = np.fft.ifft(np.fft.fft(x, nfft) * np.exp(-2j * np.pi * f * delay))
    return y[:length]


def cfo_ml(r: CArray, t: CArray, max_cfo: float, grid: int = 17) -> float:
    """Maximum-likelihood CFO (cycles/sample) of ``r ~ h * t * exp(j 2 pi f n)``, |f| <= max_cfo.

    Shapes: r, t (L,). See :func:`cfo_ml_batch` (this is one row of it).
    """
    return float(cfo_ml_batch(r[None, :], t[None, :], max_cfo, grid)[0])


def cfo_ml_batch(r: CArray, t: CArray, max_cfo: float, grid: int = 17) -> npt.NDArray[np.float64]:
    """Row-wise ML CFO (cycles/sample) for r, t of shape (B, L) -> (B,), |f| <= max_cfo.

    The ML estimate maximises ``P(f) = |sum_n r conj(t) exp(-j 2 pi f n)|^2``. With the search
    range much narrower than the periodogram's main lobe (1/L), P is evaluated on a ``grid`` of
    frequencies over the range, then on a grid 8x finer around the best point, and refined by
    parabolic interpolation. Samples are first summed in blocks short enough that f rotates
    < 0.05 rad inside one (exact to second order), so the cost is O(L + grid L / block).
    """
    if max_cfo < 0:
        raise ValueError(f"max_cfo: {max_cfo!r} must be >= 0 (cycles/sample)")
    if grid < 3:
        raise ValueError(f"grid: {grid!r} must be >= 3")
    z = r * np.conj(t)  # (B, L)
    rows, length = z.shape
    b = max(1, int(0.05 / (2 * np.pi * max(max_cfo, 1e-12))))
    b = min(b, max(1, length // 8))
    nb = -(-length // b)
    zp = np.zeros((rows, nb * b), dtype=np.complex128)
    zp[:, :length] = z
    zb = zp.reshape(rows, nb, b).sum(axis=2)  # (B, nb)
    n = (np.arange(nb) * b + (b - 1) / 2.0) - (length - 1) / 2.0  # block centres, centred

    lo = max_cfo + 1e-12
    f = np.linspace(-lo, lo, grid)
    step = f[1] - f[0]
    p = np.abs(zb @ np.exp(-2j * np.pi * np.outer(n, f))) ** 2  # (B, grid)
    f0 = f[np.argmax(p, axis=1)]  # (B,)
    offs = np.linspace(-step, step, 17)
    fine = f0[:, None] + offs[None, :]  # (B, 17)
    ph = np.exp(-2j * np.pi * n[None, :, None] * fine[:, None, :])  # (B, nb, 17)
    pf = np.abs(np.einsum("bn,bnf->bf", zb, ph)) ** 2  # (B, 17)
    i = np.clip(np.argmax(pf, axis=1), 1, len(offs) - 2)
    ar = np.arange(rows)
    yl, ym, yr = pf[ar, i - 1], pf[ar, i], pf[ar, i + 1]
    den = yl - 2 * ym + yr
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(den < 0, np.clip(0.5 * (yl - yr) / den, -0.5, 0.5), 0.0)
    est = fine[ar, i] + d * (offs[1] - offs[0])
    return np.clip(est, -max_cfo, max_cfo)


def ls_gain(r: CArray, t: CArray) -> complex:
    """Least-squares complex gain h minimising ||r - h t||^2 (r, t of equal shape)."""
    e = float(np.vdot(t, t).real)
    if e <= 0.0:
        raise ValueError("t: template has zero energy")
    return complex(np.vdot(t, r) / e)


def detection_threshold(n_templates: int, n_samples: int, n_positions: int, pfa: float) -> float:
    """Threshold on the normalised preamble metric for a false-alarm probability ``pfa`` per window.

    Under noise only, each template's ``|<w, p_k>|^2 / (||p_k||^2 sigma^2)`` is Exp(1) and the
    window energy is about n_samples sigma^2, so the metric ``sum_k |<r,p_k>|^2 / (||p||^2 ||r||^2)``
    is Gamma(n_templates, 1) / n_samples. A union bound over ``n_positions`` gives the threshold.
    With signal and no noise the metric is 1.
    """
    if not 0.0 < pfa < 1.0:
        raise ValueError(f"pfa: {pfa!r} must be in (0, 1)")
    q = stats.gamma.isf(pfa / max(1, n_positions), n_templates)
    return float(q / n_samples)


def presence_threshold(n_positions: int, pfa: float) -> float:
    """Threshold on ``|<r,p>|^2 / (||p||^2 sigma^2)`` (Exp(1) under noise) for a node's pilot.

    The maximum over ``n_positions`` candidate delays exceeds ``-ln(pfa / n_positions)`` with
    probability <= pfa when the node is absent.
    """
    if not 0.0 < pfa < 1.0:
        raise ValueError(f"pfa: {pfa!r} must be in (0, 1)")
    return float(-math.log(pfa / max(1, n_positions)))
