"""Slow: a minimal SPSA (MeZO) loop must lift builtin-sentiment validation accuracy by >= 10
points from the shipped opt-tiny within a few minutes on 2 cores (the ZO engine's goal)."""

from __future__ import annotations

import pytest
import torch

from pairzero.config import ModelConfig, TaskConfig
from pairzero.models import load_model, trainable_parameters
from pairzero.tasks import load_task, make_objective, sample_batch


def spsa(model, params, objective, train, rounds: int, lr: float, eps: float, batch: int) -> None:
    """theta += eps z; L+; theta -= 2 eps z; L-; theta += (eps - lr g) z, z from a seeded Generator."""

    def perturb(seed: int, scale: float) -> None:
        gen = torch.Generator().manual_seed(seed)
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen), alpha=scale)

    with torch.inference_mode():
        for r in range(rounds):
            enc = objective.encode(sample_batch(train, batch, seed=r))
            perturb(r, eps)
            lp = float(objective.loss(model, enc))
            perturb(r, -2 * eps)
            lm = float(objective.loss(model, enc))
            perturb(r, eps - lr * (lp - lm) / (2 * eps))


@pytest.mark.slow
def test_spsa_improves_accuracy_by_10_points() -> None:
    # 200 validation examples: binomial sd of an accuracy near 0.5 is 3.5 points, so +10
    # points is ~3 sd above what an unchanged model would show by chance.
    torch.set_num_threads(2)
    model, tok = load_model(ModelConfig(name="opt-tiny"))
    params = [p for _, p in trainable_parameters(model, "bias_layernorm")]
    cfg = TaskConfig()
    data = load_task(cfg)
    obj = make_objective(cfg, tok)
    start = obj.evaluate(model, data.validation)["accuracy"]
    spsa(model, params, obj, data.train, rounds=2000, lr=5e-2, eps=1e-3, batch=16)
    end = obj.evaluate(model, data.validation)["accuracy"]
    assert end - start >= 0.10, (start, end)
