"""Zeroth-order (two-point SPSA, MeZO-style) engine for any ``nn.Module``.

One federated round, seen from a node (DESIGN.md §1, §3)::

    g = engine.scalars(seed, [loss])[0]  # θ+εz, L+; θ-εz, L-; g = clip((L+ - L-)/2ε, ±G)
    ...                                  # the AP aggregates the g of all nodes into ĝ
    engine.apply_update(seed, g_hat)     # θ += (ε - lr·ĝ)·z: restore and update in ONE sweep

Exact float operation sequence (what makes ``replay`` bit-identical).  Per element of θ and
per round, with every product and sum rounded to fp32 separately (``fl``)::

    for j < q-1:  θ = fl(θ + fl(ε·z_j)); θ = fl(θ + fl(-2ε·z_j)); θ = fl(θ + fl(ε·z_j))
    j = q-1:      θ = fl(θ + fl(ε·z_j)); θ = fl(θ + fl(-2ε·z_j))       # "pending" state
    update:       θ = fl(θ + fl((ε - lr·u_{q-1})·z_{q-1})); θ = fl(θ + fl(-lr·u_j·z_j)), j < q-1
    decay:        θ = fl(θ·(1 - lr·wd))                                # not bias / LayerNorm

θ + εz - 2εz + (ε - lr·ĝ)z is *not* bit-equal to θ - lr·ĝ·z in fp32, and no cheaper shortcut
is exact in general, so a node that only follows (no pending state) and :meth:`ZOEngine.replay`
run this same sequence, but in one sweep with z generated once per chunk and per j
(``perturb.run_program_``), instead of the live path's sweeps.  The cost of a replayed round
is one z generation per perturbation (plus a second one per j < q-1).

q = ``cfg.num_perturbations`` > 1: perturbation j uses z(seed, j).  :meth:`ZOEngine.scalars`
returns, per loss, the mean over j of the clipped scalars, g = (1/q) Σ_j g_j.  The update
``u`` is then

* a single float ĝ (one channel use per round): u_j = ĝ for every j, i.e. θ -= lr·ĝ·Σ_j z_j,
  unbiased since E[g_i z_j] = 0 for i ≠ j: E[ĝ Σ_j z_j] = (1/q) Σ_j E[g_j z_j] ≈ ∇L;
* a sequence of q floats (one aggregate per j, from :meth:`ZOEngine.scalars_per_perturbation`):
  u_j = ĝ_j / q, i.e. θ -= (lr/q)·Σ_j ĝ_j z_j, MeZO's q-sample estimator (lower variance).

Cost: three z sweeps per round (+εz, −2εz, restore+update).  With ``cfg.overlap`` (default)
the first two run on background threads while the forward pass they feed runs, layer by layer
(:meth:`ZOEngine._perturb_and_evaluate`); only the update sweep runs alone.  The float
operations per element are the same, so are the bits.

Weight decay (``cfg.weight_decay``) is applied once per round after the update, as
θ ← θ(1 - lr·wd), to weights only: no decay on biases and LayerNorm parameters (MeZO/HF rule).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from pairzero.config import ZOConfig
from pairzero.zo.manifest import ParamManifest, build_manifest, dedup_named_params
from pairzero.zo.perturb import DecayStep, Step, Sweep, ZStep, run_program_, start_program

__all__ = ["ZOEngine", "LossFn", "clip_scalar", "two_point_scalar", "no_decay_names", "default_threads"]

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module], "float | torch.Tensor"]
GHat = float | Sequence[float]


def default_threads() -> int:
    """Threads for z generation: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def clip_scalar(g: float, bound: float) -> float:
    """Clip a ZO scalar to [-bound, +bound] (the DP sensitivity bound G); NaN is refused."""
    if math.isnan(g):
        raise ValueError("g: NaN, a loss evaluation returned NaN or inf")
    return max(-bound, min(bound, g))


def two_point_scalar(loss_plus: float, loss_minus: float, epsilon: float, bound: float) -> float:
    """g = clip((L(θ+εz) - L(θ-εz)) / 2ε, ±G): the projected-gradient estimate (loss units / ε)."""
    return clip_scalar((loss_plus - loss_minus) / (2.0 * epsilon), bound)


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters exempt from weight decay: biases and LayerNorm parameters."""
    names: set[str] = set()
    for mname, mod in model.named_modules():
        is_norm = isinstance(mod, nn.LayerNorm | nn.GroupNorm) or "layernorm" in type(mod).__name__.lower() or "rmsnorm" in type(mod).__name__.lower()
        for pname, _ in mod.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if is_norm or pname == "bias" or pname.endswith("_bias"):
                names.add(full)
    return names


def _storage_key(p: torch.Tensor) -> tuple[int, int]:
    return (p.untyped_storage().data_ptr(), int(p.storage_offset()))


class _WaitForSweep:
    """Forward hooks that hold each module until a running :class:`Sweep` has passed its
    parameters, and hold the end of the outermost module call until the sweep is complete."""

    def __init__(self, modules: Sequence[nn.Module], need: dict[int, int], sweep: Sweep) -> None:
        self._modules, self._need, self._sweep = modules, need, sweep
        self._last = sweep.count - 1
        self._depth = 0
        self.closed = False  # an outermost module call has returned (the sweep was complete)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _pre(self, mod: nn.Module, args: object) -> None:
        self._depth += 1
        need = self._need.get(id(mod), -1)
        if need >= self._sweep.finished:
            self._sweep.wait(need)

    def _post(self, mod: nn.Module, args: object, out: object) -> None:
        self._depth -= 1
        if self._depth == 0 and not self.closed:
            self._sweep.wait(self._last)
            self.closed = True

    def __enter__(self) -> _WaitForSweep:
        for m in self._modules:
            self._handles.append(m.register_forward_pre_hook(self._pre))
            self._handles.append(m.register_forward_hook(self._post))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class ZOEngine:
    """Two-point ZO estimator and update over an ordered list of fp32 parameters.

    ``named_params`` fixes the manifest (order matters; tied tensors are perturbed once).
    ``threads`` (default ``cfg.threads``, or :func:`default_threads` when that is 0) only
    changes speed, never the bits.
    """

    def __init__(
        self,
        model: nn.Module,
        named_params: Iterable[tuple[str, nn.Parameter]],
        cfg: ZOConfig,
        *,
        threads: int | None = None,
    ) -> None:
        named = dedup_named_params(named_params)
        if cfg.perturbation not in ("gaussian", "rademacher"):
            raise ValueError(f"cfg.perturbation: {cfg.perturbation!r}, expected 'gaussian' or 'rademacher'")
        self.model = model
        self.cfg = cfg
        self.manifest: ParamManifest = build_manifest(named, dist=cfg.perturbation)
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        for n, p in named:
            if p.dtype != torch.float32:
                raise ValueError(f"named_params: {n!r} has dtype {p.dtype}, expected torch.float32 (fp32 master weights)")
        if threads is None:
            threads = getattr(cfg, "threads", 0) or default_threads()
        self.threads = threads
        if not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(f"threads: {threads!r}, expected an int >= 1")
        exempt = no_decay_names(model)
        # Match by tensor identity too, so names given with another prefix still work.
        exempt_ids = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n in exempt}
        self.decay_mask = [not (n in exempt or id(p) in exempt_ids) for n, p in named]
        self._pending: int | None = None  # seed whose θ-εz_{q-1} state is pending
        # Overlap (cfg.overlap): for each module owning trainable tensors directly, the largest
        # manifest index among them; a forward pre-hook waits until the sweep reaches it.
        key_index = {_storage_key(p): i for i, p in enumerate(self.params)}
        self._modules = list(model.modules())
        self._need: dict[int, int] = {}
        for mod in self._modules:
            idx = [key_index[k] for p in mod.parameters(recurse=False) if (k := _storage_key(p)) in key_index]
            if idx:
                self._need[id(mod)] = max(idx)
        self._overlap = cfg.overlap
        log.info(
            "ZO engine: %d tensors, %d values, %s z, q=%d, %d threads, manifest %s",
            len(self.params), self.manifest.numel, cfg.perturbation, cfg.num_perturbations,
            self.threads, self.manifest.digest[:12],
        )

    # ------------------------------------------------------------------ state
    @property
    def pending_seed(self) -> int | None:
        """Seed of the round left pending by :meth:`scalars` (θ at θ-εz), or None."""
        return self._pending

    def _run(self, steps: Sequence[Step]) -> None:
        run_program_(
            self.params, steps, self.cfg.perturbation, key=self.manifest.digest,
            decay_mask=self.decay_mask, threads=self.threads,
        )

    def _evaluate(self, loss_fns: Sequence[LossFn]) -> list[float]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                return [float(fn(self.model)) for fn in loss_fns]
        finally:
            self.model.train(was_training)

    def _perturb_and_evaluate(self, step: ZStep, loss_fns: Sequence[LossFn]) -> list[float]:
        """Apply ``step`` to θ, then evaluate the losses; θ has ``step`` fully applied on return.

        With ``cfg.overlap`` the sweep runs on background threads while the first loss's
        forward pass runs: each module waits, in a forward pre-hook, until the sweep has
        passed its parameters (manifest order = registration order, which is the order of the
        forward pass for the layers of a causal LM), and when the outermost module call
        returns every parameter is done, so anything the loss reads after it (the LM head's
        verbalizer rows) is perturbed too.  The bits of θ and of the loss are those of the
        sequential path; only the time differs.  A loss that made no module call (a toy loss
        reading a parameter directly) may have read θ mid-sweep: it is evaluated again on the
        finished θ, and the engine stops overlapping.
        """
        if not self._overlap:
            self._run([step])
            return self._evaluate(loss_fns)
        sweep = start_program(
            self.params, [step], self.cfg.perturbation, key=self.manifest.digest,
            decay_mask=self.decay_mask, threads=self.threads,
        )
        try:
            with _WaitForSweep(self._modules, self._need, sweep) as guard:
                first = self._evaluate(loss_fns[:1])
        finally:
            sweep.join()
        if not guard.closed:
            log.info("ZO overlap off: the loss read the parameters outside any module call")
            self._overlap = False
            first = self._evaluate(loss_fns[:1])
        return first + self._evaluate(loss_fns[1:])

    @staticmethod
    def _check_seed(seed: int) -> None:
        if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
            raise ValueError(f"seed: {seed!r}, expected an int >= 0")

    # ------------------------------------------------------------------ live path
    def scalars_per_perturbation(self, seed: int, loss_fns: Sequence[LossFn]) -> list[list[float]]:
        """Clipped two-point scalars g[i][j] for loss i and perturbation j (q = num_perturbations).

        All losses are evaluated at the SAME perturbed weights (K simulated nodes sharing one
        model copy).  Leaves θ at θ - ε·z(seed, q-1) until :meth:`apply_update`.
        """
        self._check_seed(seed)
        if self._pending is not None:
            raise RuntimeError(
                f"scalars(seed={seed}) called while round seed={self._pending} is pending: "
                "call apply_update first"
            )
        if not loss_fns:
            raise ValueError("loss_fns: empty, expected at least one loss callable")
        eps, q, bound = self.cfg.epsilon, self.cfg.num_perturbations, self.cfg.clip
        out: list[list[float]] = [[] for _ in loss_fns]
        offset = 0.0  # current perturbation of θ along z_j, in units of ε
        j = 0
        try:
            for j in range(q):
                offset = 1.0  # set first: an interrupted sweep has still finished (joined)
                lp = self._perturb_and_evaluate(ZStep(seed, j, (eps,)), loss_fns)
                offset = -1.0
                lm = self._perturb_and_evaluate(ZStep(seed, j, (-2.0 * eps,)), loss_fns)
                if j < q - 1:
                    self._run([ZStep(seed, j, (eps,))])
                    offset = 0.0
                for i in range(len(loss_fns)):
                    out[i].append(two_point_scalar(lp[i], lm[i], eps, bound))
        except BaseException:
            if offset:
                # Undo the perturbation: θ is back up to rounding only, so this node is no
                # longer bit-identical to its replicas and must resynchronise (replay).
                self._run([ZStep(seed, j, (-offset * eps,))])
                log.error("scalars(seed=%d) failed; θ restored up to rounding: replay to resync", seed)
            raise
        self._pending = seed  # θ = θ - ε·z(seed, q-1) until apply_update
        return out

    def scalars(self, seed: int, loss_fns: Sequence[LossFn]) -> list[float]:
        """Per loss, the clipped scalar g (mean over the q perturbations); see the module doc."""
        return [sum(gs) / len(gs) for gs in self.scalars_per_perturbation(seed, loss_fns)]

    def _update_scales(self, g_hat: GHat) -> list[float]:
        """u_j · lr for j = 0..q-1 (see the module docstring), validated."""
        q, lr = self.cfg.num_perturbations, self.cfg.lr
        if isinstance(g_hat, int | float):
            us = [float(g_hat)] * q
        else:
            us = [float(x) / q for x in g_hat]
            if len(us) != q:
                raise ValueError(f"g_hat: {len(us)} values, expected a float or q={q} values")
        if not all(math.isfinite(u) for u in us):
            raise ValueError(f"g_hat: {g_hat!r}, expected finite values")
        return [lr * u for u in us]

    def _update_steps(self, seed: int, g_hat: GHat) -> list[Step]:
        """Steps of the fused restore + update (from the pending state) and weight decay."""
        q, eps = self.cfg.num_perturbations, self.cfg.epsilon
        lu = self._update_scales(g_hat)
        steps: list[Step] = [ZStep(seed, q - 1, (eps - lu[q - 1],))]
        steps += [ZStep(seed, j, (-lu[j],)) for j in range(q - 1)]
        if self.cfg.weight_decay > 0.0:
            steps.append(DecayStep(1.0 - self.cfg.lr * self.cfg.weight_decay))
        return steps

    def _round_steps(self, seed: int, g_hat: GHat) -> list[Step]:
        """The whole round (perturb, evaluate-free, update) as one program: the follower path."""
        q, eps = self.cfg.num_perturbations, self.cfg.epsilon
        steps: list[Step] = [ZStep(seed, j, (eps, -2.0 * eps, eps)) for j in range(q - 1)]
        upd = self._update_steps(seed, g_hat)
        first = upd[0]
        assert isinstance(first, ZStep)
        steps.append(ZStep(seed, q - 1, (eps, -2.0 * eps) + first.scales))
        return steps + upd[1:]

    def apply_update(self, seed: int, g_hat: GHat) -> None:
        """θ ← θ - lr·(ĝ-weighted z) for round ``seed``, from the pending state or not.

        With the pending state of :meth:`scalars` for this seed: restore and update fused in
        one sweep, θ += (ε - lr·ĝ)·z.  Without (a node that only follows the AP): the whole
        round's operation sequence in one sweep, bit-identical to the nodes that computed.
        """
        self._check_seed(seed)
        if self._pending is None:
            self._run(self._round_steps(seed, g_hat))
            return
        if self._pending != seed:
            raise ValueError(f"seed: {seed}, but round seed={self._pending} is pending")
        steps = self._update_steps(seed, g_hat)  # validates g_hat before touching θ
        self._run(steps)
        self._pending = None

    def restore(self) -> None:
        """Leave the pending state without learning: exactly ``apply_update(seed, 0.0)``.

        For a round aborted by the AP.  θ then differs from its pre-round value by rounding
        (and weight decay, if any); a replayed copy must record the round as (seed, 0.0).
        """
        if self._pending is not None:
            self.apply_update(self._pending, 0.0)

    def step(self, seed: int, loss_fn: LossFn) -> float:
        """Single-node round: g = scalars(seed, [loss_fn]); apply_update(seed, g); returns g."""
        g = self.scalars(seed, [loss_fn])[0]
        self.apply_update(seed, g)
        return g

    # ------------------------------------------------------------------ replay
    def replay(self, records: Iterable[tuple[int, GHat]]) -> None:
        """Apply rounds (seed, ĝ) in order, bit-identical to the live path (see module doc)."""
        if self._pending is not None:
            raise RuntimeError(f"replay while round seed={self._pending} is pending")
        steps: list[Step] = []
        n = 0
        for seed, g_hat in records:
            self._check_seed(seed)
            steps += self._round_steps(seed, g_hat)
            n += 1
            if len(steps) >= 64:  # bounded program length; the result is independent of it
                self._run(steps)
                steps = []
        if steps:
            self._run(steps)
        log.info("replayed %d rounds", n)
