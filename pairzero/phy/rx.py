"""The AP receiver chain, numpy-vectorised: detect -> per-node pilots -> payload combining.

Input: a window of complex baseband samples (complex64/128, shape (N,)) and the absolute
sample index of its first sample. Output: :class:`RxResult` with the detected frame start, the
complex payload sum ``y`` (``eta * sum_k g_k`` + noise when the nodes precode, see
:mod:`pairzero.phy.tx`), per-node estimates (complex gain at a reference sample, CFO, delay,
SNR) and the nodes whose pilot energy stayed below the noise-derived presence threshold.
Per-sample work is FFT correlation and array arithmetic; the only Python loop is over nodes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pairzero.phy.frame import FrameLayout
from sync.estimation import (
    cfo_ml_batch,
    detection_threshold,
    fractional_shift,
    parabolic_offset,
    presence_threshold,
    xcorr_valid,
)

__all__ = ["NodeEstimate", "RxResult", "BurstReceiver"]

log = logging.getLogger(__name__)

_PAD = 16  # zero padding (samples) around a template before a fractional shift
_FRAC = 64  # fractional-delay resolution of the pilot template bank (1/_FRAC sample)


@dataclass(frozen=True)
class NodeEstimate:
    """One node's channel as seen in its pilot slot.

    ``gain``: complex amplitude (linear, per-sample RMS units) at absolute sample ``ref_index``;
    ``cfo``: cycles/sample; ``delay``: arrival offset from the nominal slot (samples);
    ``snr_db``: |gain|^2 / noise variance; ``statistic``: pilot energy / (template energy x
    noise variance), compared with the presence threshold.
    """

    node: int
    present: bool
    gain: complex
    cfo: float
    delay: float
    ref_index: float
    snr_db: float
    statistic: float


@dataclass(frozen=True)
class RxResult:
    """Receiver output for one frame (``frame_start`` is an absolute sample index)."""

    detected: bool
    metric: float
    threshold: float
    frame_start: float = float("nan")
    y: complex = complex("nan")
    noise_var: float = float("nan")
    nodes: list[NodeEstimate] = field(default_factory=list)
    preamble_phases: list[float] = field(default_factory=list)

    @property
    def absent(self) -> list[int]:
        """Nodes whose pilot was not detected."""
        return [e.node for e in self.nodes if not e.present]


class BurstReceiver:
    """Numpy receiver for frames of ``layout`` (see :mod:`pairzero.phy.frame`)."""

    def __init__(self, layout: FrameLayout) -> None:
        self.layout = layout
        phy = layout.phy
        self.search = int(np.ceil(phy.max_timing_offset)) + 1  # +-samples around nominal
        self.max_cfo = phy.max_cfo
        p = layout.preamble_templates
        self._pre_len = len(p[0])
        self._pre_energy = float(np.vdot(p[0], p[0]).real)
        self._pilot_energy = float(np.vdot(layout.pilot_template, layout.pilot_template).real)
        tp = np.concatenate([np.zeros(_PAD), layout.pilot_template, np.zeros(_PAD)])
        # Bank of fractionally shifted pilot templates, shifts -1/2..1/2 in 1/_FRAC steps
        # (quantisation <= 1/(2 _FRAC) sample): no FFT per node at run time. (_FRAC+1, L+2 PAD)
        shifts = np.arange(-_FRAC // 2, _FRAC // 2 + 1) / _FRAC
        self._pilot_bank = np.stack([fractional_shift(tp, d) for d in shifts]).astype(np.complex64)
        self._pre_conj = np.conj(np.stack(p)).T  # (L_pre, K)
        self._det_thr: dict[int, float] = {}
        self._presence_thr = presence_threshold(2 * self.search + 1, phy.presence_pfa)
        # Only 2d+3 lags of each pilot correlation are needed: a banded matrix whose column l
        # holds conj(pilot) at rows l..l+L-1, so correlations = windows @ matrix. (L+2d+2, 2d+3)
        lt, nl = len(layout.pilot_template), 2 * self.search + 3
        lags = np.zeros((lt + nl - 1, nl), dtype=np.complex128)
        for lag in range(nl):
            lags[lag : lag + lt, lag] = np.conj(layout.pilot_template)
        self._pilot_lags = lags.astype(np.complex64)  # float32 templates: ~1e-7 relative, ample

    # ------------------------------------------------------------------ detection
    def _preamble_metric(self, r: npt.NDArray[np.complexfloating]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.complex128]]:
        """Metric (N-L+1,) in [0, 1] and per-node correlations (K, N-L+1) of the preamble."""
        n_pos = len(r) - self._pre_len + 1
        if n_pos <= 4 * self._pre_len:  # few positions (scheduled frame): direct products
            view = np.lib.stride_tricks.sliding_window_view(r, self._pre_len)  # (P, L)
            c = (view @ self._pre_conj).T  # (K, P)
        else:  # blind search over a long window: FFT correlation
            c = np.stack([xcorr_valid(r, p) for p in self.layout.preamble_templates])  # (K, P)
        e = np.concatenate([[0.0], np.cumsum(np.abs(r) ** 2)])
        win = e[self._pre_len :] - e[: -self._pre_len]  # sliding window energy, (P,)
        metric = (np.abs(c) ** 2).sum(axis=0) / (self._pre_energy * np.maximum(win, 1e-30))
        return metric, c

    def process(
        self,
        samples: npt.NDArray[np.complexfloating],
        start_index: int = 0,
        expected_start: int | None = None,
    ) -> RxResult:
        """Run the chain on ``samples`` (shape (N,)) whose first sample has absolute index ``start_index``.

        ``expected_start``: absolute index where the frame was scheduled (loopback sample clock,
        USRP ``tx_time``); the preamble is then searched only within the timing range around it
        and per-node delays are relative to it. Without it the whole window is searched.
        """
        lay = self.layout
        r = np.asarray(samples)
        if r.dtype not in (np.complex64, np.complex128):
            r = r.astype(np.complex128)
        if r.ndim != 1:
            raise ValueError(f"samples: expected a 1-D array, got shape {r.shape}")
        if expected_start is None:
            lo, hi = 0, len(r) - lay.length
        else:
            nominal = expected_start - start_index
            lo, hi = nominal - self.search, nominal + self.search
            lo, hi = max(lo, 0), min(hi, len(r) - lay.length)
        if hi < lo:
            raise ValueError(
                f"samples: window of {len(r)} samples starting at {start_index} cannot hold a "
                f"frame of {lay.length} samples at the requested position"
            )
        seg = r[lo : hi + self._pre_len]
        metric, corr = self._preamble_metric(seg)
        i = int(np.argmax(metric))
        thr = self._det_thr.get(len(metric))
        if thr is None:  # depends only on the number of positions searched: computed once
            thr = detection_threshold(lay.num_nodes, self._pre_len, len(metric), lay.phy.detection_pfa)
            self._det_thr[len(metric)] = thr
        # A lone noise spike cannot pass: with signal the metric is ~SNR/(1+SNR) <= 1.
        if metric[i] < thr:
            return RxResult(detected=False, metric=float(metric[i]), threshold=thr)
        if expected_start is None:
            frac = 0.0
            if 0 < i < len(metric) - 1:
                frac = parabolic_offset(metric[i - 1], metric[i], metric[i + 1])
            fs = lo + i  # integer frame start (window index); delays are measured from here
            frame_start = float(start_index + fs + frac)
        else:
            fs = expected_start - start_index
            frame_start = float(expected_start)
        pre_phases = [float(np.angle(corr[k, i])) for k in range(lay.num_nodes)]
        nodes, noise_var = self._pilots(r, fs, start_index)
        a = fs + lay.payload_start
        s = lay.payload_template
        y = complex(np.vdot(s, r[a : a + len(s)]) / np.vdot(s, s).real)
        return RxResult(
            detected=True,
            metric=float(metric[i]),
            threshold=thr,
            frame_start=frame_start,
            y=y,
            noise_var=noise_var,
            nodes=nodes,
            preamble_phases=pre_phases,
        )

    # ------------------------------------------------------------------ pilots
    def _pilots(self, r: npt.NDArray[np.complex128], fs: int, start_index: int) -> tuple[list[NodeEstimate], float]:
        """All K pilot slots at once; arrays are (K, ...) with one row per node."""
        lay = self.layout
        t = lay.pilot_template
        lt, d, k_all = len(t), self.search, lay.num_nodes
        a0 = fs + np.asarray(lay.pilot_starts)  # (K,) nominal slot starts in r
        # Candidate delays -d-1 .. d+1: windows (K, lt + 2d + 2) -> correlations (K, 2d+3).
        idx = (a0 - d - 1)[:, None] + np.arange(lt + 2 * d + 2)[None, :]
        win = r[idx]
        c = win @ self._pilot_lags  # (K, 2d+3): one BLAS product, no FFT
        p = np.abs(c) ** 2
        ar = np.arange(k_all)
        j = np.argmax(p[:, 1:-1], axis=1) + 1  # integer peak, (K,)
        yl, ym, yr = p[ar, j - 1], p[ar, j], p[ar, j + 1]
        den = yl - 2 * ym + yr
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(den < 0, np.clip(0.5 * (yl - yr) / den, -0.5, 0.5), 0.0)
        tau = j - d - 1 + frac  # delay from the nominal slot (samples), (K,)
        ti = np.round(tau).astype(int)
        # Fractionally shifted templates from the bank, aligned with r[a - PAD : a + lt + PAD].
        ts = self._pilot_bank[np.round((tau - ti) * _FRAC).astype(int) + _FRAC // 2]  # (K, L')
        a = a0 + ti
        rs = r[(a - _PAD)[:, None] + np.arange(ts.shape[1])[None, :]]  # (K, L')
        f = cfo_ml_batch(rs, ts, self.max_cfo)  # (K,)
        centre = _PAD + lay.pilot_center + (tau - ti)  # phase reference inside rs, (K,)
        rot = np.exp(2j * np.pi * f[:, None] * (np.arange(ts.shape[1])[None, :] - centre[:, None]))
        model = ts * rot
        h = np.einsum("kn,kn->k", np.conj(model), rs) / np.einsum("kn,kn->k", np.conj(model), model).real
        res = rs - h[:, None] * model
        # 3 complex + 1 real parameters fitted per node: unbiased residual variance.
        noise_var = float(np.sum(np.abs(res) ** 2) / max(1.0, res.size - 3.5 * k_all))
        thr = self._presence_thr
        stat = ym / (self._pilot_energy * noise_var)
        ref = start_index + a - _PAD + centre
        out = []
        for k in range(k_all):
            present = bool(stat[k] > thr)
            out.append(
                NodeEstimate(
                    node=k,
                    present=present,
                    gain=complex(h[k]),
                    cfo=float(f[k]),
                    delay=float(tau[k]),
                    ref_index=float(ref[k]),
                    snr_db=float(10 * np.log10(max(abs(h[k]) ** 2, 1e-300) / noise_var)),
                    statistic=float(stat[k]),
                )
            )
            if not present:
                log.info("node %d absent: pilot statistic %.1f <= threshold %.1f", k, stat[k], thr)
        return out, noise_var
