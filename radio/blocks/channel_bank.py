"""The emulator's channel (:class:`ChannelBank`): K node channels, their sum and the AP's AWGN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from gnuradio import analog, blocks, gr

from radio.blocks.common import STREAM_BUFFER_ITEMS
from radio.blocks.node_channel import NodeChannel, NodeChannelParams

__all__ = ["ChannelBank"]


class ChannelBank(gr.hier_block2):
    """K node streams in, the AP's stream out: per node :class:`NodeChannel`, their sum, and
    complex AWGN of variance ``noise_var`` per sample (``noise_source_c``, seeded)."""

    def __init__(
        self,
        node_channels: Sequence[NodeChannelParams],
        noise_var: float,
        seed: int = 0,
        fading_doppler: float = 0.0,
    ) -> None:
        k = len(node_channels)
        if k < 1:
            raise ValueError("node_channels: need at least one node channel")
        if not (math.isfinite(noise_var) and noise_var >= 0):
            raise ValueError(f"noise_var: {noise_var!r} must be a finite number >= 0")
        gr.hier_block2.__init__(
            self,
            "pairzero_channel_bank",
            gr.io_signature(k, k, gr.sizeof_gr_complex),
            gr.io_signature(1, 1, gr.sizeof_gr_complex),
        )
        self.add = blocks.add_cc()
        self.noise = analog.noise_source_c(analog.GR_GAUSSIAN, float(np.sqrt(noise_var)), seed)
        self.channels = []
        for i, ch in enumerate(node_channels):
            blk = NodeChannel(ch.gain, ch.delay, ch.cfo, fading_doppler, seed=seed + 1 + i)
            self.channels.append(blk)
            self.connect((self, i), blk, (self.add, i))
        self.connect(self.noise, (self.add, k))
        self.connect(self.add, self)
        for blk in (self.add, self.noise):
            blk.set_min_output_buffer(STREAM_BUFFER_ITEMS)
