"""The emulated radios' local oscillator (radio.oscillator.LocalOscillator), against its maths.

phi(t) = theta_k + 2 pi (cfo_hz + ppm 1e-6 f_c)(t - t_k) + w(t - t_k), with theta_k uniform at
every retune and w a random walk whose variance after s seconds is (sigma_1s)^2 s. Fixed seeds;
the statistical tolerances are 4 standard deviations of the estimators (below).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from radio.oscillator import WALK_KEEP_S, WALK_STEP_S, LocalOscillator


def test_a_carrier_offset_turns_the_phase_at_cfo_plus_ppm_times_the_carrier() -> None:
    # Pins: f_off = cfo_hz + ppm 1e-6 f_c (the reference error reaches the LO), phase linear
    # in time from the retune's phase, with no walk
    lo = LocalOscillator(cfo_hz=0.03, drift_ppm=0.5, seed=1)
    theta = lo.retune(915e6, at_s=100.0)
    t = 100.0 + np.linspace(0.0, 10.0, 101)
    want = theta + 2 * math.pi * (0.03 + 0.5e-6 * 915e6) * (t - 100.0)
    assert lo.offset_hz == pytest.approx(0.03 + 457.5)
    assert np.allclose(lo.phase(t), want, rtol=0, atol=1e-9)
    # the same at sample indices (1 MS/s, ~10^13 samples from 0): no precision lost
    rate = 1e6
    first = int(3e7 * rate)
    lo.retune(915e6, at_s=3e7 - 0.5)
    ph = lo.phase_at(first, 1000, rate)
    want = lo.theta + 2 * math.pi * lo.offset_hz * (0.5 + np.arange(1000) / rate)
    assert np.allclose(ph, want, rtol=0, atol=1e-6)


def test_every_retune_draws_a_new_phase_and_seeds_repeat_it() -> None:
    # Pins: a new uniform LO phase per set_center_freq; the seed alone decides the draws
    a, b = LocalOscillator(seed=7), LocalOscillator(seed=7)
    first = [a.retune(915e6, float(k)) for k in range(3)]
    assert [b.retune(915e6, float(k)) for k in range(3)] == first
    assert len(set(first)) == 3 and all(0 <= th < 2 * math.pi for th in first)
    assert LocalOscillator(seed=8).retune(915e6, 0.0) != first[0]
    # uniform on [0, 2 pi): mean of cos and sin over 4000 draws within 4 sigma (sigma = 1/sqrt(2n))
    c = LocalOscillator(seed=3)
    th = np.array([c.retune(915e6, 0.0) for _ in range(4000)])
    assert abs(np.cos(th).mean()) < 4 / math.sqrt(2 * 4000)
    assert abs(np.sin(th).mean()) < 4 / math.sqrt(2 * 4000)


def test_the_phase_walk_has_variance_sigma_squared_times_time_in_independent_steps() -> None:
    # Pins: std after 1 s = phase_walk_deg_per_s, variance linear in time (a random walk),
    # increments independent. One path of 2000 s read in order; increments over 1 s are
    # N(0, sigma^2) i.i.d.: their sample variance has relative std sqrt(2/n)
    sigma_deg = 3.0
    lo = LocalOscillator(walk_deg_per_s=sigma_deg, seed=11)
    lo.retune(915e6, at_s=0.0)
    t = np.arange(0.0, 2001.0)
    w = np.concatenate([lo.phase(t[i : i + 100]) for i in range(0, len(t), 100)]) - lo.theta
    assert w[0] == 0.0  # the walk starts at the retune
    s2 = math.radians(sigma_deg) ** 2
    for lag in (1, 4, 16):
        inc = w[lag::lag] - w[:-lag:lag]  # non-overlapping increments over `lag` s
        n = len(inc)
        assert abs(inc.var() / (s2 * lag) - 1) < 4 * math.sqrt(2 / n), lag
        assert abs(inc.mean()) < 4 * math.sqrt(s2 * lag / n)
    d = np.diff(w)
    corr = np.corrcoef(d[:-1], d[1:])[0, 1]
    assert abs(corr) < 4 / math.sqrt(len(d))


def test_the_walk_is_the_same_whatever_order_it_is_read_in() -> None:
    # Pins reproducibility: the grid is drawn in time order, not in the order of the reads
    # (a transmitter reads ahead, a receiver's windows come later)
    a, b = (LocalOscillator(walk_deg_per_s=5.0, seed=2) for _ in range(2))
    a.retune(915e6, 0.0)
    b.retune(915e6, 0.0)
    times = np.array([3.0, 0.5, 7.25, 0.001, 5.0])
    seq = np.array([a.phase(np.array([x]))[0] for x in sorted(times)])
    rev = np.array([b.phase(np.array([x]))[0] for x in times])
    assert np.array_equal(seq, rev[np.argsort(times)])


def test_between_grid_points_the_walk_moves_by_less_than_one_step() -> None:
    # Pins the documented interpolation: within one WALK_STEP_S the walk is linear
    lo = LocalOscillator(walk_deg_per_s=10.0, seed=4)
    lo.retune(915e6, 0.0)
    t = np.linspace(2.0, 2.0 + WALK_STEP_S, 11)
    ph = lo.phase(t)
    assert np.allclose(np.diff(ph), (ph[-1] - ph[0]) / 10, atol=1e-12)


def test_old_grid_points_are_dropped_and_reads_before_them_held() -> None:
    lo = LocalOscillator(walk_deg_per_s=1.0, seed=5)
    lo.retune(915e6, 0.0)
    lo.phase(np.array([3 * WALK_KEEP_S]))
    assert len(lo._walk) <= 2 * WALK_KEEP_S / WALK_STEP_S + 2
    old = lo.phase(np.array([0.0, 1.0]))
    assert old[0] == old[1]  # held at the oldest point kept


@pytest.mark.parametrize(("kw", "msg"), [({"cfo_hz": math.nan}, "cfo_hz"),
                                         ({"walk_deg_per_s": -1.0}, "walk_deg_per_s")])
def test_bad_parameters_are_refused_naming_them(kw, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        LocalOscillator(**kw)
