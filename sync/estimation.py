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
    return float(np.clip(0.5 * (y_left - y_right) / den, -0.5, 0.5))


def fractional_shift(x: CArray, delay: float, length: int | None = None) -> npt.NDArray[np.complex128]:
    """``x`` delayed by ``delay`` samples (fractional allowed, may be negative), band-limited.

    The shift is a linear phase ramp in the frequency domain over a zero-padded FFT, so the
    signal must be (nearly) band-limited and zero at its edges (true for pulse-shaped bursts).
    Output shape (length,) (default len(x)); samples shifted past either end are lost.
    """
    n = len(x)
    length = n if length is None else length
    nfft = _nfft(max(n, length) + int(math.ceil(abs(delay))) + 16)
    f = np.fft.fftfreq(nfft)
    y = np.fft.ifft(np.fft.fft(x, nfft) * np.exp(-2j * np.pi * f * delay))
    return y[:length]


def cfo_ml(r: CArray, t: CArray, max_cfo: float, oversample: int = 16) -> float:
    """Maximum-likelihood CFO (cycles/sample) of ``r ~ h * t * exp(j 2 pi f n)``, |f| <= max_cfo.

    The ML estimate maximises ``|sum r conj(t) exp(-j 2 pi f n)|``: the peak of the zero-padded
    FFT of ``r * conj(t)``, refined by parabolic interpolation. Shapes: r, t (L,).
    """
    if max_cfo < 0:
        raise ValueError(f"max_cfo: {max_cfo!r} must be >= 0 (cycles/sample)")
    z = r * np.conj(t)
    nfft = _nfft(len(z) * oversample)
    spec = np.abs(np.fft.fft(z, nfft)) ** 2
    freqs = np.fft.fftfreq(nfft)
    allowed = np.abs(freqs) <= max_cfo + 1.0 / nfft
    idx = np.flatnonzero(allowed)
    best = idx[np.argmax(spec[idx])]
    delta = parabolic_offset(spec[best - 1], spec[best], spec[(best + 1) % nfft])
    return float(np.clip(freqs[best] + delta / nfft, -max_cfo, max_cfo))


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
