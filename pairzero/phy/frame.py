"""Frame layout and waveform templates, built from :class:`PhyConfig`.

One frame (all indices in samples from the frame start, symbols at ``sps`` samples)::

    | preamble (all nodes, node k on ZC root r_k) | gap | pilot 0 | gap | ... | pilot K-1 | guard | payload |

* preamble: ``preamble_length`` ZC symbols; the K nodes send it at once on distinct roots, so
  the AP adds K correlation energies (detection does not depend on the nodes' phases) and gets a
  per-node phase at the preamble;
* pilots: ``pilot_length`` pseudo-random QPSK symbols, node k alone in slot k (TDMA) -> gain, phase, delay, CFO;
* payload: ``payload_repetitions`` symbols of amplitude 1 (or a +-1 spreading code), multiplied
  by the node's complex amplitude x_k = b_k g_k: one scalar per round, so the symbols are long
  and repeated and a few samples of timing error cost little.

Everything is pulse-shaped by one root-raised-cosine filter (``rrc_span`` symbols). The gaps
between segments cover half the pulse plus the largest timing offset, so slots do not overlap.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from pairzero.config import PhyConfig
from sync.zadoff_chu import node_roots, zadoff_chu

__all__ = ["FrameLayout", "rrc_taps"]

SEGMENTS = ("preamble", "pilot", "payload")


def rrc_taps(sps: int, span: int, rolloff: float) -> npt.NDArray[np.float64]:
    """Root-raised-cosine taps, unit energy, shape (span*sps + 1,); ``rolloff`` 0 gives a sinc."""
    if sps < 1:
        raise ValueError(f"sps: {sps!r} must be >= 1")
    if span < 2 or span % 2:
        raise ValueError(f"span: {span!r} must be an even number of symbols >= 2")
    if not 0.0 <= rolloff <= 1.0:
        raise ValueError(f"rolloff: {rolloff!r} must be in [0, 1]")
    t = (np.arange(span * sps + 1) - span * sps / 2) / sps  # in symbols
    b = rolloff
    h = np.empty_like(t)
    with np.errstate(divide="ignore", invalid="ignore"):
        num = np.sin(np.pi * t * (1 - b)) + 4 * b * t * np.cos(np.pi * t * (1 + b))
        den = np.pi * t * (1 - (4 * b * t) ** 2)
        h[:] = num / den
    h[np.isclose(t, 0.0)] = 1 - b + 4 * b / np.pi
    if b > 0:
        sing = np.isclose(np.abs(t), 1 / (4 * b))
        h[sing] = (b / np.sqrt(2)) * (
            (1 + 2 / np.pi) * np.sin(np.pi / (4 * b)) + (1 - 2 / np.pi) * np.cos(np.pi / (4 * b))
        )
    return h / np.linalg.norm(h)


class FrameLayout:
    """Sample-level layout and shaped templates of one frame for ``num_nodes`` nodes.

    Attributes (samples, relative to the frame start): ``length``, ``preamble_start``,
    ``pilot_starts[k]``, ``payload_start``; each ``*_template`` is the pulse-shaped segment
    (tails included) that starts at that offset, scaled so that its samples have mean power
    about 1 over the segment (so amplitudes are per-sample RMS amplitudes).
    """

    def __init__(self, phy: PhyConfig, num_nodes: int) -> None:
        if num_nodes < 1:
            raise ValueError(f"num_nodes: {num_nodes!r} must be >= 1")
        if phy.preamble_length % 2 == 0:
            raise ValueError(
                f"phy.preamble_length: {phy.preamble_length!r} must be odd (Zadoff-Chu length)"
            )
        self.phy = phy
        self.num_nodes = num_nodes
        self.sps = phy.samples_per_symbol
        self.taps = rrc_taps(self.sps, phy.rrc_span, phy.rolloff)
        half = (len(self.taps) - 1) // 2  # pulse half-length (samples)
        self.pulse_half = half
        # Gap (symbols) between segments: the pulse tails of both plus the timing search range.
        gap = math.ceil((2 * half + phy.max_timing_offset) / self.sps) + 1
        guard = max(gap, math.ceil((2 * half + phy.guard_samples) / self.sps))
        self.preamble_roots = node_roots(phy.preamble_length, phy.zc_root, num_nodes)
        # Pilots are pseudo-random QPSK, not ZC: a chirp couples delay and frequency (a
        # fractional timing error would read as a CFO), a PN sequence does not.
        rng = np.random.default_rng(phy.pilot_seed)
        self._pilot_seq = np.exp(1j * np.pi / 4 * (2 * rng.integers(0, 4, phy.pilot_length) + 1))
        if phy.payload_spreading:
            code = np.random.default_rng(0x5EED).choice([-1.0, 1.0], phy.payload_repetitions)
        else:
            code = np.ones(phy.payload_repetitions)
        self._payload_seq = code.astype(np.complex128)

        sym = 0  # running symbol index of each segment's first symbol
        self.preamble_start = 0
        sym += phy.preamble_length + gap
        self.pilot_starts = []
        for _ in range(num_nodes):
            self.pilot_starts.append(sym * self.sps)
            sym += phy.pilot_length + gap
        sym += guard - gap
        self.payload_start = sym * self.sps
        sym += phy.payload_repetitions
        self.length = (sym - 1) * self.sps + 2 * half + 1 + self.sps * gap

        self.preamble_templates = [
            self._shape(zadoff_chu(phy.preamble_length, r)) for r in self.preamble_roots
        ]
        self.pilot_template = self._shape(self._pilot_seq)
        self.payload_template = self._shape(self._payload_seq)

    def _shape(self, symbols: npt.NDArray[np.complex128]) -> npt.NDArray[np.complex128]:
        """Upsample by sps and RRC-filter; length (L-1)*sps + len(taps); mean power ~1 per sample."""
        up = np.zeros((len(symbols) - 1) * self.sps + 1, dtype=np.complex128)
        up[:: self.sps] = symbols
        # Unit-energy taps give symbol energy 1 spread over sps samples: scale by sqrt(sps).
        return np.convolve(up, self.taps) * math.sqrt(self.sps)

    def segment_start(self, segment: str, node: int = 0) -> int:
        """Start offset (samples) of a segment template: 'preamble', 'pilot' (of node), 'payload'."""
        if segment == "preamble":
            return self.preamble_start
        if segment == "pilot":
            if not 0 <= node < self.num_nodes:
                raise ValueError(f"node: {node!r} must be in 0..{self.num_nodes - 1}")
            return self.pilot_starts[node]
        if segment == "payload":
            return self.payload_start
        raise ValueError(f"segment: {segment!r} is not one of {SEGMENTS}")

    @property
    def pilot_center(self) -> float:
        """Offset (samples) of the pilot template's centre from its start: the phase reference."""
        return (len(self.pilot_template) - 1) / 2.0

    def describe(self) -> dict[str, int | float]:
        """Layout summary (samples) for logs and docs."""
        return {
            "frame_samples": self.length,
            "preamble_samples": len(self.preamble_templates[0]),
            "pilot_samples": len(self.pilot_template),
            "payload_samples": len(self.payload_template),
            "payload_start": self.payload_start,
            "duration_s": self.length / self.phy.sample_rate,
        }
