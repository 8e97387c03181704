"""Communication cost per round of pAirZero and its baselines.

Assumptions (stated so the figures can be checked):
* ``pairzero`` (analog OTA): every node sends its scalar as ONE analog channel use, all nodes
  at the same time on the same resource, so the uplink costs ``payload_uses`` channel uses in
  total whatever K is (``payload_uses`` = repetitions of the symbol, 1 in the ideal count),
  plus ``pilot_uses`` per node for channel estimation sent in TDMA slots. No digital bits.
* ``zo_digital`` and ``zo_noiseless``: every node sends its scalar as a ``float_bits`` word
  on an orthogonal (TDMA) resource: K * float_bits bits, K * float_bits / bits_per_use uses.
  (``zo_noiseless`` is the ideal-aggregation reference; it is costed like ``zo_digital``.)
* ``fo_fedavg``: every node sends its full gradient / model delta, n_params words of
  ``float_bits`` bits, orthogonally.
* Downlink (broadcast, counted once): ZO methods send the round seed (``seed_bits``) and the
  aggregate scalar (``float_bits``); FedAvg broadcasts the n_params-word model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["CommCost", "uplink_cost", "downlink_cost", "uplink_bits_per_round"]

Method = Literal["pairzero", "zo_noiseless", "zo_digital", "fo_fedavg"]
_METHODS = ("pairzero", "zo_noiseless", "zo_digital", "fo_fedavg")


@dataclass(frozen=True)
class CommCost:
    """One round's cost in one direction.

    Attributes:
        bits_per_node: digital bits each node sends (uplink) or receives (downlink).
        total_bits: bits over the air in total (digital methods).
        channel_uses: total channel uses (complex symbols) occupied.
    """

    bits_per_node: float
    total_bits: float
    channel_uses: float


def _check(method: str, n_params: int, n_nodes: int, float_bits: int, bits_per_use: float) -> None:
    if method not in _METHODS:
        raise ValueError(f"method: {method!r} is invalid; allowed: {', '.join(_METHODS)}")
    if isinstance(n_params, bool) or not isinstance(n_params, int) or n_params < 1:
        raise ValueError(f"n_params: {n_params!r} is invalid; allowed: an integer >= 1")
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, int) or n_nodes < 1:
        raise ValueError(f"n_nodes: {n_nodes!r} is invalid; allowed: an integer >= 1")
    if isinstance(float_bits, bool) or not isinstance(float_bits, int) or float_bits < 1:
        raise ValueError(f"float_bits: {float_bits!r} is invalid; allowed: an integer >= 1")
    if not bits_per_use > 0:
        raise ValueError(f"bits_per_use: {bits_per_use!r} is invalid; allowed: > 0")


def uplink_cost(
    method: Method,
    n_params: int,
    n_nodes: int,
    *,
    float_bits: int = 32,
    bits_per_use: float = 1.0,
    payload_uses: int = 1,
    pilot_uses: int = 0,
) -> CommCost:
    """Uplink cost of one round (see the module docstring for the assumptions).

    Args:
        method: RunConfig.method.
        n_params: trainable parameters d.
        n_nodes: K.
        float_bits: bits per transmitted scalar (digital methods).
        bits_per_use: spectral efficiency of the digital link (bits per channel use).
        payload_uses: analog channel uses per round for pairzero (symbol repetitions).
        pilot_uses: pilot channel uses per node per round (pairzero; TDMA).
    """
    _check(method, n_params, n_nodes, float_bits, bits_per_use)
    if payload_uses < 1 or pilot_uses < 0:
        raise ValueError(
            f"payload_uses/pilot_uses: ({payload_uses!r}, {pilot_uses!r}) invalid; allowed: "
            ">= 1 and >= 0"
        )
    if method == "pairzero":
        return CommCost(0.0, 0.0, float(payload_uses + n_nodes * pilot_uses))
    words = n_params if method == "fo_fedavg" else 1
    bits = float(words * float_bits)
    return CommCost(bits, bits * n_nodes, bits * n_nodes / bits_per_use)


def downlink_cost(
    method: Method,
    n_params: int,
    n_nodes: int,
    *,
    float_bits: int = 32,
    seed_bits: int = 64,
    bits_per_use: float = 1.0,
) -> CommCost:
    """Downlink (broadcast) cost of one round: seed + scalar for ZO, the model for FedAvg."""
    _check(method, n_params, n_nodes, float_bits, bits_per_use)
    if seed_bits < 0:
        raise ValueError(f"seed_bits: {seed_bits!r} is invalid; allowed: >= 0")
    bits = float(n_params * float_bits) if method == "fo_fedavg" else float(seed_bits + float_bits)
    return CommCost(bits, bits, bits / bits_per_use)


def uplink_bits_per_round(method: Method, n_params: int, float_bits: int = 32) -> float:
    """Digital uplink bits per node per round: 0 (analog) / 32 (ZO) / 32 d (FedAvg)."""
    return uplink_cost(method, n_params, 1, float_bits=float_bits).bits_per_node
