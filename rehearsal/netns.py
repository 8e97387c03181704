"""The rehearsal's network: one Linux network namespace per host, two bridges, nothing else.

```
              switch namespace (<prefix>-sw)
   bridge lan (10.213.1.0/24, control plane)     bridge rf (10.213.2.0/24, the radios' RF)
     |  p-ap   |  p-node0  |  p-node1 ...           |  r-air  |  r-ap  |  r-node0 ...
   ap .1     node0 .10   node1 .11               air .1    ap .2    node0 .10 ...
```

* Every host is a namespace ``<prefix>-<host>`` with ``lan`` (not the air) and ``rf`` links to
  the bridges of the switch namespace; the addresses exist only inside these namespaces.
* The radios' sample streams (ZeroMQ to ``pairzero channel`` on ``air``) use ``rf``: a radio's
  RF, not the lab's LAN, so the network profiles and the link cut leave them alone.
* Interception (:meth:`LabNetwork.intercept`): on a node host the AP's address is also put on
  the loopback, so the node's connections to it land on the host's relay
  (:mod:`rehearsal.relay`); the relay's own sockets carry a firewall mark whose routing rule
  (tried before the local table) sends them out of ``lan`` to the real AP. ``accept_local``
  lets the AP's answers (from an address that is local here too) in, ``arp_ignore`` keeps the
  node from answering ARP for the AP's address.
* Rate: ``tbf`` on the node's ``lan`` (to the AP) and on its switch port (from the AP).
* Link cut: the node's switch port down (the cable pulled at the switch), then up again.

Everything made is recorded and :meth:`LabNetwork.destroy` removes exactly that (the processes
still inside those namespaces first); names carry a per-run prefix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass

__all__ = ["LabNetwork", "HostAddress", "NetnsUnavailable", "netns_unavailable_reason",
           "LAN_PREFIX", "RF_PREFIX", "RELAY_MARK"]

log = logging.getLogger(__name__)

#: The private test subnets (/24), which exist only inside the rehearsal's namespaces.
LAN_PREFIX = "10.213.1"
RF_PREFIX = "10.213.2"
#: Firewall mark of the relay's upstream sockets, and the routing table that mark selects.
RELAY_MARK = 0x21
_RELAY_TABLE = 100


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no ``ip``, no permission)."""


@dataclass(frozen=True)
class HostAddress:
    """A host's namespace and addresses (``lan`` is None for the air)."""

    name: str
    netns: str
    lan: str | None
    rf: str


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip() or res.returncode}")
    return res


def netns_unavailable_reason(prefix: str) -> str | None:
    """Why namespaces cannot be made here (None: they can): tries to make and remove one."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    try:
        probe = _ip("netns", "add", f"{prefix}-probe", check=False)
    except FileNotFoundError:
        return "no `ip` (iproute2) on this machine"
    if probe.returncode != 0:
        return f"`ip netns add` failed: {probe.stderr.strip()}"
    _ip("netns", "del", f"{prefix}-probe", check=False)
    return None


class LabNetwork:
    """The namespaces and links of one rehearsal (``nodes`` node hosts, the AP, the air)."""

    def __init__(self, prefix: str, nodes: int) -> None:
        if not 1 <= nodes <= 200:
            raise ValueError(f"nodes: {nodes!r} must be in 1..200")
        self.prefix = prefix
        self.switch = f"{prefix}-sw"
        self.hosts: dict[str, HostAddress] = {
            "air": HostAddress("air", f"{prefix}-air", None, f"{RF_PREFIX}.1"),
            "ap": HostAddress("ap", f"{prefix}-ap", f"{LAN_PREFIX}.1", f"{RF_PREFIX}.2"),
        }
        for k in range(nodes):
            self.hosts[f"node{k}"] = HostAddress(f"node{k}", f"{prefix}-node{k}",
                                                 f"{LAN_PREFIX}.{10 + k}", f"{RF_PREFIX}.{10 + k}")
        self.created: list[str] = []  # namespaces made, in order

    # ------------------------------------------------------------------ build / tear down

    def create(self) -> None:
        """Make the namespaces, bridges, links and addresses (torn down again on failure)."""
        try:
            self._add_netns(self.switch)
            for br in ("lan", "rf"):
                _ip("-n", self.switch, "link", "add", br, "type", "bridge")
                _ip("-n", self.switch, "link", "set", br, "up")
            for h in self.hosts.values():
                self._add_netns(h.netns)
                _ip("-n", h.netns, "link", "set", "lo", "up")
                links = [("rf", f"r-{h.name}", h.rf)]
                if h.lan is not None:
                    links.append(("lan", f"p-{h.name}", h.lan))
                for br, port, addr in links:
                    _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", br,
                        "netns", h.netns)
                    _ip("-n", self.switch, "link", "set", port, "master", br, "up")
                    _ip("-n", h.netns, "addr", "add", f"{addr}/24", "dev", br)
                    _ip("-n", h.netns, "link", "set", br, "up")
        except BaseException:
            self.destroy()
            raise

    def _add_netns(self, name: str) -> None:
        res = _ip("netns", "add", name, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"ip netns add {name}: {res.stderr.strip()} (a namespace of that "
                               "name exists: a stale rehearsal? remove it with `ip netns del`)")
        self.created.append(name)

    def destroy(self) -> None:
        """Remove what :meth:`create` made: end the processes still inside those namespaces
        (TERM, then KILL after 5 s), then delete the namespaces (their links go with them)."""
        pids = set()
        for ns in self.created:
            res = _ip("netns", "pids", ns, check=False)
            pids |= {int(p) for p in res.stdout.split() if p.isdigit()}
        _signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while pids and time.monotonic() < deadline:
            pids = {p for p in pids if _alive(p)}
            time.sleep(0.1)
        _signal_all(pids, signal.SIGKILL)
        for ns in reversed(self.created):
            res = _ip("netns", "del", ns, check=False)
            if res.returncode != 0:
                log.warning("ip netns del %s: %s", ns, res.stderr.strip())
        self.created.clear()

    def leftovers(self) -> list[str]:
        """This run's namespaces that exist now (after :meth:`destroy`: none)."""
        res = _ip("netns", "list", check=False)
        names = {line.split()[0] for line in res.stdout.splitlines() if line.strip()}
        return sorted(n for n in names if n.startswith(self.prefix + "-"))

    # ------------------------------------------------------------------ use

    def exec_argv(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.hosts[host].netns, *argv]

    def intercept(self, node: str, ap_address: str) -> None:
        """On ``node``'s host, connections to ``ap_address`` land on the local relay; the
        relay's marked sockets reach the real AP over the node's LAN link."""
        ns, h = self.hosts[node].netns, self.hosts[node]
        _ip("-n", ns, "addr", "add", f"{ap_address}/32", "dev", "lo")
        _ip("-n", ns, "route", "add", f"{ap_address}/32", "dev", "lan", "src", str(h.lan),
            "table", str(_RELAY_TABLE))
        _ip("-n", ns, "rule", "add", "pref", "100", "fwmark", hex(RELAY_MARK), "lookup", str(_RELAY_TABLE))
        _ip("-n", ns, "rule", "add", "pref", "200", "lookup", "local")
        _ip("-n", ns, "rule", "del", "pref", "0")
        for key, value in (("net.ipv4.conf.all.rp_filter", "0"), ("net.ipv4.conf.lan.rp_filter", "0"),
                           ("net.ipv4.conf.lan.accept_local", "1"), ("net.ipv4.conf.all.arp_ignore", "1")):
            subprocess.run(self.exec_argv(node, ["sysctl", "-qw", f"{key}={value}"]), check=True,
                           capture_output=True, timeout=30)

    def shape(self, node: str, rate: str | None) -> None:
        """``tbf`` at ``rate`` on ``node``'s LAN link, both directions (None: remove it)."""
        ends = [(self.hosts[node].netns, "lan"), (self.switch, f"p-{node}")]
        for ns, dev in ends:
            _ip("-n", ns, "link", "show", dev)  # the link must exist
            subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], capture_output=True,
                           timeout=30)
            if rate is not None:
                subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                                "burst", "32kbit", "latency", "100ms"], check=True, capture_output=True,
                               timeout=30)

    def cut(self, node: str) -> None:
        """Pull ``node``'s LAN cable at the switch."""
        _ip("-n", self.switch, "link", "set", f"p-{node}", "down")

    def restore(self, node: str) -> None:
        """Plug it back in."""
        _ip("-n", self.switch, "link", "set", f"p-{node}", "up")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_all(pids: set[int], sig: int) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)
