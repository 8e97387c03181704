"""Update rule: sign and size, clipping, weight decay exemptions, pending-state protocol."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pairzero.config import ZOConfig
from pairzero.zo import ZOEngine, add_perturbation_, no_decay_names


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 2)
        self.x = torch.randn(16, 6)
        self.y = torch.randint(0, 2, (16,))

    def loss(self) -> torch.Tensor:
        assert torch.is_inference_mode_enabled() and not self.training
        return nn.functional.cross_entropy(self.fc2(torch.relu(self.norm(self.fc1(self.x)))), self.y)


def _z(eng: ZOEngine, seed: int) -> list[torch.Tensor]:
    zs = [torch.zeros_like(p) for p in eng.params]
    add_perturbation_(zs, seed, 1.0, eng.cfg.perturbation, key=eng.manifest.digest)
    return zs


def test_zo_update_moves_against_gradient_estimate() -> None:
    # Prepare
    m = TinyMLP()
    eng = ZOEngine(m, list(m.named_parameters()), ZOConfig(epsilon=1e-3, lr=1e-2), threads=2)
    before = [p.detach().clone() for p in eng.params]
    # Execute
    g = eng.scalars(5, [lambda mod: mod.loss()])[0]
    pending = [p.detach().clone() for p in eng.params]
    eng.apply_update(5, g)
    # Assert: pending state is θ - εz; after the update θ = θ0 - lr·g·z (up to fp32 rounding).
    zs = _z(eng, 5)
    for b, pe, p, z in zip(before, pending, eng.params, zs, strict=True):
        torch.testing.assert_close(pe, b - 1e-3 * z, atol=1e-6, rtol=0)
        torch.testing.assert_close(p.detach(), b - 1e-2 * g * z, atol=1e-6, rtol=0)
    assert m.training  # the training flag is restored after the eval()-mode forwards
    assert eng.pending_seed is None


def test_zo_scalar_is_clipped() -> None:
    # Prepare: a loss with a huge slope, so |(L+ - L-)/2ε| ≫ G.
    m = TinyMLP()
    eng = ZOEngine(m, list(m.named_parameters()), ZOConfig(clip=0.5), threads=1)
    # Execute
    gs = [eng.step(s, lambda mod: 1e6 * mod.loss()) for s in range(6)]
    # Assert: every scalar is exactly ±G.
    assert all(abs(g) == 0.5 for g in gs), gs


def test_zo_weight_decay_skips_bias_and_layernorm() -> None:
    # Prepare: ĝ = 0 so only the decay factor (1 - lr·wd) = 0.5 changes anything.
    m = TinyMLP()
    cfg = ZOConfig(epsilon=1e-3, lr=0.5, weight_decay=1.0)
    eng = ZOEngine(m, list(m.named_parameters()), cfg, threads=1)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    # Execute
    eng.apply_update(3, 0.0)
    # Assert
    assert no_decay_names(m) == {"fc1.bias", "fc2.bias", "norm.weight", "norm.bias"}
    for n, p in m.named_parameters():
        factor = 1.0 if n in no_decay_names(m) else 0.5
        torch.testing.assert_close(p.detach(), factor * before[n], atol=1e-6, rtol=0)


def test_zo_pending_state_protocol_and_validation() -> None:
    m = TinyMLP()
    eng = ZOEngine(m, list(m.named_parameters()), ZOConfig(num_perturbations=2), threads=1)
    eng.scalars(1, [lambda mod: mod.loss()])
    with pytest.raises(RuntimeError, match="pending"):
        eng.scalars(2, [lambda mod: mod.loss()])
    with pytest.raises(ValueError, match="seed"):
        eng.apply_update(2, 0.1)
    with pytest.raises(ValueError, match="g_hat"):
        eng.apply_update(1, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="g_hat"):
        eng.apply_update(1, float("nan"))
    eng.apply_update(1, [0.1, 0.2])
    assert eng.pending_seed is None
    with pytest.raises(ValueError, match="seed"):
        eng.scalars(-1, [lambda mod: mod.loss()])
    with pytest.raises(ValueError, match="loss_fns"):
        eng.scalars(1, [])


def test_zo_several_losses_share_one_perturbation() -> None:
    # K simulated nodes: the same loss twice gives the same scalar; a scaled loss a scaled one.
    m = TinyMLP()
    eng = ZOEngine(m, list(m.named_parameters()), ZOConfig(clip=1e9), threads=1)
    g = eng.scalars(9, [lambda mod: mod.loss(), lambda mod: mod.loss(), lambda mod: 3 * mod.loss()])
    eng.restore()
    assert g[0] == g[1]
    assert g[2] == pytest.approx(3 * g[0], rel=1e-3)  # fp32 loss rounding


def test_zo_failed_loss_leaves_weights_restored() -> None:
    # Prepare: a loss that fails on its second evaluation (θ at θ - εz then).
    m = TinyMLP()
    eng = ZOEngine(m, list(m.named_parameters()), ZOConfig(epsilon=1e-2), threads=1)
    before = [p.detach().clone() for p in eng.params]
    calls = []

    def flaky(mod: TinyMLP) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("node lost its batch")
        return mod.loss()

    # Execute
    with pytest.raises(RuntimeError, match="lost"):
        eng.scalars(4, [flaky])
    # Assert: no pending round and θ back to within rounding of ε·z (ε = 1e-2 ≫ 1e-6).
    assert eng.pending_seed is None
    for b, p in zip(before, eng.params, strict=True):
        torch.testing.assert_close(p.detach(), b, atol=1e-6, rtol=0)
