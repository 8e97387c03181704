"""Seeded block-fading uplink channel from K edge nodes to the AP.

Model (one complex gain per node per round, constant over the round's burst):

    h_k(t) = sqrt(PL_k) * f_k(t),     PL_k = (d_ref / d_k)^alpha    (linear power gain)

f_k(t) is the small-scale fading, E|f|^2 = 1:
    * ``none``:     exp(j phi), phi ~ U[0, 2 pi) if ``random_phase`` else 0;
    * ``rayleigh``: CN(0, 1);
    * ``rician``:   sqrt(K/(K+1)) exp(j phi) + sqrt(1/(K+1)) CN(0, 1), K = 10^(K_dB/10).
Amplitudes are dimensionless: a unit transmitted amplitude arrives with amplitude |h_k|.

Receiver noise is AWGN, CN(0, N0) with N0 = 10^(-SNR_dB/10): the SNR is that of a unit
received amplitude (the config's ``channel.snr_db``); per real dimension sigma_n^2 = N0/2.

Channel estimates: the AP aligns with h_est; the relative alignment error is
e_k = h_k / h_est_k - 1 ~ CN(0, s^2) with s = ``estimation_error_std`` (drawn i.i.d. per node
and round), i.e. h_est_k = h_k / (1 + e_k), so that b_k h_k = eta (1 + e_k) exactly as in
DESIGN.md section 4.

Reproducibility: distances are drawn once from ``seed``; round t's fading, phases and errors
come from ``numpy.random.SeedSequence([seed, 1, t])``, so draw(t) is a pure function of
(seed, t) regardless of call order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pairzero.config import ChannelConfig, NodesConfig

__all__ = ["ChannelState", "ChannelModel", "noise_var_from_snr_db"]

Fading = Literal["none", "rayleigh", "rician"]

_STREAM_DISTANCES = 0
_STREAM_ROUNDS = 1


def noise_var_from_snr_db(snr_db: float) -> float:
    """Complex noise variance N0 (linear, relative to a unit received amplitude) from SNR in dB."""
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db: {snr_db!r} is invalid; allowed: a finite number (dB)")
    return 10.0 ** (-snr_db / 10.0)


@dataclass(frozen=True)
class ChannelState:
    """One round's channel.

    Attributes:
        h: (K,) complex true amplitude gains (dimensionless).
        h_est: (K,) complex gains as estimated by the AP (used for alignment / power control).
        noise_var: N0, the complex AWGN variance (sigma_n^2 = N0/2 per real dimension), in the
            same power units as |h|^2 times the transmit power.
        round_t: round index t the state was drawn for.
    """

    h: np.ndarray
    h_est: np.ndarray
    noise_var: float
    round_t: int = 0

    @property
    def n_nodes(self) -> int:
        """K."""
        return int(self.h.shape[0])

    @property
    def sigma_n(self) -> float:
        """Receiver-noise std per real dimension, sqrt(N0/2)."""
        return math.sqrt(self.noise_var / 2.0)


class ChannelModel:
    """Reproducible block-fading channel; ``draw(t)`` returns round t's :class:`ChannelState`.

    Args:
        n_nodes: K >= 1.
        seed: master seed (RunConfig.seed).
        snr_db: receive SNR for a unit received amplitude (dB).
        fading: ``none``, ``rayleigh`` or ``rician``.
        rician_k_db: Rician K-factor (dB), used for ``rician``.
        distances_m: (K,) node-AP distances (m); if None, drawn U[min_distance_m, max_distance_m].
        min_distance_m, max_distance_m: range for drawn distances (m).
        path_loss_exponent: alpha (0 = no path loss).
        reference_distance_m: d_ref (m), where the path gain is 1.
        estimation_error_std: relative std s of the alignment error e_k (0 <= s < 1).
        random_phase: random carrier phase for ``none`` / the Rician line-of-sight term.
    """

    def __init__(
        self,
        n_nodes: int,
        seed: int,
        snr_db: float,
        fading: Fading = "rayleigh",
        rician_k_db: float = 6.0,
        distances_m: Sequence[float] | np.ndarray | None = None,
        min_distance_m: float = 10.0,
        max_distance_m: float = 100.0,
        path_loss_exponent: float = 0.0,
        reference_distance_m: float = 10.0,
        estimation_error_std: float = 0.0,
        random_phase: bool = True,
    ) -> None:
        if isinstance(n_nodes, bool) or not isinstance(n_nodes, int | np.integer) or n_nodes < 1:
            raise ValueError(f"n_nodes: {n_nodes!r} is invalid; allowed: an integer >= 1 (K)")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed: {seed!r} is invalid; allowed: an integer >= 0")
        if fading not in ("none", "rayleigh", "rician"):
            raise ValueError(
                f"fading: {fading!r} is invalid; allowed: 'none', 'rayleigh', 'rician'"
            )
        if not math.isfinite(rician_k_db):
            raise ValueError(f"rician_k_db: {rician_k_db!r} is invalid; allowed: a finite number")
        if not (math.isfinite(path_loss_exponent) and path_loss_exponent >= 0):
            raise ValueError(
                f"path_loss_exponent: {path_loss_exponent!r} is invalid; allowed: >= 0"
            )
        if not (math.isfinite(reference_distance_m) and reference_distance_m > 0):
            raise ValueError(
                f"reference_distance_m: {reference_distance_m!r} is invalid; allowed: > 0"
            )
        if not (math.isfinite(estimation_error_std) and 0 <= estimation_error_std < 1):
            raise ValueError(
                f"estimation_error_std: {estimation_error_std!r} is invalid; allowed: 0 <= s < 1"
            )
        self.n_nodes = int(n_nodes)
        self.seed = int(seed)
        self.noise_var = noise_var_from_snr_db(snr_db)
        self.fading: Fading = fading
        self.rician_k = 10.0 ** (rician_k_db / 10.0)
        self.estimation_error_std = float(estimation_error_std)
        self.random_phase = bool(random_phase)
        if distances_m is None:
            if not (0 < min_distance_m <= max_distance_m and math.isfinite(max_distance_m)):
                raise ValueError(
                    f"min_distance_m/max_distance_m: ({min_distance_m!r}, {max_distance_m!r}) "
                    "invalid; allowed: 0 < min <= max"
                )
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, _STREAM_DISTANCES]))
            d = rng.uniform(min_distance_m, max_distance_m, size=self.n_nodes)
        else:
            d = np.asarray(distances_m, dtype=float)
            if d.shape != (self.n_nodes,) or not np.all(np.isfinite(d)) or np.any(d <= 0):
                raise ValueError(
                    f"distances_m: {distances_m!r} is invalid; allowed: {self.n_nodes} "
                    "finite distances > 0 (one per node)"
                )
        self.distances_m: np.ndarray = d  # (K,) metres
        # (K,) linear power gain of the large-scale path loss
        self.path_gain: np.ndarray = (reference_distance_m / d) ** path_loss_exponent

    @classmethod
    def from_config(cls, channel: ChannelConfig, nodes: NodesConfig, seed: int) -> ChannelModel:
        """Build from the experiment config sections (``seed`` = RunConfig.seed)."""
        return cls(
            n_nodes=nodes.count,
            seed=seed,
            snr_db=channel.snr_db,
            fading=channel.fading,
            rician_k_db=channel.rician_k_db,
            distances_m=nodes.distances_m,
            min_distance_m=nodes.min_distance_m,
            max_distance_m=nodes.max_distance_m,
            path_loss_exponent=channel.path_loss_exponent,
            reference_distance_m=channel.reference_distance_m,
            estimation_error_std=channel.estimation_error_std,
            random_phase=channel.random_phase,
        )

    def draw(self, round_t: int) -> ChannelState:
        """Round t's channel; the same (seed, t) always gives the same state."""
        if isinstance(round_t, bool) or not isinstance(round_t, int | np.integer) or round_t < 0:
            raise ValueError(f"round_t: {round_t!r} is invalid; allowed: an integer >= 0")
        rng = np.random.default_rng(
            np.random.SeedSequence([self.seed, _STREAM_ROUNDS, int(round_t)])
        )
        k = self.n_nodes
        # Every stream is drawn every round (fixed order), so switching a flag does not shift
        # the other streams.
        phase = rng.uniform(0.0, 2.0 * math.pi, size=k)  # (K,) rad
        scatter = (rng.standard_normal(k) + 1j * rng.standard_normal(k)) / math.sqrt(2.0)
        err = (rng.standard_normal(k) + 1j * rng.standard_normal(k)) / math.sqrt(2.0)
        los = np.exp(1j * phase) if self.random_phase else np.ones(k, dtype=complex)
        if self.fading == "none":
            f = los
        elif self.fading == "rayleigh":
            f = scatter
        else:
            kf = self.rician_k
            f = math.sqrt(kf / (kf + 1.0)) * los + math.sqrt(1.0 / (kf + 1.0)) * scatter
        h = np.sqrt(self.path_gain) * f  # (K,) complex
        e = self.estimation_error_std * err  # (K,) relative alignment error
        h_est = h / (1.0 + e)
        return ChannelState(h=h, h_est=h_est, noise_var=self.noise_var, round_t=int(round_t))
