"""``pairzero loopback``: the whole testbed on one machine, one process per role.

Starts the channel emulator (GNU Radio; ``radio.mode: loopback``, or ``usrp`` with every radio
emulated, ``type=emulated``), the access point and K edge nodes as separate processes, exactly
as they run on a lab's hosts, on 127.0.0.1. Shows the
AP's progress, stops everything cleanly on Ctrl-C (no orphan processes: the children also die
with the launcher), and leaves one run directory. It supervises the AP: an AP that crashes
(killed by a signal, or an unexpected exception: status 70) is restarted on the run directory,
up to ``--ap-restarts`` times (3), each restart announced on the terminal; the new AP resumes
from its round log and the nodes re-join, so every round is still committed exactly once. An AP
that stops for a reason it states (status 1: a refused round log, a full disk, a dead channel;
2: bad config) is not restarted::

    runs/<name>-loopback-<time>/
        config.yaml  provenance.json      resolved config, git revision, seeds
        metrics.jsonl summary.json *.png  per-round metrics, summary, plots
        rounds.sqlite rounds.head         the AP's round log (replayable checkpoint), its head
        keys/                             CurveZMQ keys generated for this run
        logs/{ap,channel,edge<k>}.log     every process's log

Example::

    pairzero loopback --config configs/loopback.yaml --set run.rounds=50
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from pairzero.config import ConfigError, ExperimentConfig, load_config
from pairzero.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from pairzero.procs import Child, Supervisor
from pairzero.runinfo import make_run_dir, write_provenance

__all__ = ["cmd_loopback", "ports_in_use", "busy_ports", "needs_emulator", "ap_crashed"]

log = logging.getLogger(__name__)

#: Restarts of a crashed AP per run (``--ap-restarts``).
AP_RESTARTS = 3


def ports_in_use(cfg: ExperimentConfig) -> list[int]:
    """The configured TCP ports on ``network.ap_host`` that another process already holds."""
    n = cfg.network
    ports = [n.control_port]
    if needs_emulator(cfg):
        ports += [n.sample_port_base + i for i in range(cfg.nodes.count + 1)]
    return busy_ports(n.ap_host, ports)


def needs_emulator(cfg: ExperimentConfig) -> bool:
    """The launcher starts the channel emulator on this machine: loopback, or emulated USRPs
    without another emulator host (``emulator=HOST``: ``pairzero channel`` runs there, and
    the radios are treated as a lab's)."""
    return cfg.radio.mode == "loopback" or (cfg.radio.emulated() and cfg.radio.emulator_is_local())


def busy_ports(host: str, ports: list[int]) -> list[int]:
    """Those of ``ports`` on ``host`` that cannot be bound now."""
    busy = []
    for p in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As ZeroMQ binds: a port in TIME_WAIT after a previous run is free to use.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, p))
            except OSError:
                busy.append(p)
    return busy


def ap_crashed(status: int) -> bool:
    """Whether an AP that exited with ``status`` crashed (restart it) rather than stopped for a
    reason it stated (done, refused, unfinished, bad config, Ctrl-C: do not)."""
    return status not in (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED)


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"crashed (status {status})"


def _echo(name: str) -> object:
    """Print a child's output lines except its INFO/DEBUG log lines (those stay in its log)."""

    def echo(line: str) -> None:
        if " INFO " in line or " DEBUG " in line or not line.strip():
            return
        print(line if name == "ap" else f"[{name}] {line}", flush=True)

    return echo


def cmd_loopback(args: argparse.Namespace) -> int:
    """CLI entry: ``pairzero loopback``."""
    cfg = load_config(args.config, args.overrides)
    max_restarts = getattr(args, "ap_restarts", AP_RESTARTS)
    if max_restarts < 0:
        raise ValueError(f"--ap-restarts: {max_restarts} must be >= 0")
    if cfg.radio.mode == "usrp" and not cfg.radio.emulated():
        raise ConfigError("radio.mode: 'usrp' with real radios cannot run in loopback; use "
                          "'loopback' or 'baseband', or emulated radios (type=emulated in "
                          "radio.ap_args and radio.node_args, configs/emulated_usrp.yaml)")
    if cfg.network.ap_host not in ("127.0.0.1", "localhost"):
        raise ConfigError(f"network.ap_host: {cfg.network.ap_host!r}; loopback runs on 127.0.0.1")
    busy = ports_in_use(cfg)
    if busy:
        raise OSError(
            f"ports {busy} on {cfg.network.ap_host} are in use (another run?); pick others with "
            "--set network.control_port=... --set network.sample_port_base=..."
        )
    # K + 1 processes share this machine's cores: one thread each (torch's OpenMP pool and the
    # z generators), unless the config asks for more; oversubscribed OpenMP pools spin-wait
    # and make every round many times slower.
    threads = max(1, len(os.sched_getaffinity(0)) // (cfg.nodes.count + 1))
    if cfg.zo.threads == 0:
        cfg = dataclasses.replace(cfg, zo=dataclasses.replace(cfg.zo, threads=threads))
    run_dir = make_run_dir(cfg, "loopback", args.out)
    _write_latest(run_dir)
    if cfg.network.curve:
        from pairzero.protocol.keys import generate_keys

        keys = run_dir / "keys"
        generate_keys(keys, cfg.nodes.count)
        cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, keys_dir=str(keys)))
        write_provenance(cfg, run_dir)  # the children read this resolved config
    logs = run_dir / "logs"
    exe = [sys.executable, "-m", "pairzero.cli"]
    common = ["--config", str(run_dir / "config.yaml"), "--log-level", args.log_level]
    what = {"loopback": " + GNU Radio channel emulator", "baseband": " (baseband OTA)",
            "usrp": " on emulated USRPs + GNU Radio channel emulator"}[cfg.radio.mode]
    print(f"loopback: AP + {cfg.nodes.count} edge nodes{what}, {cfg.run.rounds} rounds; "
          f"run dir {run_dir}", flush=True)
    sup = Supervisor(grace_s=15.0)
    # Children: unbuffered output (progress reaches the terminal at once), no per-process
    # weight-loading progress bars.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "OMP_NUM_THREADS": str(cfg.zo.threads), "MKL_NUM_THREADS": str(cfg.zo.threads)}
    t0 = time.monotonic()
    try:
        if needs_emulator(cfg):
            sup.start(Child("channel", [*exe, "channel", *common], logs / "channel.log",
                            _echo("channel")), env)  # type: ignore[arg-type]
        ap_argv = [*exe, "ap", *common, "--run-dir", str(run_dir)]
        ap = sup.start(Child("ap", ap_argv, logs / "ap.log", _echo("ap")), env)  # type: ignore[arg-type]
        nodes = [
            sup.start(Child(f"edge{k}", [*exe, "edge", *common, "--node-id", str(k), "--run-dir", str(run_dir)],
                            logs / f"edge{k}.log", _echo(f"edge{k}")), env)  # type: ignore[arg-type]
            for k in range(cfg.nodes.count)
        ]
        reported: set[str] = set()
        restarts = 0
        while True:
            while ap.poll() is None:
                for c in sup.children:
                    rc = c.poll()
                    if rc not in (None, 0) and c.name not in reported and c.name != "ap":
                        reported.add(c.name)
                        print(f"loopback: {c.name} exited with status {rc} (see {c.log_path}); "
                              "the AP goes on without it", flush=True)
                if all(n.poll() not in (None, 0) for n in nodes):
                    print("loopback: every edge node has failed; stopping (see the logs in "
                          f"{logs})", flush=True)
                    sup.stop()
                    return 1
                time.sleep(0.2)
            rc_ap = int(ap.wait() or 0)
            if not ap_crashed(rc_ap):
                break
            if restarts >= max_restarts:
                print(f"loopback: the AP {_describe(rc_ap)} (see {ap.log_path}); no restart left "
                      f"(--ap-restarts {max_restarts}); stopping", flush=True)
                break
            restarts += 1
            print(f"loopback: the AP {_describe(rc_ap)}; restarting it on {run_dir} (attempt "
                  f"{restarts} of {max_restarts}); it resumes from its round log", flush=True)
            sup.children.remove(ap)
            ap = sup.start(Child("ap", ap_argv, logs / "ap.log", _echo("ap")), env)  # type: ignore[arg-type]
        # The nodes leave after the last UPDATE; give them a moment, then stop the rest (at
        # once when the AP failed: they would only wait for it).
        deadline = time.monotonic() + (10.0 if rc_ap == EXIT_OK else 0.0)
        while any(n.poll() is None for n in nodes) and time.monotonic() < deadline:
            time.sleep(0.1)
        codes = sup.stop()
    except KeyboardInterrupt:
        print("\nloopback: interrupted; stopping all processes", flush=True)
        sup.stop()
        print(f"loopback: stopped; partial results in {run_dir}", flush=True)
        return 130
    finally:
        sup.stop()
    print(f"loopback: finished in {time.monotonic() - t0:.0f} s (AP status {rc_ap}, "
          f"processes {codes}); results in {run_dir}", flush=True)
    return rc_ap if rc_ap >= 0 else 128 - rc_ap


def _write_latest(run_dir: Path) -> None:
    """``<output dir>/latest`` points at the newest run (a symlink, best effort)."""
    link = run_dir.parent / "latest"
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(run_dir.name)
    except OSError:
        pass
