"""Loopback testbed on one machine: K edge TX streams -> channel emulator -> AP RX.

Python API used by the processes (and by ``loopback_channel.grc`` through the same blocks)::

    emu = ChannelEmulator(cfg, node_addresses, ap_address); emu.start()
    ap = ApRx(ap_address); tx = [EdgeTx(a) for a in node_addresses]
    tx[k].send(burst, start_index=n0)            # burst at a sample index of the shared clock
    window = ap.capture(n0 - 64, length + 128)   # the AP stream around it (None on timeout)
    emu.stop(); emu.wait()

All sockets are on 127.0.0.1. Nodes PUSH to PULL sockets the emulator binds (one per node);
the emulator PUBlishes the AP stream on an XPUB socket the AP subscribes to.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import zmq
from gnuradio import analog, blocks, gr

from grc_flowgraphs.blocks import FIR_TAPS, BurstSource, IndexedSink, NodeChannel
from pairzero.config import ChannelConfig, ExperimentConfig
from pairzero.phy.frame import FrameLayout
from pairzero.phy.rx import BurstReceiver, NodeEstimate, RxResult
from pairzero.phy.tx import NodePrecoding, build_node_burst, compute_precoding, refine_cfo

__all__ = [
    "NodeChannelParams",
    "draw_node_channels",
    "ChannelEmulator",
    "EdgeTx",
    "ApRx",
    "RoundResult",
    "transmit_frame",
    "ota_round",
    "FRAME_GAP",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeChannelParams:
    """One node's emulated channel: complex gain (linear), delay (samples), CFO (cycles/sample)."""

    gain: complex
    delay: float
    cfo: float


def draw_node_channels(channel: ChannelConfig, num_nodes: int, seed: int) -> list[NodeChannelParams]:
    """Seeded per-node channels from ``ChannelConfig``.

    |gain| is 1 for ``fading: none`` and a block-fading draw otherwise (Rayleigh CN(0,1), or
    Rician with ``rician_k_db``); the phase is uniform when ``random_phase``; delay and CFO are
    uniform in +-``max_delay_samples`` and +-``max_cfo``.
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes: {num_nodes!r} must be >= 1")
    rng = np.random.default_rng(seed)
    k = num_nodes
    if channel.fading == "none":
        amp = np.ones(k)
    elif channel.fading == "rayleigh":
        amp = np.abs(rng.standard_normal(k) + 1j * rng.standard_normal(k)) / np.sqrt(2)
    else:
        kf = 10 ** (channel.rician_k_db / 10)
        los = np.sqrt(kf / (kf + 1))
        diff = (rng.standard_normal(k) + 1j * rng.standard_normal(k)) * np.sqrt(1 / (2 * (kf + 1)))
        amp = np.abs(los + diff)
    phase = rng.uniform(0, 2 * np.pi, k) if channel.random_phase else np.zeros(k)
    delay = rng.uniform(-channel.max_delay_samples, channel.max_delay_samples, k)
    cfo = rng.uniform(-channel.max_cfo, channel.max_cfo, k)
    return [
        NodeChannelParams(complex(a * np.exp(1j * p)), float(d), float(f))
        for a, p, d, f in zip(amp, phase, delay, cfo, strict=True)
    ]


class ChannelEmulator:
    """The loopback channel flowgraph: K node streams in, one AP stream out.

    ``noise_var``: complex AWGN variance at the AP (per sample; SNR = |gain|^2 / noise_var).
    ``lockstep``: run as fast as the nodes define their streams (deterministic, unthrottled);
    otherwise free-running, throttled to ``sample_rate`` when ``throttle``. ``fading_doppler``
    > 0 adds time-varying Rayleigh fading (gr-channels ``fading_model``) on top of the gains.
    """

    def __init__(
        self,
        node_channels: Sequence[NodeChannelParams],
        noise_var: float,
        node_addresses: Sequence[str],
        ap_address: str,
        seed: int = 0,
        lockstep: bool = True,
        throttle: bool = False,
        sample_rate: float = 1e6,
        node_timeout_s: float = 1.0,
        wait_for_ap: bool = True,
        fading_doppler: float = 0.0,
    ) -> None:
        if len(node_channels) != len(node_addresses):
            raise ValueError(
                f"node_addresses: {len(node_addresses)} given, need one per node channel "
                f"({len(node_channels)})"
            )
        if noise_var < 0:
            raise ValueError(f"noise_var: {noise_var!r} must be >= 0")
        self.node_channels = list(node_channels)
        self.tb = gr.top_block("pairzero_loopback_channel")
        self.sink = IndexedSink(ap_address, index_offset=(FIR_TAPS - 1) // 2)
        ready = self.sink.has_subscriber if wait_for_ap else None
        try:
            self.source = BurstSource(node_addresses, lockstep, node_timeout_s, ready)
        except OSError:
            self.sink.stop()  # release the AP port too
            raise
        self.add = blocks.add_cc()
        self.noise = analog.noise_source_c(analog.GR_GAUSSIAN, float(np.sqrt(noise_var)), seed)
        self.channels = []
        for k, ch in enumerate(self.node_channels):
            blk = NodeChannel(ch.gain, ch.delay, ch.cfo, fading_doppler, seed=seed + 1 + k)
            self.channels.append(blk)
            self.tb.connect((self.source, k), blk, (self.add, k))
        self.tb.connect(self.noise, (self.add, len(self.node_channels)))
        if throttle and not lockstep:
            self.throttle = blocks.throttle(gr.sizeof_gr_complex, sample_rate)
            self.tb.connect(self.add, self.throttle, self.sink)
        else:
            self.tb.connect(self.add, self.sink)

    @classmethod
    def from_config(
        cls,
        channel: ChannelConfig,
        num_nodes: int,
        seed: int,
        node_addresses: Sequence[str],
        ap_address: str,
        **kwargs: object,
    ) -> ChannelEmulator:
        """Emulator with seeded channels drawn from ``channel`` and noise from ``snr_db``."""
        chans = draw_node_channels(channel, num_nodes, seed)
        noise_var = 10 ** (-channel.snr_db / 10)
        kwargs.setdefault("fading_doppler", channel.fading_doppler)
        return cls(chans, noise_var, node_addresses, ap_address, seed=seed, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_experiment(
        cls, cfg: ExperimentConfig, node_addresses: Sequence[str], ap_address: str, **kwargs: object
    ) -> ChannelEmulator:
        """Emulator for an experiment: ``channel`` section, ``nodes.count``, ``run.seed``;
        lockstep unless ``phy.throttle`` (then free-running at ``phy.sample_rate``)."""
        kwargs.setdefault("lockstep", not cfg.phy.throttle)
        kwargs.setdefault("throttle", cfg.phy.throttle)
        kwargs.setdefault("sample_rate", cfg.phy.sample_rate)
        return cls.from_config(cfg.channel, cfg.nodes.count, cfg.run.seed, node_addresses, ap_address, **kwargs)

    def start(self) -> None:
        """Start the flowgraph (returns at once)."""
        self.tb.start()

    def stop(self) -> None:
        """Ask the flowgraph to stop (call :meth:`wait` afterwards)."""
        self.tb.stop()

    def wait(self) -> None:
        """Wait until the flowgraph has stopped."""
        self.tb.wait()

    @property
    def clock(self) -> int:
        """Current sample index of the node streams."""
        return self.source.clock

    def absent_nodes(self) -> list[int]:
        """Nodes the emulator is zero-filling because they went silent."""
        return self.source.absent_nodes()


class EdgeTx:
    """A node's loopback transmitter: bursts at sample indices on its zero-filled stream."""

    def __init__(self, address: str, hwm: int = 1000) -> None:
        self._sock = zmq.Context.instance().socket(zmq.PUSH)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.connect(address)

    def send(self, burst: npt.NDArray[np.complexfloating], start_index: int, tail: int = 256) -> None:
        """Send ``burst`` to start at absolute sample ``start_index``; zeros follow for ``tail``."""
        if start_index < 0:
            raise ValueError(f"start_index: {start_index!r} must be >= 0")
        x = np.ascontiguousarray(burst, dtype=np.complex64)
        header = json.dumps({"start": int(start_index), "horizon": int(start_index + len(x) + tail)})
        self._sock.send_multipart([header.encode(), x.tobytes()])

    def advance(self, horizon: int) -> None:
        """Declare the stream zero up to sample ``horizon`` (lets a lockstep emulator move on)."""
        self._sock.send_multipart([json.dumps({"start": int(horizon), "horizon": int(horizon)}).encode(), b""])

    def close(self) -> None:
        self._sock.close(0)


class ApRx:
    """The AP's loopback receiver front end: windows of the emulator's AP stream by index."""

    def __init__(self, address: str) -> None:
        self._sock = zmq.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 100000)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.connect(address)
        self._chunks: list[tuple[int, npt.NDArray[np.complex64]]] = []
        self.latest = -1  # index one past the newest received sample

    def _recv(self, timeout_ms: int) -> bool:
        if not self._sock.poll(timeout_ms):
            return False
        while True:
            try:
                head, payload = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            start = int(np.frombuffer(head, dtype=np.int64)[0])
            x = np.frombuffer(payload, dtype=np.complex64)
            self._chunks.append((start, x))
            self.latest = max(self.latest, start + len(x))

    def capture(self, start: int, length: int, timeout_s: float = 5.0) -> npt.NDArray[np.complex64] | None:
        """Samples [start, start+length) of the AP stream, or None if they did not arrive in time.

        Older samples are discarded; a later window can still be captured afterwards.
        """
        if length <= 0:
            raise ValueError(f"length: {length!r} must be > 0")
        deadline = time.monotonic() + timeout_s
        end = start + length
        while self.latest < end:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("AP capture [%d, %d) timed out at sample %d", start, end, self.latest)
                return None
            self._recv(int(min(left, 0.05) * 1000) + 1)
        out = np.zeros(length, dtype=np.complex64)
        covered = 0
        keep = []
        for s, x in self._chunks:
            a, b = max(s, start), min(s + len(x), end)
            if b > a:
                out[a - start : b - start] = x[a - s : b - s]
                covered += b - a
            if s + len(x) > end:
                keep.append((s, x))
        self._chunks = keep
        if covered < length:
            log.warning("AP capture [%d, %d): %d samples missing (dropped or before subscription)",
                        start, end, length - covered)
        return out

    def close(self) -> None:
        self._sock.close(0)


FRAME_GAP = 512  # samples between frames: > EdgeTx tail + emulator FIR delay + capture margin
CAPTURE_MARGIN = 128  # samples captured either side of a frame


@dataclass(frozen=True)
class RoundResult:
    """One OTA round through the loopback: the payload frame's RX result and the estimates used."""

    payload: RxResult
    estimates: list[NodeEstimate]
    precoding: list[NodePrecoding]
    next_index: int


def transmit_frame(
    layout: FrameLayout,
    txs: Sequence[EdgeTx | None],
    ap: ApRx,
    receiver: BurstReceiver,
    start_index: int,
    values: Sequence[float] | None = None,
    precoding: Sequence[NodePrecoding] | None = None,
    timeout_s: float = 5.0,
) -> RxResult | None:
    """Every node in ``txs`` (None = silent node) sends its frame at ``start_index``; the AP
    captures and processes it. Returns None when the AP window did not arrive in time."""
    pre = {p.node: p for p in precoding or []}
    for k, tx in enumerate(txs):
        if tx is None:
            continue
        value = None if values is None or k not in pre and precoding is not None else values[k]
        tx.send(build_node_burst(layout, k, value, pre.get(k), frame_start=start_index), start_index)
    a = start_index - CAPTURE_MARGIN
    w = ap.capture(a, layout.length + 2 * CAPTURE_MARGIN, timeout_s)
    if w is None:
        return None
    return receiver.process(w, a, expected_start=start_index)


def ota_round(
    layout: FrameLayout,
    txs: Sequence[EdgeTx | None],
    ap: ApRx,
    receiver: BurstReceiver,
    start_index: int,
    values: Sequence[float],
    eta: float,
    timeout_s: float = 5.0,
) -> RoundResult | None:
    """The round protocol of :mod:`pairzero.phy.tx`: two pilot frames (the second refines each
    node's CFO by the phase advance), then the payload frame precoded with
    ``b_k = eta conj(h_k)/|h_k|^2``. ``values``: the K real scalars g_k."""
    step = layout.length + FRAME_GAP
    first = transmit_frame(layout, txs, ap, receiver, start_index, timeout_s=timeout_s)
    second = transmit_frame(layout, txs, ap, receiver, start_index + step, timeout_s=timeout_s)
    if first is None or second is None or not (first.detected and second.detected):
        return None
    est = [refine_cfo(a, b) for a, b in zip(first.nodes, second.nodes, strict=True)]
    prec = compute_precoding(est, eta=eta)
    payload = transmit_frame(
        layout, txs, ap, receiver, start_index + 2 * step, values, prec, timeout_s=timeout_s
    )
    if payload is None:
        return None
    return RoundResult(payload, est, prec, start_index + 3 * step)
