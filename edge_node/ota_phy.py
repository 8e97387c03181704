"""The edge node's GNU Radio transmit chain for a round (see :mod:`access_point.ota_phy`).

Per round the node sends one frame at the AP's ``tx_sample``: its preamble and pilot, and,
when the ROUND carries its precoding, the payload ``b_k (g_k + w_k)`` with CFO and delay
pre-compensation, where w_k ~ N(0, noise_std^2) is its share of the artificial noise. The noise
comes from the operating system's entropy, not from a seed: the AP must not be able to
regenerate it. One-bit mode sends sign(g_k) instead of g_k.
"""

from __future__ import annotations

import logging
import secrets
import time

import numpy as np

from access_point.ota_phy import sample_addresses
from pairzero.config import ExperimentConfig
from pairzero.phy.frame import FrameLayout
from pairzero.phy.tx import NodePrecoding, build_node_burst
from pairzero.protocol.messages import Round

__all__ = ["GnuRadioNodePhy"]

log = logging.getLogger(__name__)


class GnuRadioNodePhy:
    """NodePhy over the loopback emulator (``radio.mode: loopback``) or a USRP."""

    digital = False

    def __init__(self, cfg: ExperimentConfig, node: int, frontend: object | None = None) -> None:
        self.cfg = cfg
        self.node = node
        self.layout = FrameLayout(cfg.phy, cfg.nodes.count)
        self._noise = np.random.default_rng(secrets.randbits(128))
        self.sent: list[int] = []  # tx_sample of every frame sent (for tests and logs)
        self.tx_s: dict[int, float] = {}  # round t -> seconds to build and hand over the frame
        if frontend is None:
            if cfg.radio.mode == "usrp":
                from grc_flowgraphs.radio import UsrpEdgeTx

                r = cfg.radio
                args = r.node_args[node] if r.node_args else ""
                frontend = UsrpEdgeTx(args, cfg.phy.sample_rate, r.center_freq_hz, r.tx_gain_db, r.clock_source)
            else:
                from grc_flowgraphs.loopback import EdgeTx

                frontend = EdgeTx(sample_addresses(cfg)[0][node])
        self.frontend = frontend

    def burst(self, scalar: float, rnd: Round) -> np.ndarray:
        """This round's frame: pilots, plus the precoded payload when the AP sent precoding."""
        p = rnd.precoding
        if p is None:
            return build_node_burst(self.layout, self.node, None, None, frame_start=rnd.tx_sample)
        value = float(np.sign(scalar)) if self.cfg.ota.scheme == "one_bit" else float(scalar)
        if rnd.noise_std > 0:
            value += float(self._noise.normal(0.0, rnd.noise_std))
        pre = NodePrecoding(node=self.node, b=complex(p.b_re, p.b_im), cfo=p.cfo, delay=p.delay,
                            ref_index=p.ref_index)
        return build_node_burst(self.layout, self.node, value, pre, frame_start=rnd.tx_sample)

    def transmit(self, t: int, scalar: float, rnd: Round) -> None:
        """Send round t's frame at ``rnd.tx_sample`` on the shared sample clock."""
        if rnd.tx_sample < 0:
            raise ValueError(f"round {t}: tx_sample {rnd.tx_sample} — the AP runs without a radio "
                             "PHY; set the same radio.mode on the AP and the nodes")
        t0 = time.perf_counter()
        self.frontend.send(self.burst(scalar, rnd), rnd.tx_sample)  # type: ignore[attr-defined]
        self.tx_s[t] = time.perf_counter() - t0
        self.sent.append(rnd.tx_sample)

    def close(self) -> None:
        close = getattr(self.frontend, "close", None)
        if close is not None:
            close()
