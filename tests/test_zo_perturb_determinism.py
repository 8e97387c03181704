"""z is a pure function of (seed, j, manifest key): same in other processes, any thread count."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch

from pairzero.zo import add_perturbation_
from pairzero.zo.perturb import CHUNK_ELEMS

# Shapes spanning several chunks, a partial chunk and tiny tensors.
SHAPES = [(CHUNK_ELEMS * 2 + 1000,), (300, 7), (5,), (CHUNK_ELEMS + 3,)]
KEY = "0" * 64


def _z_digest(dist: str, seed: int, threads: int, j: int = 0) -> tuple[str, list[torch.Tensor]]:
    zs = [torch.zeros(s) for s in SHAPES]
    add_perturbation_(zs, seed, 1.0, dist, key=KEY, j=j, threads=threads)
    h = hashlib.sha256()
    for z in zs:
        h.update(z.numpy().tobytes())
    return h.hexdigest(), zs


_CHILD = """
import hashlib, sys, torch
from pairzero.zo import add_perturbation_
from pairzero.zo.perturb import CHUNK_ELEMS
torch.manual_seed(12345)  # the global RNG must not matter
shapes = [(CHUNK_ELEMS * 2 + 1000,), (300, 7), (5,), (CHUNK_ELEMS + 3,)]
zs = [torch.zeros(s) for s in shapes]
add_perturbation_(zs, int(sys.argv[2]), 1.0, sys.argv[1], key="0" * 64, threads=int(sys.argv[3]))
h = hashlib.sha256()
for z in zs:
    h.update(z.numpy().tobytes())
print(h.hexdigest())
"""


@pytest.mark.e2e
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_zo_z_same_across_processes_and_threads(dist: str) -> None:
    # Prepare / Execute: the digest of z in this process with 1 thread, and in two child
    # processes (different global RNG state, 2 and 3 threads).
    here, _ = _z_digest(dist, 42, threads=1)
    kids = [
        subprocess.run(
            [sys.executable, "-c", _CHILD, dist, "42", str(t)],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        for t in (2, 3)
    ]
    # Assert
    assert kids == [here, here]


@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_zo_z_independent_of_thread_count_and_global_rng(dist: str) -> None:
    # Prepare
    state = torch.get_rng_state()
    # Execute
    digests = {t: _z_digest(dist, 7, threads=t)[0] for t in (1, 2, 4, 7)}
    # Assert: bit-identical, and the global RNG was never touched.
    assert len(set(digests.values())) == 1
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_zo_z_changes_with_seed_and_index(dist: str) -> None:
    # Execute
    a = _z_digest(dist, 1, threads=1)[0]
    b = _z_digest(dist, 2, threads=1)[0]
    c = _z_digest(dist, 1, threads=1, j=1)[0]
    # Assert
    assert len({a, b, c}) == 3


def test_zo_rademacher_exactly_pm1_and_balanced() -> None:
    # Execute
    _, zs = _z_digest("rademacher", 3, threads=2)
    z = torch.cat([t.view(-1) for t in zs])
    # Assert: exact ±1; the count of +1 is Binomial(n, ½): within 5 std of n/2.
    assert torch.all((z == 1.0) | (z == -1.0))
    n = z.numel()
    plus = int((z == 1.0).sum())
    assert abs(plus - n / 2) < 5 * (n**0.5) / 2
    # chunks must not repeat each other (independent generators per chunk)
    assert not torch.equal(z[:CHUNK_ELEMS], z[CHUNK_ELEMS : 2 * CHUNK_ELEMS])


def test_zo_gaussian_moments() -> None:
    # Execute
    _, zs = _z_digest("gaussian", 3, threads=2)
    z = torch.cat([t.view(-1) for t in zs]).double()
    n = z.numel()
    # Assert: mean within 5/√n, variance within 5·√(2/n) (std of the sample variance of N(0,1)).
    assert abs(float(z.mean())) < 5 / n**0.5
    assert abs(float(z.var()) - 1.0) < 5 * (2 / n) ** 0.5
    assert z.dtype == torch.float64 and zs[0].dtype == torch.float32


def test_zo_perturb_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="dist"):
        add_perturbation_([torch.zeros(3)], 0, 1.0, "uniform", key=KEY)
    with pytest.raises(ValueError, match="seed"):
        add_perturbation_([torch.zeros(3)], -1, 1.0, "gaussian", key=KEY)
    with pytest.raises(ValueError, match="float32"):
        add_perturbation_([torch.zeros(3, dtype=torch.float16)], 0, 1.0, "gaussian", key=KEY)
    with pytest.raises(ValueError, match="threads"):
        add_perturbation_([torch.zeros(3)], 0, 1.0, "gaussian", key=KEY, threads=0)
