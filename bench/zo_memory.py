"""Memory and step time of ZO fine-tuning vs inference, AdamW and MeZO's reference step.

Run (from the repository root)::

    .venv/bin/python bench/zo_memory.py            # all four variants, ~3-6 min on 2 cores
    .venv/bin/python bench/zo_memory.py --reps 3 --batch 16 --seq 128 --perturbation gaussian
    .venv/bin/python bench/zo_memory.py --variant zo --perturbation rademacher   # one variant

Model: the exact facebook/opt-125m shapes (vocab 50272, hidden 768, 12 layers, 12 heads,
FFN 3072, 2048 positions, tied lm_head; 125.2M parameters) built from ``OPTConfig`` with random
initialisation, fp32, CPU.  Objective (the same for every variant): the decoder's hidden state
at the last position, (B, 768), times two lm_head rows (a 2-word verbalizer), cross-entropy
against random labels; no B x S x V logits are formed.  Batch 16 x 128 random token ids.

Each variant runs in its own subprocess (``--variant``):

* ``inference``: forward passes under ``eval()`` + ``torch.inference_mode()``;
* ``zo``: this engine's step, ``ZOEngine.scalars()`` (2 forwards) + ``apply_update()``;
* ``fo_adam``: first-order fine-tuning, backward through the objective + ``AdamW.step()``;
* ``mezo_ref``: MeZO's reference step: 4 sweeps over the parameters, each regenerating z with
  ``torch.normal`` from the global RNG re-seeded with the step seed (+ε, -2ε, +ε, then the
  update), ``param.data = param.data + ...`` as in MeZO's trainer.

Memory: ``*_mb`` is the peak resident set size (VmHWM) minus the *post-import baseline*, the
RSS measured after ``import torch, transformers, pairzero.zo`` and BEFORE the model is built.
It therefore includes the resident fp32 weights (~478 MiB) in every variant.  The peak counter
is reset (/proc/self/clear_refs) after the imports and again once the model and batch are
built, so neither import-time nor model-construction transients count, only the variant's
steps on top of the resident model.
``*_over_model_mb`` subtracts the RSS after the model is built instead (the step's own
overhead).  MiB = 2**20 bytes.  Children run with ``MALLOC_MMAP_THRESHOLD_=131072`` (see
:data:`MMAP_THRESHOLD`) so that the peak RSS follows live tensors, not allocator retention.

Times: medians over ``--reps`` repetitions after one warm-up (seconds, wall clock).  The
machine may be shared, so forward_s (inference process) and zo_step_s (zo process) are taken
at different moments; the *paired* figures are robust to that: inside the zo and mezo_ref
steps the two forwards are timed too, and ``ratio_zo_step_over_own_2fwd`` is the median of
step / (its own two forwards), ``zo_overhead_s`` the median of step - its forwards (the z
sweeps), ``zo_sweep_s`` one z sweep over all 125M parameters.

Prints one JSON object as the last stdout line and writes it to bench/results/zo_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "zo_memory.json"
VARIANTS = ("inference", "zo", "fo_adam", "mezo_ref")
VERBALIZER_IDS = (6587, 372)  # token ids of " terrible", " great" in the OPT tokenizer
MIB = 2**20
#: glibc: allocations >= 128 KiB are mmapped and given back to the OS when freed (this
#: disables glibc's dynamic threshold, which otherwise keeps freed activation buffers in the
#: heap and makes the peak RSS vary by ~50 MiB with the number of forwards run).  Same for
#: every variant.
MMAP_THRESHOLD = 131072


def _status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not permitted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _child(
    variant: str, reps: int, batch: int, seq: int, threads: int | None, dist: str = "gaussian"
) -> dict[str, Any]:
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from pairzero.config import ZOConfig
    from pairzero.zo import ZOEngine, add_perturbation_

    if threads:
        torch.set_num_threads(threads)
    base_kb = _status_kb("VmRSS")  # post-import baseline
    reset_ok = _reset_peak()

    torch.manual_seed(0)
    cfg = OPTConfig(
        vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072,
        num_attention_heads=12, max_position_embeddings=2048, word_embed_proj_dim=768,
        do_layer_norm_before=True, tie_word_embeddings=True,
    )
    model = OPTForCausalLM(cfg).float()
    nparams = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, cfg.vocab_size, (batch, seq), generator=g)  # (B, S)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (batch,), generator=g)  # (B,)
    cand = torch.tensor(VERBALIZER_IDS)
    model_kb = _status_kb("VmRSS")
    reset_ok = _reset_peak() and reset_ok  # construction transients do not count either

    def objective(m: OPTForCausalLM) -> torch.Tensor:
        h = m.model.decoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1, :]  # (B, H)
        logits = h @ m.lm_head.weight[cand].T  # (B, 2)
        return torch.nn.functional.cross_entropy(logits, labels)

    times: list[float] = []
    fwd_in_step: list[float] = []  # seconds spent in the forwards inside each timed step
    fwd_acc = [0.0]

    def timed_objective(m: OPTForCausalLM) -> torch.Tensor:
        t = time.perf_counter()
        out = objective(m)
        fwd_acc[0] += time.perf_counter() - t
        return out
    extra: dict[str, Any] = {}
    if variant == "inference":
        model.eval()
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            with torch.inference_mode():
                float(objective(model))
            times.append(time.perf_counter() - t0)
    elif variant == "zo":
        eng = ZOEngine(model, list(model.named_parameters()), ZOConfig(epsilon=1e-3, lr=1e-6, perturbation=dist))
        extra["zo_threads"] = eng.threads
        for r in range(reps + 1):
            fwd_acc[0] = 0.0
            t0 = time.perf_counter()
            gg = eng.scalars(100 + r, [timed_objective])[0]
            eng.apply_update(100 + r, gg)
            times.append(time.perf_counter() - t0)
            fwd_in_step.append(fwd_acc[0])
        sweeps = []
        for _ in range(3):  # one z sweep over all parameters (scale 0: θ unchanged)
            t0 = time.perf_counter()
            add_perturbation_(eng.params, 777, 0.0, eng.cfg.perturbation, key=eng.manifest.digest, threads=eng.threads)
            sweeps.append(time.perf_counter() - t0)
        extra["zo_sweep_s"] = statistics.median(sweeps)
        t0 = time.perf_counter()
        eng.replay([(999, 0.0)])  # one follower/replay round: one sweep (z generated once)
        extra["zo_replay_round_s"] = time.perf_counter() - t0
    elif variant == "fo_adam":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        for _ in range(max(2, reps // 2 + 1)):
            t0 = time.perf_counter()
            loss = objective(model)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
    elif variant == "mezo_ref":
        eps, lr = 1e-3, 1e-6
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

        def perturb(seed: int, scaling: float) -> None:
            torch.manual_seed(seed)
            for _, p in named:
                z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
                p.data = p.data + scaling * z * eps

        def forward_loss() -> float:
            model.eval()
            with torch.inference_mode():
                return float(timed_objective(model))

        for r in range(reps + 1):
            fwd_acc[0] = 0.0
            t0 = time.perf_counter()
            seed = 100 + r
            perturb(seed, 1.0)
            l1 = forward_loss()
            perturb(seed, -2.0)
            l2 = forward_loss()
            pg = (l1 - l2) / (2 * eps)
            perturb(seed, 1.0)
            torch.manual_seed(seed)
            for _, p in named:
                z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
                p.data = p.data - lr * (pg * z)
            times.append(time.perf_counter() - t0)
            fwd_in_step.append(fwd_acc[0])
    else:
        raise ValueError(f"variant: {variant!r}, expected one of {VARIANTS}")

    peak_kb = _status_kb("VmHWM")
    res: dict[str, Any] = {
        "variant": variant,
        "peak_mb": (peak_kb - base_kb) * 1024 / MIB,
        "over_model_mb": (peak_kb - model_kb) * 1024 / MIB,
        "model_mb": (model_kb - base_kb) * 1024 / MIB,
        "baseline_mb": base_kb * 1024 / MIB,
        "peak_reset": reset_ok,
        "step_s": statistics.median(times[1:]),
        "step_s_all": times,
        "params": nparams,
        "torch_threads": torch.get_num_threads(),
        **extra,
    }
    if fwd_in_step:
        # Paired with each step (same process, same moment): robust to a shared machine.
        res["overhead_s"] = statistics.median(t - f for t, f in zip(times[1:], fwd_in_step[1:], strict=True))
        res["step_over_own_forwards"] = statistics.median(
            t / f for t, f in zip(times[1:], fwd_in_step[1:], strict=True))
    return res


def _run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--variant", variant,
           "--reps", str(args.reps), "--batch", str(args.batch), "--seq", str(args.seq),
           "--perturbation", args.perturbation]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"variant {variant} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=VARIANTS, help="run one variant in this process (internal)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--perturbation", choices=("gaussian", "rademacher"), default="gaussian",
                    help="z distribution of the zo variant")
    args = ap.parse_args(argv)
    if args.reps < 1:
        raise SystemExit(f"--reps: {args.reps}, expected >= 1")
    if args.variant:
        res = _child(args.variant, args.reps, args.batch, args.seq, args.threads or None, args.perturbation)
        print(json.dumps(res))
        return res

    r = {v: _run_variant(v, args) for v in VARIANTS}
    out: dict[str, Any] = {
        "inference_mb": r["inference"]["peak_mb"],
        "zo_mb": r["zo"]["peak_mb"],
        "fo_adam_mb": r["fo_adam"]["peak_mb"],
        "mezo_ref_mb": r["mezo_ref"]["peak_mb"],
        "forward_s": r["inference"]["step_s"],
        "zo_step_s": r["zo"]["step_s"],
        "mezo_ref_step_s": r["mezo_ref"]["step_s"],
        "fo_adam_step_s": r["fo_adam"]["step_s"],
        "zo_replay_round_s": r["zo"].get("zo_replay_round_s"),
        "inference_over_model_mb": r["inference"]["over_model_mb"],
        "zo_over_model_mb": r["zo"]["over_model_mb"],
        "fo_adam_over_model_mb": r["fo_adam"]["over_model_mb"],
        "mezo_ref_over_model_mb": r["mezo_ref"]["over_model_mb"],
        "model_mb": r["zo"]["model_mb"],
        "params": r["zo"]["params"],
        "batch": args.batch,
        "seq": args.seq,
        "reps": args.reps,
        "torch_threads": r["zo"]["torch_threads"],
        "zo_threads": r["zo"].get("zo_threads"),
        "zo_perturbation": args.perturbation,
        "malloc_mmap_threshold": MMAP_THRESHOLD,
        "baseline": "RSS after imports, before building the model; peak counter reset after model build",
    }
    out["ratio_zo_over_fo_adam"] = out["zo_mb"] / out["fo_adam_mb"]
    out["ratio_zo_over_inference"] = out["zo_mb"] / out["inference_mb"]
    out["ratio_zo_step_over_2fwd"] = out["zo_step_s"] / (2 * out["forward_s"])
    out["ratio_zo_step_over_mezo_ref"] = out["zo_step_s"] / out["mezo_ref_step_s"]
    out["targets"] = {
        "zo_mb<=0.20*fo_adam_mb": out["ratio_zo_over_fo_adam"] <= 0.20,
        "zo_mb<=1.05*inference_mb": out["ratio_zo_over_inference"] <= 1.05,
        "zo_step_s<=1.10*2*forward_s": out["ratio_zo_step_over_2fwd"] <= 1.10,
        "zo_step_s<mezo_ref_step_s": out["zo_step_s"] < out["mezo_ref_step_s"],
    }
    # Paired figures: each step divided by the time of the two forwards inside it.
    out["zo_overhead_s"] = r["zo"]["overhead_s"]
    out["mezo_ref_overhead_s"] = r["mezo_ref"]["overhead_s"]
    out["zo_sweep_s"] = r["zo"].get("zo_sweep_s")
    out["ratio_zo_step_over_own_2fwd"] = r["zo"]["step_over_own_forwards"]
    out["ratio_mezo_ref_step_over_own_2fwd"] = r["mezo_ref"]["step_over_own_forwards"]
    out["step_times_s"] = {v: r[v]["step_s_all"] for v in VARIANTS}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
