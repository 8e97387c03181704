"""load_model: embedded opt-tiny, opt-125m shapes, from_pretrained dirs, offline hub error;
trainable_parameters selections."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from pairzero.config import ModelConfig
from pairzero.models import (
    OPT_TINY_DIR,
    TRAINABLE_MODES,
    ModelUnavailableError,
    load_model,
    opt_125m_config,
    trainable_parameters,
)


def test_opt_tiny_loads_offline_and_deterministic() -> None:
    # Prepare / Execute
    m1, tok = load_model(ModelConfig(name="opt-tiny"))
    m2, _ = load_model(ModelConfig(name="opt-tiny"))
    x = tok(["The room was nice. It was"], return_tensors="pt")
    with torch.inference_mode():
        y1, y2 = m1(**x).logits, m2(**x).logits
    # Assert: fp32, eval mode, identical weights and outputs, verbalizer words single tokens
    assert not m1.training
    assert all(p.dtype == torch.float32 for p in m1.parameters())
    assert torch.equal(y1, y2)
    assert len(tok(" great", add_special_tokens=False)["input_ids"]) == 1
    assert len(tok(" terrible", add_special_tokens=False)["input_ids"]) == 1
    assert (OPT_TINY_DIR / "model.safetensors").stat().st_size < 8 * 2**20


def test_opt_125m_param_count_equals_facebook_opt_125m() -> None:
    # facebook/opt-125m: 125,239,296 parameters with lm_head tied to embed_tokens (once).
    cfg = opt_125m_config()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.ffn_dim, cfg.vocab_size) == (768, 12, 3072, 50272)
    model, _ = load_model(ModelConfig(name="opt-125m"), seed=3)
    assert sum(p.numel() for p in model.parameters()) == 125_239_296
    assert model.lm_head.weight is model.model.decoder.embed_tokens.weight
    again, _ = load_model(ModelConfig(name="opt-125m"), seed=3)
    assert torch.equal(model.model.decoder.layers[0].fc1.weight, again.model.decoder.layers[0].fc1.weight)


def test_from_pretrained_local_dir(tmp_path) -> None:
    # Prepare: save a small random OPT with the opt-tiny tokenizer
    _, tok = load_model(ModelConfig(name="opt-tiny"))
    torch.manual_seed(0)
    small = OPTForCausalLM(OPTConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                     ffn_dim=32, num_attention_heads=2, max_position_embeddings=64))
    small.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    # Execute
    model, tok2 = load_model(ModelConfig(name=str(tmp_path)))
    # Assert
    assert torch.equal(model.lm_head.weight, small.lm_head.weight)
    assert tok2("It was")["input_ids"] == tok("It was")["input_ids"]


@pytest.mark.e2e
def test_hub_id_offline_gives_clear_error() -> None:
    # HF_HUB_OFFLINE is read at import: run in a fresh interpreter.
    code = (
        "from pairzero.config import ModelConfig\nfrom pairzero.models import load_model, ModelUnavailableError\n"
        "try:\n    load_model(ModelConfig(name='facebook/opt-125m'))\n"
        "except ModelUnavailableError as e:\n    print('CLEAR', e)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "CLEAR" in out.stdout and "hub cannot be reached" in out.stdout, out.stderr[-2000:]
    assert issubclass(ModelUnavailableError, OSError)


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return load_model(ModelConfig(name="opt-tiny"))[0]


def test_trainable_modes_select_right_params(tiny) -> None:
    sel = {mode: trainable_parameters(tiny, mode) for mode in TRAINABLE_MODES}
    names = {mode: [n for n, _ in s] for mode, s in sel.items()}
    assert len(names["all"]) == len(set(names["all"])) == len(list(tiny.parameters()))
    assert all(n.endswith("bias") and "layer_norm" not in n for n in names["bias"])
    assert all("layer_norm" in n for n in names["layernorm"])
    assert set(names["bias_layernorm"]) == set(names["bias"]) | set(names["layernorm"])
    assert names["head"] == ["model.decoder.embed_tokens.weight",
                             "model.decoder.final_layer_norm.weight", "model.decoder.final_layer_norm.bias"]
    assert names["final_norm"] == ["model.decoder.final_layer_norm.weight", "model.decoder.final_layer_norm.bias"]
    # requires_grad follows the last call ('final_norm' above)
    assert {n for n, p in tiny.named_parameters() if p.requires_grad} == set(names["final_norm"])
    with pytest.raises(ValueError, match="model.trainable"):
        trainable_parameters(tiny, "lora")


@pytest.mark.e2e
@pytest.mark.slow  # ~45 s on an idle 2-core machine, minutes on a loaded one
def test_pretraining_script_reproduces_the_shipped_checkpoint_bit_for_bit(tmp_path) -> None:
    # Execute: scripts/pretrain_opt_tiny.py with its defaults, into tmp_path
    repo = OPT_TINY_DIR.parents[3]
    res = subprocess.run(
        [sys.executable, str(repo / "scripts" / "pretrain_opt_tiny.py"), "--out", str(tmp_path / "m"),
         "--corpus-out", str(tmp_path / "corpus.txt")],
        capture_output=True, text=True, timeout=1800, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    # Assert: the corpus, tokenizer, config and weights are the shipped bytes
    assert (tmp_path / "corpus.txt").read_bytes() == (OPT_TINY_DIR.parent / "opt_tiny_corpus.txt").read_bytes()
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (tmp_path / "m" / name).read_bytes() == (OPT_TINY_DIR / name).read_bytes(), name
