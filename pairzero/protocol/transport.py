"""Control-plane transports: one small interface, an in-process and a ZeroMQ implementation.

The AP owns a :class:`ServerTransport` (it binds); every edge node owns a
:class:`ClientTransport` (it connects). Both move opaque byte strings (encoded messages,
see :mod:`pairzero.protocol.messages`); peers are identified on the server by an opaque
``peer`` id (the ZeroMQ routing id). Every receive has an explicit timeout; no call blocks
forever and sends never block (a message to a vanished peer is dropped, returning False).

ZeroMQ: the AP binds a ROUTER socket, nodes connect DEALER sockets (never REQ: a REQ socket
that misses a reply wedges). ``linger=0`` on close, ZMTP heartbeats detect dead TCP peers,
libzmq reconnects a node's DEALER automatically when the AP comes back (the node re-JOINs at
the protocol level), and ``ZMQ_MAXMSGSIZE`` disconnects a peer that sends an oversized frame
before it is buffered. The AP learns at once that a node's connection closed (a killed node:
its kernel closes the TCP connection): the ROUTER's socket monitor reports the file descriptor
that disconnected, which maps back to the routing id last seen on it (:meth:`ZmqServer.gone`).
With CurveZMQ the AP runs a ZAP authenticator thread that admits only
the enrolled node public keys; every inbound message then carries the client's public key
(``Inbound.user_id``), which the AP binds to a node id at JOIN.

Use a separate transport object per thread: ZeroMQ sockets are not thread-safe.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from pairzero.protocol.messages import MAX_MESSAGE_BYTES

__all__ = [
    "Inbound",
    "ServerTransport",
    "ClientTransport",
    "InProcHub",
    "ZmqServer",
    "ZmqClient",
    "CurveServerKeys",
    "CurveClientKeys",
    "DRAIN_LIMIT",
    "drain_queued",
]

log = logging.getLogger(__name__)

# Most queued messages a peer reads (recv with timeout 0) before it judges the other side
# silent: heartbeats that wait in the queue of a held-up process prove the sender alive.
DRAIN_LIMIT = 10_000

_T = TypeVar("_T")


def drain_queued(recv: Callable[[float], _T | None], handle: Callable[[_T], None],
                 limit: int = DRAIN_LIMIT) -> int:
    """Handle the messages already queued (``recv(0)`` until empty, at most ``limit``); return
    how many. Called before judging the other side silent."""
    for n in range(limit):
        item = recv(0.0)
        if item is None:
            return n
        handle(item)
    return limit

#: Lower bound on the ZMTP heartbeat timeout (s). Shorter timeouts cut healthy connections on a
#: loaded host (a reconnect gets a new routing id, and messages in flight to the old one are
#: lost); protocol-level liveness (HEARTBEAT messages) acts faster anyway.
_ZMTP_TIMEOUT_MIN_S = 10.0


@dataclass(frozen=True)
class Inbound:
    """One message received by the server: from ``peer``; ``user_id`` = authenticated key."""

    peer: bytes
    data: bytes
    user_id: str | None = None


class ServerTransport(Protocol):
    """The AP side: receive from any node, send to one node."""

    def recv(self, timeout_s: float) -> Inbound | None:
        """Next message, or None after ``timeout_s`` seconds."""
        ...

    def send(self, peer: bytes, data: bytes) -> bool:
        """Queue ``data`` for ``peer`` without blocking; False if it was dropped."""
        ...

    def gone(self) -> list[bytes]:
        """Peers whose connection closed since the last call (best effort: a transport that
        cannot tell returns [] and liveness falls back to heartbeats)."""
        ...

    def close(self) -> None:
        """Release the socket(s); pending messages are discarded."""
        ...


class ClientTransport(Protocol):
    """The node side: one connection to the AP."""

    def recv(self, timeout_s: float) -> bytes | None:
        """Next message from the AP, or None after ``timeout_s`` seconds."""
        ...

    def send(self, data: bytes) -> bool:
        """Queue ``data`` for the AP without blocking; False if it was dropped."""
        ...

    def close(self) -> None:
        """Release the socket; pending messages are discarded."""
        ...


# ----------------------------------------------------------------------------- in-process


class InProcHub:
    """In-process 'network' of queues: one server, any number of clients (tests, simulate).

    Messages larger than ``max_bytes`` are dropped, as ZeroMQ's MAXMSGSIZE would.
    A closed client (a killed node) stops receiving; messages sent to it are dropped.
    """

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES):
        if max_bytes < 1:
            raise ValueError(f"max_bytes: {max_bytes} must be >= 1")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._server_q: queue.Queue[Inbound] = queue.Queue()
        self._clients: dict[bytes, queue.Queue[bytes]] = {}
        self._server_open = False
        self._gone: list[bytes] = []  # clients cut off or closed, for the server's gone()

    def server(self) -> _InProcServer:
        """The server end (one at a time; a new one replaces a closed one, as an AP restart)."""
        with self._lock:
            if self._server_open:
                raise RuntimeError("InProcHub: a server is already open")
            self._server_open = True
            self._server_q = queue.Queue()
            self._gone = []
        return _InProcServer(self)

    def client(self, name: str) -> _InProcClient:
        """A new client end named ``name`` (its peer id is ``name`` encoded)."""
        peer = name.encode()
        with self._lock:
            if peer in self._clients:
                raise ValueError(f"name: client {name!r} is already connected")
            self._clients[peer] = queue.Queue()
        return _InProcClient(self, peer)

    def drop(self, name: str) -> None:
        """Cut client ``name`` off abruptly, as a crashed node (no LEAVE; its queue vanishes;
        the server's :meth:`gone` reports it, as a closed TCP connection would be)."""
        self._disconnect(name.encode())

    def _disconnect(self, peer: bytes) -> None:
        with self._lock:
            if self._clients.pop(peer, None) is not None and self._server_open:
                self._gone.append(peer)

    def _to_server(self, peer: bytes, data: bytes) -> bool:
        with self._lock:
            if not self._server_open or peer not in self._clients or len(data) > self.max_bytes:
                return False
            self._server_q.put(Inbound(peer, bytes(data)))
        return True

    def _to_client(self, peer: bytes, data: bytes) -> bool:
        with self._lock:
            q = self._clients.get(peer)
            if q is None or len(data) > self.max_bytes:
                return False
            q.put(bytes(data))
        return True


class _InProcServer:
    def __init__(self, hub: InProcHub):
        self._hub = hub
        self._q = hub._server_q
        self._closed = False

    def recv(self, timeout_s: float) -> Inbound | None:
        try:
            return self._q.get(timeout=max(timeout_s, 0.0)) if timeout_s > 0 else self._q.get_nowait()
        except queue.Empty:
            return None

    def send(self, peer: bytes, data: bytes) -> bool:
        return not self._closed and self._hub._to_client(peer, data)

    def gone(self) -> list[bytes]:
        with self._hub._lock:
            out, self._hub._gone = self._hub._gone, []
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self._hub._lock:
                self._hub._server_open = False


class _InProcClient:
    def __init__(self, hub: InProcHub, peer: bytes):
        self._hub = hub
        self.peer = peer
        with hub._lock:
            self._q = hub._clients[peer]

    def recv(self, timeout_s: float) -> bytes | None:
        try:
            return self._q.get(timeout=timeout_s) if timeout_s > 0 else self._q.get_nowait()
        except queue.Empty:
            return None

    def send(self, data: bytes) -> bool:
        return self._hub._to_server(self.peer, data)

    def close(self) -> None:
        self._hub._disconnect(self.peer)


# ----------------------------------------------------------------------------- ZeroMQ


@dataclass(frozen=True)
class CurveServerKeys:
    """AP key pair (Z85 bytes) and the enrolled node public keys (Z85 bytes)."""

    public: bytes
    secret: bytes
    allowed_clients: frozenset[bytes]


@dataclass(frozen=True)
class CurveClientKeys:
    """Node key pair and the AP's public key (all Z85 bytes)."""

    public: bytes
    secret: bytes
    server_public: bytes


class _AllowList:
    """ZAP credentials provider: admit exactly the enrolled public keys."""

    def __init__(self, keys: Iterable[bytes]):
        self._keys = frozenset(keys)

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self._keys
        if not ok:
            log.warning("CurveZMQ: refused client key %s (not enrolled)", key.decode(errors="replace"))
        return ok


def _ms(timeout_s: float) -> int:
    if timeout_s < 0:
        raise ValueError(f"timeout_s: {timeout_s} must be >= 0")
    return int(round(timeout_s * 1000))


class ZmqServer:
    """AP side over ZeroMQ: a bound ROUTER socket (optionally CurveZMQ-authenticated).

    ``endpoint``: e.g. ``tcp://127.0.0.1:5550`` (``port=0`` style ``tcp://127.0.0.1:*`` binds a
    free port; read it back from :attr:`endpoint`). ``heartbeat_s``: ZMTP heartbeat interval.
    """

    def __init__(
        self,
        endpoint: str,
        curve: CurveServerKeys | None = None,
        max_bytes: int = MAX_MESSAGE_BYTES,
        heartbeat_s: float = 1.0,
    ):
        self._ctx = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._mon: zmq.Socket[bytes] | None = None
        self._fd_peer: dict[int, bytes] = {}
        self._gone: list[bytes] = []
        self._sock = self._ctx.socket(zmq.ROUTER)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.MAXMSGSIZE, max_bytes + 1024)
            self._sock.setsockopt(zmq.SNDHWM, 10000)
            self._sock.setsockopt(zmq.RCVHWM, 10000)
            self._sock.setsockopt(zmq.HEARTBEAT_IVL, _ms(heartbeat_s))
            self._sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _ms(max(3 * heartbeat_s, _ZMTP_TIMEOUT_MIN_S)))
            if curve is not None:
                self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger(__name__ + ".zap"))
                self._auth.start()
                self._auth.configure_curve_callback(
                    domain="*", credentials_provider=_AllowList(curve.allowed_clients)
                )
                self._sock.curve_secretkey = curve.secret
                self._sock.curve_publickey = curve.public
                self._sock.curve_server = True
            self._sock.bind(endpoint)
            # Disconnects: the monitor gives the closed connection's file descriptor, which
            # maps to the routing id last seen on it (ZMQ_SRCFD of its messages).
            self._mon = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            self._poller = zmq.Poller()
            self._poller.register(self._sock, zmq.POLLIN)
            self._poller.register(self._mon, zmq.POLLIN)
        except Exception:
            self.close()
            raise
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._max_bytes = max_bytes

    def recv(self, timeout_s: float) -> Inbound | None:
        """Next message, or None after ``timeout_s`` (sooner when a peer disconnected:
        :meth:`gone` then names it)."""
        self._read_monitor()
        ready = dict(self._poller.poll(_ms(timeout_s)))
        if self._mon is not None and self._mon in ready:
            self._read_monitor()
        if self._sock not in ready:
            return None
        try:
            frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        # Disconnect events queued before this message belong to the connections that used
        # its file descriptor before: read them before mapping the descriptor to this peer.
        self._read_monitor()
        try:
            fd = int(frames[-1].get(zmq.SRCFD))
        except (zmq.ZMQError, AttributeError, TypeError, ValueError):
            fd = -1
        if fd >= 0:
            self._fd_peer[fd] = bytes(frames[0].bytes)
        if len(frames) != 2:
            log.warning("dropped a message of %d frames (expected 2)", len(frames))
            return None
        user_id: str | None = None
        if self._auth is not None:
            try:
                # pyzmq types Frame.get for int options only; a str property ("User-Id") is a str
                user_id = cast(str, frames[1].get("User-Id"))  # type: ignore[arg-type]
            except zmq.ZMQError:
                user_id = None
        return Inbound(bytes(frames[0].bytes), bytes(frames[1].bytes), user_id)

    def gone(self) -> list[bytes]:
        self._read_monitor()
        out, self._gone = self._gone, []
        return out

    def _read_monitor(self) -> None:
        if self._mon is None:
            return
        while True:
            try:
                event = recv_monitor_message(self._mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            if event["event"] == zmq.EVENT_DISCONNECTED:
                peer = self._fd_peer.pop(int(event["value"]), None)
                if peer is not None:
                    self._gone.append(peer)

    def send(self, peer: bytes, data: bytes) -> bool:
        try:
            self._sock.send_multipart([peer, data], zmq.NOBLOCK)
            return True
        except zmq.Again:
            log.warning("send to peer %s dropped (queue full)", peer.hex())
            return False
        except zmq.ZMQError as e:
            log.warning("send to peer %s failed: %s", peer.hex(), e)
            return False

    def close(self) -> None:
        if self._mon is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disable_monitor()
            self._mon.close(linger=0)
            self._mon = None
        if not self._sock.closed:
            self._sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self._ctx.term()


class ZmqClient:
    """Node side over ZeroMQ: a DEALER socket connected to the AP's ROUTER.

    ``IMMEDIATE`` is set, so while the AP is unreachable :meth:`send` returns False instead
    of queueing stale messages for a restarted AP; libzmq keeps reconnecting every
    ``reconnect_s`` (backing off to 1 s).
    """

    def __init__(
        self,
        endpoint: str,
        curve: CurveClientKeys | None = None,
        heartbeat_s: float = 1.0,
        reconnect_s: float = 0.1,
        max_bytes: int = MAX_MESSAGE_BYTES,
    ):
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.IMMEDIATE, 1)
            self._sock.setsockopt(zmq.MAXMSGSIZE, max_bytes + 1024)
            self._sock.setsockopt(zmq.RECONNECT_IVL, _ms(reconnect_s))
            self._sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            self._sock.setsockopt(zmq.HEARTBEAT_IVL, _ms(heartbeat_s))
            self._sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _ms(max(3 * heartbeat_s, _ZMTP_TIMEOUT_MIN_S)))
            if curve is not None:
                self._sock.curve_secretkey = curve.secret
                self._sock.curve_publickey = curve.public
                self._sock.curve_serverkey = curve.server_public
            self._sock.connect(endpoint)
        except Exception:
            self.close()
            raise

    def recv(self, timeout_s: float) -> bytes | None:
        if not self._sock.poll(_ms(timeout_s), zmq.POLLIN):
            return None
        try:
            frames = self._sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        if len(frames) != 1:
            log.warning("dropped a message of %d frames from the AP (expected 1)", len(frames))
            return None
        return frames[0]

    def send(self, data: bytes) -> bool:
        try:
            self._sock.send(data, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False  # not connected (AP down or restarting): the caller retries
        except zmq.ZMQError as e:
            log.warning("send to the AP failed: %s", e)
            return False

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.close(linger=0)
        self._ctx.term()
