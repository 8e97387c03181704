"""`pairzero loopback` end to end: AP, GNU Radio channel emulator and 3 edge-node processes.

The nodes' final weights must be bit-identical to each other, to the AP's replica and to a
replay of the AP's round log from the initial weights; the OTA rounds must include every node.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pairzero.metrics import read_metrics
from tests.e2e_util import replay_hash, round_log, run_loopback

pytestmark = pytest.mark.e2e  # starts processes or runs the channel emulator

ROUNDS = 12


def _run_loopback(tmp_path: Path, *overrides: str, timeout: float = 300) -> Path:
    run = run_loopback(["nodes.count=3", *overrides], out=tmp_path, timeout_s=timeout)
    assert run.run_dir is not None
    # A quiet run: none of GNU Radio's INFO lines (one per block buffer) reach the terminal
    assert ":info:" not in run.stdout and "set_min_output_buffer" not in run.stdout, run.stdout
    return run.run_dir


@pytest.fixture(scope="module")
def gnuradio_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Prepare / Execute: high SNR, privacy off, so the over-the-air estimate is close to exact.
    return _run_loopback(
        tmp_path_factory.mktemp("loopback"), f"run.rounds={ROUNDS}", "privacy.enabled=false",
        "channel.snr_db=30.0", f"task.eval_every={ROUNDS // 2}",
    )


def test_every_round_is_committed_once(gnuradio_run: Path) -> None:
    recs = round_log(gnuradio_run)
    assert [r.t for r in recs] == list(range(ROUNDS))
    rows = [r for r in read_metrics(gnuradio_run / "metrics.jsonl") if "g_hat" in r]
    assert [r["round"] for r in rows] == list(range(1, ROUNDS + 1))


def test_over_the_air_rounds_include_every_node(gnuradio_run: Path) -> None:
    recs = round_log(gnuradio_run)
    # Rounds 0 and 1 sound the channel (pilots only: a node is precoded once its CFO has
    # been refined over two frames); from round 2 on all three payloads add up over the air.
    assert all(r.active == () and r.g_hat == 0.0 for r in recs[:2])
    assert all(r.active == (0, 1, 2) for r in recs[2:])
    assert all(r.g_hat != 0.0 for r in recs[2:])


def test_validation_loss_decreases(gnuradio_run: Path) -> None:
    evals = [r for r in read_metrics(gnuradio_run / "metrics.jsonl") if "val_loss" in r]
    assert [r["round"] for r in evals] == [0, ROUNDS // 2, ROUNDS]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]


def test_nodes_ap_and_log_replay_are_bit_identical(gnuradio_run: Path) -> None:
    nodes = [json.loads((gnuradio_run / "nodes" / f"edge{k}.json").read_text()) for k in range(3)]
    summary = json.loads((gnuradio_run / "summary.json").read_text())
    assert all(n["next_round"] == ROUNDS for n in nodes)
    hashes = {n["model_hash"] for n in nodes}
    assert hashes == {summary["model_hash"]} == {replay_hash(gnuradio_run)}


def test_run_directory_is_reproducible(gnuradio_run: Path) -> None:
    prov = json.loads((gnuradio_run / "provenance.json").read_text())
    assert prov["seed"] == prov["config"]["run"]["seed"]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", prov["git_revision"])
    assert (gnuradio_run / "config.yaml").is_file()
    for name in ("ap", "channel", "edge0", "edge1", "edge2"):
        assert (gnuradio_run / "logs" / f"{name}.log").is_file()


def test_baseband_mode_matches_the_simulated_ota_rounds(tmp_path: Path) -> None:
    # Baseband: scalars in READY, the AP applies the same simulated channel as `simulate`.
    run_dir = _run_loopback(tmp_path, "run.rounds=5", "radio.mode=baseband", "task.eval_every=5")
    recs = round_log(run_dir)
    assert [r.t for r in recs] == list(range(5))
    assert all(r.active == (0, 1, 2) for r in recs)
    nodes = [json.loads((run_dir / "nodes" / f"edge{k}.json").read_text()) for k in range(3)]
    assert {n["model_hash"] for n in nodes} == {replay_hash(run_dir)}
