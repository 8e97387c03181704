"""Starting the testbed's processes: the one launcher, and ``pairzero loopback`` on it.

:func:`launch_testbed` starts, under one :class:`~pairzero.procs.Supervisor`, the channel emulator
(when the mode's samples go through it: loopback, emulated USRPs), the access point (unless the
caller acts as the AP itself, as ``pairzero calibrate`` does) and K edge nodes, each a ``pairzero``
process with the run directory's resolved config, its output in ``logs/<name>.log``. Every
command that needs processes uses it: ``pairzero loopback`` (:func:`cmd_loopback`) and
``pairzero calibrate``; benchmarks, the results runner and the tests run ``pairzero loopback``
through :func:`run_loopback`.

``pairzero loopback``: the whole testbed on one machine, one process per role, exactly as they run
on a lab's hosts, on 127.0.0.1. Shows the AP's progress, stops everything cleanly on Ctrl-C (no
orphan processes: the children also die with the launcher), and leaves one run directory. It
supervises the AP: an AP that crashes (killed by a signal, or an unexpected exception: status
70) is restarted on the run directory, up to ``--ap-restarts`` times (3), each restart announced
on the terminal; the new AP resumes from its round log and the nodes re-join, so every round is
still committed exactly once. An AP that stops for a reason it states (status 1: a refused round
log, a full disk, a dead channel; 2: bad config) is not restarted::

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
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pairzero.config import ConfigError, ExperimentConfig, load_config
from pairzero.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, OperationalError
from pairzero.metrics import read_metrics
from pairzero.phy.mode import phy_mode
from pairzero.procs import Child, Supervisor
from pairzero.runinfo import REPO_ROOT, make_run_dir, write_provenance

__all__ = [
    "Testbed",
    "launch_testbed",
    "cmd_loopback",
    "run_loopback",
    "LoopbackRun",
    "LoopbackFailed",
    "free_port_block",
    "ports_in_use",
    "busy_ports",
    "ap_crashed",
]

log = logging.getLogger(__name__)

#: Restarts of a crashed AP per run (``--ap-restarts``).
AP_RESTARTS = 3


# ----------------------------------------------------------------------------- ports


def local_emulator(cfg: ExperimentConfig) -> bool:
    """Whether the launcher starts the channel emulator on this machine: loopback, or emulated
    USRPs without another emulator host (``emulator=HOST`` in their device args: ``pairzero
    channel`` runs there, and the radios here are treated as a lab's)."""
    mode = phy_mode(cfg)
    return mode.needs_emulator and mode.single_host


def ports_in_use(cfg: ExperimentConfig) -> list[int]:
    """The configured TCP ports on ``network.ap_host`` that another process already holds."""
    n = cfg.network
    ports = [n.control_port]
    if local_emulator(cfg):
        ports += [n.sample_port_base + i for i in range(cfg.nodes.count + 1)]
    return busy_ports(n.ap_host, ports)


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


def free_port_block(n: int, start: int | None = None, stop: int = 32000) -> int:
    """A port p such that p..p+n-1 can all be bound on 127.0.0.1 right now.

    Below Linux's ephemeral range (32768+), so no outgoing connection holds one meanwhile.
    The scan starts at a per-process point in 20000-29999 (or ``start``), so two runs on one
    machine rarely probe the same ports.
    """
    p = start if start is not None else 20000 + (os.getpid() * 7919) % 10000
    if free := _scan(p, n, stop):
        return free
    if free := _scan(20000, n, stop):
        return free
    raise OSError(f"no block of {n} free TCP ports on 127.0.0.1 below {stop}")


def _scan(p: int, n: int, stop: int) -> int | None:
    while p + n < stop:
        ok = True
        for q in range(p, p + n):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", q))
                except OSError:
                    ok = False
                    p = q + 1
                    break
        if ok:
            return p
    return None


# ----------------------------------------------------------------------------- the launcher


@dataclass
class Testbed:
    """The processes of one launch: the channel emulator (None when the mode needs none), the
    AP (None when the caller is the AP) and the K edge nodes, under one supervisor."""

    supervisor: Supervisor
    run_dir: Path
    channel: Child | None
    ap: Child | None
    nodes: list[Child] = field(default_factory=list)
    argv: dict[str, list[str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def restart_ap(self) -> Child:
        """Start the AP again on the run directory (it resumes from its round log)."""
        if self.ap is not None:
            self.supervisor.children.remove(self.ap)
        self.ap = self._start("ap", self.ap.echo if self.ap is not None else None)
        return self.ap

    def _start(self, name: str, echo: Callable[[str], None] | None) -> Child:
        child = Child(name, self.argv[name], self.run_dir / "logs" / f"{name}.log", echo)
        return self.supervisor.start(child, self.env)

    def stop(self) -> dict[str, int | None]:
        """Stop every process (newest first); their exit codes."""
        return self.supervisor.stop()


def launch_testbed(cfg: ExperimentConfig, run_dir: Path, *, ap: bool = True,
                   log_level: str = "INFO", echo: Callable[[str], Callable[[str], None]] | None = None,
                   grace_s: float = 15.0) -> Testbed:
    """Start the channel emulator (if the mode needs one), the AP (``ap``) and the K edge nodes
    on ``run_dir`` (which holds the resolved ``config.yaml`` they all read).

    ``echo``: name -> what to do with each line of that process's output (besides its log).
    Children run unbuffered, without per-process progress bars, with ``zo.threads`` OpenMP/MKL
    threads (K + 1 processes share the machine's cores); GNU Radio's INFO lines stay out of
    their output unless ``log_level`` is DEBUG (:func:`pairzero.log.setup_logging`).
    """
    exe = [sys.executable, "-m", "pairzero.cli"]
    common = ["--config", str(run_dir / "config.yaml"), "--log-level", log_level]
    argv = {"channel": [*exe, "channel", *common],
            "ap": [*exe, "ap", *common, "--run-dir", str(run_dir)]}
    for k in range(cfg.nodes.count):
        argv[f"edge{k}"] = [*exe, "edge", *common, "--node-id", str(k), "--run-dir", str(run_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "OMP_NUM_THREADS": str(cfg.zo.threads), "MKL_NUM_THREADS": str(cfg.zo.threads)}
    bed = Testbed(Supervisor(grace_s=grace_s), run_dir, None, None, argv=argv, env=env)

    def start(name: str) -> Child:
        return bed._start(name, echo(name) if echo is not None else None)

    try:
        if local_emulator(cfg):
            bed.channel = start("channel")
        if ap:
            bed.ap = start("ap")
        bed.nodes = [start(f"edge{k}") for k in range(cfg.nodes.count)]
    except BaseException:
        bed.stop()
        raise
    return bed


# ----------------------------------------------------------------------------- pairzero loopback


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


def _echo(name: str) -> Callable[[str], None]:
    """Print a child's output lines except its INFO/DEBUG log lines (those stay in its log)."""

    def echo(line: str) -> None:
        if " INFO " in line or " DEBUG " in line or not line.strip():
            return
        print(line if name == "ap" else f"[{name}] {line}", flush=True)

    return echo


def _loopback_config(cfg: ExperimentConfig, out: str | None) -> tuple[ExperimentConfig, Path]:
    """Check that ``cfg`` runs on this machine, then make its run directory (with CurveZMQ keys
    of its own) and the resolved config every process reads."""
    if not phy_mode(cfg).single_host:
        raise ConfigError("radio.mode: 'usrp' with real radios (or emulated ones whose channel "
                          "emulator is on another host: emulator=HOST) cannot run in loopback; use "
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
    run_dir = make_run_dir(cfg, "loopback", out)
    _write_latest(run_dir)
    if cfg.network.curve:
        from pairzero.protocol.keys import generate_keys

        keys = run_dir / "keys"
        generate_keys(keys, cfg.nodes.count)
        cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, keys_dir=str(keys)))
        write_provenance(cfg, run_dir)  # the children read this resolved config
    return cfg, run_dir


def _supervise(bed: Testbed, max_restarts: int) -> int | None:
    """Watch the run until the AP stops; restart an AP that crashed (up to ``max_restarts``
    times); say when a node fails. The AP's last status, or None when every node has failed
    while the AP ran."""
    assert bed.ap is not None
    reported: set[str] = set()
    restarts = 0
    while True:
        while bed.ap.poll() is None:
            for c in bed.supervisor.children:
                rc = c.poll()
                if rc not in (None, 0) and c.name not in reported and c.name != "ap":
                    reported.add(c.name)
                    print(f"loopback: {c.name} exited with status {rc} (see {c.log_path}); "
                          "the AP goes on without it", flush=True)
            if all(n.poll() not in (None, 0) for n in bed.nodes):
                print("loopback: every edge node has failed; stopping (see the logs in "
                      f"{bed.run_dir / 'logs'})", flush=True)
                return None
            time.sleep(0.2)
        rc_ap = int(bed.ap.wait() or 0)
        if not ap_crashed(rc_ap):
            return rc_ap
        if restarts >= max_restarts:
            print(f"loopback: the AP {_describe(rc_ap)} (see {bed.ap.log_path}); no restart left "
                  f"(--ap-restarts {max_restarts}); stopping", flush=True)
            return rc_ap
        restarts += 1
        print(f"loopback: the AP {_describe(rc_ap)}; restarting it on {bed.run_dir} (attempt "
              f"{restarts} of {max_restarts}); it resumes from its round log", flush=True)
        bed.restart_ap()


def cmd_loopback(args: argparse.Namespace) -> int:
    """CLI entry: ``pairzero loopback``."""
    cfg = load_config(args.config, args.overrides)
    max_restarts = getattr(args, "ap_restarts", AP_RESTARTS)
    if max_restarts < 0:
        raise ValueError(f"--ap-restarts: {max_restarts} must be >= 0")
    cfg, run_dir = _loopback_config(cfg, args.out)
    print(f"loopback: AP + {cfg.nodes.count} edge nodes over the {phy_mode(cfg).describe()}, "
          f"{cfg.run.rounds} rounds; run dir {run_dir}", flush=True)
    t0 = time.monotonic()
    bed: Testbed | None = None
    try:
        bed = launch_testbed(cfg, run_dir, log_level=args.log_level, echo=_echo)
        rc_ap = _supervise(bed, max_restarts)
        if rc_ap is None:
            return EXIT_FAILED
        # The nodes leave after the last UPDATE; give them a moment, then stop the rest (at
        # once when the AP failed: they would only wait for it).
        deadline = time.monotonic() + (10.0 if rc_ap == EXIT_OK else 0.0)
        while any(n.poll() is None for n in bed.nodes) and time.monotonic() < deadline:
            time.sleep(0.1)
        codes = bed.stop()
    except KeyboardInterrupt:
        print("\nloopback: interrupted; stopping all processes", flush=True)
        if bed is not None:
            bed.stop()
        print(f"loopback: stopped; partial results in {run_dir}", flush=True)
        return 130
    finally:
        if bed is not None:
            bed.stop()
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


# ----------------------------------------------------------------------------- a run, as a call


class LoopbackFailed(OperationalError):
    """``pairzero loopback`` did not finish; ``output``: the tails of its stdout and stderr."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class LoopbackRun:
    """What one ``pairzero loopback`` run left: its command line (from ``loopback`` on), wall
    time (s), metrics rows, the nodes' reports, the resolved config (YAML text), the summary,
    its output, and its run directory (None once removed)."""

    command: list[str]
    wall_s: float
    rows: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    config: str
    summary: dict[str, Any]
    stdout: str
    run_dir: Path | None


def run_loopback(overrides: Sequence[str] = (), config: str | Path | None = None, *,
                 out: Path | None = None, timeout_s: float | None = None,
                 log_level: str = "INFO", plots: bool = False) -> LoopbackRun:
    """Run ``pairzero loopback`` as a process (``--set`` each of ``overrides``) on a free block of
    ports, and collect what it left. ``out``: keep the run directory there (default: a temporary
    directory, removed). Raises :class:`LoopbackFailed` (with its output) when it does not
    finish with status 0 within ``timeout_s``."""
    cfg = load_config(config, overrides)
    base = free_port_block(cfg.nodes.count + 4)
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(out) if out is not None else Path(tmp)
        cmd = [sys.executable, "-m", "pairzero.cli", "loopback", "--out", str(where),
               "--log-level", log_level]
        if config is not None:
            cmd += ["--config", str(config)]
        for o in [*overrides, f"output.plots={str(plots).lower()}", f"network.control_port={base}",
                  f"network.sample_port_base={base + 1}"]:
            cmd += ["--set", o]
        what = " ".join(cmd[3:])
        t0 = time.monotonic()
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout_s,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        except subprocess.TimeoutExpired:
            raise LoopbackFailed(f"{what} did not finish within {timeout_s:.0f} s") from None
        wall = time.monotonic() - t0
        output = f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        if res.returncode != 0:
            lines = [ln for ln in (res.stderr or res.stdout).strip().splitlines() if ln.strip()]
            tail = lines[-1] if lines else "no output"
            raise LoopbackFailed(f"{what} exited with status {res.returncode}: {tail[:300]}", output)
        run_dirs = [p for p in where.iterdir() if p.is_dir() and not p.is_symlink()]
        if len(run_dirs) != 1:
            raise LoopbackFailed(f"{what} left {len(run_dirs)} run directories in {where}", output)
        run_dir = run_dirs[0]
        nodes = [json.loads(p.read_text()) for p in sorted((run_dir / "nodes").glob("edge*.json"))]
        summary = json.loads((run_dir / "summary.json").read_text())
        return LoopbackRun(cmd[3:], wall, read_metrics(run_dir), nodes,
                           (run_dir / "config.yaml").read_text(), summary, res.stdout,
                           run_dir if out is not None else None)
