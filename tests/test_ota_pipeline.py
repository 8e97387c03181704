"""OTARoundRunner: config wiring, reproducibility, accounting over a full run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pairzero.config import ExperimentConfig, NodesConfig, OTAConfig, RunConfig
from pairzero.ota.pipeline import OTARoundRunner


def _cfg(**kw) -> ExperimentConfig:
    return dataclasses.replace(ExperimentConfig(), run=RunConfig(seed=3, rounds=40),
                               nodes=NodesConfig(count=5), **kw)


def test_same_config_gives_identical_rounds() -> None:
    cfg = _cfg()
    a, b = OTARoundRunner.from_config(cfg), OTARoundRunner.from_config(cfg)
    g = np.linspace(-3, 3, 5)
    ra = [a.run_round(t, g).g_hat for t in range(10)]
    rb = [b.run_round(t, g).g_hat for t in range(10)]
    assert ra == rb


def test_full_run_meets_the_configured_privacy_target() -> None:
    cfg = _cfg()
    runner = OTARoundRunner.from_config(cfg)
    rng = np.random.default_rng(0)
    for t in range(cfg.run.rounds):
        runner.run_round(t, rng.uniform(-cfg.zo.clip, cfg.zo.clip, 5))
    eps = runner.accountant.epsilon(cfg.privacy.delta)
    assert np.all(eps <= cfg.privacy.epsilon * (1 + 1e-9))
    assert np.all(eps > 0)


def test_privacy_disabled_runs_at_full_power() -> None:
    cfg = dataclasses.replace(_cfg(), privacy=dataclasses.replace(ExperimentConfig().privacy,
                                                                   enabled=False))
    runner = OTARoundRunner.from_config(cfg)
    assert runner.privacy is None
    state = runner.channel.draw(0)
    plan = runner.plan(state)
    assert plan.eta == pytest.approx(plan.eta_pow)


def test_one_bit_scheme_from_config() -> None:
    runner = OTARoundRunner.from_config(_cfg(ota=OTAConfig(scheme="one_bit")))
    res = runner.run_round(0, np.array([1.0, 2.0, 3.0, -1.0, 0.5]))
    assert res.g_hat in (-1.0, 1.0)
    assert runner.amplitude == 1.0
