"""Test tiers: every test is ``unit`` unless marked ``e2e``.

``e2e``: the test starts processes (``pairzero`` commands, ``python -m tests.roles``, grcc, the
set-up script) or runs the channel emulator and the radio front ends over ZeroMQ. ``unit``:
everything else, in one process (``make test-fast`` runs these: ``-m "unit and not slow"``).
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e") is None:
            item.add_marker(pytest.mark.unit)
