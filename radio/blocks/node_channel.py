"""One node's emulated flat channel (:class:`NodeChannel`): CFO rotator -> optional flat fading ->
one FIR holding the complex gain and the fractional delay (windowed sinc), all C++ blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gnuradio import blocks, channels, filter, gr

from radio.blocks.common import FIR_TAPS, STREAM_BUFFER_ITEMS

__all__ = ["NodeChannel", "NodeChannelParams", "fractional_delay_taps"]


def fractional_delay_taps(delay: float, ntaps: int = FIR_TAPS, gain: complex = 1.0) -> list[complex]:
    """Windowed-sinc FIR delaying by ``(ntaps-1)/2 + delay`` samples, times ``gain``.

    ``|delay|`` must stay below ``(ntaps-1)/2 - 4`` so the Blackman-windowed sinc keeps its
    main lobes inside the filter.
    """
    half = (ntaps - 1) // 2
    if ntaps % 2 == 0 or ntaps < 9:
        raise ValueError(f"ntaps: {ntaps!r} must be odd and >= 9")
    if abs(delay) > half - 4:
        raise ValueError(f"delay: {delay!r} samples is outside +-{half - 4} allowed for {ntaps} taps")
    n = np.arange(ntaps) - half - delay
    w = np.blackman(ntaps + 2)[1:-1]  # no zero end taps
    h = np.sinc(n) * w
    h /= h.sum()  # unit DC gain
    return list(complex(gain) * h)


@dataclass(frozen=True)
class NodeChannelParams:
    """One node's emulated channel: complex gain (linear), delay (samples), CFO (cycles/sample)."""

    gain: complex
    delay: float
    cfo: float


class NodeChannel(gr.hier_block2):
    """One node's flat channel: ``gain * exp(j 2 pi cfo n) * x(n - delay)``, optional fading.

    Output index n holds the input delayed by ``FIR_TAPS//2 + delay`` samples; the emulator
    subtracts the common ``FIR_TAPS//2``. ``fading_doppler`` > 0 adds gr-channels'
    sum-of-sinusoids Rayleigh fading (normalised Doppler, cycles/sample), seeded.
    """

    def __init__(
        self,
        gain: complex = 1.0,
        delay: float = 0.0,
        cfo: float = 0.0,
        fading_doppler: float = 0.0,
        seed: int = 0,
    ) -> None:
        gr.hier_block2.__init__(
            self,
            "pairzero_node_channel",
            gr.io_signature(1, 1, gr.sizeof_gr_complex),
            gr.io_signature(1, 1, gr.sizeof_gr_complex),
        )
        if not -0.5 < cfo < 0.5:
            raise ValueError(f"cfo: {cfo!r} must be in (-0.5, 0.5) cycles/sample")
        if fading_doppler < 0:
            raise ValueError(f"fading_doppler: {fading_doppler!r} must be >= 0")
        self.fir = filter.fir_filter_ccc(1, fractional_delay_taps(delay, gain=gain))
        chain: list[gr.basic_block] = [self]
        if cfo != 0.0:  # radios on a shared reference have none: no rotator to run
            self.rotator = blocks.rotator_cc(2 * np.pi * cfo)
            chain.append(self.rotator)
        if fading_doppler > 0:
            self.fading = channels.fading_model(8, fading_doppler, False, 4.0, seed)
            chain.append(self.fading)
        chain += [self.fir, self]
        self.connect(*chain)
        for blk in chain[1:-1]:
            blk.set_min_output_buffer(STREAM_BUFFER_ITEMS)
