"""ZeroMQ transport: fuzzed malformed traffic, CurveZMQ enrollment, real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import zmq
import zmq.auth

from access_point.orchestrator import ApSettings, Orchestrator
from access_point.roundlog import RoundLog
from edge_node.runtime import EdgeNode, JoinRejected
from pairzero.config import config_from_dict
from pairzero.metrics import MemoryMetrics
from pairzero.phy.baseband import BasebandApPhy, BasebandNodePhy
from pairzero.protocol.keys import cmd_keys, load_client_keys, load_server_keys
from pairzero.protocol.messages import (
    MAX_MESSAGE_BYTES,
    Body,
    CatchupRequest,
    CatchupResponse,
    Heartbeat,
    Join,
    JoinAck,
    JoinReject,
    Leave,
    Ready,
    Round,
    RoundRecord,
    Update,
    decode,
    encode,
    make,
)
from pairzero.protocol.testing import (
    ConstantPlanner,
    IdealApPhy,
    QuadraticTrainer,
    replay_hash,
)
from pairzero.protocol.transport import CurveClientKeys, ZmqClient, ZmqServer

EXP = "exp-zmq"
HB = 0.5  # peers drop each other after 3 silent heartbeats: 1.5 s, ample on a loaded CI
N_FUZZ = 1200


def _fuzz_messages(rng: random.Random, n: int) -> list[bytes]:
    """Malformed messages of many kinds; none of them is a valid message from a member."""
    valid = encode(make(EXP, 0, Ready(0, 0, True, 0.5)))
    out: list[bytes] = []
    for i in range(n):
        kind = i % 8
        if kind == 4 and i % 80 != 4:
            kind = 0  # keep the 1-MiB messages few (10 per 800): they cost transfer time
        if kind == 0:  # random bytes
            out.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))))
        elif kind == 1:  # truncated JSON
            out.append(valid[: rng.randint(0, len(valid) - 1)])
        elif kind == 2:  # wrong field types
            obj = json.loads(valid)
            key = rng.choice(["t", "node", "scalar_ready", "digital_scalar"])
            obj["body"][key] = rng.choice(["x", [1], {"a": 1}, True, None, 1.5])
            out.append(json.dumps(obj).encode())
        elif kind == 3:  # NaN / Infinity / overflow
            tok = rng.choice(["NaN", "Infinity", "-Infinity", "1e999"])
            out.append(valid.replace(b"0.5", tok.encode()))
        elif kind == 4:  # just over the size limit (still below the socket's MAXMSGSIZE)
            out.append(b" " * (MAX_MESSAGE_BYTES + rng.randint(1, 900)))
        elif kind == 5:  # wrong version / experiment / type
            obj = json.loads(valid)
            obj[rng.choice(["v", "exp", "type"])] = rng.choice([2, "other", "BOGUS"])
            out.append(json.dumps(obj).encode())
        elif kind == 6:  # a well-formed READY impersonating node 0 from a non-member peer
            out.append(valid)
        else:  # deep nesting
            d = rng.randint(1500, 5000)  # beyond the parser's recursion limit
            out.append(b"[" * d + b"]" * d)
    return out


def _thread(fn, *args, **kw):
    out: dict = {}

    def target() -> None:
        try:
            out["result"] = fn(*args, **kw)
        except BaseException as e:
            out["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, out


def _wait(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_protocol_fuzz_leaves_ap_and_node_running(tmp_path: Path) -> None:
    # Prepare: real AP + one node over TCP on a free loopback port
    rounds = 4
    server = ZmqServer("tcp://127.0.0.1:*", heartbeat_s=HB)
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    settings = ApSettings(EXP, 1, rounds, QuadraticTrainer(0).manifest_digest(), 0.05,
                          ready_timeout_s=10.0, heartbeat_s=HB, min_nodes=1, hash_every=1)
    orch = Orchestrator(settings, server, rl, ConstantPlanner(), IdealApPhy(),
                        replica=QuadraticTrainer(0))
    fuzzer_ctx = zmq.Context()
    fuzzer = fuzzer_ctx.socket(zmq.DEALER)
    fuzzer.setsockopt(zmq.LINGER, 0)
    fuzzer.setsockopt(zmq.SNDHWM, 100000)
    fuzzer.connect(server.endpoint)
    msgs = _fuzz_messages(random.Random(1234), N_FUZZ)
    # Execute: the fuzz burst arrives before and while the node joins
    for m in msgs:
        fuzzer.send(m)
    for _ in range(5):  # multipart messages (wrong frame count)
        fuzzer.send_multipart([b"a", b"b"])
    # The AP lingers after its last round until the test stops it: ROUTER fair-queues the
    # node's pipe against the fuzzer's, so the node can finish all rounds while part of the
    # burst is still queued, and an AP that left then would never count it.
    ap_th, ap_out = _thread(orch.run, linger_s=120)
    client = ZmqClient(server.endpoint, heartbeat_s=HB)
    node = EdgeNode(0, EXP, client, QuadraticTrainer(0), BasebandNodePhy(), heartbeat_s=HB)
    n_th, n_out = _thread(node.run, until_round=rounds)
    try:
        decoded_all = _wait(lambda: orch.dropped >= N_FUZZ, 60)
        for _ in range(3):  # far over MAXMSGSIZE: libzmq cuts the fuzzer's connection
            fuzzer.send(b"x" * (4 * MAX_MESSAGE_BYTES))
        n_th.join(60)
        ap_alive = ap_th.is_alive()  # still serving after the fuzz and all rounds
        orch.stop()
        ap_th.join(30)
    finally:
        # Stop the threads before closing their sockets, whatever happened: a context
        # garbage-collected while a thread still polls its socket blocks the interpreter.
        node.stop()
        orch.stop()
        n_th.join(10)
        ap_th.join(10)
        fuzzer_ctx.destroy(linger=0)
        client.close()
        server.close()
    # Assert
    assert decoded_all, f"only {orch.dropped} of {N_FUZZ} malformed messages were dropped"
    assert ap_alive, ap_out
    assert ap_out.get("result") == rounds, ap_out
    assert n_out.get("result") == rounds, n_out
    recs = rl.records(0)
    rl.close()
    assert [r.active for r in recs] == [(0,)] * rounds
    assert node.trainer.model_hash() == replay_hash(recs)


def test_protocol_fuzz_node_survives_and_completes_a_round() -> None:
    # Prepare: a scripted AP (ROUTER) that the node connects to
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.SNDHWM, 100000)  # a ROUTER drops (not blocks) beyond its HWM
    port = router.bind_to_random_port("tcp://127.0.0.1")
    client = ZmqClient(f"tcp://127.0.0.1:{port}", heartbeat_s=HB)
    node = EdgeNode(0, EXP, client, QuadraticTrainer(0), BasebandNodePhy(), heartbeat_s=5.0)
    n_th, n_out = _thread(node.run, until_round=1)
    seed = 4242
    try:
        assert router.poll(30000)
        peer, first = router.recv_multipart()
        assert decode(first, EXP).type == "JOIN"
        router.send_multipart([peer, encode(make(EXP, 0, JoinAck(0, 0, 1)))])
        # Execute: fuzz the node, then run one real round
        for m in _fuzz_messages(random.Random(99), N_FUZZ):
            router.send_multipart([peer, m])
        router.send_multipart([peer, encode(make(EXP, 0, Round(0, seed, 1.0, 0.1)))])
        ready = None
        end = time.monotonic() + 20
        while ready is None and time.monotonic() < end:
            if router.poll(200):
                _, data = router.recv_multipart()
                msg = decode(data, EXP)
                if isinstance(msg.body, Ready):
                    ready = msg.body
        assert ready is not None and ready.t == 0
        router.send_multipart([peer, encode(make(EXP, 0, Update(0, seed, 0.5, 0.1, (0,), None)))])
        n_th.join(10)
    finally:  # no thread may still poll a socket when its context goes
        node.stop()
        n_th.join(10)
        client.close()
        ctx.destroy(linger=0)
    # Assert: the node dropped the fuzz (minus the one valid READY kind, also dropped) and
    # applied exactly the one real update
    assert n_out.get("result") == 1, n_out
    assert node.dropped >= N_FUZZ
    ref = QuadraticTrainer(0)
    ref.apply_update(seed, 0.5, 0.1)
    assert node.trainer.model_hash() == ref.model_hash()


def test_protocol_curve_refuses_unenrolled_and_key_mismatch(tmp_path: Path) -> None:
    # Prepare: `pairzero keys` for 2 nodes; an outsider with a fresh key pair
    keys = tmp_path / "keys"

    class Args:
        out = str(keys)
        nodes = 2

    assert cmd_keys(Args()) == 0
    assert cmd_keys(Args()) == 2  # refuses to overwrite enrolled keys
    server_keys, ids = load_server_keys(keys)
    server = ZmqServer("tcp://127.0.0.1:*", curve=server_keys, heartbeat_s=HB)
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    settings = ApSettings(EXP, 1, 2, QuadraticTrainer(0).manifest_digest(), 0.05,
                          ready_timeout_s=10.0, heartbeat_s=HB, min_nodes=1)
    orch = Orchestrator(settings, server, rl, ConstantPlanner(), IdealApPhy(), key_ids=ids)
    out_pub, out_sec = zmq.auth.create_certificates(str(tmp_path), "outsider")
    opub, osec = zmq.auth.load_certificate(out_sec)
    outsider_keys = CurveClientKeys(opub, osec, server_keys.public)
    # Execute
    outsider = ZmqClient(server.endpoint, curve=outsider_keys, heartbeat_s=HB)
    intruder = EdgeNode(0, EXP, outsider, QuadraticTrainer(0), BasebandNodePhy(), heartbeat_s=HB,
                        key_id=opub.decode())
    plain = ZmqClient(server.endpoint, heartbeat_s=HB)  # no CurveZMQ at all
    plain_node = EdgeNode(0, EXP, plain, QuadraticTrainer(0), BasebandNodePhy(), heartbeat_s=HB)
    k1 = load_client_keys(keys, 1)
    thief = ZmqClient(server.endpoint, curve=k1, heartbeat_s=HB)  # node 1's key claiming id 0
    thief_node = EdgeNode(0, EXP, thief, QuadraticTrainer(0), BasebandNodePhy(), heartbeat_s=HB,
                          key_id=k1.public.decode())
    ap_th, ap_out = _thread(orch.run, linger_s=0.2)
    i_th, i_out = _thread(intruder.run, until_round=2)
    p_th, p_out = _thread(plain_node.run, until_round=2)
    t_th, t_out = _thread(thief_node.run, until_round=2)
    t_th.join(30)
    time.sleep(1.0)
    members_before = orch.members
    k0 = load_client_keys(keys, 0)
    good_tx = ZmqClient(server.endpoint, curve=k0, heartbeat_s=HB)
    good = EdgeNode(0, EXP, good_tx, QuadraticTrainer(0), BasebandNodePhy(), heartbeat_s=HB,
                    key_id=k0.public.decode())
    g_th, g_out = _thread(good.run, until_round=2)
    g_th.join(20)
    ap_th.join(20)
    intruder.stop()
    plain_node.stop()
    i_th.join(5)
    p_th.join(5)
    # Assert
    assert members_before == [], "no unenrolled or mismatched client may join"
    assert isinstance(t_out.get("error"), JoinRejected)
    assert "enrolled for node 1" in str(t_out["error"])
    assert not intruder.joined and not plain_node.joined
    assert intruder.next_round == 0 and plain_node.next_round == 0
    assert g_out.get("result") == 2, g_out
    assert [r.active for r in rl.records(0)] == [(0,), (0,)]
    for c in (outsider, plain, thief, good_tx):
        c.close()
    server.close()
    rl.close()


class _HostileNode:
    """An enrolled node (no CurveZMQ: anyone who reaches the port) that JOINs properly, then
    answers every ROUND with malformed or lying messages, from a raw DEALER socket."""

    def __init__(self, endpoint: str, node: int, manifest: str) -> None:
        self.endpoint, self.node, self.manifest = endpoint, node, manifest
        self.replies: list = []  # bodies the AP sent back
        self.rounds_seen: list[int] = []
        self.sent = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _barrage(self, t: int) -> list[bytes]:
        k = self.node
        m = (lambda body: encode(make(EXP, t, body)))  # noqa: E731
        first = (Ready(t, k, True, None) if t % 2 == 0  # no scalar, in baseband mode
                 else Ready(t, k, True, 1e300))  # far beyond the clip bound
        msgs: list[bytes] = [m(first)]
        bodies: list[Body] = [
            Ready(t, k, True, 0.5),  # a repeat after the first
            Ready(t + 1000, k, True, 0.5),  # a round far ahead
            Ready(max(t - 1, 0), k, True, 0.5),  # stale round
            Ready(t, 0, True, 0.5),  # impersonates node 0
            Ready(t, 7, True, 0.5),  # node id beyond nodes.count
            Ready(t, k, False, None),  # not ready
            Join(7, self.manifest, "", "", 0),  # enrolled range is 0..1
            Heartbeat(k, 10**18),  # claims rounds never committed
            CatchupRequest(k, 10**18),  # catch-up from beyond the log
            Leave(0, "forged"),  # makes node 0 leave
            Round(t, 1, 1.0, 0.1),  # an AP-to-node message
            Update(t, 1, 1e6, 1.0, tuple(range(60000)), None),  # huge list
            CatchupResponse(k, 0, tuple(RoundRecord(EXP, i, i, 1.0, 1.0, (0,), 1.0, 0.0, None,
                                                    None, 1.0) for i in range(2000)), False, 2000),
        ]
        msgs += [m(b) for b in bodies]
        raw = json.loads(m(Ready(t, k, True, 0.5)))
        for key, bad in (("digital_scalar", "x"), ("node", 10**30), ("t", -1), ("node", None),
                         ("scalar_ready", 1)):
            msgs.append(json.dumps({**raw, "body": {**raw["body"], key: bad}}).encode())
        msgs.append(json.dumps({**raw, "body": {**raw["body"], "extra": [0] * 100000}}).encode())
        return msgs

    def run(self) -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        try:
            sock.send(encode(make(EXP, 0, Join(self.node, self.manifest, "", "", 0))))
            while not self._stop.is_set():
                if not sock.poll(50):
                    continue
                body = decode(sock.recv(), EXP).body
                self.replies.append(body)
                if isinstance(body, Round):
                    self.rounds_seen.append(body.t)
                    for data in self._barrage(body.t):
                        sock.send(data)
                        self.sent += 1
                elif isinstance(body, Heartbeat):
                    sock.send(encode(make(EXP, 0, Heartbeat(self.node, 0))))
        finally:
            ctx.destroy(linger=0)


def test_hostile_joined_node_leaves_the_baseband_ap_serving_and_finishing(tmp_path: Path) -> None:
    # Prepare: a baseband AP (scalars in READY, simulated channel) for 2 enrolled nodes; node 0
    # honest, node 1 joined and hostile; a third peer tries node id 2 (not enrolled), then
    # sends READYs for it (before the fix: IndexError in the baseband receiver, AP dead)
    rounds = 4
    cfg = config_from_dict({"radio": {"mode": "baseband"}, "nodes": {"count": 2},
                            "run": {"rounds": rounds}, "zo": {"clip": 50.0}})
    phy = BasebandApPhy(cfg)
    manifest = QuadraticTrainer(0).manifest_digest()
    server = ZmqServer("tcp://127.0.0.1:*", heartbeat_s=HB)
    rl = RoundLog.open(tmp_path / "log.sqlite", EXP)
    settings = ApSettings(EXP, 1, rounds, manifest, 0.05, ready_timeout_s=20.0, heartbeat_s=HB,
                          min_nodes=2, hash_every=1, node_count=2)
    metrics = MemoryMetrics()
    rows = metrics.rows
    orch = Orchestrator(settings, server, rl, phy, phy, metrics=metrics,
                        replica=QuadraticTrainer(0))
    hostile = _HostileNode(server.endpoint, 1, manifest)
    outsider_ctx = zmq.Context()
    outsider = outsider_ctx.socket(zmq.DEALER)
    outsider.setsockopt(zmq.LINGER, 0)
    outsider.connect(server.endpoint)
    client = ZmqClient(server.endpoint, heartbeat_s=HB)
    node = EdgeNode(0, EXP, client, QuadraticTrainer(0), BasebandNodePhy(), heartbeat_s=HB)
    # Execute
    ap_th, ap_out = _thread(orch.run, linger_s=120)
    h_th, h_out = _thread(hostile.run)
    outsider.send(encode(make(EXP, 0, Join(2, manifest, "", "", 0))))
    assert outsider.poll(20000)
    refusal = decode(outsider.recv(), EXP).body
    t_start = time.monotonic()
    n_th, n_out = _thread(node.run, until_round=rounds)
    try:
        n_th.join(60)
        elapsed = time.monotonic() - t_start
        for t in range(rounds):  # the outsider's READYs for its refused id
            outsider.send(encode(make(EXP, t, Ready(t, 2, True, 0.5))))
        time.sleep(5 * HB)  # the AP serves whatever is still queued
        ap_alive = ap_th.is_alive()
        orch.stop()
        ap_th.join(30)
    finally:
        node.stop()
        orch.stop()
        hostile.stop()
        for th in (n_th, ap_th, h_th):
            th.join(10)
        outsider_ctx.destroy(linger=0)
        client.close()
        server.close()
    # Assert
    assert isinstance(refusal, JoinReject) and "not enrolled" in refusal.reason, refusal
    assert ap_alive and "error" not in ap_out, ap_out
    assert ap_out.get("result") == rounds and n_out.get("result") == rounds, (ap_out, n_out)
    assert "error" not in h_out, h_out
    assert hostile.rounds_seen and hostile.sent >= 20 * len(hostile.rounds_seen)
    recs = rl.records(0)
    rl.close()
    assert [r.active for r in recs] == [(0,)] * rounds, "the hostile node was counted"
    assert node.trainer.model_hash() == replay_hash(recs)
    # Node 1 was out of each round at once (its READY refused), not after the 20 s deadline
    assert all(set(r["left_out"]) == {"1"} for r in rows), rows
    assert elapsed < settings.ready_timeout_s
    assert orch.members == [1] or orch.members == [], "node 0 left cleanly; node 1 stays or expires"
    assert any(isinstance(b, JoinReject) and "not enrolled" in b.reason for b in hostile.replies)
