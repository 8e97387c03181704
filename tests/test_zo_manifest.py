"""Manifests: ties counted once, order/shape/dtype changes refused with a clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import OPTConfig, OPTForCausalLM

from pairzero.config import ZOConfig
from pairzero.zo import ManifestMismatch, ParamManifest, ZOEngine, build_manifest, check_manifest


def tiny_opt() -> OPTForCausalLM:
    cfg = OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                    num_attention_heads=2, max_position_embeddings=32, word_embed_proj_dim=16)
    return OPTForCausalLM(cfg)


def test_zo_manifest_counts_tied_lm_head_once() -> None:
    # Prepare
    model = tiny_opt()
    named = list(model.named_parameters(remove_duplicate=False))
    # Execute
    man = build_manifest(named)
    # Assert: the tied lm_head is listed once; numel equals the unique parameter count.
    assert sum(1 for n, _ in named if "embed_tokens" in n or n == "lm_head.weight") == 2
    names = [e[0] for e in man.entries]
    assert names.count("model.decoder.embed_tokens.weight") == 1 and "lm_head.weight" not in names
    assert man.numel == sum(p.numel() for p in model.parameters())
    assert len(man.digest) == 64


def test_zo_manifest_mismatch_names_the_difference() -> None:
    # Prepare
    a = build_manifest([("w", torch.zeros(3, 4)), ("b", torch.zeros(4))])
    reordered = build_manifest([("b", torch.zeros(4)), ("w", torch.zeros(3, 4))])
    reshaped = build_manifest([("w", torch.zeros(4, 3)), ("b", torch.zeros(4))])
    half = build_manifest([("w", torch.zeros(3, 4, dtype=torch.float16)), ("b", torch.zeros(4))])
    # Execute / Assert
    check_manifest(a, a.digest)  # equal: no error
    for other in (reordered, reshaped, half):
        assert other.digest != a.digest
        with pytest.raises(ManifestMismatch, match="first difference at index 0"):
            check_manifest(a, other)
        with pytest.raises(ManifestMismatch, match="mismatch"):
            check_manifest(a, other.digest)
    with pytest.raises(ManifestMismatch, match="first extra parameter"):
        check_manifest(a, build_manifest([("w", torch.zeros(3, 4))]))


def test_zo_manifest_json_roundtrip_and_tamper() -> None:
    a = build_manifest([("w", torch.zeros(3, 4))])
    assert ParamManifest.from_json(a.to_json()) == a
    with pytest.raises(ManifestMismatch):
        ParamManifest.from_json(a.to_json().replace("[3, 4]", "[4, 3]"))


def test_zo_engine_refuses_non_fp32_and_empty() -> None:
    lin = nn.Linear(2, 2).half()
    with pytest.raises(ValueError, match="float32"):
        ZOEngine(lin, list(lin.named_parameters()), ZOConfig())
    with pytest.raises(ValueError, match="named_params"):
        ZOEngine(lin, [], ZOConfig())
