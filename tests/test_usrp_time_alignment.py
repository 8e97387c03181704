"""USRP device-time alignment at a PPS edge, and exact sample-index -> device-time conversion.

No radio here: ``align_device_time`` runs against a simulated device whose PPS edges come at a
fixed phase of a simulated host clock (a stand-in for gr-uhd's usrp_block with the same calls:
get_time_last_pps, set_time_next_pps, get_mboard_sensor, set_time_now). The USRP front end as a
whole runs against the emulated USRP in tests/test_radio_emulated_usrp.py.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("gnuradio.uhd")

from pairzero.phy.schedule import index_to_time, time_to_index  # noqa: E402
from radio.usrp import DEVICE_EPOCH_UNIX, align_device_time  # noqa: E402


class _Secs:
    def __init__(self, v: float) -> None:
        self.v = v

    def get_real_secs(self) -> float:
        return self.v

    def to_int(self) -> int:
        return int(self.v)


class SimulatedPpsDevice:
    """PPS edges at host times k + phase; device time is loaded at the edge after a set."""

    def __init__(self, host_start: float, phase: float, pps: bool = True, gps_offset: float = 0.0):
        self.now = host_start
        self.phase = phase
        self.pps = pps
        self.gps_offset = gps_offset  # GPS time minus host time
        self.device_at_edge = {}  # edge index -> device time latched at it
        self.pending: float | None = None
        self.set_now: float | None = None

    def clock(self) -> float:
        return self.now

    def sleep(self, dt: float) -> None:
        before = self._edge_index()
        self.now += dt
        for k in range(before + 1, self._edge_index() + 1):
            if self.pending is not None:
                self.device_at_edge[k] = self.pending
                self.pending = None
            else:
                self.device_at_edge[k] = self.device_at_edge.get(k - 1, 12345.0) + 1.0

    def _edge_index(self) -> int:
        return math.floor(self.now - self.phase) if self.pps else -(10**9)

    def get_time_last_pps(self, mboard: int = 0) -> _Secs:
        return _Secs(self.device_at_edge.get(self._edge_index(), 0.0))

    def set_time_next_pps(self, spec) -> None:
        self.pending = spec.get_real_secs()

    def set_time_now(self, spec, mboard: int = 0) -> None:
        self.set_now = spec.get_real_secs()

    def get_mboard_sensor(self, name: str, mboard: int = 0) -> _Secs:
        assert name == "gps_time"
        last_edge_host = self._edge_index() + self.phase
        return _Secs(round(last_edge_host + self.gps_offset))


@pytest.mark.parametrize("phase", [0.0, 0.2, 0.35, 0.8])
def test_two_hosts_with_skewed_clocks_label_the_same_pps_edge_alike(phase: float) -> None:
    # Prepare: one PPS (at `phase` past each second of true time); two hosts whose clocks are
    # 40 ms apart and that start aligning at different moments within the same second
    start = DEVICE_EPOCH_UNIX + 3_000_000.0
    a = SimulatedPpsDevice(start + 0.05, phase)
    b = SimulatedPpsDevice(start + 0.55, phase)
    b_skew = 0.04
    # Execute
    va = align_device_time(a, "external", clock=a.clock, sleep=a.sleep)
    vb = align_device_time(b, "external", clock=lambda: b.clock() + b_skew, sleep=b.sleep)
    # Assert: each device holds, at every PPS edge, the epoch seconds that edge marks by the
    # (true) host time: the same value at the same edge on both
    edge_a = max(a.device_at_edge)
    edge_b = max(b.device_at_edge)
    assert a.device_at_edge[edge_a] == va and b.device_at_edge[edge_b] == vb
    assert va - edge_a == vb - edge_b  # same labelling of the common edges
    assert va == round(edge_a + phase) - DEVICE_EPOCH_UNIX


def test_gpsdo_labels_the_edge_with_gps_time() -> None:
    # Prepare: host clock 3.3 s off GPS time: the GPSDO's time wins
    dev = SimulatedPpsDevice(DEVICE_EPOCH_UNIX + 5_000_000.3, 0.0, gps_offset=3.0)
    # Execute
    v = align_device_time(dev, "gpsdo", clock=dev.clock, sleep=dev.sleep)
    # Assert
    edge = max(dev.device_at_edge)
    assert dev.device_at_edge[edge] == v == edge + 3 - DEVICE_EPOCH_UNIX


def test_missing_pps_is_a_clear_error() -> None:
    dev = SimulatedPpsDevice(DEVICE_EPOCH_UNIX + 10.0, 0.0, pps=False)
    with pytest.raises(RuntimeError, match="no PPS edge"):
        align_device_time(dev, "external", clock=dev.clock, sleep=dev.sleep)


def test_internal_time_source_sets_host_time_now() -> None:
    dev = SimulatedPpsDevice(DEVICE_EPOCH_UNIX + 42.25, 0.0)
    align_device_time(dev, "internal", clock=dev.clock, sleep=dev.sleep)
    assert dev.set_now == pytest.approx(42.25)
    with pytest.raises(ValueError, match="time_source"):
        align_device_time(dev, "mimo", clock=dev.clock, sleep=dev.sleep)


def test_sample_index_converts_to_device_time_exactly() -> None:
    # A sample index near a month of device time at 1 Msps: one double for index / rate would
    # be off; (whole, fraction) is exact
    rate = 1_000_000.0
    idx = 2_592_000 * 1_000_000 + 123_457
    assert index_to_time(idx, rate) == (2_592_000, 0.123457)
    assert index_to_time(7, 4.0) == (1, 0.75)
    whole, frac = index_to_time(10**9 + 1, 3.0)  # non-power-of-ten rate
    assert whole == 333_333_333 and frac == pytest.approx(2 / 3, abs=1e-12)
    with pytest.raises(ValueError, match="index"):
        index_to_time(-1, rate)


def test_device_time_converts_back_to_the_same_sample_index() -> None:
    for rate in (1e6, 250e3, 3.2e6):
        for idx in (0, 7, 29_114_482_200_055, 2_592_000 * 1_000_000 + 123_457):
            assert time_to_index(*index_to_time(idx, rate), rate) == idx
