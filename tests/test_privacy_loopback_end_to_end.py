"""A node whose own privacy account is spent, in a loopback run of real processes (channel
emulator, AP, 3 edge nodes): it tells the AP in READY, the AP leaves it out of every payload
before the frame (|S_t| never counts it, no charge for it), the others train, and all end
bit-identical.

Its account comes from an earlier run in the same run directory (its ledger, with its head):
the AP's own ledger knows nothing of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pairzero.config import config_to_dict, load_config
from pairzero.launch import free_port_block
from pairzero.metrics import round_rows
from pairzero.ota.charging import PrivacyLedger, terms_of
from pairzero.ota.privacy import PrivacyRule
from tests.e2e_util import replay_hash, round_log

pytestmark = pytest.mark.e2e  # starts processes and the channel emulator

ROUNDS = 8
PY = [sys.executable, "-m", "pairzero.cli"]


def test_a_node_with_a_spent_account_is_left_out_before_the_frame_and_never_in_s(tmp_path: Path) -> None:
    # Prepare: a loopback experiment of 3 nodes; node 2's ledger says it spent 99.9 % of mu*
    base = free_port_block(6)
    cfg = load_config(None, [
        "radio.mode=loopback", "nodes.count=3", f"run.rounds={ROUNDS}", "channel.snr_db=30.0",
        f"network.control_port={base}", f"network.sample_port_base={base + 1}",
        "network.curve=false", "network.start_timeout_s=120", "output.plots=false",
        f"task.eval_every={ROUNDS}", "zo.threads=1",
    ])
    conf = tmp_path / "exp.yaml"
    conf.write_text(yaml.safe_dump(config_to_dict(cfg)))
    run = tmp_path / "run"
    (run / "nodes").mkdir(parents=True)
    cal = PrivacyRule.from_target(cfg.privacy.epsilon, cfg.privacy.delta, ROUNDS)
    node_ledger = run / "nodes" / "edge2-privacy.jsonl"
    led = PrivacyLedger(node_ledger, terms_of(cfg))
    led.append({"kind": "sent", "t": 0, "mu": 0.999 * cal.mu_total})
    led.close()
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PATH": "/usr/bin:/bin"}
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, *role: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*PY, *role, "--config", str(conf)], env=env,
                                stdout=(logs / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)

    procs = [start("channel", "channel")]
    time.sleep(1.0)
    ap = start("ap", "ap", "--run-dir", str(run))
    procs.append(ap)
    procs += [start(f"edge{k}", "edge", "--node-id", str(k), "--run-dir", str(run)) for k in range(3)]
    # Execute
    try:
        ap.wait(timeout=400)
        for p in procs[2:]:
            p.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    ap_log = (logs / "ap.log").read_text()
    assert ap.returncode == 0, ap_log[-3000:]
    # Assert: from round 2 on (two pilot frames first), nodes 0 and 1 send payloads; node 2 is
    # never in S_t and never planned, and the AP says why
    recs = round_log(run)
    assert [r.t for r in recs] == list(range(ROUNDS))
    assert all(r.active == (0, 1) for r in recs[2:]), [r.active for r in recs]
    assert "node 2 left out: privacy budget" in ap_log
    ledger = [json.loads(x) for x in (run / "privacy.jsonl").read_text().splitlines()]
    plans = [e for e in ledger if e["kind"] == "plan"]
    assert len(plans) == ROUNDS - 2 and all(set(e["mu"]) == {"0", "1"} for e in plans)
    assert all(e["present"] == [0, 1] for e in ledger if e["kind"] == "charge")
    # node 2 sent nothing more (its ledger: the earlier payload only) and refused nothing
    sent = [json.loads(x) for x in node_ledger.read_text().splitlines()]
    assert [e["kind"] for e in sent] == ["terms", "sent"]
    assert "payload refused" not in (logs / "edge2.log").read_text()
    # every node, the AP's replica and a replay of the round log hold the same model
    reports = [json.loads((run / "nodes" / f"edge{k}.json").read_text()) for k in range(3)]
    hashes = {r["model_hash"] for r in reports}
    assert hashes == {replay_hash(run)}
    assert len(round_rows(run)) == ROUNDS
