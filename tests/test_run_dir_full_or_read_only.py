"""A full disk or a read-only run directory: the commit that fails gives one line and status 1,
the round log stays consistent (no half-committed round) and the AP resumes once space is back.

The full disk is real: a file-size limit (RLIMIT_FSIZE, which binds root too) makes the
kernel refuse the write, as ENOSPC would. A read-only directory is real too: chmod for an
ordinary user; for root, who ignores permissions, the immutable attribute (chattr +i)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from access_point.roundlog import RoundLog, RoundLogError, head_path_for
from pairzero.config import config_to_dict, load_config
from pairzero.protocol.messages import RoundRecord
from pairzero.runinfo import experiment_id, write_provenance
from tests.e2e_util import free_port_block, replay_hash, round_log

pytestmark = pytest.mark.e2e  # starts processes or runs the channel emulator

REPO = Path(__file__).resolve().parent.parent
PY = [sys.executable, "-m", "pairzero.cli"]
EXP = "exp-disk"


def _rec(t: int, exp: str = EXP) -> RoundRecord:
    return RoundRecord(exp, t, 1000 + t, 0.1 * t, 1e-4, (0,), 0.5, 0.0, None, None, 1.7e9 + t)


def _file_size_limit(limit: int):
    """preexec_fn: writes beyond ``limit`` bytes fail with EFBIG instead of killing the process."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@contextlib.contextmanager
def read_only(path: Path, files: bool = True) -> Iterator[None]:
    """Make directory ``path`` read-only (no file created, renamed or removed in it) and, with
    ``files``, every file in it, for this process and its children. (Never the files SQLite
    has mapped in memory while a connection is open: writing the -shm file through its
    mapping is then a bus error, not an error code.)"""
    paths = [path, *path.rglob("*")] if files else [path]
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p in reversed(paths):
                p.chmod(modes[p])
        return
    chattr = shutil.which("chattr")
    res = (subprocess.run([chattr, "+i", *map(str, paths)], capture_output=True)
           if chattr else None)
    probe = path / ".probe"
    try:
        if res is None or res.returncode != 0:
            pytest.skip("running as root on a filesystem without the immutable attribute "
                        "(chattr +i): a directory cannot be made read-only for root")
        with pytest.raises(OSError):
            probe.touch()
        yield
    finally:
        if res is not None:
            subprocess.run([chattr, "-i", *map(str, paths)], capture_output=True)
        probe.unlink(missing_ok=True)


def test_commit_on_a_full_disk_stores_nothing_and_the_log_goes_on_once_space_is_back(
        tmp_path: Path) -> None:
    # Prepare: a writer whose files cannot grow beyond 40 kB (the WAL fills after a few rounds)
    log = tmp_path / "rounds.sqlite"
    script = (
        "import json, sys\n"
        "from access_point.roundlog import RoundLog\n"
        "from pairzero.protocol.messages import RoundRecord\n"
        f"rl = RoundLog.open({str(log)!r}, {EXP!r})\n"
        "for t in range(1000):\n"
        "    try:\n"
        f"        rl.append(RoundRecord({EXP!r}, t, 1000 + t, 0.1 * t, 1e-4, (0,), 0.5, 0.0, None,"
        " None, 1.7e9 + t))\n"
        "    except Exception as e:\n"
        "        print(json.dumps({'type': type(e).__name__, 'error': str(e), 'next': rl.next_round}))\n"
        "        break\n"
    )
    # Execute
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                         timeout=120, preexec_fn=_file_size_limit(40_000))
    # Assert: the failing commit is one RoundLogError line naming the file and round
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    k = out["next"]
    assert out["type"] == "RoundLogError" and 2 <= k < 1000
    assert "\n" not in out["error"] and str(log) in out["error"]
    assert f"round {k} could not be committed" in out["error"]
    # ... the log holds exactly the rounds whose commit returned, and goes on once space is back
    again = RoundLog.open(log, EXP)
    assert again.records(0) == [_rec(t) for t in range(k)]
    for t in range(k, k + 3):
        again.append(_rec(t))
    again.close()
    assert RoundLog.open(log, EXP).next_round == k + 3


def test_head_that_cannot_be_written_after_a_commit_leaves_a_log_that_reopens(
        tmp_path: Path) -> None:
    # Prepare: two rounds, then the directory turns read-only (the open WAL stays writable)
    run = tmp_path / "run"
    rl = RoundLog.open(run / "rounds.sqlite", EXP)
    rl.append(_rec(0))
    rl.append(_rec(1))
    # Execute
    with read_only(run, files=False), pytest.raises(RoundLogError) as info:
        rl.append(_rec(2))
    rl.close()
    # Assert: one line that says what was committed; reopened, the log is one round ahead of
    # its head, which is accepted and caught up
    assert "\n" not in str(info.value)
    assert "round 2 is committed to rounds.sqlite but its head could not be written" in str(info.value)
    again = RoundLog.open(run / "rounds.sqlite", EXP)
    assert again.next_round == 3
    assert json.loads(head_path_for(run / "rounds.sqlite").read_text())["rounds"] == again.next_round
    again.close()


def _ap_config(tmp_path: Path, rounds: int) -> Path:
    port = free_port_block(2)
    cfg = load_config(None, [
        "radio.mode=baseband", f"run.rounds={rounds}", "task.eval_every=1000000",
        f"network.control_port={port}", f"network.sample_port_base={port + 1}",
        "network.ready_timeout_s=5.0", "network.heartbeat_s=0.5", "network.start_timeout_s=60",
        "network.curve=false", "output.plots=false", "zo.threads=1", "nodes.count=1",
    ])
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return path


def _env() -> dict[str, str]:
    return {"OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PATH": "/usr/bin:/bin"}


def test_ap_on_a_read_only_run_directory_stops_in_one_line(tmp_path: Path) -> None:
    # Prepare: a run directory with its config and a round log of 2 rounds, now read-only
    cfg_path = _ap_config(tmp_path, 10)
    cfg = load_config(cfg_path)
    run = tmp_path / "run"
    run.mkdir()
    write_provenance(cfg, run)
    rl = RoundLog.open(run / "rounds.sqlite", experiment_id(cfg))
    for t in range(2):
        rl.append(_rec(t, experiment_id(cfg)))
    rl.close()
    # Execute
    with read_only(run):
        res = subprocess.run([*PY, "ap", "--config", str(cfg_path), "--run-dir", str(run)],
                             cwd=REPO, capture_output=True, text=True, timeout=180, env=_env())
    # Assert
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("pairzero ap:")]
    assert res.returncode == 1, res.stderr
    assert len(errors) == 1 and "rounds.sqlite" in errors[0] and "cannot" in errors[0], res.stderr
    assert "Traceback" not in res.stderr
    assert [r.t for r in RoundLog.open(run / "rounds.sqlite", experiment_id(cfg)).records(0)] == [0, 1]


def test_ap_on_a_full_disk_stops_in_one_line_and_resumes_once_space_is_back(
        tmp_path: Path) -> None:
    # Prepare: AP + one node (baseband); the AP's files cannot grow beyond 48 kB
    rounds = 30
    cfg = _ap_config(tmp_path, rounds)
    run, logs = tmp_path / "run", tmp_path / "logs"
    run.mkdir()
    logs.mkdir()
    ap_cmd = [*PY, "ap", "--config", str(cfg), "--run-dir", str(run)]
    ap = subprocess.Popen(ap_cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env=_env(), preexec_fn=_file_size_limit(48_000))
    node = subprocess.Popen([*PY, "edge", "--config", str(cfg), "--node-id", "0", "--run-dir",
                             str(run)], cwd=REPO, stdout=(logs / "edge0.log").open("wb"),
                            stderr=subprocess.STDOUT, env=_env())
    ap2 = None
    try:
        # Execute: the AP stops when a write fails; restarted without the limit, it resumes
        _, err = ap.communicate(timeout=180)
        before = [r.t for r in round_log(run)]
        ap2 = subprocess.run(ap_cmd, cwd=REPO, capture_output=True, text=True, timeout=240,
                             env=_env())
        node.wait(timeout=60)
    finally:
        for p in (ap, node):
            if p.poll() is None:
                p.kill()
    # Assert: one line, status 1, nothing half-committed; then every round once, node in step
    errors = [ln for ln in err.splitlines() if ln.startswith("pairzero ap:")]
    assert ap.returncode == 1, err[-3000:]
    assert len(errors) == 1, err[-3000:]
    assert "could not be committed" in errors[0] or "cannot write" in errors[0], errors
    assert "Traceback" not in err
    assert 1 <= len(before) < rounds and before == list(range(len(before)))
    assert ap2.returncode == 0, ap2.stderr[-3000:]
    assert [r.t for r in round_log(run)] == list(range(rounds))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] is True
    node_report = json.loads((run / "nodes" / "edge0.json").read_text())
    assert node.returncode == 0
    assert node_report["model_hash"] == summary["model_hash"] == replay_hash(run)
