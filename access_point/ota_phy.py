"""The AP's GNU Radio physical layer for a round: planning from pilots, over-the-air receive.

One frame per round, on the shared sample clock at ``tx_sample = (t + 1) * stride``: every node
sends its preamble and pilot (TDMA slots) and, when it has a channel estimate, its payload
precoded with the estimate from the previous round (see :mod:`pairzero.phy.tx`)::

    round t-1 frame  --pilots-->  AP: h_k, CFO_k, delay_k per node (CFO refined across rounds)
    ROUND t (per node): eta_t, b_k = eta_t conj(h_k)/|h_k|^2, CFO/delay pre-compensation
    round t frame    --pilots + payload b_k g_k-->  AP: y = eta_t sum_k g_k + n,  g_hat = Re(y)/(|S| eta_t)

A node without a refined estimate (its first two rounds, or just back) sends pilots only and
is not in S_t that round: one pilot's CFO error times the frame stride is too large a phase
error, so the CFO is refined from the phase advance between two consecutive frames first. Power control, artificial noise and the privacy calibration are those of
:mod:`pairzero.ota` (``plan_round``) on the AP's estimates; the noise is the measured noise of
the payload statistic y (per-sample noise / payload energy), which is what the privacy
guarantee is computed against. Each round's realized design mu_t is accounted per node.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from grc_flowgraphs.loopback import CAPTURE_MARGIN, FRAME_GAP
from pairzero.config import ExperimentConfig
from pairzero.ota.power import PowerPlan, amplitude_bound, plan_round
from pairzero.ota.privacy import GaussianDPAccountant, PrivacyCalibration, charge_logged_rounds
from pairzero.phy.frame import FrameLayout
from pairzero.phy.rx import BurstReceiver, NodeEstimate, RxResult
from pairzero.phy.tx import refine_cfo
from pairzero.protocol.interfaces import PhyResult, RoundPlan
from pairzero.protocol.messages import Precoding, RoundRecord

__all__ = ["GnuRadioApPhy", "frame_stride", "sample_addresses"]

log = logging.getLogger(__name__)


def frame_stride(layout: FrameLayout) -> int:
    """Samples between the starts of consecutive rounds' frames."""
    return layout.length + FRAME_GAP


def sample_addresses(cfg: ExperimentConfig) -> tuple[list[str], str]:
    """Loopback sample-stream addresses: node k -> emulator, and emulator -> AP."""
    base, k = cfg.network.sample_port_base, cfg.nodes.count
    return [f"tcp://127.0.0.1:{base + i}" for i in range(k)], f"tcp://127.0.0.1:{base + k}"


class GnuRadioApPhy:
    """RoundPlanner + ApPhy over the loopback emulator (``radio.mode: loopback``) or a USRP."""

    def __init__(self, cfg: ExperimentConfig, frontend: object | None = None) -> None:
        self.cfg = cfg
        self.k = cfg.nodes.count
        self.layout = FrameLayout(cfg.phy, self.k)
        self.receiver = BurstReceiver(self.layout)
        self.stride = frame_stride(self.layout)
        s = self.layout.payload_template
        self.payload_energy = float(np.vdot(s, s).real)  # y = <s, r>/E_s: noise var / E_s
        # Until the first frame is measured: the configured SNR for unit received amplitude.
        self.noise_var_y = 10 ** (-cfg.channel.snr_db / 10) / self.payload_energy
        self.amplitude = amplitude_bound(cfg.ota.scheme, cfg.zo.clip)
        self.privacy = None
        if cfg.privacy.enabled:
            self.privacy = PrivacyCalibration.from_target(
                cfg.privacy.epsilon, cfg.privacy.delta, cfg.run.rounds,
                estimation_error_std=cfg.channel.estimation_error_std,
                tail_prob=cfg.privacy.error_tail_prob,
            )
        self.accountant = GaussianDPAccountant(self.k)
        self.estimates: dict[int, NodeEstimate] = {}
        # Nodes whose estimate has a CFO refined over two consecutive frames: only those are
        # precoded (one pilot's CFO error times a frame stride is too large a phase error).
        self.refined: set[int] = set()
        self._plans: dict[int, PowerPlan] = {}
        self.last_rx: RxResult | None = None
        self.capture_timeout_s = cfg.network.ready_timeout_s + 10.0
        self.shared_reference = cfg.radio.mode == "usrp" and cfg.radio.clock_source != "internal"
        if frontend is None:
            frontend = self._default_frontend()
        self.frontend = frontend

    def _default_frontend(self) -> object:
        if self.cfg.radio.mode == "usrp":
            from grc_flowgraphs.radio import UsrpApRx

            r = self.cfg.radio
            return UsrpApRx(r.ap_args, self.cfg.phy.sample_rate, r.center_freq_hz, r.rx_gain_db,
                            r.clock_source)
        from grc_flowgraphs.loopback import ApRx

        return ApRx(sample_addresses(self.cfg)[1])

    # ------------------------------------------------------------------ planning
    def tx_sample(self, t: int) -> int:
        """Frame start of round t on the shared sample clock."""
        if self.cfg.radio.mode == "usrp":
            # Device time (aligned to the shared PPS) must be in the future when the nodes send:
            # after their forward passes, i.e. within the READY deadline.
            now = self.frontend.usrp.get_time_now().get_real_secs()  # type: ignore[attr-defined]
            return int(math.ceil((now + self.cfg.network.ready_timeout_s + 0.5) * self.cfg.phy.sample_rate))
        return (t + 1) * self.stride

    def plan(self, t: int, nodes: Sequence[int]) -> RoundPlan:
        """η_t, b_k and artificial noise from the latest estimates of the expected nodes."""
        n_t = self.tx_sample(t)
        h = np.zeros(self.k, dtype=complex)
        avail = np.zeros(self.k, dtype=bool)
        for k in nodes:
            e = self.estimates.get(k)
            if e is not None and k in self.refined and 0 <= k < self.k:
                h[k], avail[k] = e.gain, True
        if not avail.any():
            log.info("round %d: no channel estimates yet: pilots only", t)
            self._plans.pop(t, None)
            return RoundPlan(eta=1.0, tx_sample=n_t, precoding={})
        pp = plan_round(
            h, self.cfg.nodes.power_budget, self.amplitude, self.noise_var_y,
            g_th=self.cfg.channel.truncation_threshold, privacy=self.privacy,
            eta_floor=self.cfg.privacy.eta_floor, sigma_a_max=self.cfg.privacy.max_artificial_noise_std,
            available=avail,
        )
        self._plans[t] = pp
        pre = {}
        for k in np.flatnonzero(pp.active):
            e = self.estimates[int(k)]
            b = complex(pp.b[k])
            pre[int(k)] = Precoding(b_re=b.real, b_im=b.imag, cfo=e.cfo, delay=e.delay, ref_index=e.ref_index)
        n_act = max(int(pp.n_active), 1)
        # Artificial noise shared by the nodes: each adds N(0, noise_std^2) to its scalar, so the
        # AP receives eta * sum of them: total std eta * noise_std * sqrt(|S|) = sigma_a.
        noise_std = pp.sigma_a / (pp.eta * math.sqrt(n_act)) if pp.sigma_a > 0 and pp.eta > 0 else 0.0
        mu = pp.mu_design if math.isfinite(pp.mu_design) else None
        return RoundPlan(eta=pp.eta if pp.eta > 0 else 1.0, sigma_a=pp.sigma_a, noise_std=noise_std,
                         tx_sample=n_t, mu=mu, precoding=pre)

    # ------------------------------------------------------------------ receive
    def _capture(self, start: int, length: int) -> np.ndarray | None:
        if self.cfg.radio.mode == "usrp":
            return self.frontend.capture(start, length)  # type: ignore[attr-defined]
        return self.frontend.capture(start, length, self.capture_timeout_s)  # type: ignore[attr-defined]

    def receive(self, t: int, seed: int, plan: RoundPlan, ready: Mapping[int, float | None]) -> PhyResult:
        """Capture round t's frame, update the channel estimates, form ĝ from the payload."""
        pp = self._plans.pop(t, None)
        a = plan.tx_sample - CAPTURE_MARGIN
        w = self._capture(a, self.layout.length + 2 * CAPTURE_MARGIN)
        if w is None:
            log.error("round %d: the AP's sample window [%d, +%d) never arrived", t, a,
                      self.layout.length + 2 * CAPTURE_MARGIN)
            return PhyResult(0.0, ())
        res = self.receiver.process(w, a, expected_start=plan.tx_sample)
        self.last_rx = res
        if not res.detected:
            log.warning("round %d: no frame detected (metric %.3g < %.3g)", t, res.metric, res.threshold)
            return PhyResult(0.0, ())
        if math.isfinite(res.noise_var) and res.noise_var > 0:
            self.noise_var_y = res.noise_var / self.payload_energy
        for e in res.nodes:
            old = self.estimates.get(e.node)
            if not e.present:
                self.estimates.pop(e.node, None)
                self.refined.discard(e.node)
            elif self.shared_reference:
                # USRPs on a shared 10 MHz reference have no carrier offset to speak of, and
                # rounds are seconds apart (too far to refine a CFO by phase advance): precode
                # with this round's gain and phase, without CFO pre-compensation.
                self.estimates[e.node] = dataclasses.replace(e, cfo=0.0)
                self.refined.add(e.node)
            elif old is not None and 0 < e.ref_index - old.ref_index <= 2 * self.stride:
                self.estimates[e.node] = refine_cfo(old, e)
                self.refined.add(e.node)
            else:  # first pilot, or too long since the last one to unwrap the phase advance
                self.estimates[e.node] = e
                self.refined.discard(e.node)
        if res.absent:
            log.info("round %d: no pilot from nodes %s", t, res.absent)
        present = {e.node for e in res.nodes if e.present}
        # Whoever was precoded and whose pilot is in this frame transmitted its payload (even
        # if its READY came late): it is in y, so it is in S_t and it is charged privacy.
        s = sorted(k for k in plan.precoding if k in present)
        late = [k for k in s if k not in ready]
        if late:
            log.info("round %d: nodes %s transmitted without a READY in time", t, late)
        if not s or pp is None:
            return PhyResult(0.0, ())
        if self.cfg.ota.scheme == "one_bit":
            g_hat = float(np.sign(res.y.real))
        else:
            g_hat = float(res.y.real / (len(s) * plan.eta))
        mu = self._realized_mu(pp, plan, len(s))
        mu_t = np.zeros(self.k)
        if mu is not None:
            mu_t[s] = mu
        self.accountant.add(mu_t)
        return PhyResult(g_hat=g_hat, present=tuple(s), eta=plan.eta, mu=mu)

    @staticmethod
    def _realized_mu(pp: PowerPlan, plan: RoundPlan, n_sent: int) -> float | None:
        """The round's mu with the artificial noise that was really sent.

        The nodes share sigma_a (each adds noise_std); when fewer than planned transmit, less
        noise reaches the AP and mu grows: mu = 2 G eta (1 + e) / sqrt(sigma_n^2 + sigma_a'^2)
        with sigma_a'^2 = sigma_a^2 n_sent / n_planned.
        """
        if plan.mu is None or pp.sigma_a == 0.0:
            return plan.mu
        sn2 = pp.noise_var / 2.0
        sa2 = pp.sigma_a**2 * n_sent / max(len(plan.precoding), 1)
        return float(plan.mu * math.sqrt((sn2 + pp.sigma_a**2) / (sn2 + sa2)))

    def restore_accounting(self, records: Sequence[RoundRecord]) -> None:
        """Charge the rounds committed before an AP restart (mu to the nodes in S_t, as live)."""
        charge_logged_rounds(self.accountant, ((r.active, r.mu) for r in records))

    def eps_spent(self) -> float | None:
        """Largest ε spent by any node so far (None without privacy)."""
        if not self.cfg.privacy.enabled:
            return None
        return float(np.max(self.accountant.epsilon(self.cfg.privacy.delta)))

    def close(self) -> None:
        close = getattr(self.frontend, "close", None)
        if close is not None:
            close()

