"""The communication section's control-plane bytes come from encoding the protocol's current
messages (a schema change must not silently drop the columns)."""

from __future__ import annotations

from pairzero.config import load_config
from pairzero.results.experiments import _control_bytes, communication_rows


def test_control_plane_bytes_are_encoded_from_round_schedule_ready_and_update() -> None:
    # Execute
    size = _control_bytes(4)
    rows = {r["method"]: r for r in communication_rows("opt-125m", [4], load_config(None).phy, 10)}
    # Assert: every message of a round is encoded (non-empty JSON) ...
    assert set(size) == {"round", "schedule", "ready_ota", "ready_digital", "update"}
    assert all(n > 50 for n in size.values())
    # ... the radio PHY's downlink is ROUND + SCHEDULE + UPDATE, the digital one has no SCHEDULE
    assert rows["pairzero"]["control_down_bytes_per_node"] == size["round"] + size["schedule"] + size["update"]
    assert rows["zo_digital"]["control_down_bytes_per_node"] == size["round"] + size["update"]
    assert rows["pairzero"]["control_up_bytes_per_node"] == size["ready_ota"]
    assert rows["zo_digital"]["control_up_bytes_per_node"] == size["ready_digital"]
