"""The experiment set of ``pairzero results``: presets, parameter points and their runners.

Sections (each point is one result file, see :mod:`pairzero.results.store`):

1. ``memory``: ``bench/zo_memory.py`` per model shape (inference, ZO step, MeZO's 4-sweep
   reference and FO AdamW side by side in one process);
2. ``communication``: bits per node and per round for pAirZero, digital federated ZO and
   FedAvg, computed from the code's own cost model (:mod:`pairzero.ota.comm`), frame layout
   (:class:`pairzero.phy.FrameLayout`) and control-plane encoder
   (:mod:`pairzero.protocol.messages`), for the parameter counts of the OPT shapes;
3. ``privacy``: ``bench/privacy_vs_channel.py`` (realized ε per node across channel draws,
   calibrated power and noise vs fixed full power without calibration);
4. ``learning``: ``pairzero simulate`` runs (pAirZero, noiseless ZO, digital ZO, FO FedAvg)
   and ``pairzero loopback`` (pAirZero through the GNU Radio channel emulator) on the task
   config of the preset; sweeps of SNR, ε and K;
5. ``phy``: ``bench/phy_nmse.py`` (NMSE through the flowgraphs vs the closed form) and
   ``pairzero calibrate`` (residual spread of the power alignment).

Every runner returns ``(result, config, seed)``; failures raise :class:`PointFailed` with the
reason the report prints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pairzero.config import ExperimentConfig, config_to_dict, dump_config, load_config
from pairzero.results.store import Point
from pairzero.runinfo import REPO_ROOT

__all__ = ["Preset", "PRESETS", "PointFailed", "plan", "RUNNERS"]

log = logging.getLogger(__name__)

LEARNING_METHODS = ("pairzero", "zo_noiseless", "zo_digital", "fo_fedavg")


class PointFailed(RuntimeError):
    """A point could not be produced; the message is what the report says."""


@dataclass(frozen=True)
class Preset:
    """Which points to run. Sizes are chosen per preset; the task config is shared."""

    name: str
    config: str = "configs/topic.yaml"  # learning: the task config (relative to the repo)
    overrides: tuple[str, ...] = ()  # learning: applied to every learning point
    seeds: tuple[int, ...] = (1234,)  # learning curves: one run per method and seed
    methods: tuple[str, ...] = LEARNING_METHODS
    loopback_seeds: tuple[int, ...] = ()  # pAirZero over the loopback radio (32 processes)
    loopback_timeout_s: float = 1800.0
    sweep_seeds: tuple[int, ...] = (1234,)
    snrs_db: tuple[float, ...] = ()
    epsilons: tuple[float, ...] = ()
    ks: tuple[int, ...] = ()
    k_methods: tuple[str, ...] = ("pairzero", "zo_noiseless")
    # ZO learning rate per trainable set: (model.trainable, (lr, ...)), noiseless ZO at lr_nodes
    lr_grid: tuple[tuple[str, tuple[float, ...]], ...] = ()
    lr_nodes: int = 10
    memory: tuple[str, ...] = ("opt-125m:16x128",)  # NAME:BATCHxSEQ
    memory_reps: int = 3
    comm_models: tuple[str, ...] = ("opt-125m", "opt-1.3b")
    comm_ks: tuple[int, ...] = (4, 16, 64)
    privacy_draws: int = 1000
    phy_trials: int = 500
    phy_sessions: int = 5
    phy_ks: tuple[int, ...] = (2, 4)
    phy_snrs_db: tuple[float, ...] = (0.0, 10.0, 20.0)
    calibration_nodes: int = 4
    calibration_seeds: tuple[int, ...] = (0, 1, 2)
    timeout_s: float = 3600.0  # per subprocess point
    # real: SmolLM2-135M on movie reviews (configs/real_sentiment.yaml, `make real-data`)
    real_config: str = "configs/real_sentiment.yaml"
    real_overrides: tuple[str, ...] = ()
    real_seeds: tuple[int, ...] = ()
    real_methods: tuple[str, ...] = ("zo_noiseless", "pairzero", "fo_fedavg")
    real_loopback_seeds: tuple[int, ...] = ()
    # (K, batch per node) for noiseless ZO and pAirZero at the first real seed: the privacy
    # noise on the aggregate falls as 1/K at the same examples per round
    real_nodes: tuple[tuple[int, int], ...] = ()
    # real_sweep: zero-shot accuracy per (template, verbalizer); then noiseless ZO per
    # (trainable, zo.lr, zo.clip_quantile) on real_sweep_prompt, with real_sweep_overrides
    real_prompts: tuple[tuple[str, tuple[str, ...]], ...] = ()
    real_sweep_prompt: tuple[str, tuple[str, ...]] = ("{sentence} It was", (" terrible", " great"))
    real_sweep: tuple[tuple[str, float, float], ...] = ()
    real_fo_lrs: tuple[float, ...] = ()  # FO (SGD) on the config's trainable set
    real_sweep_overrides: tuple[str, ...] = ()


# The prompts tried zero-shot on SmolLM2-135M (real_sweep), and the noiseless-ZO grid.
REAL_PROMPTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("{sentence} It was", (" terrible", " great")),  # MeZO's SST-2 prompt (the generic one)
    ("Review: {sentence}\nSentiment:", (" negative", " positive")),
    ("{sentence} Overall, the movie was", (" bad", " good")),
    ("Movie review: {sentence}\nDid the reviewer like the movie? Answer:", (" No", " Yes")),
)
REAL_SWEEP: tuple[tuple[str, float, float], ...] = (
    ("final_norm", 0.1, 0.9), ("final_norm", 0.3, 0.9), ("final_norm", 1.0, 0.9),
    ("layernorm", 5e-3, 0.9),  # the opt-tiny rule lr = 175 / d on all 35,136 norm values
)

PRESETS: dict[str, Preset] = {
    # The full set behind docs/results.md (about 1.5 h on 2 cores).
    "full": Preset(
        name="full", seeds=(1234, 1, 2), loopback_seeds=(1234,),
        snrs_db=(0.0, 5.0, 20.0, 30.0), epsilons=(1.0, 2.0, 4.0, 16.0, 32.0), ks=(4, 10, 64),
        lr_grid=(("final_norm", (3e-2, 1e-1, 3e-1, 1.0, 3.0)),
                 ("bias_layernorm", (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)),
                 ("all", (3e-5, 1e-4, 3e-4, 1e-3, 3e-3))),
        memory=("opt-125m:16x128", "opt-350m:8x64"),
        real_seeds=(1234, 1, 2), real_loopback_seeds=(1234, 1, 2), real_nodes=((16, 1),),
        real_prompts=REAL_PROMPTS, real_sweep_prompt=REAL_PROMPTS[1], real_sweep=REAL_SWEEP,
        real_fo_lrs=(1.0, 10.0, 100.0),
        real_sweep_overrides=("task.eval_every=10",),
    ),
    # Every section, one seed, smaller sweeps (under 15 min on 2 cores).
    "quick": Preset(
        name="quick", snrs_db=(0.0,), epsilons=(2.0,), ks=(10,),
        k_methods=("pairzero",), memory=("opt-125m:8x128",), memory_reps=1, privacy_draws=200,
        phy_trials=100, phy_sessions=2, calibration_seeds=(0,),
    ),
    # Seconds: what the test suite runs (tiny models, a few rounds, three nodes).
    "tiny": Preset(
        name="tiny",
        overrides=("run.rounds=4", "nodes.count=3", "task.eval_every=2", "task.eval_examples=16",
                   "zo.clip_warmup_draws=4"),
        snrs_db=(0.0,), epsilons=(2.0,), ks=(2,), k_methods=("pairzero",),
        lr_grid=(("final_norm", (0.1,)),), lr_nodes=2, memory=("opt-tiny:2x16",), memory_reps=1, comm_ks=(4,), privacy_draws=2,
        phy_trials=4, phy_sessions=1, phy_ks=(2,), phy_snrs_db=(10.0,),
        calibration_nodes=2, calibration_seeds=(0,), timeout_s=600.0, loopback_timeout_s=600.0,
    ),
}


# ----------------------------------------------------------------------------- planning


def learning_config(preset: Preset, *overrides: str) -> ExperimentConfig:
    """The task config of ``preset`` with its overrides and then ``overrides``."""
    return load_config(REPO_ROOT / preset.config, [*preset.overrides, "output.plots=false", *overrides])


def _learning_point(preset: Preset, group: str, slug: str, kind: str, *overrides: str) -> Point:
    return config_point("learning", slug, group, kind, learning_config(preset, *overrides))


def plan(preset: Preset) -> list[Point]:
    """Every point of ``preset``, in the order they run (cheap sections first)."""
    pts: list[Point] = []
    for model in preset.comm_models:
        base = learning_config(preset)
        pts.append(Point("communication", model, {
            "model": model, "ks": list(preset.comm_ks), "rounds": base.run.rounds,
            "phy": config_to_dict(base.phy)}))
    pts.append(Point("privacy", f"draws{preset.privacy_draws}", {"draws": preset.privacy_draws}))
    for seed in preset.seeds:
        for m in preset.methods:
            pts.append(_learning_point(preset, "curves", f"{m}-seed{seed}", "simulate",
                                       f"run.method={m}", f"run.seed={seed}"))
    for seed in preset.loopback_seeds:
        pts.append(_learning_point(preset, "curves", f"pairzero_loopback-seed{seed}", "loopback",
                                   "run.method=pairzero", f"run.seed={seed}"))
    for seed in preset.sweep_seeds:
        for snr in preset.snrs_db:
            pts.append(_learning_point(preset, "snr", f"pairzero-snr{snr:g}-seed{seed}", "simulate",
                                       "run.method=pairzero", f"channel.snr_db={snr}", f"run.seed={seed}"))
        for eps in preset.epsilons:
            pts.append(_learning_point(preset, "epsilon", f"pairzero-eps{eps:g}-seed{seed}", "simulate",
                                       "run.method=pairzero", f"privacy.epsilon={eps}", f"run.seed={seed}"))
        for k in preset.ks:
            for m in preset.k_methods:
                pts.append(_learning_point(preset, "nodes", f"{m}-K{k}-seed{seed}", "simulate",
                                           f"run.method={m}", f"nodes.count={k}", f"run.seed={seed}"))
    for trainable, lrs in preset.lr_grid:
        for lr in lrs:
            pts.append(_learning_point(preset, "lr", f"zo_noiseless-{trainable}-lr{lr:g}", "simulate",
                                       "run.method=zo_noiseless", f"model.trainable={trainable}",
                                       f"zo.lr={lr}", f"nodes.count={preset.lr_nodes}",
                                       f"run.seed={preset.sweep_seeds[0]}"))
    for spec in preset.memory:
        name, _, shape = spec.partition(":")
        b, _, s = shape.partition("x")
        pts.append(Point("memory", spec, {"model": name, "batch": int(b), "seq": int(s),
                                          "reps": preset.memory_reps}))
    pts.append(Point("phy", f"nmse-{preset.phy_trials}x{preset.phy_sessions}", {
        "kind": "nmse", "trials": preset.phy_trials, "sessions": preset.phy_sessions,
        "ks": list(preset.phy_ks), "snrs_db": list(preset.phy_snrs_db)}))
    for seed in preset.calibration_seeds:
        pts.append(Point("phy", f"calibration-K{preset.calibration_nodes}-seed{seed}", {
            "kind": "calibration", "config": "configs/loopback.yaml",
            "nodes": preset.calibration_nodes, "seed": seed}))
    pts.extend(plan_real(preset))
    return pts


def real_config(preset: Preset, *overrides: str) -> ExperimentConfig:
    """configs/real_sentiment.yaml (the preset's real_config) with its overrides, then ``overrides``."""
    return load_config(REPO_ROOT / preset.real_config,
                       [*preset.real_overrides, "output.plots=false", *overrides])


def _prompt_overrides(template: str, verbalizer: tuple[str, ...]) -> list[str]:
    # --set values are YAML: JSON strings are YAML, so quotes, spaces and newlines survive.
    return [f"task.template={json.dumps(template)}", f"task.verbalizer={json.dumps(list(verbalizer))}"]


# The config a learning point's kind reads, by section ("section.key" for one key): its key is
# made of these alone, so a change elsewhere (a network port, a radio setting, the output
# folder) does not rerun it. simulate never reads network, radio or output (it writes no
# plots here); loopback reads everything but output; zero-shot only the model, the prompt,
# the validation examples and the seed that draws their subsample.
KIND_READS: dict[str, tuple[str, ...]] = {
    "zeroshot": ("model", "task.name", "task.kind", "task.template", "task.verbalizer",
                 "task.max_length", "task.eval_examples", "run.seed"),
    "simulate": ("run", "model", "task", "zo", "nodes", "channel", "privacy", "ota", "phy"),
    "loopback": ("run", "model", "task", "zo", "nodes", "channel", "privacy", "ota", "phy",
                 "network", "radio"),
}


# Settings that change how a point is computed, never what it computes: the overlapped z sweeps
# give the same bits (tests/test_zo_replay.py), micro-batched forwards the same loss within the
# float tolerance tests/test_tasks_objective.py states (exactly, at the default). They are left
# out of every key, so turning them on does not rerun a point.
HOW_NOT_WHAT: tuple[str, ...] = ("zo.overlap", "task.micro_batch_size")


def keyed_config(kind: str, cfg: ExperimentConfig) -> dict[str, Any]:
    """The part of ``cfg`` that a point of ``kind`` reads (:data:`KIND_READS`): its key."""
    if kind not in KIND_READS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(KIND_READS)}")
    full = config_to_dict(cfg)
    out: dict[str, Any] = {}
    for item in KIND_READS[kind]:
        section, _, key = item.partition(".")
        if key:
            out.setdefault(section, {})[key] = full[section][key]
        else:
            out[section] = dict(full[section])
    for item in HOW_NOT_WHAT:
        section, _, key = item.partition(".")
        out.get(section, {}).pop(key, None)
    if kind != "zeroshot":
        # Each method's rate alone: the ZO methods never read run.fo_lr, the FO baseline never
        # reads zo.lr.
        if cfg.run.method == "fo_fedavg":
            out["zo"] = {k: v for k, v in out["zo"].items() if k != "lr"}
        else:
            del out["run"]["fo_lr"]
    return out


def config_point(section: str, slug: str, group: str, kind: str, cfg: ExperimentConfig) -> Point:
    """A point that runs ``cfg``, keyed on the sections its kind reads (:func:`keyed_config`)."""
    return Point(section, slug, {"group": group, "kind": kind, "config": keyed_config(kind, cfg)},
                 run_with={"config": config_to_dict(cfg)})


def point_config(point: Point) -> ExperimentConfig:
    """The whole config a point runs (``run_with``; older points keep it in ``params``)."""
    return load_config_dict(point.run_with.get("config") or point.params["config"])


def _real_point(section: str, preset: Preset, group: str, slug: str, kind: str, *overrides: str) -> Point:
    return config_point(section, slug, group, kind, real_config(preset, *overrides))


def plan_real(preset: Preset) -> list[Point]:
    """The real-model points: the sweep (``real_sweep``) and the curves (``real``)."""
    pts: list[Point] = []
    for i, (template, verbalizer) in enumerate(preset.real_prompts):
        pts.append(_real_point("real_sweep", preset, "prompt", f"zeroshot-prompt{i}", "zeroshot",
                               *_prompt_overrides(template, verbalizer)))
    prompt = _prompt_overrides(*preset.real_sweep_prompt)
    for trainable, lr, q in preset.real_sweep:
        pts.append(_real_point("real_sweep", preset, "zo", f"zo_noiseless-{trainable}-lr{lr:g}-q{q:g}",
                               "simulate", *prompt, *preset.real_sweep_overrides,
                               "run.method=zo_noiseless", f"model.trainable={trainable}",
                               f"zo.lr={lr}", f"zo.clip_quantile={q}",
                               f"run.seed={preset.sweep_seeds[0]}"))
    for lr in preset.real_fo_lrs:
        pts.append(_real_point("real_sweep", preset, "fo", f"fo_fedavg-lr{lr:g}", "simulate",
                               *prompt, *preset.real_sweep_overrides, "run.method=fo_fedavg",
                               f"run.fo_lr={lr}", f"run.seed={preset.sweep_seeds[0]}"))
    for seed in preset.real_seeds:
        for m in preset.real_methods:
            pts.append(_real_point("real", preset, "curves", f"{m}-seed{seed}", "simulate",
                                   f"run.method={m}", f"run.seed={seed}"))
    for k, batch in preset.real_nodes if preset.real_seeds else ():
        for m in ("zo_noiseless", "pairzero"):
            pts.append(_real_point("real", preset, "nodes", f"{m}-K{k}-b{batch}-seed{preset.real_seeds[0]}",
                                   "simulate", f"run.method={m}", f"nodes.count={k}",
                                   f"task.batch_size={batch}", f"run.seed={preset.real_seeds[0]}"))
    for seed in preset.real_loopback_seeds:
        pts.append(_real_point("real", preset, "curves", f"pairzero_loopback-seed{seed}", "loopback",
                               "run.method=pairzero", f"run.seed={seed}"))
    return pts


# ----------------------------------------------------------------------------- runners

Result = tuple[dict[str, Any], Any, int | None]


def _subprocess(cmd: list[str], timeout_s: float, what: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise PointFailed(f"{what} did not finish within {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        tail = lines[-1] if lines else "no output"
        raise PointFailed(f"{what} exited with status {proc.returncode}: {tail[:300]}")
    return proc


def _curve(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("round", "val_accuracy", "val_loss", "eps_spent")
    return [{k: r.get(k) for k in keys} for r in rows if r.get("val_accuracy") is not None]


def run_simulate(point: Point, preset: Preset, work: Path) -> Result:
    """``pairzero simulate`` (its own process) on the point's config; its run directory is
    removed, the curve is kept."""
    from pairzero.metrics import read_metrics

    cfg = point_config(point)
    path = dump_config(cfg, work / f"{point.name}.yaml")
    out = work / f"{point.name}-runs"
    cmd = [sys.executable, "-m", "pairzero.cli", "simulate", "--log-level", "WARNING",
           "--config", str(path), "--out", str(out)]
    _subprocess(cmd, preset.timeout_s, "pairzero simulate")
    runs = sorted(p for p in out.iterdir() if (p / "summary.json").is_file()) if out.is_dir() else []
    if len(runs) != 1:
        raise PointFailed(f"pairzero simulate: expected one run directory with summary.json in "
                          f"{out}, found {len(runs)}")
    run_dir = runs[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    rows = read_metrics(run_dir)
    result = {k: summary.get(k) for k in (
        "method", "rounds", "nodes", "trainable_params", "start_val_accuracy",
        "final_val_accuracy", "start_val_loss", "final_val_loss", "mean_sq_err", "eps_spent",
        "privacy_target", "clip", "clip_calibration", "uplink_bits_per_node_per_round",
        "train_s", "wall_s")}
    result["curve"] = _curve(rows)
    shutil.rmtree(out, ignore_errors=True)
    return result, resolved, cfg.run.seed


def run_loopback(point: Point, preset: Preset, work: Path) -> Result:
    """``pairzero loopback`` (AP + channel emulator + K node processes) on the point's config.

    The clip bound and the task prompt are resolved here, once, and the launcher runs the
    resolved config, so every process uses the same G (see :mod:`pairzero.clip_bound`).
    """
    from pairzero.clip_bound import resolve_clip
    from pairzero.launch import LoopbackFailed
    from pairzero.launch import run_loopback as launch_loopback
    from pairzero.tasks import with_task_prompt

    t0 = time.monotonic()
    cfg = point_config(point)
    cfg = dataclasses.replace(cfg, task=with_task_prompt(cfg.task))
    cfg, cal = resolve_clip(cfg)
    path = dump_config(cfg, work / f"{point.name}.yaml")
    out = work / f"{point.name}-runs"
    try:
        run = launch_loopback(config=path, out=out, timeout_s=preset.loopback_timeout_s,
                              log_level="WARNING", plots=cfg.output.plots)
    except LoopbackFailed as e:
        raise PointFailed(f"pairzero loopback: {e}") from None
    curve = _curve(run.rows)
    if not curve or not run.summary.get("finished"):
        raise PointFailed(f"pairzero loopback did not finish: {run.stdout.strip().splitlines()[-1:]}")
    resolved = yaml.safe_load(run.config)
    result = {
        "method": "pairzero_loopback", "rounds": cfg.run.rounds, "nodes": cfg.nodes.count,
        "start_val_accuracy": curve[0]["val_accuracy"], "final_val_accuracy": curve[-1]["val_accuracy"],
        "start_val_loss": curve[0]["val_loss"], "final_val_loss": curve[-1]["val_loss"],
        "eps_spent": run.summary.get("eps_spent"), "clip": cfg.zo.clip,
        "clip_calibration": cal.as_dict() if cal else None,
        "privacy_target": {"epsilon": cfg.privacy.epsilon, "delta": cfg.privacy.delta},
        "rounds_committed": run.summary.get("rounds_committed"),
        "empty_rounds": run.summary.get("empty_rounds"),
        "partial_rounds": run.summary.get("partial_rounds"),
        "wall_s": round(time.monotonic() - t0, 2), "curve": curve,
    }
    shutil.rmtree(out, ignore_errors=True)
    return result, resolved, cfg.run.seed


def load_config_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Validate a stored config dict (a point's parameters) back into an ExperimentConfig."""
    from pairzero.config import config_from_dict

    return config_from_dict(data)


def run_memory(point: Point, preset: Preset, work: Path) -> Result:
    """``bench/zo_memory.py`` on one model shape (its own process)."""
    p = point.params
    out = work / point.name
    cmd = [sys.executable, "bench/zo_memory.py", "--models", f"{p['model']}:{p['batch']}x{p['seq']}",
           "--reps", str(p["reps"]), "--out", str(out)]
    _subprocess(cmd, preset.timeout_s, "bench/zo_memory.py")
    data = json.loads((out / "zo_memory.json").read_text())
    res = data["models"][p["model"]]
    res["malloc_mmap_threshold"] = data["malloc_mmap_threshold"]
    return res, {"command": cmd[1:]}, 0


def run_privacy(point: Point, preset: Preset, work: Path) -> Result:
    """``bench/privacy_vs_channel.py`` with ``draws`` channel deployments."""
    out = work / point.name
    cmd = [sys.executable, "bench/privacy_vs_channel.py", "--draws", str(point.params["draws"]),
           "--out", str(out)]
    _subprocess(cmd, preset.timeout_s, "bench/privacy_vs_channel.py")
    data = json.loads((out / "privacy_vs_channel.json").read_text())
    return data, {"command": cmd[1:], "params": data.get("params")}, None


def run_phy(point: Point, preset: Preset, work: Path) -> Result:
    """NMSE through the flowgraphs (``bench/phy_nmse.py``) or one loopback calibration."""
    p = point.params
    out = work / point.name
    out.mkdir(parents=True, exist_ok=True)
    if p["kind"] == "nmse":
        cmd = [sys.executable, "bench/phy_nmse.py", "--trials", str(p["trials"]),
               "--sessions", str(p["sessions"]), "--ks", ",".join(str(k) for k in p["ks"]),
               "--snrs", ",".join(f"{s:g}" for s in p["snrs_db"]), "--out", str(out),
               "--osc-rounds", "0"]  # the oscillator axes are the benchmark's, not this page's
        _subprocess(cmd, preset.timeout_s, "bench/phy_nmse.py")
        path = out / "phy_nmse.json"
        if not path.is_file():
            raise PointFailed(f"bench/phy_nmse.py wrote no {path.name}")
        data = json.loads(path.read_text())
        for key in ("points", "max_gap_db"):
            if key not in data:
                raise PointFailed(f"bench/phy_nmse.py: {path.name} has no {key!r}")
        return data, {"command": cmd[1:]}, None
    from pairzero.launch import free_port_block

    yaml_out = out / "calibration.yaml"
    base = free_port_block(int(p["nodes"]) + 2)
    # Its run directory in the scratch directory, on free ports (not the config's, which another
    # run on this machine may hold).
    cmd = [sys.executable, "-m", "pairzero.cli", "calibrate", "--config", p["config"],
           "--output", str(yaml_out), "--out", str(out), "--set", f"nodes.count={p['nodes']}",
           "--set", f"run.seed={p['seed']}", "--set", f"network.control_port={base}",
           "--set", f"network.sample_port_base={base + 1}"]
    _subprocess(cmd, preset.timeout_s, "pairzero calibrate")
    meta = (yaml.safe_load(yaml_out.read_text()) or {}).get("meta") or {}
    try:
        res = {"spread_before_db": float(meta["spread_before_db"]),
               "spread_after_db": float(meta["spread_after_db"]), "nodes": p["nodes"]}
    except (KeyError, TypeError, ValueError):
        raise PointFailed(f"pairzero calibrate: {yaml_out.name} has no meta.spread_before_db / "
                          "meta.spread_after_db") from None
    return res, {"command": cmd[1:], "config": meta.get("config")}, p["seed"]


def run_communication(point: Point, preset: Preset, work: Path) -> Result:
    """Per-round bits of each method at each K (computed; see :func:`communication_rows`)."""
    from pairzero.config import PhyConfig

    p = point.params
    kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in p["phy"].items()}
    phy = PhyConfig(**kwargs)
    rows = communication_rows(p["model"], p["ks"], phy, p["rounds"])
    return {"rows": rows}, {"phy": p["phy"], "model": p["model"], "rounds": p["rounds"]}, None


def count_parameters(model: str) -> int:
    """Parameters of an OPT shape (tied embedding once), counted on the meta device."""
    import torch
    from transformers import OPTForCausalLM

    from pairzero.models import opt_shape_config

    with torch.device("meta"):
        m = OPTForCausalLM(opt_shape_config(model))
    return sum(p.numel() for p in m.parameters())


def _control_bytes(k: int) -> dict[str, int]:
    """Encoded sizes (bytes) of one round's control messages in the testbed's schema."""
    from pairzero.protocol.messages import Precoding, Ready, Round, Schedule, Update, encode, make
    from pairzero.seeds import round_seed

    exp, t, seed = "topic-0123456789ab", 1234, round_seed(1234, 1234)
    pre = Precoding(b_re=0.012345678901234, b_im=-0.012345678901234, cfo=1.2345678e-05,
                    delay=1.2345678, ref_index=123456789.0, mu=0.0123456789012345,
                    noise_var=1.2345678901234e-05)
    rnd = Round(t=t, seed=seed, deadline_s=30.0, lr=0.01)
    sched = Schedule(t=t, node=k - 1, tx_sample=123456789, eta=0.0123456789012345, noise_std=0.0,
                     sigma_a=0.0, precoding=pre)
    ready_ota = Ready(t=t, node=k - 1, scalar_ready=True, digital_scalar=None)
    ready_dig = Ready(t=t, node=k - 1, scalar_ready=True, digital_scalar=-0.123456789012345)
    upd = Update(t=t, seed=seed, g_hat=-0.123456789012345, lr=0.01, active=tuple(range(k)),
                 expected_hash=None)
    size = {name: len(encode(make(exp, t, body))) for name, body in (
        ("round", rnd), ("schedule", sched), ("ready_ota", ready_ota), ("ready_digital", ready_dig),
        ("update", upd))}
    return size


def communication_rows(model: str, ks: list[int], phy: Any, rounds: int) -> list[dict[str, Any]]:
    """Uplink / downlink bits per node and per round, per method and K.

    Payload bits come from :func:`pairzero.ota.comm.uplink_cost` / ``downlink_cost`` with
    d = the parameter count of the OPT shape, float32 words and 63-bit round seeds; analog
    channel uses and airtime from :class:`pairzero.phy.FrameLayout`; control-plane bytes
    from encoding the protocol's own ROUND / READY / SCHEDULE / UPDATE messages (JSON).
    """
    from pairzero.ota.comm import downlink_cost, uplink_cost
    from pairzero.phy import FrameLayout
    from pairzero.seeds import MAX_SEED

    d = count_parameters(model)
    float_bits = int(np.dtype(np.float32).itemsize * 8)
    seed_bits = MAX_SEED.bit_length()
    rows = []
    for k in ks:
        layout = FrameLayout(phy, k)
        ctrl = _control_bytes(k)  # a schema change that breaks it fails here, loudly
        for method in ("pairzero", "zo_digital", "fo_fedavg"):
            up = uplink_cost(method, d, k, float_bits=float_bits, payload_uses=phy.payload_repetitions,
                             pilot_uses=phy.pilot_length)
            down = downlink_cost(method, d, k, float_bits=float_bits, seed_bits=seed_bits)
            row: dict[str, Any] = {
                "method": method, "K": k, "d": d,
                "uplink_bits_per_node": up.bits_per_node,
                "uplink_bits_per_round": up.total_bits,
                "downlink_bits_per_round": down.total_bits,
                "uplink_bits_total": up.total_bits * rounds,
                "uplink_channel_uses_per_round": up.channel_uses,
            }
            if method == "pairzero":
                row["frame_samples"] = layout.length
                row["frame_airtime_s"] = layout.length / phy.sample_rate
            if method != "fo_fedavg":
                ready = ctrl["ready_ota"] if method == "pairzero" else ctrl["ready_digital"]
                row["control_up_bytes_per_node"] = ready
                # SCHEDULE goes to the nodes of a radio PHY only (the digital path has none)
                sched = ctrl["schedule"] if method == "pairzero" else 0
                row["control_down_bytes_per_node"] = ctrl["round"] + sched + ctrl["update"]
            rows.append(row)
    return rows


def run_zeroshot(point: Point, preset: Preset, work: Path) -> Result:
    """Validation loss and accuracy of the model as loaded (no training) on the point's prompt."""
    from pairzero.models import load_model
    from pairzero.tasks import load_task, make_objective, with_task_prompt

    cfg = point_config(point)
    task = with_task_prompt(cfg.task)
    model, tokenizer = load_model(cfg.model, seed=cfg.run.seed)
    data = load_task(task, seed=cfg.run.seed)
    ev = make_objective(task, tokenizer).evaluate(model, data.validation)
    labels = [e.label for e in data.validation]
    result = {"val_accuracy": ev["accuracy"], "val_loss": ev["loss"], "examples": len(labels),
              "majority_fraction": max(labels.count(c) for c in set(labels)) / len(labels),
              "template": task.template, "verbalizer": list(task.verbalizer)}
    return result, config_to_dict(dataclasses.replace(cfg, task=task)), cfg.run.seed


def run_real(point: Point, preset: Preset, work: Path) -> Result:
    """A real-model point (zero-shot, simulate or loopback) with its CPU time measured.

    ``cpu_s`` is this process's user + system time plus that of the children it waited for
    (the loopback's AP, emulator and nodes); per round it is divided by the rounds.
    """
    import resource

    def cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    from pairzero.realdata import default_data_dir

    cfg = point_config(point)
    data = default_data_dir()
    for name in (cfg.model.name, cfg.task.name.removeprefix("hf:")):
        if name.startswith(("data/", "./data/")) and not Path(name).exists():
            raise PointFailed(f"{name} is missing: run `make real-data` (pairzero fetch, into {data}) "
                              "from the repository root first")
    kind = point.params["kind"]
    runner = {"zeroshot": run_zeroshot, "simulate": run_simulate, "loopback": run_loopback}[kind]
    c0, t0 = cpu(), time.monotonic()
    result, config, seed = runner(point, preset, work)
    result["cpu_s"] = round(cpu() - c0, 2)
    result["point_wall_s"] = round(time.monotonic() - t0, 2)
    return result, config, seed


RUNNERS: dict[str, Callable[[Point, Preset, Path], Result]] = {
    "real": run_real,
    "real_sweep": run_real,
    "communication": run_communication,
    "privacy": run_privacy,
    "memory": run_memory,
    "phy": run_phy,
}


def runner_for(point: Point) -> Callable[[Point, Preset, Path], Result]:
    """The function that produces ``point``."""
    if point.section == "learning":
        return run_loopback if point.params["kind"] == "loopback" else run_simulate
    return RUNNERS[point.section]


def scratch_dir() -> Path:
    """A private temporary directory for run directories and bench outputs."""
    return Path(tempfile.mkdtemp(prefix="pairzero-results-"))


def finite(x: Any) -> bool:
    """True for a finite real number."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
