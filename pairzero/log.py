"""One logging format for every pAirZero process (AP, edge nodes, channel, CLI); third-party
chatter (Hugging Face progress bars, GNU Radio's INFO lines) stays out of the terminal unless
asked for (``PAIRZERO_PROGRESS_BARS=1``, ``--log-level DEBUG`` or ``GR_CONF_LOG_LOG_LEVEL``)."""

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
    quiet_gnuradio(level)


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


#: GNU Radio's own log level (its preference ``[LOG] log_level``, read from this variable).
GR_LOG_LEVEL_ENV = "GR_CONF_LOG_LOG_LEVEL"


def quiet_gnuradio(level: str = "INFO") -> None:
    """Keep GNU Radio's INFO lines (one ``set_min_output_buffer`` line per block and flowgraph,
    63 in a loopback run) out of the terminal: GNU Radio logs at WARN unless pAirZero runs at
    ``--log-level DEBUG``. A ``GR_CONF_LOG_LOG_LEVEL`` set by the user wins.

    The variable reaches GNU Radio imported later and every child process; a GNU Radio already
    imported is set directly. Idempotent and cheap.
    """
    gr_level = "info" if level.upper() == "DEBUG" else "warn"
    gr_level = os.environ.setdefault(GR_LOG_LEVEL_ENV, gr_level)
    if "gnuradio.gr" in sys.modules:
        from gnuradio import gr

        chosen = getattr(gr.log_levels, gr_level.lower(), None)
        if chosen is not None:
            gr.logging().set_default_level(chosen)
