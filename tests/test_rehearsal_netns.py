"""The rehearsal's network in real namespaces (root only): the relay's interception over the
node's LAN link, the link cut, and a tidy-up that leaves nothing behind, also after Ctrl-C.

The whole rehearsal (both profiles, minutes) runs in ``make rehearsal``, not here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rehearsal.netns import LabNetwork, netns_unavailable_reason

REPO = Path(__file__).resolve().parent.parent

_REASON = netns_unavailable_reason(f"pzt{os.getpid()}")
pytestmark = [pytest.mark.e2e,  # namespaces, processes
              pytest.mark.skipif(_REASON is not None, reason=f"rehearsal: {_REASON}")]

# An echo server that says who connected (run in the AP's namespace).
_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); print("up", flush=True)
while True:
    c, a = s.accept(); data = c.recv(100); c.sendall(data + b" from " + a[0].encode()); c.close()
"""

# A client on a node host: connects to the AP's address and prints the answer (or the error).
_CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    c.sendall(b"hello"); print(c.recv(100).decode())
except OSError as e:
    print("error", type(e).__name__)
"""


def _wait_line(p: subprocess.Popen[str], word: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    assert p.stdout is not None
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if word in line:
            return
        if not line and p.poll() is not None:
            break
    raise AssertionError(f"no {word!r} from {p.args}")


def test_node_reaches_the_ap_through_its_relay_over_its_own_link_and_a_cut_stops_it(tmp_path: Path) -> None:
    # Prepare: the AP and one node, a relay on the node host, an echo server on the AP host
    net = LabNetwork(f"pzt{os.getpid()}", nodes=1)
    procs: list[subprocess.Popen[str]] = []
    try:
        net.create()
        ap = str(net.hosts["ap"].lan)
        node_lan = str(net.hosts["node0"].lan)
        net.intercept("node0", ap)
        net.shape("node0", "20mbit")
        srv = subprocess.Popen(net.exec_argv("ap", [sys.executable, "-c", _SERVER, ap, "5550"]),
                               stdout=subprocess.PIPE, text=True)
        procs.append(srv)
        _wait_line(srv, "up")
        relay = subprocess.Popen(net.exec_argv("node0", [
            sys.executable, "-m", "rehearsal.relay", "--listen", f"{ap}:5550", "--upstream", f"{ap}:5550",
            "--profile", "campus", "--mark", "0x21", "--stats", str(tmp_path / "relay.json")]),
            stdout=subprocess.PIPE, text=True, cwd=REPO)
        procs.append(relay)
        _wait_line(relay, "relay: listening")

        def client(timeout_s: float = 5.0) -> str:
            return subprocess.run(net.exec_argv("node0", [sys.executable, "-c", _CLIENT, ap, "5550",
                                                          str(timeout_s)]),
                                  capture_output=True, text=True, timeout=60).stdout.strip()

        # Execute / Assert: the AP sees the node's own LAN address (the relay's upstream went
        # out of the node's link), and the relay counted the connection
        assert client() == f"hello from {node_lan}"
        # the cable pulled at the switch: the relay's upstream connection cannot be made
        net.cut("node0")
        assert client(timeout_s=2.0) in ("error TimeoutError", "")
        net.restore("node0")
        deadline = time.monotonic() + 20
        answer = ""
        while time.monotonic() < deadline and answer != f"hello from {node_lan}":
            answer = client()
        assert answer == f"hello from {node_lan}"
        relay.send_signal(signal.SIGTERM)
        relay.wait(10)
        stats = json.loads((tmp_path / "relay.json").read_text())
        assert stats["connections"] >= 3 and stats["chunks_up"] >= 2
    finally:
        for p in procs:
            p.kill()
            p.wait()
        net.destroy()
    # Assert: nothing of this network is left
    assert net.leftovers() == []
    assert not any(n.startswith(net.prefix + "-") for n in
                   subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())


def _our_processes(marker: str) -> list[str]:
    """Processes whose command line mentions ``marker`` (the rehearsal's output directory)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(d / "cwd")
        except OSError:
            continue
        if marker in cmd or cwd.startswith(marker):
            found.append(f"{d.name}: {cmd[:120]} (cwd {cwd})")
    return found


def test_ctrl_c_during_the_rehearsal_removes_everything_it_made(tmp_path: Path) -> None:
    # Prepare: the rehearsal, left to run until its hosts' processes are up
    out = tmp_path / "rehearsal"
    p = subprocess.Popen([sys.executable, "-m", "rehearsal", "--profiles", "lan", "--out", str(out)],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    prefix = f"pzr{p.pid}-"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and p.poll() is None:
            logs = list((out / "lan").glob("node*/terminal/*-edge.log"))
            if logs:  # the air, the relays and the first edge processes are running
                break
            time.sleep(0.2)
        assert p.poll() is None, p.communicate()[0]
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert prefix + "ap" in listed
        assert _our_processes(str(out))
        # Execute: Ctrl-C
        p.send_signal(signal.SIGINT)
        text, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # Assert: interrupted, and no namespace or process of it is left
    assert p.returncode == 130, text
    assert "interrupted" in text
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in listed, listed
    assert _our_processes(str(out)) == []
