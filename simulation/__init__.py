"""``pairzero simulate``: the AP's orchestrator and K edge nodes in one process.

It sits above ``access_point/`` and ``edge_node/`` (it drives both) and below ``tests/`` and
``bench/``: the core imports nothing from it (the results runner starts it as a command).
"""
