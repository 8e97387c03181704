"""One run of the worked example on the rehearsal's hosts, under one network profile.

For a profile, every host gets a fresh home ``<root>/<profile>/<host>/`` holding its clone,
``pairzero/`` (a copy of the repository's ``configs/`` and a link to the project's virtual
environment: what ``git clone`` and ``make setup`` leave on a lab host), and its terminals'
output, ``terminal/<n>-<what>.log``. The page's steps then run in order, each on its host, by
``bash -c`` inside the host's namespace, in the clone, with the lab's values (the rehearsal's)
in the environment and the ``scp`` stand-in on ``PATH``:

* a RUN step is waited for and must exit 0 (a step that fails fails the rehearsal, with the
  tail of its output); a START step is left running; a Ctrl-C step sends SIGINT to what runs
  on those hosts and waits for it to end;
* before the first radio process (``pairzero edge`` / ``calibrate`` / ``ap``), the rehearsal
  copies that command's config from the AP host to ``air`` and starts ``pairzero channel`` there
  (the emulated radios' RF), and starts each node host's relay on the config's control port;
* during the last step (the run) it may cut one node's link when the AP has committed
  ``cut.at_round`` rounds, and restore it ``cut.duration_s`` later;
* after the last step every process left running (the calibrated edges) must end by itself,
  with status 0.

Nothing is shared between hosts but what the steps copy; the results are read from each host's
own files (:func:`ProfileRun.result`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rehearsal import summary
from rehearsal.netns import RELAY_MARK, LabNetwork
from rehearsal.profiles import NetworkProfile
from rehearsal.scp import HOMES_ENV
from rehearsal.worked_example import Step, StepKind, WorkedExample, pairzero_argv

__all__ = ["RehearsalFailure", "CutPlan", "ProfileRun", "lab_values", "RADIO_EXTRA_ARGS"]

log = logging.getLogger(__name__)

#: pairzero subcommands that open a radio (and so need the air and the relays up first).
RADIO_COMMANDS = ("edge", "calibrate", "ap")


class RehearsalFailure(RuntimeError):
    """A step failed, hung, or a check did not hold (the message says which and why)."""


@dataclass(frozen=True)
class CutPlan:
    """Cut ``node``'s LAN link once the AP has committed ``at_round`` rounds, for
    ``heartbeats`` x the config's ``network.heartbeat_s``."""

    node: str
    at_round: int
    heartbeats: float = 3.0


@dataclass(frozen=True)
class Timeouts:
    """Longest waits (s): a RUN step, the air's start, a Ctrl-C, the running edges after the run."""

    step_s: float = 900.0
    air_s: float = 180.0
    interrupt_s: float = 60.0
    finish_s: float = 180.0


#: Per radio (``"ap"``, ``"node<k>"``), device args appended to its emulated radio's
#: ``type=emulated,serial=...,emulator=<air>``: the one place each host's radio is described.
#: Each radio has its own host clock and oscillator, with the values configs/emulated_usrp.yaml
#: documents for radios on one OctoClock (a few ms of NTP error per host, residual carrier
#: offsets of the DDC/DUC resolution, a phase walk of 0.5-1 deg after 1 s).
RADIO_EXTRA_ARGS: dict[str, str] = {
    "ap": "model=b200,host_clock_offset_s=0.0012,cfo_hz=0.017,phase_walk_deg_per_s=0.5,seed=1",
    "node0": "model=b210,host_clock_offset_s=-0.0031,cfo_hz=-0.0025,phase_walk_deg_per_s=1.0,seed=2",
    "node1": "model=b210,host_clock_offset_s=0.0024,cfo_hz=-0.0025,phase_walk_deg_per_s=1.0,seed=3",
}


def lab_values(net: LabNetwork, nodes: int, extra_args: dict[str, str] | None = None) -> dict[str, str]:
    """The rehearsal's values for the page's lab values: the AP's LAN address and the radios
    (emulated, their RF to the air host, plus ``extra_args``, default :data:`RADIO_EXTRA_ARGS`)."""
    extra = RADIO_EXTRA_ARGS if extra_args is None else extra_args
    air = net.hosts["air"].rf

    def radio(name: str, serial: str) -> str:
        args = f"type=emulated,serial={serial},emulator={air}"
        return args + (f",{extra[name]}" if extra.get(name) else "")

    nodes_yaml = ", ".join(f'"{radio(f"node{k}", f"NODE{k:03d}")}"' for k in range(nodes))
    return {"AP_ADDR": str(net.hosts["ap"].lan), "AP_RADIO": radio("ap", "AP0000"),
            "NODE_RADIOS": f"[{nodes_yaml}]"}


@dataclass
class _Proc:
    host: str
    label: str
    popen: subprocess.Popen[bytes]
    log: Path
    step: Step | None
    rc: int | None = None


@dataclass
class ProfileRun:
    """The worked example on ``net``'s hosts under ``profile``; files under ``root/<label>``
    (the label defaults to the profile's name)."""

    example: WorkedExample
    net: LabNetwork
    profile: NetworkProfile
    root: Path
    repo: Path
    values: dict[str, str]
    cut: CutPlan | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    seed: int = 1
    label: str = ""  # the run's name (default: the profile's), its directory under ``root``
    progress: Callable[[str], None] = log.info  # the command line prints each step here
    procs: list[_Proc] = field(default_factory=list)
    events: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.label = self.label or self.profile.name
        self.base = self.root / self.label
        self._env: dict[str, dict[str, str]] = {h: {} for h in self.net.hosts}
        self._background: dict[str, list[_Proc]] = {h: [] for h in self.net.hosts}
        self._air: _Proc | None = None
        self._relays: list[_Proc] = []
        self._config_name: str | None = None
        self._n = 0
        self._cut_started: float | None = None
        self._cut_done = False

    # ------------------------------------------------------------------ hosts

    def home(self, host: str) -> Path:
        return self.base / host

    def workdir(self, host: str) -> Path:
        return self.home(host) / "pairzero"

    def _prepare_hosts(self) -> None:
        venv = (self.repo / ".venv").resolve()
        if not (venv / "bin" / "pairzero").exists():
            raise RehearsalFailure(f"{venv}/bin/pairzero not found: run `make setup` first")
        for h in self.net.hosts:
            wd = self.workdir(h)
            wd.mkdir(parents=True)
            shutil.copytree(self.repo / "configs", wd / "configs")
            (wd / ".venv").symlink_to(venv)
            (self.home(h) / "terminal").mkdir()
        bindir = self.base / "bin"
        bindir.mkdir()
        scp = bindir / "scp"
        scp.write_text(f"#!/bin/sh\nPYTHONPATH={self.repo} exec {sys.executable} -m rehearsal.scp \"$@\"\n")
        scp.chmod(0o755)
        self._bindir = bindir

    def _host_env(self, host: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "OLDPWD")}
        env.update(self._env[host])
        env.update({
            "PATH": f"{self._bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.home(host)), "PWD": str(self.workdir(host)), HOMES_ENV: str(self.base),
            "PYTHONUNBUFFERED": "1",
            # Four hosts share this machine's cores; a lab host has its own.
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        })
        return env

    def _spawn(self, host: str, command: str, label: str, step: Step | None,
               argv: list[str] | None = None, cwd: Path | None = None) -> _Proc:
        self._n += 1
        logf = self.home(host) / "terminal" / f"{self._n:02d}-{label}.log"
        with open(logf, "wb") as out:
            out.write(f"$ {command}\n".encode())
            out.flush()
            p = subprocess.Popen(self.net.exec_argv(host, argv or ["bash", "-c", command]),
                                 cwd=cwd or self.workdir(host), env=self._host_env(host),
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        proc = _Proc(host, label, p, logf, step)
        self.procs.append(proc)
        return proc

    # ------------------------------------------------------------------ run

    def run(self) -> dict[str, Any]:
        """Run every step; return :meth:`result`. Raises RehearsalFailure."""
        t0 = time.monotonic()
        self._prepare_hosts()
        for node in self._nodes():
            self.net.shape(node, self.profile.rate)
        for step in self.example.steps:
            self._do(step)
        self._finish()
        self.events["wall_s"] = round(time.monotonic() - t0, 1)
        return self.result()

    def _nodes(self) -> list[str]:
        return [h for h in self.net.hosts if h.startswith("node")]

    def _do(self, step: Step) -> None:
        where = f"{self.example.source}:{step.line}"
        if step.kind is StepKind.ASSIGN:
            name = step.variable
            if name not in self.values:
                raise RehearsalFailure(f"{where}: the page sets {name}, for which the rehearsal has "
                                       "no value of its own (rehearsal.session.lab_values)")
            for h in step.hosts:
                self._env[h][name] = self.values[name]
            return
        if step.kind is StepKind.INTERRUPT:
            for h in step.hosts:
                self._interrupt(h, where)
            return
        argv = pairzero_argv(step.command)
        if argv and argv[0] in RADIO_COMMANDS:
            self._start_air_and_relays(step, argv)
        for h in step.hosts:
            label = (argv[0] if argv else step.command.split()[0].rsplit("/", 1)[-1])
            self.progress(f"  [{self.label}] {h}$ {step.command}")
            proc = self._spawn(h, step.command, label, step)
            if step.kind is StepKind.START:
                self._background[h].append(proc)
            else:
                self._wait(proc, self.timeouts.step_s, where)

    def _wait(self, proc: _Proc, timeout_s: float, where: str) -> None:
        deadline = time.monotonic() + timeout_s
        while proc.popen.poll() is None:
            self._tick()
            if time.monotonic() > deadline:
                raise RehearsalFailure(f"{where}: `{proc.step.command if proc.step else proc.label}` "
                                       f"on {proc.host} still running after {timeout_s:.0f} s\n"
                                       + _tail(proc.log))
            for other in self._background_procs():
                if other.popen.poll() not in (None, 0):
                    raise RehearsalFailure(f"{where}: `{other.label}` on {other.host} ended with "
                                           f"status {other.popen.returncode} while "
                                           f"`{proc.label}` ran\n" + _tail(other.log))
            time.sleep(0.2)
        proc.rc = proc.popen.returncode
        if proc.rc != 0:
            raise RehearsalFailure(f"{where}: `{proc.step.command if proc.step else proc.label}` on "
                                   f"{proc.host} exited with status {proc.rc}\n" + _tail(proc.log))

    def _background_procs(self) -> list[_Proc]:
        return [p for ps in self._background.values() for p in ps] + \
            ([self._air] if self._air else []) + self._relays

    def _interrupt(self, host: str, where: str) -> None:
        running = [p for p in self._background[host] if p.popen.poll() is None]
        if not running:
            raise RehearsalFailure(f"{where}: Ctrl-C on {host}, where nothing runs")
        self.progress(f"  [{self.label}] {host}: Ctrl-C")
        for p in running:
            _signal_group(p.popen, signal.SIGINT)
        for p in running:
            try:
                p.rc = p.popen.wait(self.timeouts.interrupt_s)
            except subprocess.TimeoutExpired:
                raise RehearsalFailure(f"{where}: `{p.label}` on {host} did not stop within "
                                       f"{self.timeouts.interrupt_s:.0f} s of Ctrl-C\n" + _tail(p.log)) from None
            # An edge stopped before its last round says so with status 1; a crash is status 3.
            if p.rc not in (0, 1, 130, -signal.SIGINT):
                raise RehearsalFailure(f"{where}: `{p.label}` on {host} ended with status {p.rc} on "
                                       "Ctrl-C\n" + _tail(p.log))
        self._background[host] = [p for p in self._background[host] if p.popen.poll() is None]

    def _start_air_and_relays(self, step: Step, argv: list[str]) -> None:
        """The air (``pairzero channel`` with the command's config, copied from the AP host) and
        every node host's relay, before the first radio process; checks the config is the same."""
        config = argv[argv.index("--config") + 1] if "--config" in argv else None
        if config is None:
            raise RehearsalFailure(f"{self.example.source}:{step.line}: `{step.command}` names no --config")
        if self._air is not None:
            if config != self._config_name:
                raise RehearsalFailure(f"{self.example.source}:{step.line}: config {config!r} is not "
                                       f"the {self._config_name!r} the air plays")
            return
        src = self.workdir("ap") / config
        if not src.is_file():
            raise RehearsalFailure(f"{self.example.source}:{step.line}: {config} is not on the AP host "
                                   "to give to the air")
        shutil.copyfile(src, self.workdir("air") / config)
        self._config_name = config
        from pairzero.config import load_config

        cfg = load_config(src)
        self.events["heartbeat_s"] = cfg.network.heartbeat_s
        self.events["rounds_planned"] = cfg.run.rounds
        self.progress(f"  [{self.label}] air$ .venv/bin/pairzero channel --config {config}")
        self._air = self._spawn("air", f".venv/bin/pairzero channel --config {config}", "channel", None)
        ap = str(self.net.hosts["ap"].lan)
        port = cfg.network.control_port
        for k, node in enumerate(self._nodes()):
            stats = self.home(node) / "relay.json"
            argv_relay = [sys.executable, "-m", "rehearsal.relay", "--listen", f"{ap}:{port}",
                          "--upstream", f"{ap}:{port}", "--profile", self.profile.name,
                          "--mark", str(RELAY_MARK), "--seed", str(self.seed * 100 + k),
                          "--stats", str(stats)]
            self._relays.append(self._spawn(node, " ".join(argv_relay), "relay", None, argv=argv_relay,
                                            cwd=self.repo))
        deadline = time.monotonic() + self.timeouts.air_s
        waiting = [(self._air, "channel emulator:"), *[(r, "relay: listening") for r in self._relays]]
        while waiting:
            proc, word = waiting[0]
            if word in proc.log.read_text(errors="replace"):
                waiting.pop(0)
                continue
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise RehearsalFailure(f"`{proc.label}` on {proc.host} did not start\n" + _tail(proc.log))
            time.sleep(0.2)

    def _tick(self) -> None:
        """While a step runs: the link cut and its restoration."""
        if self.cut is None or self._cut_done:
            return
        now = time.monotonic()
        if self._cut_started is None:
            path = summary.latest_metrics(self.workdir("ap"))
            if path is None:
                return
            rows = summary.round_rows(path.read_text().splitlines())
            committed = int(rows[-1]["round"]) if rows else 0  # metrics count rounds from 1
            if committed < self.cut.at_round:
                return
            self.net.cut(self.cut.node)
            self._cut_started = now
            self.events["cut"] = {"node": self.cut.node, "at_round": committed, "time": time.time()}
            self.progress(f"  [{self.label}] cut {self.cut.node}'s link after round {committed}")
            return
        duration = self.cut.heartbeats * float(self.events.get("heartbeat_s", 2.0))
        if now - self._cut_started >= duration:
            self.net.restore(self.cut.node)
            self._cut_done = True
            self.events["cut"]["duration_s"] = round(now - self._cut_started, 2)
            self.progress(f"  [{self.label}] restored {self.cut.node}'s link after "
                          f"{now - self._cut_started:.1f} s")

    def _finish(self) -> None:
        """The processes left running end by themselves (status 0); then the air and relays stop."""
        deadline = time.monotonic() + self.timeouts.finish_s
        for p in [p for ps in self._background.values() for p in ps]:
            try:
                p.rc = p.popen.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RehearsalFailure(f"`{p.label}` on {p.host} still running "
                                       f"{self.timeouts.finish_s:.0f} s after the run ended\n"
                                       + _tail(p.log)) from None
            if p.rc != 0:
                raise RehearsalFailure(f"`{p.label}` on {p.host} ended with status {p.rc}\n" + _tail(p.log))
        self.stop()

    def stop(self) -> None:
        """Stop every process this run started that still runs (INT, then TERM, then KILL)."""
        alive = [p for p in self.procs if p.popen.poll() is None]
        for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            for p in alive:
                _signal_group(p.popen, sig)
            deadline = time.monotonic() + grace
            while alive and time.monotonic() < deadline:
                alive = [p for p in alive if p.popen.poll() is None]
                time.sleep(0.1)
        for p in self.procs:
            if p.rc is None:
                p.rc = p.popen.poll()

    # ------------------------------------------------------------------ results

    def result(self) -> dict[str, Any]:
        """The run's figures and checks, from the hosts' own files. Raises RehearsalFailure when
        the run did not finish or a node's model is not the AP's."""
        ap_wd = self.workdir("ap")
        runs = sorted((ap_wd / "runs").glob("*-ap-*/summary.json"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise RehearsalFailure(f"{ap_wd}/runs: no AP summary.json")
        ap_summary = json.loads(runs[-1].read_text())
        metrics = runs[-1].parent / "metrics.jsonl"
        rows = summary.round_rows(metrics.read_text().splitlines())
        planned = int(self.events.get("rounds_planned", 0))
        if not ap_summary.get("finished") or ap_summary.get("rounds_committed") != planned:
            raise RehearsalFailure(f"the AP did not finish: {ap_summary.get('rounds_committed')}/"
                                   f"{planned} rounds, stop reason {ap_summary.get('stop_reason')!r}")
        ap_log = "".join(p.log.read_text(errors="replace") for p in self.procs
                         if p.host == "ap" and p.label == "ap")
        counts = summary.count_ap_log(ap_log)
        nodes: dict[str, Any] = {}
        for k, node in enumerate(self._nodes()):
            text = "".join(p.log.read_text(errors="replace") for p in self.procs
                           if p.host == node and p.label == "edge")
            done = summary.node_final_hash(text, k)
            if done is None:
                raise RehearsalFailure(f"{node}: no 'stopped at round' line in its edge output")
            applied, prefix = done
            same = applied == planned and str(ap_summary["model_hash"]).startswith(prefix)
            nodes[node] = {"rounds_applied": applied, "model_hash": prefix, "same_as_ap": same}
            if not same:
                raise RehearsalFailure(f"{node}: model {prefix} after {applied} rounds; the AP's replica "
                                       f"is {ap_summary['model_hash'][:16]} after {planned}")
        periods = summary.round_periods(rows)
        relays = {}
        for node in self._nodes():
            path = self.home(node) / "relay.json"
            if path.is_file():
                st = json.loads(path.read_text())
                relays[node] = {k: st[k] for k in ("connections", "upstream_failures", "chunks_up",
                                                   "chunks_down", "lost")}
        out: dict[str, Any] = {
            "run": self.label, "profile": self.profile.name, "network": self.profile.describe(),
            "rounds": ap_summary["rounds_committed"], "partial_rounds": ap_summary["partial_rounds"],
            "empty_rounds": ap_summary["empty_rounds"],
            "round_period_median_s": summary.median(periods),
            "round_period_p90_s": summary.quantile(periods, 0.9),
            "late_frames": counts.late_frames, "ready_timeouts": counts.ready_timeouts,
            "window_timeouts": counts.window_timeouts, "lead_raised": counts.lead_raised,
            "nodes": nodes, "relays": relays, "files": self._file_placement(),
            "wall_s": self.events.get("wall_s"), "ap_run_dir": str(runs[-1].parent),
        }
        if "cut" in self.events:
            c = self.events["cut"]
            eff = summary.cut_effect(rows, int(c["node"][4:]), float(c["time"]))
            out["cut"] = {"node": c["node"], "after_round": c["at_round"],
                          "duration_s": c.get("duration_s"), "rounds_lost": eff.lost_rounds,
                          "back_in_round": eff.back_round, "longest_round_s": round(eff.longest_round_s, 2),
                          "node_log": _cut_story(ap_log, int(c["node"][4:]), float(c["time"]))}
        return out

    def _file_placement(self) -> dict[str, list[str]]:
        """Which keys, configs and calibration files each host holds: the page's table, checked
        (a node's secret key on the AP host, or a node without the calibration file, fails)."""
        held: dict[str, list[str]] = {}
        for h in ["ap", *self._nodes()]:
            wd = self.workdir(h)
            files = sorted(str(p.relative_to(wd)) for p in (wd / "keys").glob("*")) if (wd / "keys").is_dir() else []
            files += [n for n in (self._config_name or "", "calibration.yaml") if n and (wd / n).is_file()]
            held[h] = files
        want_ap = {"keys/ap.key", "keys/ap.key_secret", *(f"keys/{n}.key" for n in self._nodes()),
                   self._config_name or "", "calibration.yaml"}
        if set(held["ap"]) != want_ap:
            raise RehearsalFailure(f"the AP host holds {held['ap']}; expected {sorted(want_ap)}")
        for n in self._nodes():
            want = {"keys/ap.key", f"keys/{n}.key_secret", self._config_name or "", "calibration.yaml"}
            if set(held[n]) != want:
                raise RehearsalFailure(f"{n}'s host holds {held[n]}; expected {sorted(want)}")
        return held


def _cut_story(ap_log: str, node: int, since: float) -> list[str]:
    """The AP's lines about ``node`` from the cut on (left out, removed, joined, caught up)."""
    start = time.strftime("%H:%M:%S", time.localtime(since))
    words = (f"node {node} ", f"nodes [{node}]", f"for node {node}:", f"of node {node} ")
    return [line.split(" ", 2)[-1] for line in ap_log.splitlines()
            if line[:8] >= start and any(w in line for w in words) and " removed: it left" not in line][:8]


def _signal_group(p: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, sig)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path}: unreadable)"
    return f"--- last lines of {path}:\n" + "\n".join(text[-lines:])
