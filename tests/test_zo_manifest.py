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


def test_zo_manifest_scheme_depends_on_distribution() -> None:
    named = [("w", torch.zeros(3))]
    g, r = build_manifest(named, dist="gaussian"), build_manifest(named, dist="rademacher")
    assert g.digest != r.digest
    with pytest.raises(ManifestMismatch, match="different z scheme"):
        check_manifest(g, r)
    with pytest.raises(ValueError, match="dist"):
        build_manifest(named, dist="uniform")


_CHILD = """
import torch
from pairzero.zo import build_manifest
print(build_manifest([("w", torch.zeros(3))], dist="{dist}").digest)
"""


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
    reason="needs an x86 CPU with AVX2 to compare with the scalar (DEFAULT) path",
)
@pytest.mark.e2e
def test_zo_gaussian_manifest_refuses_other_cpu_class() -> None:
    # Gaussian z differs between torch's DEFAULT and AVX2 kernels (measured), so a node forced
    # to ATEN_CPU_CAPABILITY=default must get another digest; Rademacher z does not differ.
    import os
    import subprocess
    import sys

    def digest(dist: str, cap: str) -> str:
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
        return subprocess.run([sys.executable, "-c", _CHILD.format(dist=dist)], env=env,
                              capture_output=True, text=True, check=True).stdout.strip()

    assert digest("gaussian", "default") != digest("gaussian", "avx2")
    assert digest("rademacher", "default") == digest("rademacher", "avx2")


@pytest.mark.e2e
def test_zo_rademacher_z_identical_across_cpu_capability() -> None:
    # The claim behind the "rademacher/int" tag: the same bits on the scalar and vector paths.
    import os
    import subprocess
    import sys

    code = (
        "import hashlib, torch\n"
        "from pairzero.zo import add_perturbation_\n"
        "z = torch.zeros(70000); add_perturbation_([z], 3, 1.0, 'rademacher', key='k')\n"
        "print(hashlib.sha256(z.numpy().tobytes()).hexdigest())\n"
    )
    outs = {
        subprocess.run([sys.executable, "-c", code], env=dict(os.environ, ATEN_CPU_CAPABILITY=c),
                       capture_output=True, text=True, check=True).stdout.strip()
        for c in ("default", "avx2")
    }
    assert len(outs) == 1
