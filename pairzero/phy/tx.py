"""TX side: a node's burst for one frame, and the payload precoding computed from pilot estimates.

Round protocol (two frames on the shared sample clock, same layout):

1. pilot frame at sample n1: every node sends its preamble and its pilot (payload silent). The
   AP estimates, per node, the complex gain h_k at a reference sample n_ref,k, the CFO f_k
   (cycles/sample) and the delay d_k (samples) -> :class:`~pairzero.phy.rx.NodeEstimate`.
2. payload frame at n2 > n1: every node sends preamble and pilot again (un-precoded: the AP
   re-estimates and flags absent nodes) and the payload precoded with the frame-1 estimates:
   ``x_k(m) = g_k b_k exp(-j 2 pi f_k (m + d_k - n_ref,k)) s(m - n_pay + d_k)``, with
   ``b_k = eta conj(h_k)/|h_k|^2`` (or any b_k the OTA layer chose). The CFO term undoes the
   channel's phase rotation at every sample and the shift by d_k makes every node's payload
   arrive at the nominal payload index, so the AP receives ``y = eta sum g_k`` (+ noise).

Residual errors grow with the CFO estimate error times n2 - n1: schedule the payload frame as
soon after the pilot frame as the control plane allows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from pairzero.phy.frame import FrameLayout
from pairzero.phy.rx import NodeEstimate
from sync.estimation import fractional_shift

__all__ = ["NodePrecoding", "compute_precoding", "build_node_burst", "refine_cfo", "track_phase",
           "PHASE_TRACK_FORGET"]


@dataclass(frozen=True)
class NodePrecoding:
    """What node ``node`` applies to its payload.

    ``b``: complex amplitude multiplying the scalar (linear); ``cfo``: CFO to pre-compensate
    (cycles/sample); ``delay``: the channel delay to pre-compensate (samples, the payload is sent
    that much earlier); ``ref_index``: absolute AP sample index at which ``b``'s phase holds.
    """

    node: int
    b: complex
    cfo: float = 0.0
    delay: float = 0.0
    ref_index: float = 0.0


def compute_precoding(
    estimates: Sequence[NodeEstimate],
    eta: float | None = None,
    b: Sequence[complex] | None = None,
) -> list[NodePrecoding]:
    """Precoding for each *present* node from its pilot estimate (``NodeEstimate``).

    Give either ``eta`` (alignment gain, linear: then ``b_k = eta conj(h_k)/|h_k|^2``, channel
    inversion) or ``b`` (one complex b_k per estimate, chosen by the OTA layer, already including
    the channel inversion). Absent nodes get no precoding (they must not transmit).
    """
    if (eta is None) == (b is None):
        raise ValueError("eta/b: give exactly one of eta (float) or b (one complex per node)")
    if b is not None and len(b) != len(estimates):
        raise ValueError(f"b: has {len(b)} entries, need one per estimate ({len(estimates)})")
    if eta is not None and not eta > 0:
        raise ValueError(f"eta: {eta!r} must be > 0")
    out = []
    for i, est in enumerate(estimates):
        if not est.present:
            continue
        h = complex(est.gain)
        if abs(h) == 0.0:
            raise ValueError(f"estimates[{i}].gain: zero channel gain for node {est.node}")
        # exactly one of eta / b is given (checked above): without eta, b is set
        bk = eta * np.conj(h) / abs(h) ** 2 if eta is not None else complex(cast(Sequence[complex], b)[i])
        out.append(
            NodePrecoding(
                node=est.node,
                b=complex(bk),
                cfo=float(est.cfo),
                delay=float(est.delay),
                ref_index=float(est.ref_index),
            )
        )
    return out


def build_node_burst(
    layout: FrameLayout,
    node: int,
    value: complex | None = None,
    precoding: NodePrecoding | None = None,
    frame_start: int = 0,
    preamble: bool = True,
    pilot: bool = True,
) -> npt.NDArray[np.complex64]:
    """Node ``node``'s samples for one frame, shape (layout.length,), complex64.

    ``value``: the scalar g_k (payload silent when None). Without ``precoding`` the payload is
    ``value`` times the shaped payload template (``value`` is then the complex x_k itself); with
    it, see the module docstring. ``frame_start`` is the absolute sample index at which the
    frame is sent (needed for the CFO pre-compensation phase).
    """
    if not 0 <= node < layout.num_nodes:
        raise ValueError(f"node: {node!r} must be in 0..{layout.num_nodes - 1}")
    if precoding is not None and precoding.node != node:
        raise ValueError(f"precoding.node: {precoding.node} does not match node {node}")
    x = np.zeros(layout.length, dtype=np.complex128)
    if preamble:
        p = layout.preamble_templates[node]
        x[layout.preamble_start : layout.preamble_start + len(p)] += p
    if pilot:
        a = layout.pilot_starts[node]
        x[a : a + len(layout.pilot_template)] += layout.pilot_template
    if value is not None:
        s = layout.payload_template
        pay = np.zeros(layout.length, dtype=np.complex128)
        pay[layout.payload_start : layout.payload_start + len(s)] = s
        if precoding is None:
            x += complex(value) * pay
        else:
            # Send d_k samples early so it arrives on time; undo the channel's CFO rotation.
            pay = fractional_shift(pay, -precoding.delay)
            m = frame_start + np.arange(layout.length)  # absolute TX sample index
            rot = np.exp(-2j * np.pi * precoding.cfo * (m + precoding.delay - precoding.ref_index))
            x += complex(value) * precoding.b * rot * pay
    return x.astype(np.complex64)


def refine_cfo(first: NodeEstimate, second: NodeEstimate) -> NodeEstimate:
    """``second`` with its CFO refined by the phase advance between two pilot estimates.

    One pilot of L samples measures the CFO with std ~ sqrt(6/(L^3 SNR))/(2 pi) (CRLB); over the
    feedback gap that error becomes a phase error. The phase of h between two pilots D samples
    apart measures it with std ~ sqrt(2/(L SNR))/(2 pi D), i.e. (D/L) times better. The coarse
    estimate of ``second`` resolves the 2 pi ambiguity (valid while its error x D < 1/2 cycle).
    """
    if first.node != second.node:
        raise ValueError(f"second.node: {second.node} differs from first.node {first.node}")
    gap = second.ref_index - first.ref_index
    if gap <= 0:
        raise ValueError(f"second.ref_index: {second.ref_index} must come after {first.ref_index}")
    if not (first.present and second.present):
        return second
    predicted = np.exp(2j * np.pi * second.cfo * gap)
    resid = np.angle(second.gain / (first.gain * predicted))  # wrapped to (-pi, pi]
    cfo = second.cfo + float(resid) / (2 * np.pi * gap)
    return dataclasses.replace(second, cfo=cfo)


#: Forgetting factor of :func:`track_phase`: the weight of the rate measured so far is
#: multiplied by this at every new measurement (0: the last phase advance alone; with equal
#: gaps 0.5 moves the rate half the way to each new measurement).
PHASE_TRACK_FORGET = 0.5


def track_phase(prev: NodeEstimate, new: NodeEstimate, weight: float = 0.0,
                forget: float = PHASE_TRACK_FORGET) -> tuple[NodeEstimate, float]:
    """``new`` with its carrier-offset rate tracked from the phase advance since ``prev``, and
    the tracker's weight after it (samples).

    For radios on one reference the carrier offset is only the oscillators' residual (a fraction
    of a hertz) plus a slow phase walk, while frames may be a second apart: one pilot's own CFO
    estimate is far too coarse to predict the phase over that gap, and the previous pilot's
    phase alone is stale by 2 pi cfo gap. The phase advance between the two pilots, unwrapped
    around the rate tracked so far (``prev.cfo``; valid while the rate's error x gap stays
    under half a cycle, i.e. a residual offset under 1/(2 gap) Hz from the start), measures the
    rate over a gap of D samples. A phase walk makes that measurement's variance fall as 1/D,
    so measurements are averaged with weights D: rate = (f W r + D m) / (f W + D), the new
    weight f W + D (``weight`` W: the tracker's so far, 0 before the first measurement, which
    is then taken whole; ``forget`` f lets the rate follow slow changes). Precoded with this rate
    from ``new``'s reference sample, the payload is aligned for the phase predicted at its own
    sample time.
    """
    if prev.node != new.node:
        raise ValueError(f"new.node: {new.node} differs from prev.node {prev.node}")
    if not 0.0 <= forget <= 1.0:
        raise ValueError(f"forget: {forget!r} must be in [0, 1]")
    gap = new.ref_index - prev.ref_index
    if gap <= 0 or not (prev.present and new.present) or abs(prev.gain) == 0:
        return dataclasses.replace(new, cfo=prev.cfo), weight
    predicted = np.exp(2j * np.pi * prev.cfo * gap)
    resid = float(np.angle(new.gain / (prev.gain * predicted)))  # wrapped to (-pi, pi]
    measured = prev.cfo + resid / (2 * np.pi * gap)
    w = forget * max(weight, 0.0)
    rate = (w * prev.cfo + gap * measured) / (w + gap)
    return dataclasses.replace(new, cfo=rate), w + gap
