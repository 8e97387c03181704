"""trainable_parameters on a Llama-architecture causal LM (SmolLM2's family: RMSNorm weights,
no biases), built small from transformers' own LlamaForCausalLM."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pairzero.models import trainable_parameters

HIDDEN, LAYERS = 32, 3


@pytest.fixture()
def llama() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def test_norm_sets_are_the_rmsnorm_weights(llama: torch.nn.Module) -> None:
    # Two RMSNorms per layer plus the final one, HIDDEN weights each and no bias anywhere.
    norms = trainable_parameters(llama, "layernorm")
    assert sum(p.numel() for _, p in norms) == (2 * LAYERS + 1) * HIDDEN
    assert all(n.endswith("norm.weight") for n, _ in norms)
    assert trainable_parameters(llama, "bias_layernorm") == norms
    final = trainable_parameters(llama, "final_norm")
    assert [n for n, _ in final] == ["model.norm.weight"]
    assert sum(p.requires_grad for p in llama.parameters()) == 1


def test_bias_alone_selects_nothing_on_a_model_without_biases(llama: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="model.trainable: 'bias' selects no parameter of LlamaForCausalLM"):
        trainable_parameters(llama, "bias")
