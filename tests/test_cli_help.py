"""Every `pairzero` subcommand answers --help, through the installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pairzero.cli import COMMANDS, main

SCRIPT = shutil.which("pairzero", path=str(Path(sys.executable).parent))


@pytest.mark.e2e
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_subcommand_help(command: str) -> None:
    assert SCRIPT, "the pairzero console script is not installed in this environment"
    res = subprocess.run([SCRIPT, command, "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"pairzero {command}" in res.stdout
    assert "--log-level" in res.stdout


@pytest.mark.e2e
def test_top_level_help_lists_every_subcommand() -> None:
    res = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    for command in COMMANDS:
        assert command in res.stdout


def test_invalid_config_is_reported_not_raised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "exp.yaml"
    p.write_text("nodes:\n  count: -2\n")
    assert main(["config", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "nodes.count" in err and "out of range" in err


def test_config_command_prints_resolved_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--set", "zo.lr=0.125"]) == 0
    assert "lr: 0.125" in capsys.readouterr().out


def test_bad_log_level_is_rejected() -> None:
    with pytest.raises(SystemExit) as info:
        main(["config", "--log-level", "chatty"])
    assert info.value.code == 2


@pytest.mark.parametrize("argv, fragment", [
    (["edge", "--node-id", "99"], "--node-id 99 out of range"),
    (["ap", "--set", "network.keys_dir=/nonexistent/keys"], "run `pairzero keys"),
    (["report", "/nonexistent/run"], "no metrics.jsonl"),
])
def test_bad_arguments_give_one_clear_line_and_status_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
