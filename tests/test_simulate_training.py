"""`pairzero simulate`: one process, K simulated nodes, OTA channel + privacy, and baselines."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from pairzero.cli import main
from pairzero.config import load_config
from pairzero.metrics import read_metrics
from simulation.run import run_simulation


def _sim(tmp_path: Path, *overrides: str) -> tuple[dict, list[dict], Path]:
    cfg = load_config(None, ["output.plots=false", "task.eval_every=5", "nodes.count=3", *overrides])
    summary = run_simulation(cfg, tmp_path, echo=False)
    run_dir = Path(summary["run_dir"])
    return summary, read_metrics(run_dir / "metrics.jsonl"), run_dir


def test_writes_metrics_summary_config_and_provenance(tmp_path: Path) -> None:
    summary, rows, run_dir = _sim(tmp_path, "run.rounds=6", "output.plots=true")
    assert [r["round"] for r in rows] == list(range(7))  # round 0 = evaluation before training
    assert {"g_hat", "g_true_mean", "eta", "sigma_a", "eps_spent", "n_active"} <= rows[-1].keys()
    assert summary["final_val_accuracy"] == rows[-1]["val_accuracy"]
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["config"]["run"]["rounds"] == 6
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", prov["git_revision"])
    assert load_config(run_dir / "config.yaml").run.rounds == 6
    assert (run_dir / "loss_accuracy.png").stat().st_size > 1000
    assert (run_dir / "privacy.png").is_file()


def test_same_seed_same_run(tmp_path: Path) -> None:
    _, a, _ = _sim(tmp_path / "a", "run.rounds=5")
    _, b, _ = _sim(tmp_path / "b", "run.rounds=5")
    keys = ("g_hat", "g_true_mean", "eta", "val_accuracy", "val_loss", "eps_spent")
    assert [{k: r.get(k) for k in keys} for r in a] == [{k: r.get(k) for k in keys} for r in b]
    _, c, _ = _sim(tmp_path / "c", "run.rounds=5", "run.seed=99")
    assert [r.get("g_hat") for r in c] != [r.get("g_hat") for r in a]


def test_noiseless_baseline_aggregates_exactly(tmp_path: Path) -> None:
    _, rows, _ = _sim(tmp_path, "run.rounds=4", "run.method=zo_noiseless")
    for r in rows[1:]:
        assert r["g_hat"] == r["g_true_mean"] and r["sq_err"] == 0.0
        assert r["uplink_bits_per_node"] == 32


def test_ota_error_stays_within_the_closed_form_noise(tmp_path: Path) -> None:
    # No privacy, no fading, 40 dB: ĝ − mean g is Gaussian with variance mse_closed_form, so
    # |error| < 5 sigma in every round (a false alarm probability of ~6e-7 per round).
    _, rows, _ = _sim(tmp_path, "run.rounds=8", "privacy.enabled=false", "channel.fading=none",
                      "channel.snr_db=40.0")
    for r in rows[1:]:
        assert r["n_active"] == 3
        assert abs(r["g_hat"] - r["g_true_mean"]) < 5 * math.sqrt(r["mse_closed_form"])
        assert r["uplink_bits_per_node"] == 0  # analog: no digital bits on the uplink


def test_privacy_spent_reaches_but_never_exceeds_the_target(tmp_path: Path) -> None:
    summary, rows, _ = _sim(tmp_path, "run.rounds=10", "privacy.epsilon=4.0")
    eps = [r["eps_spent"] for r in rows[1:]]
    assert eps == sorted(eps)
    assert eps[-1] <= 4.0 + 1e-9
    assert eps[-1] == pytest.approx(4.0, rel=0.02)  # all T rounds used: the budget is spent
    assert summary["eps_spent"] == eps[-1]


def test_first_order_fedavg_baseline_runs_and_costs_the_full_gradient(tmp_path: Path) -> None:
    summary, rows, _ = _sim(tmp_path, "run.rounds=3", "run.method=fo_fedavg")
    assert all(math.isfinite(r["train_loss"]) and r["grad_norm"] > 0 for r in rows[1:])
    assert summary["uplink_bits_per_node_per_round"] == 32 * summary["trainable_params"]


def test_cli_simulate_prints_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["simulate", "--out", str(tmp_path), "--set", "run.rounds=2", "--set", "nodes.count=3",
               "--set", "output.plots=false", "--set", "task.eval_every=1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "round    2/2" in out and "val loss" in out and "done:" in out


@pytest.mark.slow
def test_default_config_pairzero_within_2_points_of_noiseless(tmp_path: Path) -> None:
    # The claim of docs/benchmarks.md: on the embedded default (30 nodes, Rayleigh at 10 dB, epsilon = 8),
    # over-the-air aggregation with privacy ends within 2 points of exact aggregation.
    base = ["output.plots=false"]
    ota = run_simulation(load_config(None, base), tmp_path / "ota", echo=False)
    exact = run_simulation(load_config(None, [*base, "run.method=zo_noiseless"]), tmp_path / "exact", echo=False)
    assert ota["eps_spent"] <= 8.0 + 1e-9
    assert ota["final_val_accuracy"] >= exact["final_val_accuracy"] - 0.02
    assert ota["final_val_accuracy"] >= ota["start_val_accuracy"] + 0.10
