"""Access-point process: round orchestration, RX chain, aggregation, round log."""
