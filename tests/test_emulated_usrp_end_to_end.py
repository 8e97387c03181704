"""`pairzero loopback --config configs/emulated_usrp.yaml` end to end: AP and K = 4 edge-node
processes drive their radios through the USRP front end (radio.usrp.UsrpFrontEnd: gr-uhd calls,
device time at a PPS edge, timed bursts and stream commands, async events) on emulated USRPs,
whose samples go through the GNU Radio channel emulator in real time.

The run must finish, commit every round once, carry every node's payload after the first
(pilot) frame, learn, and leave the nodes, the AP and a replay of its log bit-identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pairzero.metrics import read_metrics
from tests.e2e_util import replay_hash, round_log, run_loopback

pytest.importorskip("gnuradio.uhd")

pytestmark = pytest.mark.e2e  # starts processes or runs the channel emulator

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 12
K = 4


@pytest.fixture(scope="module")
def emulated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Prepare / Execute: the shipped config, short, at high SNR and with privacy off, so the
    # over-the-air estimate is close to exact; 50 ms TX lead (5 ms shipped) for a CI machine's
    # scheduling jitter with 6 processes on 2 cores
    run = run_loopback([f"run.rounds={ROUNDS}", "privacy.enabled=false", "channel.snr_db=30.0",
                        f"task.eval_every={ROUNDS // 2}", "radio.tx_lead_s=0.05"],
                       ROOT / "configs" / "emulated_usrp.yaml",
                       out=tmp_path_factory.mktemp("emulated-usrp"), timeout_s=400)
    assert run.run_dir is not None
    return run.run_dir


def test_the_radios_are_the_usrp_front_ends_on_emulated_devices(emulated_run: Path) -> None:
    for name in ("ap", *(f"edge{k}" for k in range(K))):
        log = (emulated_run / "logs" / f"{name}.log").read_text()
        assert "device time aligned at a PPS edge" in log, name


def test_every_round_is_committed_once(emulated_run: Path) -> None:
    recs = round_log(emulated_run)
    assert [r.t for r in recs] == list(range(ROUNDS))
    rows = [r for r in read_metrics(emulated_run / "metrics.jsonl") if "g_hat" in r]
    assert [r["round"] for r in rows] == list(range(1, ROUNDS + 1))
    # frames are timed on the radios' clock, in order
    samples = [r["tx_sample"] for r in rows]
    assert samples == sorted(samples) and len(set(samples)) == ROUNDS


def test_after_one_pilot_frame_every_round_carries_every_node(emulated_run: Path) -> None:
    recs = round_log(emulated_run)
    assert recs[0].active == () and recs[0].g_hat == 0.0
    assert all(r.active == tuple(range(K)) for r in recs[1:])


def test_validation_loss_decreases(emulated_run: Path) -> None:
    evals = [r for r in read_metrics(emulated_run / "metrics.jsonl") if "val_loss" in r]
    assert [r["round"] for r in evals] == [0, ROUNDS // 2, ROUNDS]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]


def test_nodes_ap_and_log_replay_are_bit_identical(emulated_run: Path) -> None:
    nodes = [json.loads((emulated_run / "nodes" / f"edge{k}.json").read_text()) for k in range(K)]
    summary = json.loads((emulated_run / "summary.json").read_text())
    assert all(n["next_round"] == ROUNDS for n in nodes)
    assert {n["model_hash"] for n in nodes} == {summary["model_hash"]} == {replay_hash(emulated_run)}
