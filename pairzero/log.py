"""One logging format for every pAirZero process (AP, edge nodes, channel, CLI)."""

from __future__ import annotations

import logging
import os
import sys

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def setup_logging(level: str = "INFO", process: str | None = None) -> None:
    """Configure the root logger once per process; ``process`` tags every line (e.g. ``node2``)."""
    level = level.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"--log-level: {level!r} is not one of {', '.join(LOG_LEVELS)}")
    fmt = LOG_FORMAT if process is None else LOG_FORMAT.replace("%(name)s", f"[{process}] %(name)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_third_party()


#: Set to 1 to keep third-party progress bars (Hugging Face, tqdm, datasets).
PROGRESS_BARS_ENV = "PAIRZERO_PROGRESS_BARS"


def quiet_third_party() -> None:
    """Turn off Hugging Face / datasets / tqdm progress bars unless ``PAIRZERO_PROGRESS_BARS=1``.

    They draw on stderr per file, shard and weight tensor and bury the run's own progress
    lines. Environment variables cover libraries imported later and child processes; the
    calls cover those already imported. Idempotent and cheap.
    """
    if os.environ.get(PROGRESS_BARS_ENV, "0") not in ("", "0"):
        return
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
        os.environ.setdefault(var, "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.utils

        huggingface_hub.utils.disable_progress_bars()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
