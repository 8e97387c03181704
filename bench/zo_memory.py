"""Memory and step time of pAirZero's ZO step vs inference, FO AdamW and MeZO's reference step.

Run (from the repository root)::

    .venv/bin/python bench/zo_memory.py                       # opt-125m 16x128 + opt-350m 8x64
    .venv/bin/python bench/zo_memory.py --models opt-125m:16x128 --reps 3
    .venv/bin/python bench/zo_memory.py --models opt-tiny:4x32 --reps 1 --out /tmp/zm   # seconds

What is measured is the code that trains (nothing re-implemented):

* model: ``pairzero.models.load_model`` (``opt-125m`` / ``opt-350m``: the exact facebook/OPT
  shapes, random fp32 weights, ``eval()``), trainable set ``trainable_parameters(model, "all")``;
* loss: the task objective of ``pairzero.tasks.objective`` (decoder with ``use_cache=False``,
  verbalizer rows of the LM head at the last real token, cross-entropy), on a batch of B
  builtin-sentiment texts encoded by the objective and cut to S tokens;
* ``inference``: two loss evaluations under ``eval()`` + ``torch.inference_mode()``;
* ``zo``: the ZO engine's step as a node runs it, ``ZOEngine.scalars`` (+εz, L+, −2εz, L−)
  then ``ZOEngine.apply_update`` (restore and update fused: θ += (ε − lr·ĝ)·z);
* ``mezo_ref``: MeZO's reference step (its trainer's ``zo_step`` + ``zo_update``): four sweeps
  over the parameters, each regenerating z with ``torch.normal`` from the global RNG
  re-seeded with the step seed (+ε, −2ε, +ε, update), ``param.data = param.data + ...``;
* ``zo_seq``: the same ZO step with ``zo.overlap: false`` (each ±εz sweep runs before its
  forward pass instead of beside it);
* ``fo_adam``: backpropagation through the same loss in the same ``eval()`` mode (no
  dropout on either side) and ``torch.optim.AdamW.step()``;
* memory floor (``--micro-batch m``, default 2): ``inference_micro`` and ``zo_micro`` are the
  same B examples in forward passes of m (``task.micro_batch_size``, the loss reduced once
  over the batch; ``loss_micro_bit_equal`` says whether it equals the one-pass loss bit for
  bit), ``fo_adam_accum`` AdamW with gradient accumulation over the same micro-batches;
  ``ratio_zo_over_weights`` = ``zo_micro_mb`` / ``model_mb`` (the RSS the loaded model added).

One process per model shape holds all four variants, so they share the allocator, the
imports and the machine's load at that moment. The process runs with
``MALLOC_MMAP_THRESHOLD_=131072`` (glibc returns freed activation buffers to the OS, so the
peak RSS follows live tensors: without it, glibc's dynamic threshold keeps freed buffers and a
later variant's peak depends on what ran before). ``*_mb``: peak RSS (VmHWM, reset through
/proc/self/clear_refs before each step) minus the RSS after the imports, before the model is
loaded: the resident fp32 weights (~478 MiB for opt-125m) are included in every variant.
MiB = 2**20 bytes.

Times are wall clock but only ever used as ratios of measurements taken side by side:
inference, ZO and MeZO steps alternate in every repetition (ZO first in even repetitions,
MeZO first in odd ones) after one warm-up repetition, and

* ``ratio_zo_step_over_mezo_ref_paired``: median over repetitions of ZO step / MeZO step of the
  same repetition;
* ``ratio_zo_step_over_own_2fwd``: median of ZO step / the two loss evaluations inside it (the
  cost of the z sweeps on top of the forwards);
* ``ratio_zo_step_over_inference_paired``: median of ZO step / the inference pair of the same
  repetition.

Flags (``targets``; each can fail): ZO peak <= 1.05 x inference (inference-level memory: a
full-size copy of z or θ would add 478 MiB at opt-125m); ZO peak <= 0.25 x FO AdamW (the
paper's 25 %); the paired ZO / MeZO step ratio < 1; ZO step <= L x its own two forwards and
<= L x the inference pair of the same repetition (L = 1.10, 1.25 for opt-350m); the
micro-batched ZO peak <= 1.10 x the weights and <= 1.05 x micro-batched inference.  With
``zo.overlap`` the "own two forwards" include the sweeps they overlap: the paired inference
ratio is the stricter one.

Prints one JSON object as the last stdout line and writes ``<out>/zo_memory.json``; the
top-level ``zo_mb``, ``fo_adam_mb``, ``inference_mb``, ``mezo_ref_mb`` and ratios are those of
the first model shape, ``models`` holds every shape.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_MODELS = "opt-125m:16x128,opt-350m:8x64"
MIB = 2**20
#: glibc mmap threshold of the worker process (bytes), the same for every variant.
MMAP_THRESHOLD = 131072
EPSILON, LR = 1e-3, 1e-6
#: Examples per forward pass in the micro-batched variants (task.micro_batch_size).
DEFAULT_MICRO_BATCH = 2
#: Step-time limit (ZO step / two forwards) per model (issue 23); others: the first.
STEP_LIMITS = {"opt-125m": 1.10, "opt-350m": 1.25}


def _targets(model: str) -> dict[str, tuple[str, float]]:
    lim = STEP_LIMITS.get(model, 1.10)
    return {
        "zo_mb<=1.05*inference_mb": ("ratio_zo_over_inference", 1.05),
        "zo_mb<=0.25*fo_adam_mb": ("ratio_zo_over_fo_adam", 0.25),
        "zo_step<mezo_ref_step(paired)": ("ratio_zo_step_over_mezo_ref_paired", 1.0),
        f"zo_step<={lim:.2f}*own_2fwd": ("ratio_zo_step_over_own_2fwd", lim),
        f"zo_step<={lim:.2f}*inference_2fwd(paired)": ("ratio_zo_step_over_inference_paired", lim),
        "zo_micro_mb<=1.10*weights(model_mb)": ("ratio_zo_over_weights", 1.10),
        "zo_micro_mb<=1.05*inference_micro_mb": ("ratio_zo_over_inference_micro", 1.05),
    }


def _status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def _parse_models(spec: str) -> list[tuple[str, int, int]]:
    """'opt-125m:16x128,opt-350m:8x64' -> [(name, batch, seq), ...]."""
    out = []
    for item in spec.split(","):
        name, _, shape = item.strip().partition(":")
        b, _, s = (shape or "16x128").partition("x")
        try:
            out.append((name, int(b), int(s)))
        except ValueError:
            raise SystemExit(f"--models: {item!r} is not NAME[:BATCHxSEQ]") from None
    return out


def _worker(name: str, batch: int, seq: int, reps: int, micro: int) -> dict[str, Any]:
    """All four variants on one model shape, in this process (see the module docstring)."""
    import torch

    from pairzero.config import ModelConfig, TaskConfig, ZOConfig
    from pairzero.models import load_model, trainable_parameters
    from pairzero.tasks import Example, load_task, make_objective
    from pairzero.zo import ZOEngine

    base_kb = _status_kb("VmRSS")  # post-import baseline
    model, tokenizer = load_model(ModelConfig(name=name, trainable="all"), seed=0)
    named = trainable_parameters(model, "all")
    engine = ZOEngine(model, named, ZOConfig(epsilon=EPSILON, lr=LR))
    # The same step with the ±εz sweeps run before each forward instead of beside it.
    engine_seq = ZOEngine(model, named, ZOConfig(epsilon=EPSILON, lr=LR, overlap=False))
    task = TaskConfig(name="builtin-sentiment", max_length=seq, batch_size=batch)
    objective = make_objective(task, tokenizer)
    train = load_task(task).train
    # B texts of >= S tokens each (30 review sentences), cut to S tokens by the objective.
    texts = [Example(" ".join(e.text for e in train[30 * i: 30 * i + 30]), train[30 * i].label)
             for i in range(batch)]
    enc = objective.encode(texts)  # input_ids (B, S)
    if tuple(enc["input_ids"].shape) != (batch, seq):
        raise RuntimeError(f"batch {tuple(enc['input_ids'].shape)}, expected ({batch}, {seq})")
    n_params = sum(p.numel() for _, p in named)
    model_kb = _status_kb("VmRSS")

    fwd_s = [0.0]

    def loss_fn(m: torch.nn.Module) -> torch.Tensor:
        t = time.perf_counter()
        out = objective.loss(m, enc)
        fwd_s[0] += time.perf_counter() - t
        return out

    def inference() -> None:
        model.eval()
        with torch.inference_mode():
            float(loss_fn(model))
            float(loss_fn(model))

    def zo_step(seed: int, eng: ZOEngine = engine, fn: Callable[[torch.nn.Module], torch.Tensor] = loss_fn) -> None:
        g = eng.scalars(seed, [fn])[0]
        eng.apply_update(seed, g)

    mezo_named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def mezo_perturb(seed: int, scaling: float) -> None:
        torch.manual_seed(seed)
        for _, p in mezo_named:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
            p.data = p.data + scaling * z * EPSILON

    def mezo_loss() -> float:
        model.eval()
        with torch.inference_mode():
            return float(loss_fn(model))

    def mezo_step(seed: int) -> None:
        mezo_perturb(seed, 1.0)
        l1 = mezo_loss()
        mezo_perturb(seed, -2.0)
        l2 = mezo_loss()
        projected_grad = (l1 - l2) / (2 * EPSILON)
        mezo_perturb(seed, 1.0)
        torch.manual_seed(seed)
        for _, p in mezo_named:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
            p.data = p.data - LR * (projected_grad * z)

    peaks: dict[str, float] = {}
    times: dict[str, list[float]] = {"inference": [], "zo": [], "zo_seq": [], "mezo_ref": []}
    fwds: dict[str, list[float]] = {"zo": [], "zo_seq": [], "mezo_ref": []}
    pre_step_mb: list[float] = []

    def run(variant: str, fn: Callable[[], None]) -> None:
        pre_step_mb.append((_status_kb("VmRSS") - model_kb) / 1024)
        _reset_peak()
        fwd_s[0] = 0.0
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        peaks[variant] = max(peaks.get(variant, 0.0), (_status_kb("VmHWM") - base_kb) / 1024)
        times.setdefault(variant, []).append(dt)
        if variant in fwds:
            fwds[variant].append(fwd_s[0])

    for r in range(reps + 1):  # repetition 0 is the warm-up: its times are not used
        seed = 100 + r
        order = [("zo", lambda s=seed: zo_step(s)), ("zo_seq", lambda s=seed: zo_step(s, engine_seq)),
                 ("mezo_ref", lambda s=seed: mezo_step(s))]
        if r % 2:
            order.reverse()
        run("inference", inference)
        for variant, fn in order:
            run(variant, fn)

    # Micro-batched: the same B examples in forward passes of `micro` examples, the loss
    # reduced once over the batch (task.micro_batch_size); peaks only (two runs each).
    micro_objective = make_objective(dataclasses.replace(task, micro_batch_size=micro), tokenizer)
    with torch.inference_mode():
        loss_full, loss_micro = objective.loss(model, enc), micro_objective.loss(model, enc)

    def micro_loss(m: torch.nn.Module) -> torch.Tensor:
        return micro_objective.loss(m, enc)

    def inference_micro() -> None:
        with torch.inference_mode():
            float(micro_loss(model))
            float(micro_loss(model))

    for r in range(2):
        run("inference_micro", inference_micro)
        run("zo_micro", lambda s=200 + r: zo_step(s, engine, micro_loss))

    # First-order AdamW last: gradients and optimizer state.  Once with the activations of
    # the micro-batches (gradient accumulation over the same slices: the gradient of the
    # same mean loss), then, from a fresh optimizer, with the whole batch's.
    model.eval()  # the same mode as the ZO step: no dropout on either side

    def fo_adam(accumulate: bool) -> tuple[float, list[float]]:
        opt = torch.optim.AdamW([p for _, p in named], lr=1e-5)
        times_s: list[float] = []
        peak = 0.0
        for _ in range(2):  # step 1 allocates the Adam state; step 2 is the steady state
            _reset_peak()
            t = time.perf_counter()
            if accumulate:
                slices = micro_objective._micro_batches(enc)
                n_terms = sum(int(s["input_ids"].shape[0]) for s in slices)
                for sl in slices:  # classification: one term per example
                    (micro_objective.per_example_losses(model, sl).sum() / n_terms).backward()
            else:
                objective.loss(model, enc).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times_s.append(time.perf_counter() - t)
            peak = max(peak, (_status_kb("VmHWM") - base_kb) / 1024)
        opt.state.clear()
        del opt
        gc.collect()
        return peak, times_s

    fo_accum_peak, fo_accum_times = fo_adam(accumulate=True)
    fo_peak, fo_times = fo_adam(accumulate=False)

    def paired(a: list[float], b: list[float]) -> float:
        return statistics.median(x / y for x, y in zip(a[1:], b[1:], strict=True))

    res: dict[str, Any] = {
        "model": name, "batch": batch, "seq": seq, "reps": reps, "params": n_params,
        "inference_mb": peaks["inference"], "zo_mb": peaks["zo"], "mezo_ref_mb": peaks["mezo_ref"],
        "fo_adam_mb": fo_peak, "model_mb": (model_kb - base_kb) / 1024,
        # RSS above the loaded model before each inference / ZO / MeZO step: what the steps
        # before it left allocated (lazily loaded kernels, allocator caches); ~0 means every
        # variant's peak was measured from the same floor.
        "max_pre_step_drift_mb": max(pre_step_mb),
        "inference_2fwd_s": statistics.median(times["inference"][1:]),
        "zo_step_s": statistics.median(times["zo"][1:]),
        "mezo_ref_step_s": statistics.median(times["mezo_ref"][1:]),
        "fo_adam_step_s": fo_times[-1],
        "ratio_zo_step_over_mezo_ref_paired": paired(times["zo"], times["mezo_ref"]),
        "ratio_zo_step_over_own_2fwd": paired(times["zo"], fwds["zo"]),
        "ratio_mezo_ref_step_over_own_2fwd": paired(times["mezo_ref"], fwds["mezo_ref"]),
        "ratio_zo_step_over_inference_paired": paired(times["zo"], times["inference"]),
        # The same ZO step with zo.overlap off: each ±εz sweep runs before its forward pass.
        "zo_seq_step_s": statistics.median(times["zo_seq"][1:]),
        "ratio_zo_seq_step_over_own_2fwd": paired(times["zo_seq"], fwds["zo_seq"]),
        "ratio_zo_seq_step_over_inference_paired": paired(times["zo_seq"], times["inference"]),
        "ratio_zo_step_over_zo_seq_paired": paired(times["zo"], times["zo_seq"]),
        "step_times_s": times | {"fo_adam": fo_times, "fo_adam_accum": fo_accum_times},
        "torch_threads": torch.get_num_threads(), "zo_threads": engine.threads,
        # Micro-batched variants (task.micro_batch_size = micro_batch): peak RSS, weights incl.
        "micro_batch": micro,
        "weights_mb": sum(p.numel() * p.element_size() for _, p in named) / MIB,
        "inference_micro_mb": peaks["inference_micro"], "zo_micro_mb": peaks["zo_micro"],
        "fo_adam_accum_mb": fo_accum_peak, "fo_adam_accum_step_s": fo_accum_times[-1],
        "loss_full_batch": float(loss_full), "loss_micro_batched": float(loss_micro),
        "loss_micro_bit_equal": bool(torch.equal(loss_full, loss_micro)),
    }
    res["ratio_zo_over_inference"] = res["zo_mb"] / res["inference_mb"]
    res["ratio_zo_over_fo_adam"] = res["zo_mb"] / res["fo_adam_mb"]
    res["ratio_mezo_ref_over_fo_adam"] = res["mezo_ref_mb"] / res["fo_adam_mb"]
    # Memory floor: the micro-batched ZO step against the resident weights (model_mb: RSS the
    # loaded model added), against inference with the same micro-batches, and against FO AdamW
    # with the same micro-batches (gradient accumulation) and with the whole batch at once.
    res["ratio_zo_over_weights"] = res["zo_micro_mb"] / res["model_mb"]
    res["ratio_zo_full_batch_over_weights"] = res["zo_mb"] / res["model_mb"]
    res["ratio_zo_over_inference_micro"] = res["zo_micro_mb"] / res["inference_micro_mb"]
    res["ratio_zo_micro_over_fo_adam_accum"] = res["zo_micro_mb"] / res["fo_adam_accum_mb"]
    res["ratio_zo_micro_over_fo_adam_full_batch"] = res["zo_micro_mb"] / res["fo_adam_mb"]
    res["targets"] = {k: bool(res[key] <= lim if "<=" in k else res[key] < lim)
                      for k, (key, lim) in _targets(name).items()}
    return res


def _run_worker(name: str, batch: int, seq: int, reps: int, micro: int, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--batch", str(batch),
           "--seq", str(seq), "--reps", str(reps), "--micro-batch", str(micro)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=ROOT,
                          timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS,
                    help="NAME[:BATCHxSEQ],... model shapes, one process each (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for zo_memory.json")
    ap.add_argument("--micro-batch", type=int, default=DEFAULT_MICRO_BATCH,
                    help="examples per forward pass in the micro-batched variants (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per model shape")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--seq", type=int, default=128, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.reps < 1:
        raise SystemExit(f"--reps: {args.reps}, expected >= 1")
    if args.micro_batch < 1:
        raise SystemExit(f"--micro-batch: {args.micro_batch}, expected >= 1")
    if args.worker:
        res = _worker(args.worker, args.batch, args.seq, args.reps, args.micro_batch)
        print(json.dumps(res))
        return res

    from pairzero.runinfo import git_revision

    t0 = time.monotonic()
    models = [_run_worker(n, b, s, args.reps, args.micro_batch, args.timeout)
              for n, b, s in _parse_models(args.models)]
    head = models[0]
    out: dict[str, Any] = {
        "benchmark": "zo_memory",
        **{k: head[k] for k in ("model", "batch", "seq", "params", "inference_mb", "zo_mb",
                                "fo_adam_mb", "mezo_ref_mb", "ratio_zo_over_inference",
                                "ratio_zo_over_fo_adam", "ratio_zo_step_over_own_2fwd",
                                "ratio_zo_step_over_mezo_ref_paired",
                                "ratio_zo_step_over_inference_paired", "micro_batch", "model_mb",
                                "zo_micro_mb", "ratio_zo_over_weights", "ratio_zo_over_inference_micro",
                                "ratio_zo_micro_over_fo_adam_accum", "ratio_zo_micro_over_fo_adam_full_batch",
                                "targets")},
        "models": {m["model"]: m for m in models},
        "reps": args.reps,
        "malloc_mmap_threshold": MMAP_THRESHOLD,
        "baseline": "RSS after imports, before loading the model; peak reset before every step",
        "command": ["bench/zo_memory.py", "--models", args.models, "--reps", str(args.reps),
                    "--micro-batch", str(args.micro_batch)],
        "git_revision": git_revision(),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "zo_memory.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
