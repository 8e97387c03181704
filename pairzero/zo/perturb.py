"""Regenerating the perturbation z and applying it to the parameters, chunk by chunk.

z is never stored: it is regenerated from (round seed, perturbation index j, manifest digest)
every time it is needed.  Each parameter, flattened, is cut into chunks of
:data:`CHUNK_ELEMS` values; chunk c of parameter i gets its own CPU ``torch.Generator``
seeded with ``sha256(digest|seed|j|i|c)`` (first 8 bytes, 63 bits).  So

* z does not depend on the global RNG, on CUDA, or on how many threads generate it: the
  chunks are independent and worker threads fill them in any order (the generator call and
  the numpy products and sums release the GIL); :func:`start_program` runs a sweep in the
  background, parameter by parameter in manifest order, so that a forward pass can use the
  first layers while the later ones are still being perturbed (``zo.overlap``);
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
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "CHUNK_ELEMS",
    "DISTRIBUTIONS",
    "ZStep",
    "DecayStep",
    "chunk_seed",
    "Sweep",
    "start_program",
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
    """Chunk buffers of one thread (fp32 z, fp32 scaled z, and int32 words for Rademacher).

    Only the generator calls are torch ops (serial by construction); the elementwise products
    and sums go through numpy on views of the same memory: numpy never spreads a ufunc over
    threads, whereas a torch op on a 1 MiB chunk starts an OpenMP team from every worker
    thread (oversubscribed cores; from the main thread of a busy 2-core machine one such op
    was measured 100x slower than serially).  ``fl(s·z)`` and ``fl(θ + t)`` are the same IEEE
    fp32 operations in both libraries (the scalar is rounded to fp32 first, as torch does).
    """

    def __init__(self, dist: str, key: str) -> None:
        self.dist = dist
        self.key = key
        self.gen = torch.Generator(device="cpu")
        self.z = torch.empty(CHUNK_ELEMS, dtype=torch.float32)
        self.t = np.empty(CHUNK_ELEMS, dtype=np.float32)
        if dist == "rademacher":
            self.words = torch.empty(CHUNK_ELEMS // 32, dtype=torch.int32)
            self.bits = np.empty((CHUNK_ELEMS // 32, 32), dtype=np.int32)
            self.shifts = np.arange(32, dtype=np.int32)

    def draw(self, seed: int, j: int, pidx: int, cidx: int, n: int) -> np.ndarray:
        """z for one chunk: the first n values, fp32, shape (n,) (a view of a worker buffer)."""
        g = self.gen
        g.manual_seed(chunk_seed(self.key, seed, j, pidx, cidx))
        z = self.z[:n]
        if self.dist == "gaussian":
            torch.randn(n, generator=g, out=z)
            return z.numpy()
        nw = (n + 31) // 32
        words = self.words[:nw]
        words.random_(-(1 << 31), 1 << 31, generator=g)
        bits = self.bits[:nw]  # (nw, 32): bit b of word w
        np.right_shift(words.numpy()[:, None], self.shifts, out=bits)
        np.bitwise_and(bits, 1, out=bits)
        zn = z.numpy()
        zn[:] = bits.reshape(-1)[:n]  # 0/1 -> 0.0/1.0 exactly
        zn *= np.float32(2.0)
        zn -= np.float32(1.0)  # exactly -1.0 / +1.0
        return zn

    def run_chunk(
        self, view: np.ndarray, pidx: int, cidx: int, steps: Sequence[Step], decay: bool
    ) -> None:
        n = view.size
        t = self.t[:n]
        for step in steps:
            if isinstance(step, ZStep):
                z = self.draw(step.seed, step.j, pidx, cidx, n)
                for s in step.scales:
                    np.multiply(z, np.float32(s), out=t)  # fl(s·z), fp32
                    np.add(view, t, out=view)  # fl(θ + t)
            elif decay:
                np.multiply(view, np.float32(step.factor), out=view)


def _flat_views(params: Sequence[torch.Tensor]) -> list[np.ndarray]:
    views = []
    for i, p in enumerate(params):
        if p.dtype != torch.float32:
            raise ValueError(f"params[{i}]: dtype {p.dtype}, expected torch.float32 (fp32 master weights)")
        if p.device.type != "cpu":
            raise ValueError(f"params[{i}]: device {p.device}, expected cpu")
        if not p.is_contiguous():
            raise ValueError(f"params[{i}]: shape {tuple(p.shape)} is not contiguous")
        views.append(p.detach().view(-1).numpy())
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


class Sweep:
    """A program being applied to the parameters, chunk by chunk, in manifest order.

    Made by :func:`start_program`.  Worker threads take the chunks in order (parameter 0's
    chunks first); :meth:`wait` blocks until parameters ``0..i`` are all done, which lets a
    forward pass use the first layers while the later ones are still being perturbed.  The
    bits of θ do not depend on the order or on the threads: each chunk's operations are
    independent of every other chunk's.
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        steps: Sequence[Step],
        dist: str,
        key: str,
        decay_mask: Sequence[bool] | None,
        threads: int,
    ) -> None:
        if dist not in DISTRIBUTIONS:
            raise ValueError(f"dist: {dist!r}, expected one of {DISTRIBUTIONS}")
        if not (isinstance(threads, int) and threads >= 1):
            raise ValueError(f"threads: {threads!r}, expected an int >= 1")
        _check_steps(steps)
        self._views = _flat_views(params)
        if decay_mask is None:
            decay_mask = [False] * len(self._views)
        if len(decay_mask) != len(self._views):
            raise ValueError(
                f"decay_mask: length {len(decay_mask)}, expected {len(self._views)} (one per param)"
            )
        self._decay = [bool(d) for d in decay_mask]
        self._steps = tuple(steps)
        self._dist, self._key = dist, key
        # Work items: (param index, chunk index, start, stop) over the flattened parameters.
        self._items = [
            (i, c, a, min(a + CHUNK_ELEMS, v.size))
            for i, v in enumerate(self._views)
            for c, a in enumerate(range(0, v.size, CHUNK_ELEMS))
        ]
        self._left = [-(-v.size // CHUNK_ELEMS) for v in self._views]  # chunks not yet done
        self._next = 0  # next item to hand out
        self._done = 0  # parameters 0.._done-1 are finished
        while self._done < len(self._left) and self._left[self._done] == 0:
            self._done += 1  # empty tensors
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.nworkers = min(threads, max(1, len(self._items)))

    def _take(self) -> tuple[int, int, int, int] | None:
        with self._cond:
            if self._error is not None or self._next >= len(self._items):
                return None
            item = self._items[self._next]
            self._next += 1
            return item

    def _work(self) -> None:
        w = _Worker(self._dist, self._key)
        while (item := self._take()) is not None:
            i, c, a, b = item
            try:
                w.run_chunk(self._views[i][a:b], i, c, self._steps, self._decay[i])
            except BaseException as e:  # handed to the waiters
                with self._cond:
                    self._error = self._error or e
                    self._cond.notify_all()
                return
            with self._cond:
                self._left[i] -= 1
                if i == self._done:
                    while self._done < len(self._left) and self._left[self._done] == 0:
                        self._done += 1
                    self._cond.notify_all()

    def start(self, *, background: bool) -> Sweep:
        """Start the workers; with ``background=False`` the calling thread is one of them."""
        n = self.nworkers if background else self.nworkers - 1
        self._threads = [
            threading.Thread(target=self._work, name=f"zo-z-{k}", daemon=True) for k in range(n)
        ]
        for t in self._threads:
            t.start()
        if not background:
            self._work()
        return self

    def wait(self, upto: int) -> None:
        """Block until parameters ``0..upto`` are finished (re-raises a worker's error)."""
        with self._cond:
            while self._done <= upto and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error

    @property
    def count(self) -> int:
        """Number of parameters in the sweep."""
        return len(self._left)

    @property
    def finished(self) -> int:
        """How many leading parameters are finished."""
        return self._done

    def join(self) -> None:
        """Wait for every worker; re-raise the first error of any of them."""
        for t in self._threads:
            t.join()
        self._threads = []
        if self._error is not None:
            raise self._error
        if self._done != len(self._left):  # pragma: no cover - a worker died without an error
            raise RuntimeError(f"sweep stopped after {self._done} of {len(self._left)} parameters")


def start_program(
    params: Sequence[torch.Tensor],
    steps: Sequence[Step],
    dist: str,
    *,
    key: str,
    decay_mask: Sequence[bool] | None = None,
    threads: int = 1,
) -> Sweep:
    """Start applying ``steps`` to ``params`` on ``threads`` background threads; see :class:`Sweep`.

    The caller must :meth:`Sweep.join` it before touching ``params`` (or anything else that
    reads the parameters past what :meth:`Sweep.wait` has guaranteed).
    """
    return Sweep(params, steps, dist, key, decay_mask, threads).start(background=True)


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
    bit-identical for any ``threads`` >= 1 (the calling thread is one of them).
    """
    Sweep(params, steps, dist, key, decay_mask, threads).start(background=False).join()


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
