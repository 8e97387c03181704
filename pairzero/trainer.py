"""The ZO trainer of one process: model + data shards + objective + ZO engine.

Used by ``pairzero simulate`` (one process hosts all K nodes and shares ONE model copy: every
node's loss is evaluated at the same perturbed weights) and by each edge node (hosts one node;
implements the control plane's :class:`pairzero.protocol.interfaces.Trainer`).

Determinism: round t's perturbation seed comes from the AP (``round_seed(run.seed, t)``); node
k's mini-batch from :func:`batch_seed` (seed, k); the data partition from ``run.seed``. So a
node's scalar is a pure function of (config, t, k, θ), the same in simulate and in loopback.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from pairzero.config import ExperimentConfig
from pairzero.models import load_model, trainable_parameters
from pairzero.seeds import batch_seed
from pairzero.tasks import Example, load_task, make_objective, partition, sample_batch
from pairzero.zo.checkpoint import tensors_sha256
from pairzero.zo.engine import ZOEngine

__all__ = ["ZOTrainer"]

log = logging.getLogger(__name__)


class ZOTrainer:
    """Model, data and ZO engine for the nodes ``node_ids`` hosted in this process."""

    def __init__(self, cfg: ExperimentConfig, node_ids: Sequence[int] | None = None) -> None:
        k_all = cfg.nodes.count
        if cfg.zo.clip_quantile is not None:
            # Every process of a run must use one G: it is resolved once, before the nodes start.
            raise ValueError(
                f"zo.clip_quantile: {cfg.zo.clip_quantile!r} is set but G has not been resolved; "
                "`pairzero simulate` and `pairzero loopback` resolve it themselves; for ap/edge "
                "processes run `pairzero config --resolve-clip` and start them with the config it prints"
            )
        self.cfg = cfg
        self.node_ids = list(range(k_all)) if node_ids is None else list(node_ids)
        for k in self.node_ids:
            if not 0 <= k < k_all:
                raise ValueError(f"node id {k} out of range: nodes.count = {k_all} (ids 0..{k_all - 1})")
        self.model, self.tokenizer = load_model(cfg.model, seed=cfg.run.seed)
        named = trainable_parameters(self.model, cfg.model.trainable)
        self.engine = ZOEngine(self.model, named, cfg.zo)
        data = load_task(cfg.task, seed=cfg.run.seed)
        shards = partition(data.train, k_all, cfg.task.partition, cfg.task.dirichlet_alpha, cfg.run.seed)
        self.shards: dict[int, tuple[Example, ...]] = {k: tuple(shards[k]) for k in self.node_ids}
        self.validation = tuple(data.validation[: cfg.task.eval_examples])
        self.objective = make_objective(cfg.task, self.tokenizer)
        self._cached: tuple[int, list[float]] | None = None  # (seed, scalars) of the pending round
        self.compute_s: dict[int, float] = {}  # round t -> seconds of compute_scalar (edge node)
        self.update_s: dict[int, float] = {}  # round t -> seconds of its apply_update
        self._last_t: tuple[int, int] | None = None  # (t, seed) of the latest compute_scalar
        log.info(
            "trainer: model %s (%s trainable values, mode %s), nodes %s, %d train / %d validation",
            cfg.model.name, f"{self.engine.manifest.numel:,}", cfg.model.trainable, self.node_ids,
            sum(len(s) for s in self.shards.values()), len(self.validation),
        )

    # ------------------------------------------------------------------ compute
    def encoded_batch(self, node: int, seed: int) -> dict[str, torch.Tensor]:
        """Node ``node``'s encoded mini-batch for the round with perturbation seed ``seed``."""
        batch = sample_batch(self.shards[node], self.cfg.task.batch_size, batch_seed(seed, node))
        return self.objective.encode(batch)

    def loss_fns(self, seed: int) -> list[Callable[[torch.nn.Module], torch.Tensor]]:
        """One loss callable per hosted node (its mini-batch of round ``seed``)."""
        encoded = [self.encoded_batch(k, seed) for k in self.node_ids]
        return [functools.partial(self.objective.loss, encoded=e) for e in encoded]

    def local_scalars(self, seed: int) -> list[float]:
        """Clipped ZO scalars g_k of the hosted nodes (order of ``node_ids``) for ``seed``.

        Leaves θ at θ − εz (pending) until :meth:`apply_update`. Asked again for the pending
        seed (an AP that re-runs a round after a restart) it returns the same values.
        """
        if self._cached is not None and self._cached[0] == seed:
            return list(self._cached[1])
        if self.engine.pending_seed is not None:
            # Cannot happen with the orchestrator (an uncommitted round re-runs with the same
            # seed; a committed one reaches us as UPDATE or in catch-up). If it does, θ can only
            # be restored up to rounding: this node no longer matches its replicas, and the
            # periodic model-hash check will stop it (restart it to replay from the log).
            log.error("round seed %d was never committed; θ restored up to rounding, so this node "
                      "has diverged from the others", self.engine.pending_seed)
            self.engine.restore()
        g = self.engine.scalars(seed, self.loss_fns(seed))
        self._cached = (seed, list(g))
        return g

    def apply_update(self, seed: int, g_hat: float, lr: float | None = None) -> None:
        """θ ← θ − lr·ĝ·z(seed) (fused with the restore when this round is pending)."""
        if lr is not None and lr != self.cfg.zo.lr:
            raise ValueError(f"lr: the AP sent {lr}, this node is configured with zo.lr = {self.cfg.zo.lr}")
        if self.engine.pending_seed is not None and self.engine.pending_seed != seed:
            self.engine.restore()
        t0 = time.perf_counter()
        self.engine.apply_update(seed, g_hat)
        if self._last_t is not None and self._last_t[1] == seed:
            self.update_s[self._last_t[0]] = time.perf_counter() - t0
        self._cached = None

    def replay(self, records: Iterable[Any]) -> None:
        """Apply committed rounds in order: (seed, g_hat) pairs or objects with .seed/.g_hat."""
        pairs = [(r.seed, r.g_hat) if hasattr(r, "seed") else (int(r[0]), r[1]) for r in records]
        if not pairs:
            return
        if self.engine.pending_seed is not None:
            seed0, g0 = pairs[0]
            if seed0 == self.engine.pending_seed:
                self.apply_update(seed0, g0)
                pairs = pairs[1:]
            else:
                self.engine.restore()
        self._cached = None
        self.engine.replay(pairs)

    # ------------------------------------------------------------------ Trainer protocol
    def compute_scalar(self, t: int, seed: int) -> float:
        """The single hosted node's scalar (edge-node use)."""
        if len(self.node_ids) != 1:
            raise RuntimeError(f"compute_scalar: this trainer hosts {len(self.node_ids)} nodes, expected 1")
        t0 = time.perf_counter()
        g = self.local_scalars(seed)[0]
        self.compute_s[t] = time.perf_counter() - t0
        self._last_t = (t, seed)
        return g

    def manifest_digest(self) -> str:
        return self.engine.manifest.digest

    def model_hash(self) -> str:
        """SHA-256 of the trainable weights' bytes (equal iff bit-identical).

        ``""`` while a round is pending: the weights are then θ − εz, and θ itself cannot be
        recovered bit-exactly before the update (a node re-joining a restarted AP in that state
        is checked at the next published hash instead).
        """
        if self.engine.pending_seed is not None:
            return ""
        return tensors_sha256(self.engine.params)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the model, for bit-exact comparisons."""
        return {n: t.detach().clone() for n, t in self.model.state_dict().items()}

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        """Validation loss and accuracy (on ``task.eval_examples`` examples)."""
        if self.engine.pending_seed is not None:
            raise RuntimeError("evaluate() during a pending round: apply the update first")
        self.model.eval()
        with torch.inference_mode():
            return self.objective.evaluate(self.model, self.validation)
