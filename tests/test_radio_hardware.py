"""On a real USRP (marker ``radio``; skipped when ``uhd_find_devices`` finds none).

Run on a host with a radio attached and its UHD images fetched (``scripts/setup.sh --radios``):

    .venv/bin/python -m pytest -m radio tests/test_radio_hardware.py

It opens the first device found, as the AP's front end does (internal reference: no OctoClock
needed), and checks what the emulated radios stand in for: the start-up checks pass, the lock
sensors read true through ``check_lock``, device time runs, and a timed window arrives whole.
Nothing is transmitted.
"""

from __future__ import annotations

import pytest

pytest.importorskip("gnuradio.uhd")

pytestmark = pytest.mark.radio


@pytest.fixture(scope="module")
def device_args() -> str:
    from radio.usrp import find_usrp_devices

    devices = find_usrp_devices() or []
    if not devices:
        pytest.skip("no USRP attached (uhd_find_devices finds none)")
    d = devices[0]
    return ",".join(f"{k}={d[k]}" for k in ("type", "serial") if k in d)


def test_a_real_radio_opens_locks_and_captures_a_timed_window(device_args: str) -> None:
    from radio.usrp import UsrpFrontEnd

    fe = UsrpFrontEnd("rx", device_args, 1e6, 915e6, 0.0, "internal", antenna="RX2",
                      args_key="device args")
    try:
        assert fe.check_lock() is None
        a = fe.now_index()
        n = a + 50_000  # 50 ms ahead
        cap = fe.capture(n, 10_000, timeout_s=1.0)
        assert fe.now_index() > a
    finally:
        fe.close()
    assert cap.ok, cap.events
    assert cap.samples is not None and len(cap.samples) == 10_000
