"""The rehearsal's parts that need no namespaces: the delaying relay over real TCP on
127.0.0.1, the scp stand-in, the network profiles and the figures read from a run's files."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path

import pytest

from rehearsal import summary
from rehearsal.profiles import PROFILES, NetworkProfile
from rehearsal.relay import Relay
from rehearsal.scp import ScpError, copy
from rehearsal.scp import main as scp_main

# ---------------------------------------------------------------------------------- relay


async def _echo_through(profile: NetworkProfile, messages: list[bytes], gap_s: float = 0.0):
    """Send ``messages`` through a relay to an echo server; return (replies, per-message round
    trip s, relay stats)."""
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = Relay(("127.0.0.1", 0), ("127.0.0.1", port), profile, seed=3)
    await relay.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    got, rtts = [], []
    for m in messages:
        t0 = time.monotonic()
        writer.write(m)
        await writer.drain()
        data = await asyncio.wait_for(reader.readexactly(len(m)), 10)
        rtts.append(time.monotonic() - t0)
        got.append(data)
        if gap_s:
            await asyncio.sleep(gap_s)
    writer.close()
    await relay.close()
    server.close()
    await server.wait_closed()
    return got, rtts, relay.stats


def test_relay_delays_each_way_and_keeps_the_bytes() -> None:
    # Prepare: 40 ms one way, no jitter, no loss
    prof = NetworkProfile("t", delay_s=0.04)
    msgs = [os.urandom(n) for n in (1, 100, 5000, 70000)]
    # Execute
    got, rtts, stats = asyncio.run(_echo_through(prof, msgs))
    # Assert: byte-exact, and every round trip crossed the relay twice (>= 80 ms)
    assert got == msgs
    assert min(rtts) >= 0.08
    assert stats.connections == 1 and stats.lost == 0 and stats.chunks_up >= 4


def test_relay_without_delay_is_fast() -> None:
    # The same path at 0.2 ms (the LAN profile): the relay itself adds little
    got, rtts, _ = asyncio.run(_echo_through(PROFILES["lan"], [b"x" * 100] * 20))
    assert sorted(rtts)[10] < 0.05


def test_relay_holds_a_lost_chunk_for_the_rto_and_keeps_order() -> None:
    # Prepare: every chunk "lost": each waits the RTO on top of the delay, in order
    prof = NetworkProfile("t", delay_s=0.001, loss=0.999, rto_s=0.15)
    msgs = [bytes([i]) * 10 for i in range(5)]
    # Execute
    got, rtts, stats = asyncio.run(_echo_through(prof, msgs))
    # Assert
    assert got == msgs
    assert min(rtts) >= 0.3  # two held chunks per round trip
    assert stats.lost >= 8


def test_relay_a_chunk_never_overtakes_the_one_before() -> None:
    # Prepare: large jitter; the sender does not wait for replies
    prof = NetworkProfile("t", delay_s=0.0, jitter_s=0.05)

    async def run() -> bytes:
        async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            data = await r.read(-1)
            w.write(data)
            await w.drain()
            w.close()

        server = await asyncio.start_server(sink, "127.0.0.1", 0)
        relay = Relay(("127.0.0.1", 0), ("127.0.0.1", server.sockets[0].getsockname()[1]), prof, seed=5)
        await relay.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        for i in range(50):
            writer.write(f"{i:03d},".encode())
            await writer.drain()
            await asyncio.sleep(0.002)  # separate chunks
        writer.write_eof()
        out = await asyncio.wait_for(reader.read(-1), 10)
        await relay.close()
        server.close()
        return out

    # Execute / Assert
    assert asyncio.run(run()).decode() == "".join(f"{i:03d}," for i in range(50))


def test_relay_closes_the_client_when_the_upstream_refuses() -> None:
    # Prepare: nothing listens upstream (the AP not started yet)
    async def run() -> tuple[bytes, int]:
        relay = Relay(("127.0.0.1", 0), ("127.0.0.1", 1), PROFILES["lan"])
        await relay.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        data = await asyncio.wait_for(reader.read(), 5)  # EOF: the client retries, as on a refusal
        writer.close()
        await relay.close()
        return data, relay.stats.upstream_failures

    # Execute / Assert
    assert asyncio.run(run()) == (b"", 1)


def test_profiles_model_what_they_say() -> None:
    rng = random.Random(1)
    campus = PROFILES["campus"]
    draws = [campus.chunk_delay(rng) for _ in range(20000)]
    delays = [d for d, lost in draws if not lost]
    assert min(delays) >= 0.005 and max(delays) <= 0.020
    held = sum(lost for _, lost in draws) / len(draws)
    assert 0.003 < held < 0.007
    assert all(d >= 0.2 for d, lost in draws if lost)
    assert PROFILES["lan"].chunk_delay(rng) == (0.0002, False)
    with pytest.raises(ValueError, match="loss"):
        NetworkProfile("x", delay_s=0.0, loss=1.0)


# ---------------------------------------------------------------------------------- scp


def test_scp_stand_in_copies_into_the_host_home_as_scp_would(tmp_path: Path, monkeypatch) -> None:
    # Prepare: two hosts' homes; a secret key on the AP host
    homes = tmp_path / "homes"
    (homes / "ap" / "pairzero" / "keys").mkdir(parents=True)
    (homes / "node0" / "pairzero").mkdir(parents=True)
    monkeypatch.chdir(homes / "ap" / "pairzero")
    Path("keys/node0.key_secret").write_text("secret")
    os.chmod("keys/node0.key_secret", 0o600)
    Path("lab.yaml").write_text("run: {}\n")
    # Execute / Assert: into an existing directory, mode kept
    copy(["lab.yaml"], "node0:pairzero/", homes)
    assert (homes / "node0" / "pairzero" / "lab.yaml").read_text() == "run: {}\n"
    # a missing destination directory is an error, as with scp
    with pytest.raises(ScpError, match="No such file or directory"):
        copy(["keys/node0.key_secret"], "node0:pairzero/keys/", homes)
    (homes / "node0" / "pairzero" / "keys").mkdir()
    copy(["keys/node0.key_secret"], "node0:pairzero/keys/", homes)
    out = homes / "node0" / "pairzero" / "keys" / "node0.key_secret"
    assert out.read_text() == "secret" and out.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ScpError, match="Could not resolve hostname node7"):
        copy(["lab.yaml"], "node7:pairzero/", homes)
    with pytest.raises(ScpError, match="missing.yaml: No such file"):
        copy(["missing.yaml"], "node0:pairzero/", homes)
    # the command: status 1 with scp's words, 0 on success
    monkeypatch.setenv("PAIRZERO_REHEARSAL_HOMES", str(homes))
    assert scp_main(["lab.yaml", "node0:pairzero/renamed.yaml"]) == 0
    assert (homes / "node0" / "pairzero" / "renamed.yaml").is_file()
    assert scp_main(["lab.yaml", "node0:nowhere/"]) == 1


# ---------------------------------------------------------------------------------- summary


def _rows(spec: list[tuple[int, list[int], float]]) -> list[dict]:
    return [{"round": r, "active": a, "time": t} for r, a, t in spec]


def test_cut_effect_counts_the_rounds_without_the_node_until_it_is_back() -> None:
    # Prepare: cut at t = 10.05; round 11 still had node 1's frame; 12..14 without it (12 the
    # long one: the AP waited), back in 15
    rows = _rows([(9, [0, 1], 9.9), (10, [0, 1], 10.0), (11, [0, 1], 10.1), (12, [0], 16.5),
                  (13, [0], 16.6), (14, [0], 16.7), (15, [0, 1], 16.8), (16, [0], 16.9)])
    # Execute
    eff = summary.cut_effect(rows, 1, 10.05)
    # Assert
    assert (eff.lost_rounds, eff.back_round) == (3, 15)
    assert eff.longest_round_s == pytest.approx(6.4)
    # a node that never left, and one that never came back
    assert summary.cut_effect(_rows([(1, [0, 1], 1.0), (2, [0, 1], 2.0)]), 1, 0.5).lost_rounds == 0
    never = summary.cut_effect(_rows([(1, [0, 1], 1.0), (2, [0], 2.0), (3, [0], 3.0)]), 1, 1.5)
    assert (never.lost_rounds, never.back_round) == (2, None)


def test_round_periods_from_commit_times_skip_gaps_in_the_rows() -> None:
    rows = summary.round_rows(json.dumps(r) for r in [
        {"round": 0, "val_accuracy": 0.5, "elapsed_s": 0.0},  # the round-0 evaluation row
        {"round": 2, "active": [0], "time": 10.3}, {"round": 1, "active": [0], "time": 10.1},
        {"round": 3, "active": [0], "time": 10.6}, {"round": 5, "active": [0], "time": 11.0}])
    assert [r["round"] for r in rows] == [1, 2, 3, 5]
    assert summary.round_periods(rows) == pytest.approx([0.2, 0.3])
    assert summary.median([0.2, 0.3, 0.1]) == 0.2


def test_ap_log_counts_and_node_hash_lines() -> None:
    log = "\n".join([
        "12:00:01 WARNING access_point.orchestrator: node 1 reports its frame of round 11: late_burst (x)",
        "12:00:01 WARNING access_point.orchestrator: node 0 reports its frame of round 12: late_schedule (x)",
        "12:00:01 WARNING access_point.orchestrator: node 0 reports its frame of round 13: lo_unlocked (x)",
        "12:00:02 WARNING pairzero.phy.round: round 12: 2 node(s) reported a late frame: lead raised by 10 ms",
        "12:00:03 WARNING access_point.orchestrator: round 21: no READY from nodes [1] before the deadline",
        "12:00:04 WARNING pairzero.phy.round: round 30: frame at sample 123 not received (timeout): the round",
    ])
    c = summary.count_ap_log(log)
    assert (c.late_frames, c.ready_timeouts, c.window_timeouts, c.lead_raised) == (2, 1, 1, 1)
    node = ("x INFO edge_node.main: node 1: stopped at round 19 (3 rounds participated), model aaaa\n"
            "x INFO edge_node.main: node 1: stopped at round 200 (190 rounds participated), model 0123abcd\n")
    assert summary.node_final_hash(node, 1) == (200, "0123abcd")
    assert summary.node_final_hash(node, 0) is None
