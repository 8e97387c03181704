"""The ZO trainer of one process: model + data shards + objective + ZO engine.

Used by each edge node (hosts one node; implements the control plane's
:class:`pairzero.protocol.interfaces.Trainer`) and by ``pairzero simulate``, where one process
hosts all K nodes on ONE model copy (every node's loss is evaluated at the same perturbed
weights): :class:`SharedWeights` gives each node, and the AP's replica, a view of that copy that
refuses to serve a node whose update history is not the copy's (so sharing is provably exact).

Determinism: round t's perturbation seed comes from the AP (``round_seed(run.seed, t)``); node
k's mini-batch from :func:`batch_seed` (seed, k); the data partition from ``run.seed``. So a
node's scalar is a pure function of (config, t, k, θ), the same in simulate and in loopback.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from pairzero.config import ExperimentConfig
from pairzero.models import load_model, trainable_parameters
from pairzero.seeds import batch_seed
from pairzero.tasks import Example, load_task, make_objective, partition, sample_batch
from pairzero.zo.checkpoint import tensors_sha256
from pairzero.zo.engine import ZOEngine

__all__ = ["ZOTrainer", "SharedWeights", "SharedView"]

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
        # Every loss value of the latest local_scalars, in evaluation order (per perturbation j:
        # the hosted nodes' losses at θ+εz_j, then at θ-εz_j): their mean is the training loss.
        self.last_losses: list[float] = []
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
        losses: list[float] = []

        def recording(fn: Callable[[torch.nn.Module], torch.Tensor]) -> Callable[[torch.nn.Module], float]:
            def loss(m: torch.nn.Module) -> float:
                v = float(fn(m))  # the engine takes float(loss) too: the same value either way
                losses.append(v)
                return v
            return loss

        g = self.engine.scalars(seed, [recording(fn) for fn in self.loss_fns(seed)])
        self.last_losses = losses
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


class SharedWeights:
    """One :class:`ZOTrainer` hosting every node of a run, shared by K node views and the AP's
    replica view (``pairzero simulate``): one model copy instead of K + 1.

    Sharing is exact only while every view has applied the same updates: the copy keeps the
    sequence of (seed, g_hat) it applied, and each view the length of the prefix it has seen. A
    view applying an update the copy already applied checks it is the same one (else it raises:
    that view's weights would differ from the copy's); the first view to apply a new update
    applies it to the copy. Scalars, hashes and evaluations are served only to a view at the
    copy's latest update. Thread-safe (one lock): the nodes and the AP run in their own threads.
    """

    def __init__(self, trainer: ZOTrainer) -> None:
        self.trainer = trainer
        self.lock = threading.RLock()
        self.applied: list[tuple[int, float]] = []  # (seed, g_hat) of every update, in order
        self._hash: tuple[int, str] | None = None  # (updates applied, model hash)

    def view(self, node: int | None = None) -> SharedView:
        """Node ``node``'s view (a :class:`~pairzero.protocol.interfaces.Trainer`), or with
        ``node`` None the AP's replica (a :class:`~pairzero.protocol.interfaces.ModelReplica`)."""
        if node is not None and node not in self.trainer.node_ids:
            raise ValueError(f"node: {node} is not hosted here (nodes {self.trainer.node_ids})")
        return SharedView(self, node)

    def train_loss(self) -> float | None:
        """Mean of every loss evaluated for the latest round's scalars (None before the first)."""
        losses = self.trainer.last_losses
        return float(np.mean(losses)) if losses else None


class SharedView:
    """One node's (or the AP replica's) view of a :class:`SharedWeights` copy."""

    def __init__(self, shared: SharedWeights, node: int | None) -> None:
        self.shared = shared
        self.node = node
        self.applied = 0  # updates this view has applied (a prefix of shared.applied)

    def _at_copy(self, what: str) -> None:
        if self.applied != len(self.shared.applied):
            raise RuntimeError(
                f"{what}: {self._who()} has applied {self.applied} updates, the shared model "
                f"{len(self.shared.applied)}: its weights are not the shared copy's")

    def _who(self) -> str:
        return "the AP replica" if self.node is None else f"node {self.node}"

    def compute_scalar(self, t: int, seed: int) -> float:
        """This node's clipped scalar of round ``t``: the first node asking computes every hosted
        node's (one perturbation, K losses each side), the others get theirs from the cache."""
        if self.node is None:
            raise RuntimeError("compute_scalar: the AP replica has no data shard")
        with self.shared.lock:
            self._at_copy("compute_scalar")
            tr = self.shared.trainer
            return float(tr.local_scalars(seed)[tr.node_ids.index(self.node)])

    def apply_update(self, seed: int, g_hat: float, lr: float | None = None) -> None:
        """Apply one committed update: to the copy if it is new, else check it is the one the
        copy applied at this view's position."""
        with self.shared.lock:
            done = self.shared.applied
            if self.applied < len(done):
                if done[self.applied] != (seed, g_hat):
                    raise RuntimeError(
                        f"apply_update: {self._who()}'s update {self.applied} is (seed {seed}, "
                        f"g_hat {g_hat!r}), the shared model applied {done[self.applied]}: the "
                        "nodes would no longer share one model")
            else:
                self.shared.trainer.apply_update(seed, g_hat, lr)
                done.append((seed, g_hat))
            self.applied += 1

    def replay(self, records: Sequence[Any]) -> None:
        """Apply committed rounds in order (objects with .seed, .g_hat and .lr)."""
        for r in records:
            self.apply_update(r.seed, r.g_hat, r.lr)

    def manifest_digest(self) -> str:
        return self.shared.trainer.manifest_digest()

    def model_hash(self) -> str:
        """The copy's hash (computed once per update, whichever view asks first)."""
        with self.shared.lock:
            self._at_copy("model_hash")
            n = len(self.shared.applied)
            if self.shared._hash is None or self.shared._hash[0] != n:
                self.shared._hash = (n, self.shared.trainer.model_hash())
            return self.shared._hash[1]

    def evaluate(self) -> dict[str, float]:
        """Validation loss and accuracy of the copy."""
        with self.shared.lock:
            self._at_copy("evaluate")
            return self.shared.trainer.evaluate()
