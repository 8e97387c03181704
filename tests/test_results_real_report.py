"""The real-model section of the report follows its result files: the sweep tables, the
per-method accuracies with their spread, seconds per round and the plain statements."""

from __future__ import annotations

import json
from pathlib import Path

from pairzero.results.experiments import PRESETS, plan
from pairzero.results.report import write_report
from pairzero.results.store import point_path, save_point

PRESET = PRESETS["full"]
FINAL = {"zo_noiseless": (0.80, 0.82, 0.84), "pairzero": (0.79, 0.80, 0.81), "fo_fedavg": (0.90, 0.91, 0.92)}
SEEDS = (1234, 1, 2)


def _curve(start: float, final: float) -> list[dict[str, float]]:
    return [{"round": 0, "val_accuracy": start, "val_loss": 0.6, "eps_spent": None},
            {"round": 20, "val_accuracy": final, "val_loss": 0.5, "eps_spent": None}]


def _write_points(out: Path) -> None:
    for p in plan(PRESET):
        if not p.section.startswith("real"):
            continue
        cfg = p.params["config"]
        if p.params["kind"] == "zeroshot":
            result = {"val_accuracy": 0.7, "val_loss": 0.6, "majority_fraction": 0.51}
        elif p.params["group"] in ("zo", "fo"):
            result = {"trainable_params": 576, "clip": 1.5, "start_val_accuracy": 0.75,
                      "final_val_accuracy": 0.76, "start_val_loss": 0.6, "final_val_loss": 0.55}
        elif p.params["kind"] == "loopback":
            continue  # not run: shown as not available
        else:
            final = FINAL[cfg["run"]["method"]][SEEDS.index(cfg["run"]["seed"])]
            result = {"rounds": 20, "start_val_accuracy": 0.75, "final_val_accuracy": final,
                      "final_val_loss": 0.5, "wall_s": 100.0, "point_wall_s": 200.0,
                      "train_s": 80.0, "cpu_s": 300.0, "curve": _curve(0.75, final)}
        save_point(out, p, status="ok", result=result, config=cfg, git_revision="abc", seed=0, wall_s=1.0)


def test_real_section_reads_its_numbers_from_the_files(tmp_path: Path) -> None:
    _write_points(tmp_path)
    text = write_report(PRESET, tmp_path, tmp_path / "results.md").read_text()
    section = text[text.index("## 6. Real model"):]
    zo_row = next(ln for ln in section.splitlines() if ln.startswith("| noiseless federated ZO |"))
    # mean 0.82, sample sd 0.02; 200 s / 20 rounds of wall, 300 / 20 of CPU, 80 / 20 of training
    assert "| 1, 2, 1234 | 0.750 ± 0.000 | 0.820 ± 0.020 | 0.820, 0.840, 0.800 |" in zo_row  # seed order
    assert "| 10.0 | 15.0 | 4.0 |" in zo_row
    # gains paired by seed: 0.80/0.82/0.84 - 0.75 -> +7.0 ± 2.0 points
    assert "a gain of +7.0 ± 2.0 points (paired by seed), more than its seed spread" in section
    assert ("pAirZero (simulated) ends at 0.800 ± 0.010 (gain +5.0 points): -2.0 points from "
            "noiseless ZO (within 2 points)") in section
    assert "(gain +16.0 points): +9.0 points from noiseless ZO" in section
    assert "- pAirZero (loopback radio), seed 1234: not available" in section
    assert "**Nodes**" in section and "| noiseless federated ZO | 16 | 1 | 0.750 → 0.800 |" in section
    assert (tmp_path / "figures" / "real_accuracy_vs_round.png").is_file()
    # A changed file changes the page.
    (zo,) = [p for p in plan(PRESET) if p.section == "real" and p.slug == "zo_noiseless-seed1"]
    path = point_path(tmp_path, zo)
    rec = json.loads(path.read_text())
    rec["result"]["final_val_accuracy"] = 0.70
    path.write_text(json.dumps(rec))
    text = write_report(PRESET, tmp_path, tmp_path / "results.md").read_text()
    assert "0.700, 0.840, 0.800" in text
    # gains by seed 1234, 1, 2: +0.05, -0.05, +0.09: mean +3.0, sd 7.2 points
    assert "a gain of +3.0 ± 7.2 points (paired by seed), not more than its seed spread" in text
