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


# The pinned z stream: layout (a chunk plus 5 values, a matrix, a scalar, two whole chunks),
# seed, perturbation index and key.  A change of generator, chunk size, key derivation or
# chunk order changes these digests: that is a protocol change (bump
# pairzero.zo.manifest.Z_SCHEME, so old nodes and checkpoints are refused), never an accident.
PIN_SHAPES = [(CHUNK_ELEMS + 5,), (3, 300), (1,), (CHUNK_ELEMS * 2,)]
PIN_SEED, PIN_J, PIN_KEY = 20261207, 1, "pairzero-z-pin"
PIN_DIGEST = {
    # sha256 of the fp32 bytes of z over PIN_SHAPES, in order
    "gaussian": "ad3f97eccb2f0a4567d6248bcbecca9b0874e77459bbfe1d8f28eadf6bd9e84d",
    "rademacher": "18dffaaa35e98164a376f1d4fb8aacdf7a4959edef54920e5bada515a097bbae",
}
PIN_HEAD = {  # the first 4 values of parameter 0 and the first 2 of parameter 1
    "gaussian": ([-1.1181163787841797, -0.06332780420780182, -0.02557995915412903, -0.9300885200500488],
                 [-0.9328984618186951, -0.4026232063770294]),
    "rademacher": ([1.0, -1.0, -1.0, 1.0], [1.0, 1.0]),
}

_PIN_CHILD = """
import hashlib, sys, torch
from pairzero.zo.perturb import ZStep, run_program_
torch.set_num_threads(int(sys.argv[3]))  # a node with another intra-op thread count
torch.manual_seed(999)
shapes = eval(sys.argv[4])
zs = [torch.zeros(s) for s in shapes]
run_program_(zs, [ZStep(int(sys.argv[2]), int(sys.argv[5]), (1.0,))], sys.argv[1], key=sys.argv[6],
             threads=int(sys.argv[3]))
h = hashlib.sha256()
for z in zs:
    h.update(z.numpy().tobytes())
print(h.hexdigest())
"""


def _pin_digest(zs: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for z in zs:
        h.update(z.numpy().tobytes())
    return h.hexdigest()


@pytest.mark.e2e
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_z_stream_pinned_and_same_on_differently_built_nodes(dist: str) -> None:
    from pairzero.zo.manifest import z_backend
    from pairzero.zo.perturb import ZStep, run_program_, start_program

    if dist == "gaussian" and not z_backend(dist).endswith("/x86-avx2"):
        pytest.skip(f"Gaussian z is pinned for the x86-avx2 class; this node is {z_backend(dist)}")
    # Execute: the same z built five ways: 1 and 3 threads; in the background, the parameters
    # waited for in reverse order; one program of two steps whose sum is z; and a child
    # process with another torch thread count and global RNG state.
    ways: dict[str, list[torch.Tensor]] = {}
    for threads in (1, 3):
        zs = [torch.zeros(s) for s in PIN_SHAPES]
        run_program_(zs, [ZStep(PIN_SEED, PIN_J, (1.0,))], dist, key=PIN_KEY, threads=threads)
        ways[f"threads={threads}"] = zs
    zs = [torch.zeros(s) for s in PIN_SHAPES]
    sweep = start_program(zs, [ZStep(PIN_SEED, PIN_J, (1.0,))], dist, key=PIN_KEY, threads=2)
    for i in reversed(range(len(zs))):
        sweep.wait(i)
    sweep.join()
    ways["background"] = zs
    zs = [torch.zeros(s) for s in PIN_SHAPES]  # 0 + fl(2z) + fl(-z) = z exactly (powers of 2)
    run_program_(zs, [ZStep(PIN_SEED, PIN_J, (2.0,)), ZStep(PIN_SEED, PIN_J, (-1.0,))], dist,
                 key=PIN_KEY, threads=2)
    ways["program"] = zs
    child = subprocess.run(
        [sys.executable, "-c", _PIN_CHILD, dist, str(PIN_SEED), "1", repr(PIN_SHAPES), str(PIN_J), PIN_KEY],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    # Assert: every way gives the pinned digest and first values.
    digests = {name: _pin_digest(zs) for name, zs in ways.items()} | {"child process": child}
    assert digests == dict.fromkeys(digests, PIN_DIGEST[dist])
    head0, head1 = PIN_HEAD[dist]
    assert ways["threads=1"][0][:4].tolist() == head0
    assert ways["threads=1"][1].view(-1)[:2].tolist() == head1
