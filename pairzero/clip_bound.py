"""The clip bound G from the measured scale of the ZO scalars (``zo.clip_quantile``).

Why: the scalar g = (L(θ+εz) − L(θ−εz)) / 2ε ≈ zᵀ∇L is N(0, ‖∇L‖²)-like, and ‖∇L‖ depends on
the model, the trainable set, the task and the batch size by orders of magnitude (|g| ≈ 0.3
for opt-tiny's 5k BitFit values, tens for a 125M model trained whole). A fixed G either clips
every scalar to ±G (the scalars become sign votes) or sets the privacy noise, whose std is
2·G·z*/|S| on the aggregate, far above the signal. So G is measured, not guessed.

Rule (run once, before round 0): on a private copy of the initial model, draw W perturbations
z(w) (a seed stream apart from the rounds'), each with a mini-batch of ``task.batch_size``
examples of the **validation split**, compute the unclipped scalars exactly as a node does
(:meth:`pairzero.zo.ZOEngine.scalars_per_perturbation`), and set

    G = quantile_q(|g|)   (q = zo.clip_quantile, rounded to 3 significant digits).

Privacy: the validation split is the held-out data the AP evaluates on; the warm-up reads no
node's data and no node's scalar, so G is data-independent as far as the nodes are concerned
and costs them no privacy budget (the accountant is not charged, correctly). A deployment
whose AP holds no task data must fix G or estimate it with a DP mechanism charged to the
accountant (not implemented here).

``pairzero simulate`` resolves G before round 0 (it is part of ``wall_s``) and saves the
resolved config (numeric ``zo.clip``, ``zo.clip_quantile: null``) with a record of the warm-up
in ``summary.json``. Multi-process runs need one G shared by every process: ``pairzero
loopback`` resolves it once before it starts the AP and the nodes and hands them the resolved
config; for ``ap`` / ``edge`` started by hand (radios), resolve it with ``pairzero config
--resolve-clip`` and start every process with the printed config. An unresolved
``zo.clip_quantile`` is refused by :class:`pairzero.trainer.ZOTrainer`, so no process can
silently use another G.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pairzero.config import ExperimentConfig

__all__ = ["ClipWarmup", "measure_clip", "resolve_clip"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipWarmup:
    """Outcome of the clip warm-up.

    Attributes:
        clip: G, the resolved clip bound (loss units per unit perturbation).
        quantile: q.
        draws: W perturbations (times num_perturbations scalars each).
        batch_size: examples per draw.
        abs_g_quantiles: |g| at the 10/50/90/99 % quantiles and the maximum.
        frac_clipped_at_start: share of the warm-up scalars with |g| > G.
        source: what data the warm-up read.
        privacy_charge: what it cost the nodes (nothing: no node data).
        seconds: wall time of the warm-up.
    """

    clip: float
    quantile: float
    draws: int
    batch_size: int
    abs_g_quantiles: dict[str, float]
    frac_clipped_at_start: float
    source: str
    privacy_charge: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)


def _three_digits(x: float) -> float:
    return float(f"{x:.3g}")


def measure_clip(cfg: ExperimentConfig, quantile: float, draws: int) -> ClipWarmup:
    """Measure |g| at the initial model on the validation split and return G (see module doc)."""
    from pairzero.models import load_model, trainable_parameters
    from pairzero.seeds import batch_seed, warmup_seed
    from pairzero.tasks import load_task, make_objective, sample_batch
    from pairzero.zo.engine import ZOEngine

    if not 0.0 < quantile < 1.0:
        raise ValueError(f"zo.clip_quantile: {quantile!r} must be in (0, 1)")
    if draws < 1:
        raise ValueError(f"zo.clip_warmup_draws: {draws!r} must be >= 1")
    t0 = time.monotonic()
    model, tokenizer = load_model(cfg.model, seed=cfg.run.seed)  # a private copy: θ0 untouched
    engine = ZOEngine(model, trainable_parameters(model, cfg.model.trainable),
                      dataclasses.replace(cfg.zo, clip=math.inf, weight_decay=0.0))
    validation = load_task(cfg.task, seed=cfg.run.seed).validation
    objective = make_objective(cfg.task, tokenizer)
    samples: list[float] = []
    for w in range(draws):
        seed = warmup_seed(cfg.run.seed, w)
        enc = objective.encode(sample_batch(validation, cfg.task.batch_size, batch_seed(seed, 0)))
        samples += [abs(g) for g in engine.scalars_per_perturbation(seed, [functools.partial(objective.loss, encoded=enc)])[0]]
        engine.apply_update(seed, 0.0)  # back to θ0 (up to rounding; this copy is discarded)
    del engine, model
    a = np.asarray(samples)
    if not np.all(np.isfinite(a)):
        raise ValueError("clip warm-up: a loss evaluation returned NaN or inf")
    g_clip = _three_digits(float(np.quantile(a, quantile)))
    if not g_clip > 0.0:
        raise ValueError(
            f"clip warm-up: the {quantile:g}-quantile of |g| over {a.size} scalars is 0: the "
            f"trainable set {cfg.model.trainable!r} does not change the loss; choose another "
            "model.trainable or set zo.clip"
        )
    cal = ClipWarmup(
        clip=g_clip, quantile=quantile, draws=draws, batch_size=cfg.task.batch_size,
        abs_g_quantiles={f"p{int(p * 100)}": float(np.quantile(a, p)) for p in (0.1, 0.5, 0.9, 0.99)}
        | {"max": float(a.max())},
        frac_clipped_at_start=float(np.mean(a > g_clip)),
        source=f"validation split of {cfg.task.name!r} (held by the AP), initial model",
        privacy_charge="none: no node data or node scalar is read",
        seconds=round(time.monotonic() - t0, 2),
    )
    log.info("clip warm-up: G = %g (%g-quantile of |g| over %d scalars; median %.3g, p90 %.3g)",
             cal.clip, quantile, a.size, cal.abs_g_quantiles["p50"], cal.abs_g_quantiles["p90"])
    return cal


def resolve_clip(cfg: ExperimentConfig) -> tuple[ExperimentConfig, ClipWarmup | None]:
    """``cfg`` with a numeric ``zo.clip`` (warm-up run when ``zo.clip_quantile`` is set)."""
    q = cfg.zo.clip_quantile
    if q is None:
        return cfg, None
    cal = measure_clip(cfg, q, cfg.zo.clip_warmup_draws)
    zo = dataclasses.replace(cfg.zo, clip=cal.clip, clip_quantile=None)
    return dataclasses.replace(cfg, zo=zo), cal
