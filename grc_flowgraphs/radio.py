"""USRP variants of the edge TX and AP RX (gr-uhd). Built only when a device is present.

Never import pyuhd (``import uhd``) in a process that imports this module: in GNU Radio 3.10.5
both register the same pybind11 types and the second import fails. Device discovery therefore
runs ``uhd_find_devices`` in a subprocess.

Timing: the nodes and the AP share 10 MHz + PPS (or each has a GPSDO). Every radio sets its
device time at a PPS edge (:func:`align_device_time`) to the seconds since
:data:`DEVICE_EPOCH_UNIX` that the edge marks, so all devices hold the same time; bursts carry
``tx_time`` tags and the AP issues a timed stream command, so a sample index is device time x
sample rate on every radio. With an external PPS the hosts' clocks must agree to well under
half a second (NTP is ample): a host labels the PPS edge it sees by its own clock. With a GPSDO
the label is the GPS time itself.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pmt
from gnuradio import blocks, gr

__all__ = [
    "find_usrp_devices", "burst_tags", "index_to_time", "align_device_time", "DEVICE_EPOCH_UNIX",
    "UsrpEdgeTx", "UsrpApRx",
]

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


#: Device time 0 (2026-01-01T00:00:00Z, in Unix seconds): device times stay near 10^7-10^8 s,
#: where a double still resolves nanoseconds, and every radio of a testbed counts from it.
DEVICE_EPOCH_UNIX = 1_767_225_600
PPS_WAIT_S = 1.5  # longest gap between two PPS edges we accept (nominal 1 s)


def index_to_time(index: int, sample_rate: float) -> tuple[int, float]:
    """Device time of sample ``index`` as (whole seconds, fraction): exact for an integer rate,
    where ``index / sample_rate`` as one double would lose sub-sample precision."""
    if index < 0:
        raise ValueError(f"index: {index!r} must be >= 0")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate: {sample_rate!r} must be > 0")
    if float(sample_rate).is_integer():
        whole, rem = divmod(int(index), int(sample_rate))
        return whole, rem / sample_rate
    secs = index / sample_rate
    return int(secs), secs - int(secs)


def burst_tags(length: int, tx_time_s: float | tuple[int, float]) -> list[gr.tag_t]:
    """``tx_sob`` + ``tx_time`` on the first sample and ``tx_eob`` on the last of a burst.

    ``tx_time_s``: device time, seconds or (whole seconds, fraction) as UHD's time_spec
    (see :func:`index_to_time`).
    """
    if length < 1:
        raise ValueError(f"length: {length!r} must be >= 1 sample")
    if isinstance(tx_time_s, tuple):
        whole, frac = int(tx_time_s[0]), float(tx_time_s[1])
    else:
        whole, frac = int(tx_time_s), float(tx_time_s) - int(tx_time_s)
    if whole < 0 or not 0.0 <= frac < 1.0:
        raise ValueError(f"tx_time_s: {tx_time_s!r} must be >= 0 (fraction in [0, 1))")
    t = pmt.make_tuple(pmt.from_uint64(whole), pmt.from_double(frac))
    return [
        gr.python_to_tag((0, pmt.intern("tx_sob"), pmt.PMT_T, TAG_SOURCE)),
        gr.python_to_tag((0, pmt.intern("tx_time"), t, TAG_SOURCE)),
        gr.python_to_tag((length - 1, pmt.intern("tx_eob"), pmt.PMT_T, TAG_SOURCE)),
    ]


def _wait_for_pps_edge(usrp: Any, clock: Callable[[], float], sleep: Callable[[float], None]) -> float:
    """Host time just after the next PPS edge the device sees (edges change get_time_last_pps)."""
    last = usrp.get_time_last_pps(0).get_real_secs()
    deadline = clock() + PPS_WAIT_S
    while clock() < deadline:
        sleep(0.005)
        if usrp.get_time_last_pps(0).get_real_secs() != last:
            return clock()
    raise RuntimeError(
        f"no PPS edge on the radio's time input within {PPS_WAIT_S} s: check the PPS cable, "
        "or set radio.clock_source to the reference actually connected ('external' or 'gpsdo')"
    )


def align_device_time(
    usrp: Any,
    time_source: str,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Set device time at the next PPS edge to the seconds since :data:`DEVICE_EPOCH_UNIX` that
    edge marks; return that value. Returns after the edge, when the time is in effect.

    ``external``: right after an edge, the next one is labelled round(host time) + 1 (the
    hosts' clocks must agree to well under half a second, and the PPS must not sit near the
    half-second of host time). ``gpsdo``: the label is the GPSDO's ``gps_time`` + 1, read just
    after an edge. ``internal``: no PPS; device time is set from the host clock now (a single
    device only: two hosts' times differ by their clock offset).
    """
    from gnuradio import uhd

    if time_source == "internal":
        now = clock() - DEVICE_EPOCH_UNIX
        usrp.set_time_now(uhd.time_spec_t(int(now), now - int(now)), 0)
        return int(now)
    if time_source not in ("external", "gpsdo"):
        raise ValueError(f"time_source: {time_source!r} is not 'internal', 'external' or 'gpsdo'")
    edge_host = _wait_for_pps_edge(usrp, clock, sleep)
    if time_source == "gpsdo":
        label = int(usrp.get_mboard_sensor("gps_time", 0).to_int()) + 1
    else:
        label = int(round(edge_host)) + 1
        frac = edge_host - math.floor(edge_host)
        if abs(frac - 0.5) < 0.1:
            log.warning("PPS edge at %.3f s past the host's second: hosts whose clocks differ by "
                        "more than %.0f ms may label it differently", frac, abs(frac - 0.5) * 1e3)
    value = label - DEVICE_EPOCH_UNIX
    usrp.set_time_next_pps(uhd.time_spec_t(value, 0.0))
    _wait_for_pps_edge(usrp, clock, sleep)  # the value is loaded at this edge
    got = usrp.get_time_last_pps(0).get_real_secs()
    if abs(got - value) > 1e-6:
        raise RuntimeError(f"device time at the PPS edge is {got} s, set {value} s: is the PPS stable?")
    log.info("device time aligned at a PPS edge: %d s since the testbed epoch (%s)", value, time_source)
    return value


class UsrpEdgeTx:
    """Sends one burst at a device time through ``uhd.usrp_sink`` (like ``edge_tx_usrp.grc``)."""

    def __init__(self, dev_args: str, sample_rate: float, center_freq_hz: float, gain_db: float,
                 clock_source: str = "external") -> None:
        from gnuradio import uhd  # gr-uhd only, never pyuhd

        self._uhd = uhd
        self.sample_rate = sample_rate
        self.usrp = uhd.usrp_sink(dev_args, uhd.stream_args(cpu_format="fc32", channels=[0]), "")
        self.usrp.set_clock_source(clock_source, 0)
        self.usrp.set_time_source(clock_source, 0)
        self.usrp.set_samp_rate(sample_rate)
        self.usrp.set_center_freq(center_freq_hz, 0)
        self.usrp.set_gain(gain_db, 0)
        align_device_time(self.usrp, clock_source)

    def send(self, burst: npt.NDArray[np.complexfloating], sample_index: int) -> None:
        """Transmit ``burst`` at device time ``sample_index / sample_rate`` (blocks until sent)."""
        x = np.asarray(burst, dtype=np.complex64)
        tb = gr.top_block("pairzero_edge_tx_usrp")
        src = blocks.vector_source_c(x.tolist(), False, 1,
                                     burst_tags(len(x), index_to_time(sample_index, self.sample_rate)))
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
        self.usrp.set_time_source(clock_source, 0)
        self.usrp.set_samp_rate(sample_rate)
        self.usrp.set_center_freq(center_freq_hz, 0)
        self.usrp.set_gain(gain_db, 0)
        align_device_time(self.usrp, clock_source)

    def capture(self, start_index: int, length: int) -> npt.NDArray[np.complex64]:
        """Samples [start_index, start_index + length) of device time x sample rate."""
        uhd = self._uhd
        cmd = uhd.stream_cmd_t(uhd.stream_mode_t.STREAM_MODE_NUM_SAMPS_AND_DONE)
        cmd.num_samps = length
        cmd.stream_now = False
        cmd.time_spec = uhd.time_spec_t(*index_to_time(start_index, self.sample_rate))
        tb = gr.top_block("pairzero_ap_rx_usrp")
        head = blocks.head(gr.sizeof_gr_complex, length)
        sink = blocks.vector_sink_c()
        tb.connect(self.usrp, head, sink)
        self.usrp.issue_stream_cmd(cmd)
        tb.run()
        tb.disconnect_all()
        return np.array(sink.data(), dtype=np.complex64)
