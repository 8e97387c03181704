"""Live nodes, followers and replayed copies hold bit-identical weights (tiny OPT)."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from pairzero.config import ZOConfig
from pairzero.zo import ZOCheckpoint, ZOEngine, export_pretrained

ROUNDS = 20


def tiny_opt() -> OPTForCausalLM:
    torch.manual_seed(0)
    cfg = OPTConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, ffn_dim=32, num_attention_heads=2,
        max_position_embeddings=32, word_embed_proj_dim=16, tie_word_embeddings=True,
    )
    return OPTForCausalLM(cfg).float()


def make_loss(batch_seed: int):
    """Classification-style loss: last hidden state · 2 lm_head rows, cross-entropy."""
    g = torch.Generator().manual_seed(batch_seed)
    ids = torch.randint(4, 64, (4, 10), generator=g)  # (B, S)
    labels = torch.randint(0, 2, (4,), generator=g)  # (B,)

    def loss(model: OPTForCausalLM) -> torch.Tensor:
        assert torch.is_inference_mode_enabled() and not model.training
        h = model.model.decoder(input_ids=ids).last_hidden_state[:, -1, :]  # (B, H)
        logits = h @ model.lm_head.weight[[5, 9]].T  # (B, 2)
        return torch.nn.functional.cross_entropy(logits, labels)

    return loss


def engine_for(model: OPTForCausalLM, cfg: ZOConfig, threads: int = 2) -> ZOEngine:
    return ZOEngine(model, list(model.named_parameters()), cfg, threads=threads)


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def run_live(cfg: ZOConfig, rounds: int, per_perturbation: bool = False):
    """Two simulated nodes on one model copy, the AP averages; returns model, records, follower."""
    live = tiny_opt()
    init = copy.deepcopy(live)
    follower = copy.deepcopy(live)
    eng = engine_for(live, cfg)
    feng = engine_for(follower, cfg, threads=1)
    records = []
    for t in range(rounds):
        seed = 1000 + 17 * t
        losses = [make_loss(2 * t), make_loss(2 * t + 1)]
        if per_perturbation:
            gs = eng.scalars_per_perturbation(seed, losses)  # [node][j]
            g_hat = tuple((a + b) / 2 for a, b in zip(*gs, strict=True))
        else:
            g_hat = sum(eng.scalars(seed, losses)) / 2
        eng.apply_update(seed, g_hat)
        feng.apply_update(seed, g_hat)  # a node that only follows
        records.append((seed, g_hat))
    return live, init, follower, records


@pytest.mark.parametrize(
    ("dist", "q", "wd", "per_j"),
    [("gaussian", 1, 0.0, False), ("rademacher", 1, 0.1, False), ("gaussian", 2, 0.1, True)],
)
def test_zo_replay_bit_identical_after_20_rounds(dist: str, q: int, wd: float, per_j: bool) -> None:
    # Prepare / Execute: live rounds, a follower, and a replay from the initial weights.
    cfg = ZOConfig(epsilon=1e-3, lr=1e-2, perturbation=dist, num_perturbations=q,
                   clip=50.0, weight_decay=wd)
    live, init, follower, records = run_live(cfg, ROUNDS, per_perturbation=per_j)
    replayed = copy.deepcopy(init)
    engine_for(replayed, cfg, threads=3).replay(records)

    # Assert: every tensor bit-identical; and training did move the weights.
    assert_same_state(live, replayed)
    assert_same_state(live, follower)
    assert not torch.equal(live.lm_head.weight, init.lm_head.weight)
    assert live.lm_head.weight.data_ptr() == live.model.decoder.embed_tokens.weight.data_ptr()


def test_zo_naive_replay_is_not_bit_exact() -> None:
    # The trap the engine avoids: θ - lr·ĝ·z alone differs in fp32 from the live sequence.
    cfg = ZOConfig(epsilon=1e-3, lr=1e-2)
    live, init, _, records = run_live(cfg, 3)
    naive = copy.deepcopy(init)
    eng = engine_for(naive, cfg)
    from pairzero.zo import add_perturbation_

    for seed, g in records:
        add_perturbation_(eng.params, seed, -cfg.lr * g, "gaussian", key=eng.manifest.digest)
    diff = [not torch.equal(a, b) for a, b in zip(live.parameters(), naive.parameters(), strict=True)]
    assert any(diff)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(live.parameters(), naive.parameters(), strict=True))


def test_zo_checkpoint_roundtrip_and_export(tmp_path: Path) -> None:
    # Prepare
    cfg = ZOConfig(epsilon=1e-3, lr=1e-2, weight_decay=0.05)
    live, init, _, records = run_live(cfg, 5)
    ck = ZOCheckpoint.for_engine(engine_for(copy.deepcopy(init), cfg), "tiny-opt-test")
    for seed, g in records:
        ck.append(seed, g)

    # Execute: save, load, export through save_pretrained, reload with from_pretrained.
    path = ck.save(tmp_path / "ck.json")
    loaded = ZOCheckpoint.load(path)
    target = copy.deepcopy(init)
    out = export_pretrained(loaded, target, list(target.named_parameters()), tmp_path / "export")
    reloaded = OPTForCausalLM.from_pretrained(out)

    # Assert
    assert loaded.records == ck.records
    assert_same_state(live, target)
    assert_same_state(live, reloaded)
    assert (out / "zo_checkpoint.json").exists()


def test_zo_checkpoint_refuses_changed_initial_weights_or_config(tmp_path: Path) -> None:
    cfg = ZOConfig()
    model = tiny_opt()
    ck = ZOCheckpoint.for_engine(engine_for(model, cfg), "tiny")
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1.0
    with pytest.raises(ValueError, match="initial weights"):
        ck.apply_to(engine_for(model, cfg))
    with pytest.raises(ValueError, match="zo.lr"):
        ck.apply_to(engine_for(model, ZOConfig(lr=0.5)))


@pytest.mark.parametrize("q", [1, 2])
def test_zo_overlapped_sweeps_give_the_bits_of_sequential_sweeps(q: int) -> None:
    # Prepare: two copies, one engine overlapping the ±εz sweeps with the forward pass
    # (zo.overlap, the default), one applying each sweep before its forward pass.
    cfg = ZOConfig(epsilon=1e-3, lr=1e-2, num_perturbations=q)
    models = {ov: tiny_opt() for ov in (True, False)}
    engines = {ov: engine_for(m, replace(cfg, overlap=ov)) for ov, m in models.items()}
    # Execute: 5 rounds; the loss reads lm_head rows after the decoder call returned.
    gs = {ov: [e.step(seed, make_loss(seed)) for seed in range(5)] for ov, e in engines.items()}
    # Assert: the same scalars (so the same losses) and the same weights, bit for bit; the
    # overlapping engine stayed overlapping.
    assert gs[True] == gs[False]
    assert_same_state(models[True], models[False])
    assert engines[True]._overlap and not engines[False]._overlap


def test_zo_overlap_falls_back_for_a_loss_without_module_calls() -> None:
    # Prepare: a loss that reads a parameter directly (no module call the hooks could see).
    cfg = ZOConfig(epsilon=1e-3, lr=1e-2)
    models = {ov: tiny_opt() for ov in (True, False)}
    engines = {ov: engine_for(m, replace(cfg, overlap=ov)) for ov, m in models.items()}

    def loss(m: OPTForCausalLM) -> torch.Tensor:
        return (m.model.decoder.layers[1].fc2.weight ** 2).sum()

    # Execute
    gs = {ov: [e.step(seed, loss) for seed in range(3)] for ov, e in engines.items()}
    # Assert: evaluated again on the finished θ (same scalars), and overlap switched off.
    assert gs[True] == gs[False]
    assert_same_state(models[True], models[False])
    assert not engines[True]._overlap
