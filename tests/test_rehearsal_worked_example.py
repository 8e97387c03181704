"""The worked example of docs/running_on_usrps.md, as the rehearsal reads it from the page.

The page's block is what runs (a changed page changes the steps), every command in it exists
(pairzero commands parse with the real CLI), and the block with the page's own lab values
makes a valid lab config: what a lab copying it gets.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pairzero.cli import COMMANDS, build_parser
from pairzero.config import load_config
from rehearsal.worked_example import (
    MARKER,
    StepKind,
    WorkedExampleError,
    extract,
    pairzero_argv,
    parse_block,
)

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "running_on_usrps.md"


def test_the_page_holds_the_worked_example_in_the_documented_order() -> None:
    # Execute
    ex = extract(PAGE)
    # Assert: three hosts, the lab's values first, keys and config to the nodes before any
    # process, calibration before the run, the calibration file copied before the nodes that
    # load it start, and the run last
    assert ex.hosts == ("ap", "node0", "node1")
    assert ex.variables == ("AP_ADDR", "AP_RADIO", "NODE_RADIOS")
    cmds = [(s.kind, s.hosts, pairzero_argv(s.command) or s.command.split() or ["Ctrl-C"]) for s in ex.steps
            if s.kind is not StepKind.ASSIGN]
    order = [c[2][0] for c in cmds]
    assert order.index("config") < order.index("keys") < order.index("edge")
    first_edge = order.index("edge")
    assert order.index("calibrate") > first_edge
    copies = [i for i, c in enumerate(cmds) if c[2][0] == "scp"]
    assert all(cmds[i][1] == ("ap",) for i in copies)
    cal_copies = [i for i in copies if "calibration.yaml" in cmds[i][2]]
    assert len(cal_copies) == 2 and {cmds[i][2][-1].split(":")[0] for i in cal_copies} == {"node0", "node1"}
    interrupt = next(i for i, c in enumerate(cmds) if c[0] is StepKind.INTERRUPT)
    assert order.index("calibrate") < interrupt < min(cal_copies)
    calibrated_edges = [i for i, c in enumerate(cmds) if c[2][0] == "edge" and i > interrupt]
    assert len(calibrated_edges) == 2 and min(calibrated_edges) > max(cal_copies)
    assert all(cmds[i][0] is StepKind.START for i in calibrated_edges)
    assert cmds[-1][0] is StepKind.RUN and cmds[-1][2][0] == "ap" and cmds[-1][1] == ("ap",)
    # the uncalibrated edges are told so (lab.yaml names a file that does not exist yet)
    early_edges = [cmds[i][2] for i in range(first_edge, interrupt) if cmds[i][2][0] == "edge"]
    assert len(early_edges) == 2 and all("radio.calibration_file=null" in e for e in early_edges)


def test_every_command_of_the_worked_example_exists_and_parses() -> None:
    # Prepare
    ex = extract(PAGE)
    parser = build_parser()
    # Execute / Assert
    for step in ex.commands():
        argv = pairzero_argv(step.command)
        if argv is None:
            prog = step.command.split()[0]
            # scp is played by the rehearsal's stand-in (rehearsal/scp.py); the rest are here
            assert prog == "scp" or shutil.which(prog), f"line {step.line}: {prog} not found"
            continue
        assert step.command.startswith(".venv/bin/pairzero ")  # what `make setup` installs
        assert argv[0] in COMMANDS, f"line {step.line}: pairzero {argv[0]}"
        parser.parse_args(argv)  # SystemExit on an unknown option or a missing argument


@pytest.mark.e2e  # runs a process
def test_the_page_s_own_lab_values_make_a_valid_lab_config(tmp_path: Path) -> None:
    # Prepare: a lab host's clone (configs/) and the block's first steps, run as written
    ex = extract(PAGE)
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    script = [s.command for s in ex.steps if s.kind is StepKind.ASSIGN]
    script.append(next(s.command for s in ex.commands() if (pairzero_argv(s.command) or [""])[0] == "config"))
    # Execute
    res = subprocess.run(["bash", "-ec", "\n".join(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    # Assert: a B210 lab's config, two nodes, the AP's address, and the calibration file it
    # needs first (which `pairzero ap` would refuse until `pairzero calibrate` made it)
    assert res.returncode == 0, res.stderr
    cfg = load_config(tmp_path / "lab.yaml")
    assert cfg.nodes.count == 2
    assert cfg.network.ap_host == "192.168.10.1"
    assert cfg.radio.ap_args == "type=b200,serial=3150ABC"
    assert cfg.radio.node_args == ("type=b200,serial=3150DEF", "type=b200,serial=3150F01")
    assert cfg.radio.calibration_file == "calibration.yaml" and not cfg.radio.emulated()


def test_a_changed_page_changes_what_runs(tmp_path: Path) -> None:
    # Prepare: the page with one command changed and one added
    text = PAGE.read_text()
    changed = text.replace("--config lab.yaml --output calibration.yaml", "--config lab.yaml --output calibration.yaml --tol 0.3", 1)
    changed = changed.replace("# on node0, node1: a directory for the keys\nmkdir -p keys\n",
                              "# on node0, node1: a directory for the keys\nmkdir -p keys\nls keys\n", 1)
    assert changed != text
    page = tmp_path / "page.md"
    page.write_text(changed)
    # Execute
    before, after = extract(PAGE), extract(page)
    # Assert
    cal = [s.command for s in after.commands() if "calibrate" in s.command]
    assert cal == [".venv/bin/pairzero calibrate --config lab.yaml --output calibration.yaml --tol 0.3"]
    assert len(after.commands()) == len(before.commands()) + 1
    assert [s.hosts for s in after.commands() if s.command == "ls keys"] == [("node0", "node1")]


@pytest.mark.parametrize(("block", "error"), [
    (["mkdir keys"], "comes before any '# on HOST:' line"),
    (["# on gateway: x", "ls"], "unknown host(s) ['gateway']"),
    (["# on node0: Ctrl-C", "ls"], "follows a Ctrl-C line"),
    (["# on ap: x", "ls \\"], "ends inside a continued line"),
    (["# on ap x", "ls"], "cannot read the host line"),
    (["# on ap: values", "A=1"], "holds no command"),
])
def test_a_block_that_breaks_the_format_is_refused_with_its_line(block: list[str], error: str) -> None:
    with pytest.raises(WorkedExampleError) as e:
        parse_block(block, first_line=10, source="page.md")
    assert error in str(e.value)
    assert "page.md" in str(e.value)


def test_the_block_must_be_marked_once(tmp_path: Path) -> None:
    # Prepare
    page = tmp_path / "page.md"
    page.write_text("no marker here\n```sh\n# on ap: x\nls\n```\n")
    # Execute / Assert
    with pytest.raises(WorkedExampleError, match="expected one"):
        extract(page)
    page.write_text(f"{MARKER} -->\n```sh\n# on ap: x\nls\n")
    with pytest.raises(WorkedExampleError, match="never closed"):
        extract(page)


def test_continued_lines_and_redirections() -> None:
    # Execute
    ex = parse_block(["# on ap (leave running): a run", ".venv/bin/pairzero ap \\", "  --config x.yaml > out.txt"])
    # Assert
    (step,) = ex.steps
    assert step.kind is StepKind.START and step.hosts == ("ap",)
    assert step.command == ".venv/bin/pairzero ap --config x.yaml > out.txt"
    assert pairzero_argv(step.command) == ["ap", "--config", "x.yaml"]
