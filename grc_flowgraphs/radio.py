"""USRP variants of the edge TX and AP RX (gr-uhd). Built only when a device is present.

Never import pyuhd (``import uhd``) in a process that imports this module: in GNU Radio 3.10.5
both register the same pybind11 types and the second import fails. Device discovery therefore
runs ``uhd_find_devices`` in a subprocess.

Timing: the nodes and the AP share 10 MHz + PPS (or a GPSDO); ``time_source``/``clock_source``
``external`` and ``set_time_next_pps`` align device time, bursts carry ``tx_time`` tags, and the
AP issues a timed stream command, so sample indices are device time x sample rate.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

import numpy as np
import numpy.typing as npt
import pmt
from gnuradio import blocks, gr

__all__ = ["find_usrp_devices", "burst_tags", "UsrpEdgeTx", "UsrpApRx"]

log = logging.getLogger(__name__)

TAG_SOURCE = pmt.intern("pairzero_edge_tx")


def find_usrp_devices(timeout_s: float = 10.0) -> list[str]:
    """Device descriptions reported by ``uhd_find_devices`` (empty when none or UHD absent)."""
    exe = shutil.which("uhd_find_devices")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        log.warning("uhd_find_devices timed out after %.0f s", timeout_s)
        return []
    blocks_ = out.stdout.split("-- UHD Device")[1:]
    return [b.strip() for b in blocks_ if "serial" in b]


def burst_tags(length: int, tx_time_s: float) -> list[gr.tag_t]:
    """``tx_sob`` + ``tx_time`` on the first sample and ``tx_eob`` on the last of a burst.

    ``tx_time_s``: device time in seconds (whole + fractional part, as UHD's time_spec).
    """
    if length < 1:
        raise ValueError(f"length: {length!r} must be >= 1 sample")
    if tx_time_s < 0:
        raise ValueError(f"tx_time_s: {tx_time_s!r} must be >= 0")
    whole = int(tx_time_s)
    t = pmt.make_tuple(pmt.from_uint64(whole), pmt.from_double(tx_time_s - whole))
    return [
        gr.python_to_tag((0, pmt.intern("tx_sob"), pmt.PMT_T, TAG_SOURCE)),
        gr.python_to_tag((0, pmt.intern("tx_time"), t, TAG_SOURCE)),
        gr.python_to_tag((length - 1, pmt.intern("tx_eob"), pmt.PMT_T, TAG_SOURCE)),
    ]


class UsrpEdgeTx:
    """Sends one burst at a device time through ``uhd.usrp_sink`` (like ``edge_tx_usrp.grc``)."""

    def __init__(self, dev_args: str, sample_rate: float, center_freq_hz: float, gain_db: float,
                 clock_source: str = "external") -> None:
        from gnuradio import uhd  # gr-uhd only, never pyuhd

        self._uhd = uhd
        self.sample_rate = sample_rate
        self.usrp = uhd.usrp_sink(dev_args, uhd.stream_args(cpu_format="fc32", channels=[0]), "")
        self.usrp.set_clock_source(clock_source, 0)
        self.usrp.set_time_source(clock_source if clock_source != "internal" else "internal", 0)
        self.usrp.set_samp_rate(sample_rate)
        self.usrp.set_center_freq(center_freq_hz, 0)
        self.usrp.set_gain(gain_db, 0)

    def send(self, burst: npt.NDArray[np.complexfloating], sample_index: int) -> None:
        """Transmit ``burst`` at device time ``sample_index / sample_rate`` (blocks until sent)."""
        x = np.asarray(burst, dtype=np.complex64)
        tb = gr.top_block("pairzero_edge_tx_usrp")
        src = blocks.vector_source_c(x.tolist(), False, 1, burst_tags(len(x), sample_index / self.sample_rate))
        tb.connect(src, self.usrp)
        tb.run()
        tb.disconnect_all()


class UsrpApRx:
    """Captures ``length`` samples starting at a device sample index through ``uhd.usrp_source``."""

    def __init__(self, dev_args: str, sample_rate: float, center_freq_hz: float, gain_db: float,
                 clock_source: str = "external") -> None:
        from gnuradio import uhd

        self._uhd = uhd
        self.sample_rate = sample_rate
        self.usrp = uhd.usrp_source(dev_args, uhd.stream_args(cpu_format="fc32", channels=[0]), False)
        self.usrp.set_clock_source(clock_source, 0)
        self.usrp.set_time_source(clock_source if clock_source != "internal" else "internal", 0)
        self.usrp.set_samp_rate(sample_rate)
        self.usrp.set_center_freq(center_freq_hz, 0)
        self.usrp.set_gain(gain_db, 0)

    def capture(self, start_index: int, length: int) -> npt.NDArray[np.complex64]:
        """Samples [start_index, start_index + length) of device time x sample rate."""
        uhd = self._uhd
        cmd = uhd.stream_cmd_t(uhd.stream_mode_t.STREAM_MODE_NUM_SAMPS_AND_DONE)
        cmd.num_samps = length
        cmd.stream_now = False
        cmd.time_spec = uhd.time_spec_t(start_index / self.sample_rate)
        tb = gr.top_block("pairzero_ap_rx_usrp")
        head = blocks.head(gr.sizeof_gr_complex, length)
        sink = blocks.vector_sink_c()
        tb.connect(self.usrp, head, sink)
        self.usrp.issue_stream_cmd(cmd)
        tb.run()
        tb.disconnect_all()
        return np.array(sink.data(), dtype=np.complex64)
