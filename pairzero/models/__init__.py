"""Causal LMs for ZO fine-tuning (:mod:`pairzero.models.loading`): the embedded offline models
(``opt-tiny``, pre-trained by ``scripts/pretrain_opt_tiny.py`` on the corpus of
:mod:`pairzero.models.corpus`; the exact OPT-125M/350M/1.3B shapes with random weights) and
Hugging Face ``from_pretrained``, in fp32 and ``eval()`` mode.
"""

from pairzero.models.loading import (
    OPT_125M_ARCH,
    OPT_SHAPES,
    OPT_TINY_ARCH,
    OPT_TINY_DIR,
    TRAINABLE_MODES,
    ModelUnavailableError,
    load_model,
    opt_125m_config,
    opt_shape_config,
    trainable_parameters,
)

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
