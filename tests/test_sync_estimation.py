"""Sync maths: Zadoff-Chu properties, correlation, fractional shift, CFO, thresholds."""

import numpy as np
import pytest

from sync.estimation import (
    cfo_ml,
    detection_threshold,
    fractional_shift,
    ls_gain,
    parabolic_offset,
    presence_threshold,
    xcorr_valid,
)
from sync.zadoff_chu import node_roots, zadoff_chu


def test_zadoff_chu_constant_amplitude_and_ideal_periodic_autocorrelation():
    # Prepare
    z = zadoff_chu(63, 25)
    # Execute
    periodic = np.array([np.vdot(z, np.roll(z, s)) for s in range(63)])
    # Assert: |z| = 1 and the periodic autocorrelation is zero off the peak
    assert np.allclose(np.abs(z), 1.0)
    assert abs(periodic[0]) == pytest.approx(63)
    assert np.max(np.abs(periodic[1:])) < 1e-9


def test_zadoff_chu_distinct_roots_have_sqrt_n_cross_correlation():
    a, b = zadoff_chu(61, 1), zadoff_chu(61, 2)  # 61 prime
    cross = np.array([np.vdot(a, np.roll(b, s)) for s in range(61)])
    assert np.allclose(np.abs(cross), np.sqrt(61))


@pytest.mark.parametrize(("length", "root"), [(64, 1), (63, 0), (63, 21)])
def test_zadoff_chu_rejects_invalid_parameters(length, root):
    with pytest.raises(ValueError, match="length|root"):
        zadoff_chu(length, root)


def test_node_roots_are_distinct_and_coprime():
    roots = node_roots(63, 25, 8)
    assert len(set(roots)) == 8
    assert all(np.gcd(r, 63) == 1 for r in roots)


def test_xcorr_valid_matches_numpy_correlate():
    rng = np.random.default_rng(0)
    r = rng.standard_normal(200) + 1j * rng.standard_normal(200)
    t = rng.standard_normal(31) + 1j * rng.standard_normal(31)
    # np.correlate(a, v) = sum a[n+k] conj(v[n])
    assert np.allclose(xcorr_valid(r, t), np.correlate(r, t, mode="valid"))


def test_parabolic_offset_recovers_vertex():
    f = lambda x: -((x - 0.3) ** 2)  # noqa: E731
    assert parabolic_offset(f(-1), f(0), f(1)) == pytest.approx(0.3)


def test_fractional_shift_delays_a_bandlimited_pulse():
    # A sinc-windowed band-limited pulse centred at 50, shifted by 2.4 samples.
    n = np.arange(128)
    x = np.sinc((n - 50) / 4.0) * np.exp(-(((n - 50) / 20.0) ** 2))
    want = np.sinc((n - 52.4) / 4.0) * np.exp(-(((n - 52.4) / 20.0) ** 2))
    y = fractional_shift(x.astype(complex), 2.4)
    assert np.max(np.abs(y - want)) < 1e-3


def test_cfo_ml_within_crlb_multiple():
    # CRLB std for a unit-amplitude tone of L samples at SNR s: sqrt(6/(s L^3))/(2 pi).
    rng = np.random.default_rng(1)
    L, snr, f = 512, 10.0, 7.3e-5
    t = np.exp(1j * np.pi / 4 * (2 * rng.integers(0, 4, L) + 1))
    errs = []
    for _ in range(50):
        w = (rng.standard_normal(L) + 1j * rng.standard_normal(L)) / np.sqrt(2 * snr)
        r = 0.8j * t * np.exp(2j * np.pi * f * np.arange(L)) + w
        errs.append(cfo_ml(r, t, 2e-4) - f)
    crlb = np.sqrt(6 / (snr * 0.64 * L**3)) / (2 * np.pi)
    # 50 draws: the RMS lies within 1.5x its expected value with overwhelming probability.
    assert np.sqrt(np.mean(np.square(errs))) < 1.5 * crlb


def test_ls_gain_exact_without_noise():
    t = np.exp(1j * np.linspace(0, 3, 40))
    assert ls_gain((0.3 - 0.2j) * t, t) == pytest.approx(0.3 - 0.2j)


def test_thresholds_grow_with_search_size_and_validate_pfa():
    assert detection_threshold(4, 256, 1000, 1e-3) > detection_threshold(4, 256, 10, 1e-3)
    assert presence_threshold(17, 1e-3) == pytest.approx(-np.log(1e-3 / 17))
    with pytest.raises(ValueError, match="pfa"):
        presence_threshold(17, 0.0)
