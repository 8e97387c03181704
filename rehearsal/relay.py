"""The rehearsal's control-plane relay: a TCP relay that delays, and holds "lost" chunks.

One relay runs on each node host (in its network namespace). The node's processes connect to
the AP's address as the lab's config says; on the node host that address answers locally
(:mod:`rehearsal.netns` puts it on the host's loopback), so the connection lands here. The relay
opens its own connection to the AP over the node's LAN link (its socket carries a firewall mark
that routes it past the local address) and copies bytes both ways, each chunk delayed as the
:class:`~rehearsal.profiles.NetworkProfile` says, in order. A cut link therefore stalls the
relay's upstream connection like any TCP connection over a dead link.

Run: ``python -m rehearsal.relay --listen 10.213.1.1:5550 --upstream 10.213.1.1:5550 --mark 33
--profile campus --seed 1 --stats relay.json``; it prints one line when it listens and writes
its counts to ``--stats`` when it stops (SIGTERM / SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rehearsal.profiles import PROFILES, NetworkProfile

__all__ = ["Relay", "RelayStats", "main"]

log = logging.getLogger(__name__)

#: Bytes read at most per chunk.
CHUNK = 65536


@dataclass
class RelayStats:
    """What the relay saw: connections, chunks each way, chunks held for the RTO, bytes, and
    the moments (monotonic s) connections opened, failed and closed."""

    connections: int = 0
    upstream_failures: int = 0
    chunks_up: int = 0
    chunks_down: int = 0
    lost: int = 0
    bytes: int = 0
    events: list[tuple[float, str]] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.events.append((round(time.monotonic(), 3), what))


class Relay:
    """Listens on ``listen`` (host, port); every connection is relayed to ``upstream`` through
    a socket marked ``mark`` (SO_MARK; None: unmarked), delayed by ``profile``."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], profile: NetworkProfile,
                 mark: int | None = None, seed: int = 0) -> None:
        self.listen = listen
        self.upstream = upstream
        self.profile = profile
        self.mark = mark
        self.rng = random.Random(seed)
        self.stats = RelayStats()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind and listen."""
        self._server = await asyncio.start_server(self._serve, self.listen[0], self.listen[1],
                                                  reuse_address=True)

    @property
    def port(self) -> int:
        """The port listened on (``listen`` may ask for port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop every relayed connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if self.mark is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.mark)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, self.upstream)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.stats.connections += 1
        peer = c_writer.get_extra_info("peername")
        try:
            try:
                u_reader, u_writer = await self._open_upstream()
            except OSError as e:
                # The AP is not up yet, or the link is cut: the client sees its connection
                # close and retries, as it would on a refused connection.
                self.stats.upstream_failures += 1
                self.stats.note(f"upstream failed for {peer}: {e.strerror or e}")
                return
            self.stats.note(f"open {peer}")
            try:
                await _both_ways([self._pipe(c_reader, u_writer, up=True),
                                   self._pipe(u_reader, c_writer, up=False)])
            finally:
                u_writer.close()
                self.stats.note(f"close {peer}")
        finally:
            c_writer.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool) -> None:
        """Copy ``reader`` to ``writer``, each chunk released at its own time, in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def release() -> None:
            while True:
                at, data = await queue.get()
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:  # end of stream, after everything before it: pass the half-close on
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(release())
        last = 0.0
        try:
            while True:
                data = await reader.read(CHUNK)
                now = loop.time()
                if data:
                    delay, lost = self.profile.chunk_delay(self.rng)
                    self.stats.lost += lost
                    self.stats.bytes += len(data)
                    if up:
                        self.stats.chunks_up += 1
                    else:
                        self.stats.chunks_down += 1
                else:
                    delay = self.profile.delay_s
                last = max(last, now + delay)  # never before the chunk ahead of it
                queue.put_nowait((last, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()


async def _both_ways(coros: list) -> None:  # type: ignore[type-arg]
    """Run both directions until each has passed its end of stream on (a half-closed
    connection keeps the other way open); an error either way (a reset) ends both."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host, int(port)


async def _run(args: argparse.Namespace) -> RelayStats:
    relay = Relay(args.listen, args.upstream, PROFILES[args.profile], mark=args.mark, seed=args.seed)
    await relay.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"relay: listening on {args.listen[0]}:{relay.port} -> {args.upstream[0]}:{args.upstream[1]} "
          f"({relay.profile.describe()})", flush=True)
    await stop.wait()
    await relay.close()
    return relay.stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rehearsal.relay", description=__doc__.split("\n")[0])
    p.add_argument("--listen", type=_addr, required=True, help="HOST:PORT to accept on")
    p.add_argument("--upstream", type=_addr, required=True, help="HOST:PORT to relay to")
    p.add_argument("--profile", choices=sorted(PROFILES), required=True)
    p.add_argument("--mark", type=lambda s: int(s, 0), default=None,
                   help="SO_MARK of the upstream sockets (routes them past a local address)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stats", type=Path, default=None, help="JSON file written on exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s relay %(levelname)s: %(message)s")
    try:
        stats = asyncio.run(_run(args))
    except OSError as e:
        print(f"relay: cannot listen on {args.listen[0]}:{args.listen[1]}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    if args.stats is not None:
        args.stats.write_text(json.dumps(asdict(stats), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
