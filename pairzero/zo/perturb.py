"""Regenerating the perturbation z and applying it to the parameters, chunk by chunk.

z is never stored: it is regenerated from (round seed, perturbation index j, manifest digest)
every time it is needed.  Each parameter, flattened, is cut into chunks of
:data:`CHUNK_ELEMS` values; chunk c of parameter i gets its own CPU ``torch.Generator``
seeded with ``sha256(digest|seed|j|i|c)`` (first 8 bytes, 63 bits).  So

* z does not depend on the global RNG, on CUDA, or on how many threads generate it: the
  chunks are independent and a small thread pool can fill them in any order (torch ops
  release the GIL);
* z is fp32 and bit-identical in every process on machines with the same torch build and CPU
  capability (see the Gaussian caveat below);
* no full-size copy of z or θ is ever allocated: each worker owns two chunk buffers
  (2 x 1 MiB for fp32), so memory stays at inference level.

Distributions (``dist``):

``"gaussian"``
    ``torch.randn(generator=...)`` (Box-Muller on mt19937 uniforms).  Fastest bit-exact
    Gaussian measured here (randn ≈ normal_ ≈ 0.30 s per 125M values on one core).  torch
    selects a vectorized Box-Muller on AVX2 CPUs, so a node on a CPU without AVX2 (or forced to
    ``ATEN_CPU_CAPABILITY=default``) draws different low bits (measured on torch 2.13).  The
    manifest scheme names the torch version and CPU class
    (:func:`pairzero.zo.manifest.z_backend`), so such a node is refused at join; use one CPU
    class per federation, or Rademacher.
``"rademacher"``
    ±1 from the bits of mt19937 words: one 32-bit word gives 32 signs (bit b of word w is
    element 32w+b; 1 -> +1, 0 -> -1).  Integer-only, hence identical on every CPU; ≈6x faster
    than ``randint``/``bernoulli_`` (0.05 s vs 0.26 s / 1.27 s per 125M values on one core).

Every update is done as two separately rounded IEEE fp32 operations,
``t = fl(scale * z); θ = fl(θ + t)`` (never a fused multiply-add, whose use depends on the
CPU), so the same sequence of operations gives the same bits everywhere.  A *program* (list
of :class:`ZStep` / :class:`DecayStep`) is applied chunk by chunk: all its steps touch one
chunk before the next chunk, which gives exactly the per-element operation sequence of
running the steps as separate sweeps, while generating each z chunk once per ``ZStep``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

__all__ = [
    "CHUNK_ELEMS",
    "DISTRIBUTIONS",
    "ZStep",
    "DecayStep",
    "chunk_seed",
    "run_program_",
    "add_perturbation_",
]

#: Values per generator chunk (1 MiB of fp32).  Part of the z scheme: changing it changes z
#: (it is named in :data:`pairzero.zo.manifest.Z_SCHEME`, hence in the manifest digest).
CHUNK_ELEMS = 1 << 18
DISTRIBUTIONS = ("gaussian", "rademacher")
_MAX_SEED = (1 << 63) - 1


@dataclass(frozen=True)
class ZStep:
    """θ += fl(s·z(seed, j)) for each s in ``scales``, in order (z generated once per chunk)."""

    seed: int
    j: int
    scales: tuple[float, ...]


@dataclass(frozen=True)
class DecayStep:
    """θ = fl(θ·factor) on the parameters whose decay flag is set (weight decay)."""

    factor: float


Step = ZStep | DecayStep


def chunk_seed(key: str, seed: int, j: int, param_index: int, chunk_index: int) -> int:
    """63-bit generator seed of one chunk: first 8 bytes of sha256("key|seed|j|param|chunk")."""
    h = hashlib.sha256(f"{key}|{seed}|{j}|{param_index}|{chunk_index}".encode()).digest()
    return int.from_bytes(h[:8], "little") & _MAX_SEED


class _Worker:
    """Chunk buffers of one thread (fp32 z, fp32 scaled z, and int32 words for Rademacher)."""

    def __init__(self, dist: str, key: str) -> None:
        self.dist = dist
        self.key = key
        self.z = torch.empty(CHUNK_ELEMS, dtype=torch.float32)
        self.t = torch.empty(CHUNK_ELEMS, dtype=torch.float32)
        if dist == "rademacher":
            self.words = torch.empty(CHUNK_ELEMS // 32, dtype=torch.int32)
            self.bits = torch.empty(CHUNK_ELEMS // 32, 32, dtype=torch.int32)
            self.shifts = torch.arange(32, dtype=torch.int32)

    def draw(self, seed: int, j: int, pidx: int, cidx: int, n: int) -> torch.Tensor:
        """z for one chunk: the first n values, fp32, shape (n,)."""
        g = torch.Generator(device="cpu")
        g.manual_seed(chunk_seed(self.key, seed, j, pidx, cidx))
        z = self.z[:n]
        if self.dist == "gaussian":
            torch.randn(n, generator=g, out=z)
            return z
        nw = (n + 31) // 32
        words = self.words[:nw]
        words.random_(-(1 << 31), 1 << 31, generator=g)
        bits = self.bits[:nw]  # (nw, 32): bit b of word w
        torch.bitwise_right_shift(words.unsqueeze(1), self.shifts, out=bits)
        bits.bitwise_and_(1)
        z.copy_(bits.view(-1)[:n])  # 0/1 -> 0.0/1.0 exactly
        return z.mul_(2.0).sub_(1.0)  # exactly -1.0 / +1.0

    def run_chunk(
        self, view: torch.Tensor, pidx: int, cidx: int, steps: Sequence[Step], decay: bool
    ) -> None:
        n = view.numel()
        t = self.t[:n]
        for step in steps:
            if isinstance(step, ZStep):
                z = self.draw(step.seed, step.j, pidx, cidx, n)
                for s in step.scales:
                    torch.mul(z, s, out=t)  # fl(s·z), fp32
                    view.add_(t)  # fl(θ + t)
            elif decay:
                view.mul_(step.factor)


def _flat_views(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    views = []
    for i, p in enumerate(params):
        if p.dtype != torch.float32:
            raise ValueError(f"params[{i}]: dtype {p.dtype}, expected torch.float32 (fp32 master weights)")
        if p.device.type != "cpu":
            raise ValueError(f"params[{i}]: device {p.device}, expected cpu")
        if not p.is_contiguous():
            raise ValueError(f"params[{i}]: shape {tuple(p.shape)} is not contiguous")
        views.append(p.detach().view(-1))
    return views


def _check_steps(steps: Sequence[Step]) -> None:
    for s in steps:
        if isinstance(s, ZStep):
            if not (isinstance(s.seed, int) and s.seed >= 0):
                raise ValueError(f"seed: {s.seed!r}, expected an int >= 0")
            if not (isinstance(s.j, int) and s.j >= 0):
                raise ValueError(f"j: {s.j!r}, expected an int >= 0")
        elif not isinstance(s, DecayStep):
            raise ValueError(f"steps: {s!r} is not a ZStep or DecayStep")


def run_program_(
    params: Sequence[torch.Tensor],
    steps: Sequence[Step],
    dist: str,
    *,
    key: str,
    decay_mask: Sequence[bool] | None = None,
    threads: int = 1,
) -> None:
    """Apply ``steps`` in place to ``params`` (fp32, CPU, contiguous), chunk by chunk.

    ``key`` is the manifest digest; ``params[i]`` is manifest entry i.  ``decay_mask[i]``
    says whether :class:`DecayStep` applies to ``params[i]`` (default: none).  The result is
    bit-identical for any ``threads`` >= 1.
    """
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"dist: {dist!r}, expected one of {DISTRIBUTIONS}")
    if not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"threads: {threads!r}, expected an int >= 1")
    _check_steps(steps)
    views = _flat_views(params)
    if decay_mask is None:
        decay_mask = [False] * len(views)
    if len(decay_mask) != len(views):
        raise ValueError(f"decay_mask: length {len(decay_mask)}, expected {len(views)} (one per param)")
    # Work items: (param index, chunk index, start, stop) over the flattened parameters.
    items = [
        (i, c, a, min(a + CHUNK_ELEMS, v.numel()))
        for i, v in enumerate(views)
        for c, a in enumerate(range(0, v.numel(), CHUNK_ELEMS))
    ]
    steps = tuple(steps)

    def work(worker_index: int, nworkers: int) -> None:
        w = _Worker(dist, key)
        for i, c, a, b in items[worker_index::nworkers]:
            w.run_chunk(views[i][a:b], i, c, steps, bool(decay_mask[i]))

    nworkers = min(threads, max(1, len(items)))
    if nworkers == 1:
        work(0, 1)
        return
    with ThreadPoolExecutor(max_workers=nworkers, thread_name_prefix="zo-z") as ex:
        futures = [ex.submit(work, k, nworkers) for k in range(nworkers)]
        for f in futures:
            f.result()


def add_perturbation_(
    params: Sequence[torch.Tensor],
    seed: int,
    scale: float,
    dist: str,
    *,
    key: str,
    j: int = 0,
    threads: int = 1,
) -> None:
    """θ += fl(scale·z(seed, j)) in place for every tensor of ``params`` (one sweep).

    ``key`` is the manifest digest (z depends on it).  With ``scale = 1`` on zero tensors this
    writes z itself.
    """
    run_program_(params, [ZStep(seed, j, (float(scale),))], dist, key=key, threads=threads)
