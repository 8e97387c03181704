"""Preambles, timing / phase / CFO estimation, sample-clock scheduling."""
