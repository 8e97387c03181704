"""Clip bound from the warm-up quantile of |g| (zo.clip_quantile): what it measures, that it is
deterministic, that simulate resolves it before round 0 and the multi-process path refuses it
unresolved."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pairzero.cli import main
from pairzero.clip_bound import measure_clip, resolve_clip
from pairzero.config import load_config
from pairzero.models import load_model, trainable_parameters
from pairzero.seeds import batch_seed, warmup_seed
from pairzero.tasks import load_task, make_objective, sample_batch
from pairzero.trainer import ZOTrainer
from pairzero.zo import ZOEngine
from simulation.run import run_simulation

BASE = ["output.plots=false", "task.name=builtin-topic", "nodes.count=3", "run.rounds=2",
        "task.eval_every=2", "task.eval_examples=32"]


def test_clip_is_the_quantile_of_the_unclipped_scalars_on_validation_data() -> None:
    # Prepare: recompute the warm-up scalars by hand with the engine (unclipped) on the same
    # seeds and validation batches.
    cfg = load_config(None, [*BASE, "zo.clip_quantile=0.8", "zo.clip_warmup_draws=12"])
    model, tok = load_model(cfg.model)
    engine = ZOEngine(model, trainable_parameters(model, cfg.model.trainable),
                      dataclasses.replace(cfg.zo, clip=1e30))
    val = load_task(cfg.task, seed=cfg.run.seed).validation
    obj = make_objective(cfg.task, tok)
    g = []
    for w in range(12):
        s = warmup_seed(cfg.run.seed, w)
        enc = obj.encode(sample_batch(val, cfg.task.batch_size, batch_seed(s, 0)))
        g.append(abs(engine.scalars(s, [lambda m, e=enc: obj.loss(m, e)])[0]))
        engine.apply_update(s, 0.0)
    # Execute
    cal = measure_clip(cfg, 0.8, 12)
    # Assert: G = the 0.8-quantile to 3 significant digits; 20 % of the warm-up scalars above it
    assert cal.clip == pytest.approx(float(np.quantile(g, 0.8)), rel=5e-3)
    assert cal.frac_clipped_at_start == pytest.approx(float(np.mean(np.asarray(g) > cal.clip)))
    assert 0.1 <= cal.frac_clipped_at_start <= 0.3
    assert "no node data" in cal.privacy_charge
    assert measure_clip(cfg, 0.8, 12).clip == cal.clip  # deterministic


def test_simulate_resolves_clip_before_round_0_and_saves_it(tmp_path: Path) -> None:
    cfg = load_config(None, [*BASE, "zo.clip_quantile=0.5", "zo.clip_warmup_draws=8"])
    summary = run_simulation(cfg, tmp_path, echo=False)
    saved = load_config(Path(summary["run_dir"]) / "config.yaml")
    assert saved.zo.clip_quantile is None
    assert saved.zo.clip == summary["clip"] == summary["clip_calibration"]["clip"]
    assert summary["clip_calibration"]["quantile"] == 0.5
    assert saved.task.template == "{sentence} This is about a"  # the task's own prompt, saved
    # The resolved config reproduces the run's G without a warm-up.
    assert resolve_clip(saved) == (saved, None)


def test_multiprocess_path_refuses_an_unresolved_clip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(None, [*BASE, "zo.clip_quantile=0.8"])
    with pytest.raises(ValueError, match="resolve-clip"):
        ZOTrainer(cfg)
    # `pairzero config --resolve-clip` prints a config with the measured G for those runs.
    assert main(["config", "--set", "task.name=builtin-topic", "--set", "zo.clip_quantile=0.8",
                 "--set", "zo.clip_warmup_draws=4", "--resolve-clip"]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "resolved.yaml"
    path.write_text(out)
    resolved = load_config(path)
    assert resolved.zo.clip_quantile is None and resolved.zo.clip > 0
    assert "# zo.clip = " in out


def test_loopback_launch_resolves_the_clip_once_for_every_process() -> None:
    import argparse
    import os

    from pairzero.cli import _resolve_clip_for_loopback

    args = argparse.Namespace(config=None, overrides=[*BASE, "zo.clip_quantile=0.9", "zo.clip_warmup_draws=4"])
    path = _resolve_clip_for_loopback(args)
    try:
        assert path is not None and args.config == path and args.overrides == []
        resolved = load_config(path)  # what the launcher copies for the AP and every node
        assert resolved.zo.clip_quantile is None and resolved.zo.clip > 0
        assert resolved.task.template == "{sentence} This is about a"
    finally:
        os.unlink(path)
    plain = argparse.Namespace(config=None, overrides=list(BASE))
    assert _resolve_clip_for_loopback(plain) is None and plain.overrides == BASE
