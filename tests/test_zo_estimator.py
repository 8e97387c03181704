"""The two-point ZO scalar is an unbiased directional-derivative estimate: E[g·z] = ∇f."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pairzero.config import ZOConfig
from pairzero.zo import ZOEngine, add_perturbation_

D = 8


class Quadratic(nn.Module):
    """f(θ) = ½ Σ a_i θ_i² + Σ b_i θ_i, evaluated in fp64; ∇f = a·θ + b."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.linspace(-1.0, 1.0, D))
        self.register_buffer("a", torch.linspace(0.5, 4.0, D, dtype=torch.float64))
        self.register_buffer("b", torch.linspace(1.0, -2.0, D, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        th = self.theta.double()
        return 0.5 * (self.a * th * th).sum() + (self.b * th).sum()

    def grad(self) -> torch.Tensor:
        return self.a * self.theta.detach().double() + self.b


@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_zo_estimator_unbiased_on_quadratic(dist: str) -> None:
    # Prepare: a quadratic with a known gradient; θ is held fixed by never updating.
    model = Quadratic()
    cfg = ZOConfig(epsilon=1e-2, lr=1e-3, perturbation=dist, clip=1e6)
    eng = ZOEngine(model, [("theta", model.theta)], cfg, threads=1)
    grad = model.grad()
    n = 3000

    # Execute: n independent seeds; z(seed) is read back by perturbing zeros with scale 1.
    acc = torch.zeros(D, dtype=torch.float64)
    for seed in range(n):
        g = eng.scalars(seed, [lambda m: m()])[0]
        eng.restore()  # identical to apply_update(seed, 0.0): θ back up to rounding
        z = torch.zeros(D)
        add_perturbation_([z], seed, 1.0, dist, key=eng.manifest.digest)
        acc += g * z.double()
    est = acc / n

    # Assert: for a quadratic (f(θ+εz) - f(θ-εz))/2ε = zᵀ∇f exactly, so g·z_i = z_i zᵀ∇f.
    # Its variance per component: Gaussian E[(zᵀ∇)² z_i²] - ∇_i² = ‖∇‖² + ∇_i² (Isserlis);
    # Rademacher ‖∇‖² - ∇_i² (z_i² = 1).  The mean of n draws has std σ_i/√n; 5σ per
    # component gives a false-failure probability < 8·6e-7 with a fixed seed set anyway.
    g2 = float((grad**2).sum())
    sign = 1.0 if dist == "gaussian" else -1.0
    tol = 5.0 * torch.sqrt((g2 + sign * grad**2).clamp_min(1e-12) / n)
    assert torch.all((est - grad).abs() <= tol), (est, grad, tol)
    # and it is not trivially satisfied: the tolerance is well below the gradient scale.
    assert float(tol.max()) < 0.25 * math.sqrt(g2)
    # θ never moved by more than rounding (restore path).
    assert torch.allclose(model.theta.detach(), torch.linspace(-1.0, 1.0, D), atol=1e-5)


def test_zo_engine_descends_quadratic() -> None:
    # Prepare
    model = Quadratic()
    cfg = ZOConfig(epsilon=1e-3, lr=2e-2, perturbation="gaussian", clip=1e6)
    eng = ZOEngine(model, [("theta", model.theta)], cfg, threads=1)
    with torch.no_grad():
        f0 = float(model())

    # Execute: 300 single-node rounds θ ← θ - lr·g·z.
    for seed in range(300):
        eng.step(seed, lambda m: m())

    # Assert: the loss fell well towards its minimum f* = -Σ b²/2a.
    with torch.no_grad():
        f1 = float(model())
    fstar = float(-(model.b**2 / (2 * model.a)).sum())
    assert f1 - fstar < 0.1 * (f0 - fstar), (f0, f1, fstar)
