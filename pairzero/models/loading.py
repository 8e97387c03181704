"""Loading causal LMs for ZO fine-tuning: the embedded offline models and ``from_pretrained``;
the trainable parameter sets.

* ``opt-tiny``: a small OPT (:data:`OPT_TINY_ARCH`) pre-trained by ``scripts/pretrain_opt_tiny.py``
  on a generated corpus; checkpoint and tokenizer are shipped in ``assets/opt_tiny/``.
* ``opt-125m``: the exact ``facebook/opt-125m`` shapes (:data:`OPT_125M_ARCH`), random weights
  (seeded), with the opt-tiny tokenizer; for memory and speed figures only.
* ``opt-350m``, ``opt-1.3b``: the same for ``facebook/opt-350m`` / ``facebook/opt-1.3b``
  (:data:`OPT_SHAPES`; 331M / 1.3B parameters, 1.3 / 5.3 GB of fp32 weights).
* anything else: a local ``save_pretrained`` directory or a hub id.

Models are returned in fp32 and ``eval()`` mode: ZO keeps fp32 master weights (an fp16 weight
silently drops updates of size lr*g ~ 1e-6) and never uses dropout.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedTokenizerBase,
)

from pairzero.config import ModelConfig
from pairzero.log import quiet_third_party

__all__ = [
    "ModelUnavailableError",
    "load_model",
    "trainable_parameters",
    "TRAINABLE_MODES",
    "OPT_TINY_DIR",
    "OPT_TINY_ARCH",
    "OPT_125M_ARCH",
    "OPT_SHAPES",
    "opt_125m_config",
    "opt_shape_config",
]

log = logging.getLogger(__name__)

OPT_TINY_DIR = Path(__file__).resolve().parent / "assets" / "opt_tiny"
TRAINABLE_MODES = ("all", "bias", "layernorm", "bias_layernorm", "head", "final_norm")

# opt-tiny: 3 layers, d_model 128, byte-level BPE vocabulary of 1024 tokens; ~0.73 M params.
OPT_TINY_ARCH: dict[str, object] = {
    "vocab_size": 1024,
    "hidden_size": 128,
    "num_hidden_layers": 3,
    "ffn_dim": 512,
    "num_attention_heads": 4,
    "max_position_embeddings": 128,
    "word_embed_proj_dim": 128,
    "do_layer_norm_before": True,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_function": "relu",
    "pad_token_id": 1,
    "bos_token_id": 2,
    "eos_token_id": 2,
    "tie_word_embeddings": True,
}

# facebook/opt-125m's config.json values (hidden 768, 12 layers, 12 heads, FFN 3072, 2048 pos).
OPT_125M_ARCH: dict[str, Any] = {
    "vocab_size": 50272,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "ffn_dim": 3072,
    "num_attention_heads": 12,
    "max_position_embeddings": 2048,
    "word_embed_proj_dim": 768,
    "do_layer_norm_before": True,
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "activation_function": "relu",
    "layerdrop": 0.0,
    "init_std": 0.02,
    "enable_bias": True,
    "layer_norm_elementwise_affine": True,
    "pad_token_id": 1,
    "bos_token_id": 2,
    "eos_token_id": 2,
    "tie_word_embeddings": True,
}


# The larger OPT checkpoints' config.json values that differ from opt-125m's.
OPT_SHAPES: dict[str, dict[str, Any]] = {
    "opt-125m": OPT_125M_ARCH,
    # facebook/opt-350m: 1024 hidden, 24 layers, 512-wide embedding projected in and out,
    # post-layer-norm (do_layer_norm_before false): 331,196,416 parameters.
    "opt-350m": {**OPT_125M_ARCH, "hidden_size": 1024, "num_hidden_layers": 24, "ffn_dim": 4096,
                 "num_attention_heads": 16, "word_embed_proj_dim": 512, "do_layer_norm_before": False},
    # facebook/opt-1.3b: 2048 hidden, 24 layers, 32 heads: 1,315,758,080 parameters.
    "opt-1.3b": {**OPT_125M_ARCH, "hidden_size": 2048, "num_hidden_layers": 24, "ffn_dim": 8192,
                 "num_attention_heads": 32, "word_embed_proj_dim": 2048},
}


class ModelUnavailableError(OSError):
    """A model or tokenizer cannot be loaded (hub unreachable, missing asset, bad directory)."""


def opt_125m_config() -> OPTConfig:
    """The facebook/opt-125m architecture (125,239,296 parameters, tied embedding counted once)."""
    return OPTConfig(**OPT_125M_ARCH)


def opt_shape_config(name: str) -> OPTConfig:
    """The architecture of ``facebook/<name>`` for a name in :data:`OPT_SHAPES`."""
    if name not in OPT_SHAPES:
        raise ValueError(f"model.name: {name!r} is not one of {', '.join(OPT_SHAPES)}")
    return OPTConfig(**OPT_SHAPES[name])


def _load_opt_tiny() -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    if not (OPT_TINY_DIR / "model.safetensors").is_file():
        raise ModelUnavailableError(
            f"model.name 'opt-tiny': checkpoint missing in {OPT_TINY_DIR}; rebuild it with "
            "`.venv/bin/python scripts/pretrain_opt_tiny.py`"
        )
    model = OPTForCausalLM.from_pretrained(OPT_TINY_DIR, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(OPT_TINY_DIR)


def _load_opt_shape(name: str, seed: int) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    # Random init from a private copy of the global RNG state, so loading does not disturb
    # (or depend on) anybody else's torch.manual_seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OPTForCausalLM(opt_shape_config(name))
    return model, AutoTokenizer.from_pretrained(OPT_TINY_DIR)


def _load_pretrained(name: str, revision: str | None) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    local = Path(name).expanduser()
    if local.is_dir():
        try:
            model = AutoModelForCausalLM.from_pretrained(local, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(local)
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(
                f"model.name {name!r}: the directory is not a Hugging Face causal LM saved with "
                f"save_pretrained (model + tokenizer): {exc}"
            ) from exc
        return model, tokenizer
    try:
        model = AutoModelForCausalLM.from_pretrained(name, revision=revision, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailableError(
            f"model.name {name!r}: not a local directory and the Hugging Face hub cannot be "
            f"reached (or the id/revision does not exist) and it is not in the local cache "
            f"[{first}]. Download it where there is network (`huggingface-cli download {name}`), "
            "copy the cache (HF_HOME) or a save_pretrained directory here, or use model.name "
            "'opt-tiny' / 'opt-125m' offline."
        ) from None
    return model, tokenizer


def load_model(cfg: ModelConfig, seed: int = 0) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """fp32 causal LM in ``eval()`` mode and its tokenizer, for ``cfg.name``.

    ``seed`` only matters for randomly initialised models (``opt-125m``, ``opt-350m``, ...).
    """
    quiet_third_party()
    if cfg.name == "opt-tiny":
        model, tokenizer = _load_opt_tiny()
    elif cfg.name in OPT_SHAPES:
        model, tokenizer = _load_opt_shape(cfg.name, seed)
    else:
        model, tokenizer = _load_pretrained(cfg.name, cfg.revision)
    model = model.float().eval()
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s: %s parameters (fp32)", cfg.name, f"{n_params:,}")
    return model, tokenizer


def _is_norm(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.LayerNorm) or "norm" in type(module).__name__.lower()


def trainable_parameters(model: torch.nn.Module, mode: str) -> list[tuple[str, torch.nn.Parameter]]:
    """Ordered ``(name, parameter)`` list for ``ModelConfig.trainable`` ``mode``.

    * ``all``: every parameter;
    * ``bias``: biases of non-normalisation layers (attention/FFN projections, LM head);
    * ``layernorm``: weight and bias of every normalisation layer;
    * ``bias_layernorm``: the union of the two (BitFit-like; ~4k parameters in opt-tiny);
    * ``head``: the output head (LM head, tied to the input embedding in OPT) and the final
      normalisation layer of the decoder;
    * ``final_norm``: only the final normalisation layer of the decoder (2 x hidden values:
      256 in opt-tiny), the read-out that maps the last hidden state onto the verbalizer.

    The order is ``model.named_parameters()`` order; a tied tensor (OPT ``lm_head.weight`` is
    ``embed_tokens.weight``) appears once, under its first name. Listed parameters get
    ``requires_grad=True``, all others ``False``.
    """
    if mode not in TRAINABLE_MODES:
        raise ValueError(f"model.trainable: {mode!r} is not one of {', '.join(TRAINABLE_MODES)}")
    norm_params: set[int] = set()
    last_norm: torch.nn.Module | None = None
    for _, module in model.named_modules():
        if _is_norm(module):
            norm_params.update(id(p) for p in module.parameters(recurse=False))
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is not None:
        # Final normalisation of the decoder: the last norm module directly under it.
        for _, child in decoder.named_children():
            if _is_norm(child):
                last_norm = child
    head_params: set[int] = set()
    get_output_embeddings = getattr(model, "get_output_embeddings", None)
    out = get_output_embeddings() if callable(get_output_embeddings) else None
    if mode == "final_norm":
        if last_norm is None:
            raise ValueError(f"model.trainable: 'final_norm' but {type(model).__name__} has no final norm")
        head_params.update(id(p) for p in last_norm.parameters(recurse=False))
    if mode == "head":
        if out is None:
            raise ValueError(f"model.trainable: 'head' but {type(model).__name__} has no output embedding")
        head_params.update(id(p) for p in out.parameters())
        if last_norm is not None:
            head_params.update(id(p) for p in last_norm.parameters(recurse=False))

    def selected(name: str, param: torch.nn.Parameter) -> bool:
        is_norm = id(param) in norm_params
        is_bias = name.endswith("bias") and not is_norm
        return {
            "all": True,
            "bias": is_bias,
            "layernorm": is_norm,
            "bias_layernorm": is_bias or is_norm,
            "head": id(param) in head_params,
            "final_norm": id(param) in head_params,
        }[mode]

    chosen: list[tuple[str, torch.nn.Parameter]] = []
    for name, param in model.named_parameters():  # remove_duplicate=True: tied weights once
        keep = selected(name, param)
        param.requires_grad_(keep)
        if keep:
            chosen.append((name, param))
    if not chosen:
        raise ValueError(f"model.trainable: {mode!r} selects no parameter of {type(model).__name__}")
    return chosen
