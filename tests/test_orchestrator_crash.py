"""Crashes as separate processes, killed with SIGKILL: AP restart resumes, a killed node rejoins."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from access_point.orchestrator import ApSettings, Orchestrator, round_seed
from access_point.roundlog import RoundLog
from edge_node.runtime import EdgeNode
from pairzero.phy.baseband import BasebandNodePhy
from pairzero.protocol.testing import (
    ConstantPlanner,
    IdealApPhy,
    QuadraticTrainer,
    replay_hash,
)
from pairzero.protocol.transport import ZmqClient, ZmqServer
from tests.e2e_util import free_port_block

pytestmark = pytest.mark.e2e  # starts processes or runs the channel emulator

EXP = "exp-crash"
HB = 0.5  # peers drop each other after 3 silent heartbeats
REPO = Path(__file__).resolve().parent.parent


def _spawn(*args: str, hb: float = HB) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.roles", *args, "--experiment", EXP,
         "--heartbeat", str(hb)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )


def _committed(path: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM rounds").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _wait(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _run_node(node: EdgeNode, until: int, out: dict) -> threading.Thread:
    def target() -> None:
        try:
            out["result"] = node.run(until_round=until)
        except BaseException as e:
            out["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th


def test_orchestrator_ap_restart_resumes_without_losing_or_repeating(tmp_path: Path) -> None:
    # Prepare: AP process + 3 node threads over TCP
    # The port is below the ephemeral range: while the AP is down, the nodes' reconnects
    # could otherwise take it for their own end.
    rounds, port = 40, free_port_block(1)  # the SIGKILL after round 4 must land mid-run
    endpoint = f"tcp://127.0.0.1:{port}"
    log_path, metrics = tmp_path / "log.sqlite", tmp_path / "metrics.jsonl"
    ap_args = ("ap", "--endpoint", endpoint, "--log", str(log_path), "--metrics", str(metrics),
               "--rounds", str(rounds), "--min-nodes", "3", "--ready-timeout", "1.0",
               "--hash-every", "1", "--linger", "120", "--seed", "5")
    ap = _spawn(*ap_args)
    clients = [ZmqClient(endpoint, heartbeat_s=HB) for _ in range(3)]
    nodes = [EdgeNode(k, EXP, clients[k], QuadraticTrainer(k, compute_delay_s=0.05),
                      BasebandNodePhy(), heartbeat_s=HB) for k in range(3)]
    outs: list[dict] = [{} for _ in nodes]
    threads = [_run_node(n, rounds, o) for n, o in zip(nodes, outs, strict=True)]
    # Execute: SIGKILL the AP after a few rounds, restart it on the same log and port
    assert _wait(lambda: _committed(log_path) >= 4, 30), "AP made no progress"
    ap.send_signal(signal.SIGKILL)
    ap.wait(10)
    at_kill = _committed(log_path)
    time.sleep(0.5)
    ap2 = _spawn(*ap_args)
    try:
        for th in threads:
            th.join(60)
    finally:  # the AP serves (catch-ups) until every node is done, then is stopped
        ap2.send_signal(signal.SIGTERM)
        ap2.wait(30)
    # Assert
    assert at_kill < rounds, "the kill must happen mid-run"
    assert ap2.returncode == 0
    assert all(o.get("result") == rounds for o in outs), outs
    rl = RoundLog.open(log_path, EXP)
    recs = rl.records(0)
    rl.close()
    assert [r.t for r in recs] == list(range(rounds))
    assert [r.seed for r in recs] == [round_seed(5, t) for t in range(rounds)]
    ref = replay_hash(recs)
    assert {n.trainer.model_hash() for n in nodes} == {ref} == {recs[-1].model_hash}
    assert all(len(n.trainer.applied) == rounds for n in nodes), "an update applied twice"
    logged = [json.loads(x)["round"] for x in metrics.read_text().splitlines()]
    assert logged == list(range(1, rounds + 1)), "metrics show a lost or repeated round"
    for c in clients:
        c.close()


def test_orchestrator_killed_node_round_completes_and_node_catches_up(tmp_path: Path) -> None:
    # Prepare: AP + 2 nodes in threads; node 2 is a process that computes for 1 s a round.
    # Margins: its READY comes 1 s into a 3 s deadline; it is silent at most 2 s (a heartbeat
    # period plus the compute) against the 3 s after which the AP drops it; the kill lands
    # about 0.15 s into its round-2 compute, well before its READY.
    rounds, hb = 8, 1.0
    server = ZmqServer("tcp://127.0.0.1:*", heartbeat_s=hb)
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    settings = ApSettings(EXP, 3, rounds, QuadraticTrainer(0).manifest_digest(), 0.05,
                          ready_timeout_s=3.0, heartbeat_s=hb, min_nodes=3, hash_every=2)
    orch = Orchestrator(settings, server, rl, ConstantPlanner(), IdealApPhy(),
                        replica=QuadraticTrainer(0))
    ap_out: dict = {}

    def ap_target() -> None:
        ap_out["result"] = orch.run(linger_s=120)  # serves until stopped below

    ap_th = threading.Thread(target=ap_target, daemon=True)
    ap_th.start()
    victim = _spawn("node", "--endpoint", server.endpoint, "--node-id", "2", "--delay", "1.0",
                    "--until", str(rounds), hb=hb)
    clients = [ZmqClient(server.endpoint, heartbeat_s=hb) for _ in range(2)]
    nodes = [EdgeNode(k, EXP, clients[k], QuadraticTrainer(k), BasebandNodePhy(), heartbeat_s=hb)
             for k in range(2)]
    outs: list[dict] = [{}, {}]
    threads = [_run_node(n, rounds, o) for n, o in zip(nodes, outs, strict=True)]
    reborn = None
    try:
        # Execute: kill node 2 while it computes the scalar of round 2 (after 2 full rounds)
        assert _wait(lambda: rl.next_round >= 2, 60)
        time.sleep(0.1)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        assert _wait(lambda: rl.next_round >= 5, 60)
        reborn = _spawn("node", "--endpoint", server.endpoint, "--node-id", "2",
                        "--until", str(rounds), hb=hb)
        out, _ = reborn.communicate(timeout=60)
        for th in threads:
            th.join(30)
    finally:
        orch.stop()
        ap_th.join(30)
        for p in (victim, reborn):
            if p is not None and p.poll() is None:
                p.kill()
    # Assert
    assert ap_out.get("result") == rounds
    recs = rl.records(0)
    assert [r.t for r in recs] == list(range(rounds))
    assert 2 in recs[0].active and 2 in recs[1].active
    assert 2 not in recs[2].active and {0, 1} <= set(recs[2].active)
    result = json.loads(out.strip().splitlines()[-1])
    ref = replay_hash(recs)
    assert result == {"node": 2, "next_round": rounds, "model_hash": ref}
    assert nodes[0].trainer.model_hash() == nodes[1].trainer.model_hash() == ref
    for c in clients:
        c.close()
    server.close()
    rl.close()
