"""The channel emulator: K node sample streams in, the AP's stream out (GNU Radio, ZeroMQ).

The same three blocks as ``grc_flowgraphs/loopback_channel.grc``::

    BurstSource (K zero-filled node streams) -> ChannelBank (per node gain, fractional delay,
    CFO, fading; sum; AWGN) -> IndexedSink (the AP stream, (index, samples) chunks)

Nodes PUSH ``(start index, samples)`` to PULL sockets the emulator binds (one per node); the AP
subscribes to the XPUB socket of the AP stream. Used by the loopback front end (``radio.mode:
loopback``: lockstep, deterministic, as fast as the nodes define their streams) and by emulated
USRPs (``type=emulated`` device args: the nodes' radios define their streams up to the present
moment as their clocks run, so the emulator follows real time and late samples are really late;
its indices are then the reference's samples, the air's, into which each radio translates its
own device time).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from gnuradio import blocks, gr

from pairzero.config import ChannelConfig, ExperimentConfig, NodesConfig
from pairzero.phy.mode import phy_mode
from radio.blocks import (
    DEMAND_GUARD_S,
    FIR_TAPS,
    BurstSource,
    ChannelBank,
    IndexedSink,
    NodeChannelParams,
)

__all__ = [
    "NodeChannelParams", "draw_node_channels", "ChannelEmulator", "LoopbackChannel",
    "emulator_arguments",
]

log = logging.getLogger(__name__)


#: Seed stream of the emulator's per-node delays and CFOs (``SeedSequence([seed, 2])``); the
#: complex gains come from :class:`pairzero.ota.fading.ChannelModel` (streams 0 and 1).
_STREAM_SYNC = 2


def draw_node_channels(channel: ChannelConfig, nodes: NodesConfig, seed: int,
                       round_t: int = 0) -> list[NodeChannelParams]:
    """Seeded per-node channels of the experiment's channel model.

    The complex gain of node k is ``h_k`` of :class:`pairzero.ota.fading.ChannelModel` (the
    model ``pairzero simulate`` uses): path loss ``(reference_distance_m / d_k)^alpha`` in power
    from ``nodes.distances_m`` (or distances drawn in ``nodes.min/max_distance_m``), times the
    small-scale fading of ``channel.fading`` (``random_phase``, ``rician_k_db``), as drawn for
    round ``round_t``. The emulator holds that draw for its whole run (block fading over the
    run: the round protocol precodes a frame from the previous frame's pilots, so the channel
    must not be redrawn between frames); time variation within a run is
    ``channel.fading_doppler``. Delay and CFO are uniform in +-``max_delay_samples`` and
    +-``max_cfo`` (their own seed stream, so they do not move when the gain model changes).
    ``channel.estimation_error_std`` is not emulated: the AP's estimates come from real pilots.
    """
    from pairzero.ota.fading import ChannelModel

    h = ChannelModel.from_config(channel, nodes, seed).draw(round_t).h  # (K,) complex
    k = nodes.count
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_SYNC]))
    delay = rng.uniform(-channel.max_delay_samples, channel.max_delay_samples, k)
    cfo = rng.uniform(-channel.max_cfo, channel.max_cfo, k)
    return [
        NodeChannelParams(complex(g), float(d), float(f))
        for g, d, f in zip(h, delay, cfo, strict=True)
    ]


class LoopbackChannel(gr.hier_block2):
    """The emulator's flowgraph as one hier block (no ports: its streams are ZeroMQ sockets):
    BurstSource -> ChannelBank -> IndexedSink. ``grc_flowgraphs/loopback_channel.grc`` and
    :class:`ChannelEmulator` both run this block.

    ``noise_var``: complex AWGN variance at the AP (per sample; SNR = |gain|^2 / noise_var).
    ``lockstep``: run as fast as the nodes define their streams (deterministic, unthrottled);
    otherwise free-running, throttled to ``sample_rate`` when ``throttle``. ``fading_doppler``
    > 0 adds time-varying Rayleigh fading (gr-channels ``fading_model``) on top of the gains.
    ``origin``: sample index of the first output sample (None: the first node message's index,
    for radios whose streams start at their device time). ``free_run_rate``: see
    :class:`radio.blocks.BurstSource` (emulated radios: the AP stream goes on with every
    transmitter silent). ``on_demand`` (emulated radios): produce only the windows the AP's
    radio commanded (its stream commands come upstream on the AP stream; see
    :class:`radio.blocks.BurstSource` ``demand``), as a USRP streams only what it was asked
    for; the rest of the clock's way is skipped, not computed.
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
        origin: int | None = 0,
        free_run_rate: float | None = None,
        on_demand: bool = False,
    ) -> None:
        gr.hier_block2.__init__(self, "pairzero_loopback_channel", gr.io_signature(0, 0, 0),
                                gr.io_signature(0, 0, 0))
        if len(node_channels) != len(node_addresses):
            raise ValueError(
                f"node_addresses: {len(node_addresses)} given, need one per node channel "
                f"({len(node_channels)})"
            )
        if noise_var < 0:
            raise ValueError(f"noise_var: {noise_var!r} must be >= 0")
        self.node_channels = list(node_channels)
        self.bank = ChannelBank(self.node_channels, noise_var, seed, fading_doppler)
        source: BurstSource | None = None
        # The AP stream's index: the source's origin (once known) minus the FIR group delay.
        self.sink = IndexedSink(ap_address, index_offset=(FIR_TAPS - 1) // 2,
                                origin=lambda: source.origin if source is not None else 0)
        ready = self.sink.has_subscriber if wait_for_ap else None
        try:
            source = BurstSource(node_addresses, lockstep, node_timeout_s, ready, origin,
                                 free_run_rate, self.sink.take_requests if on_demand else None,
                                 math.ceil(DEMAND_GUARD_S * sample_rate))
        except OSError:
            self.sink.stop()  # release the AP port too
            raise
        self.source = source
        for k in range(len(self.node_channels)):
            self.connect((self.source, k), (self.bank, k))
        if throttle and not lockstep:
            self.throttle = blocks.throttle(gr.sizeof_gr_complex, sample_rate)
            self.connect(self.bank, self.throttle, self.sink)
        else:
            self.connect(self.bank, self.sink)

    @classmethod
    def from_config_file(cls, path: str, seed: int | None = None) -> LoopbackChannel:
        """The emulator of an experiment YAML (its channel, nodes, ports and mode), as
        ``pairzero channel`` runs it (``seed``: override ``run.seed``)."""
        from pairzero.config import load_config
        from pairzero.phy.schedule import sample_addresses

        cfg = load_config(path, [] if seed is None else [f"run.seed={seed}"])
        nodes, ap = sample_addresses(cfg)
        return cls(**emulator_arguments(cfg), node_addresses=nodes, ap_address=ap)


def emulator_arguments(cfg: ExperimentConfig) -> dict[str, Any]:
    """The emulator of an experiment (channels of the channel model with ``run.seed``, see
    :func:`draw_node_channels`): for ``radio.mode: loopback`` lockstep from sample 0, zero-filling a silent node after the READY
    deadline; for emulated USRPs the stream follows the reference clock (the air: the radios
    translate their device times to it) from the first node's clock message, without carrier
    offsets in the channel (the emulated radios' own oscillators make them: retune phases,
    residual offsets, phase walk; :mod:`radio.emulated`), a radio silent for 1 s (of its
    clock) is zero-filled, with every
    radio silent the AP stream runs on at the radios' clock rate, and only the windows the
    AP's radio commanded are computed (``on_demand``)."""
    mode = phy_mode(cfg)
    if not mode.needs_emulator:
        raise ValueError(f"radio.mode: {cfg.radio.mode!r} has no channel emulator; it needs "
                         "'loopback', or 'usrp' with every radio type=emulated")
    channel = cfg.channel
    if mode.radios:  # the channel has none: the emulated radios' LOs make it
        channel = dataclasses.replace(channel, max_cfo=0.0)
    args: dict[str, Any] = {
        "node_channels": draw_node_channels(channel, cfg.nodes, cfg.run.seed),
        "noise_var": 10 ** (-cfg.channel.snr_db / 10), "seed": cfg.run.seed,
        "fading_doppler": cfg.channel.fading_doppler, "sample_rate": cfg.phy.sample_rate,
    }
    if mode.radios:
        rate = cfg.phy.sample_rate * mode.rate_factor  # device samples per host s
        args.update(origin=None, lockstep=True, throttle=False, free_run_rate=rate,
                    node_timeout_s=mode.host_seconds(1.0), on_demand=True)
    else:
        args.update(origin=0, lockstep=not cfg.phy.throttle, throttle=cfg.phy.throttle,
                    node_timeout_s=cfg.network.ready_timeout_s)
    return args


class ChannelEmulator:
    """The channel flowgraph: K node streams in, one AP stream out (a top block running
    :class:`LoopbackChannel`, built from the same arguments).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.channel = LoopbackChannel(*args, **kwargs)
        self.node_channels = self.channel.node_channels
        self.source = self.channel.source
        self.sink = self.channel.sink
        self.tb = gr.top_block("pairzero_loopback_channel")
        self.tb.connect(self.channel)

    @classmethod
    def for_experiment(cls, cfg: ExperimentConfig) -> ChannelEmulator:
        """The emulator ``pairzero channel`` runs for ``cfg`` (see :func:`emulator_arguments`)."""
        from pairzero.phy.schedule import sample_addresses

        nodes, ap = sample_addresses(cfg)
        return cls(**emulator_arguments(cfg), node_addresses=nodes, ap_address=ap)

    @classmethod
    def from_config(
        cls,
        channel: ChannelConfig,
        nodes: NodesConfig,
        seed: int,
        node_addresses: Sequence[str],
        ap_address: str,
        **kwargs: object,
    ) -> ChannelEmulator:
        """Emulator with seeded channels of the channel model (``channel``, the geometry of
        ``nodes``: :func:`draw_node_channels`) and noise from ``snr_db``."""
        chans = draw_node_channels(channel, nodes, seed)
        noise_var = 10 ** (-channel.snr_db / 10)
        kwargs.setdefault("fading_doppler", channel.fading_doppler)
        return cls(chans, noise_var, node_addresses, ap_address, seed=seed, **kwargs)

    @classmethod
    def from_experiment(
        cls, cfg: ExperimentConfig, node_addresses: Sequence[str], ap_address: str, **kwargs: object
    ) -> ChannelEmulator:
        """Emulator for an experiment: ``channel`` section, ``nodes.count``, ``run.seed``;
        lockstep unless ``phy.throttle`` (then free-running at ``phy.sample_rate``)."""
        kwargs.setdefault("lockstep", not cfg.phy.throttle)
        kwargs.setdefault("throttle", cfg.phy.throttle)
        kwargs.setdefault("sample_rate", cfg.phy.sample_rate)
        return cls.from_config(cfg.channel, cfg.nodes, cfg.run.seed, node_addresses, ap_address, **kwargs)

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
