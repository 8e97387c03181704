"""The rooms say what they hold: import arrows point down, and docs/architecture.md names only
modules that exist.

Layers (an arrow may only point down): tests, bench -> simulation -> access_point, edge_node,
calibration -> radio -> pairzero (the core) -> sync. The core imports nothing from the processes,
the radios' callers, the one-process simulation, the tests or the benchmarks (not even inside a
function), and the benchmarks nothing from the tests.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    """Top-level package of every module ``path`` imports (anywhere in the file)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def _arrows(package: str, forbidden: set[str]) -> list[str]:
    return sorted(f"{p.relative_to(ROOT)} imports {sorted(_imports(p) & forbidden)}"
                  for p in (ROOT / package).rglob("*.py") if _imports(p) & forbidden)


@pytest.mark.parametrize(("package", "forbidden"), [
    ("pairzero", {"access_point", "edge_node", "calibration", "radio", "simulation", "tests", "bench"}),
    ("sync", {"pairzero", "access_point", "edge_node", "calibration", "radio", "simulation", "tests",
              "bench"}),
    ("radio", {"access_point", "edge_node", "calibration", "simulation", "tests", "bench"}),
    ("access_point", {"edge_node", "calibration", "simulation", "tests", "bench"}),
    ("edge_node", {"access_point", "calibration", "simulation", "tests", "bench"}),
    ("calibration", {"access_point", "edge_node", "simulation", "tests", "bench"}),
    ("simulation", {"calibration", "tests", "bench"}),
    ("bench", {"tests"}),
])
def test_no_arrow_points_up(package: str, forbidden: set[str]) -> None:
    assert _arrows(package, forbidden) == []


def test_the_page_check_finds_paths_in_text_and_diagrams() -> None:
    named = _module_paths("see `radio/` and radio/factory.py; x/y.py, `a/b/c.py`, not a.b/c")
    assert named == {"radio/", "radio/factory.py", "x/y.py", "a/b/c.py"}


def test_the_arrow_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from access_point.orchestrator import Orchestrator\n    import tests.e2e_util\n")
    assert _imports(f) == {"access_point", "tests"}


def _module_paths(text: str) -> set[str]:
    """Repository paths a document names: every ``dir/.../file.py`` (diagram included) and every
    directory ``dir/`` in backquotes."""
    files = re.findall(r"(?<![\w./-])((?:[A-Za-z_]+/)+[A-Za-z_]+\.(?:py|md|yaml|grc))", text)
    dirs = re.findall(r"`((?:[A-Za-z_]+/)+)`", text)
    return set(files) | set(dirs)


def test_every_module_the_architecture_page_names_exists() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = _module_paths(text)
    # Assert: the page draws the round through the modules (and names at least those)
    assert {"pairzero/seeds.py", "pairzero/zo/engine.py", "pairzero/ota/aggregate.py",
            "access_point/orchestrator.py", "edge_node/runtime.py", "pairzero/metrics.py",
            "radio/factory.py"} <= named
    assert sorted(p for p in named if not (ROOT / p).exists()) == []


#: What a test body does when it starts processes or runs the channel emulator.
_E2E_WORDS = re.compile(r"\b(subprocess|Popen|run_loopback|launch_testbed|tests\.roles|ChannelEmulator|"
                        r"calibrate_in_process)\b")


def _unmarked_e2e(path: Path) -> list[str]:
    """Test functions of ``path`` whose body starts processes or the emulator, without the
    ``e2e`` mark (on the function, or ``pytestmark`` on the module)."""
    src = path.read_text()
    tree = ast.parse(src)
    if any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
           and "e2e" in ast.unparse(n.value) for n in tree.body):
        return []
    out = []
    for n in tree.body:
        if isinstance(n, ast.FunctionDef) and n.name.startswith("test_"):
            marked = any("e2e" in ast.unparse(d) for d in n.decorator_list)
            body = "\n".join(ast.unparse(s) for s in n.body)
            if not marked and _E2E_WORDS.search(body):
                out.append(f"{path.name}::{n.name}")
    return out


def test_tests_that_start_processes_or_the_emulator_are_marked_e2e() -> None:
    files = [p for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_architecture.py"]
    assert [t for p in sorted(files) for t in _unmarked_e2e(p)] == []


def test_every_relative_link_of_the_readme_and_the_docs_exists() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
