"""The worked example of ``docs/running_on_usrps.md``, read from the page into host-tagged steps.

The page marks the block with an HTML comment ``<!-- rehearsal: worked-example ... -->`` on the
line before its ```` ```sh ```` fence. Inside the block:

* ``# on HOST[, HOST...]: text`` names the host(s) the following lines run on (``ap``,
  ``node<k>``); ``# on HOST (leave running): text`` says that the command is started and left
  running (a terminal of its own); ``# on HOST: Ctrl-C ...`` interrupts what runs there.
* other ``#`` lines are explanation; a line ending in ``\\`` continues on the next.
* ``NAME=value`` (upper-case name) is one of the lab's values: the rehearsal supplies its own.
* every other line is a shell command, run as written by ``bash -c`` in the host's working
  directory.

Anything else (a command before the first host line, an unknown host, a command under a
Ctrl-C line) is refused with the page's line number, so the page cannot drift from what runs.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

__all__ = ["MARKER", "StepKind", "Step", "WorkedExample", "WorkedExampleError", "extract",
           "parse_block", "pairzero_argv"]

#: Start of the HTML comment that marks the block (the rest of the comment is free text).
MARKER = "<!-- rehearsal: worked-example"

_HOST_RE = re.compile(r"^# on (?P<hosts>[^:(]+?)(?P<bg> \(leave running\))?: ?(?P<text>.*)$")
_HOST_NAME_RE = re.compile(r"^(ap|node\d+)$")
_ASSIGN_RE = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*)=")


class WorkedExampleError(ValueError):
    """The page's block does not follow the format above (the message names the line)."""


class StepKind(Enum):
    ASSIGN = "assign"        # one of the lab's values
    RUN = "run"              # a command that ends; the next step waits for it
    START = "start"          # a command left running
    INTERRUPT = "interrupt"  # Ctrl-C to what runs on the hosts


@dataclass(frozen=True)
class Step:
    """One line of the block (continuations joined), on ``hosts``; ``line``: the page's line."""

    kind: StepKind
    hosts: tuple[str, ...]
    command: str
    line: int
    note: str

    @property
    def variable(self) -> str:
        """The name an ASSIGN step sets ("" for other steps)."""
        m = _ASSIGN_RE.match(self.command) if self.kind is StepKind.ASSIGN else None
        return m.group("name") if m else ""


@dataclass(frozen=True)
class WorkedExample:
    """The steps of the block, in the page's order, and where they came from."""

    source: str
    steps: tuple[Step, ...]

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host the block names, AP first, nodes by index."""
        names = {h for s in self.steps for h in s.hosts}
        nodes = sorted((h for h in names if h != "ap"), key=lambda h: int(h[4:]))
        return (("ap",) if "ap" in names else ()) + tuple(nodes)

    @property
    def variables(self) -> tuple[str, ...]:
        """The lab's values the block sets, in order."""
        return tuple(s.variable for s in self.steps if s.kind is StepKind.ASSIGN)

    def commands(self) -> list[Step]:
        """The RUN and START steps."""
        return [s for s in self.steps if s.kind in (StepKind.RUN, StepKind.START)]


def extract(page: str | Path) -> WorkedExample:
    """Read the marked block of ``page`` (a Markdown file) into steps."""
    path = Path(page)
    lines = path.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip().startswith(MARKER)]
    if len(starts) != 1:
        raise WorkedExampleError(f"{path}: expected one {MARKER!r} line, found {len(starts)}")
    i = starts[0] + 1
    if i >= len(lines) or lines[i].strip() != "```sh":
        raise WorkedExampleError(f"{path}:{i + 1}: the line after the marker must open the block "
                                 "with ```sh")
    end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
    if end is None:
        raise WorkedExampleError(f"{path}:{i + 1}: the worked example's block is never closed")
    return parse_block(lines[i + 1:end], first_line=i + 2, source=str(path))


def parse_block(lines: list[str], first_line: int = 1, source: str = "<block>") -> WorkedExample:
    """The steps of a block's lines (``first_line``: the page's number of ``lines[0]``)."""
    steps: list[Step] = []
    hosts: tuple[str, ...] = ()
    background = interrupt = False
    note = ""
    n = 0
    while n < len(lines):
        no = first_line + n
        text = lines[n].rstrip()
        while text.endswith("\\"):  # a continued command: join it
            n += 1
            if n >= len(lines):
                raise WorkedExampleError(f"{source}:{no}: the block ends inside a continued line")
            text = text[:-1].rstrip() + " " + lines[n].strip()
        n += 1
        stripped = text.strip()
        if not stripped:
            continue
        if stripped.startswith("# on "):
            m = _HOST_RE.match(stripped)
            if m is None:
                raise WorkedExampleError(f"{source}:{no}: cannot read the host line {stripped!r} "
                                         "(expected '# on HOST[, HOST]: text')")
            names = tuple(h.strip() for h in m.group("hosts").split(","))
            bad = [h for h in names if not _HOST_NAME_RE.match(h)]
            if bad:
                raise WorkedExampleError(f"{source}:{no}: unknown host(s) {bad} (hosts are 'ap' "
                                         "and 'node<k>')")
            hosts, background, note = names, bool(m.group("bg")), m.group("text")
            interrupt = note.startswith("Ctrl-C")
            if interrupt:
                if background:
                    raise WorkedExampleError(f"{source}:{no}: a Ctrl-C line cannot leave anything running")
                steps.append(Step(StepKind.INTERRUPT, hosts, "", no, note))
            continue
        if stripped.startswith("#"):
            continue  # explanation
        if not hosts:
            raise WorkedExampleError(f"{source}:{no}: {stripped!r} comes before any '# on HOST:' line")
        if interrupt:
            raise WorkedExampleError(f"{source}:{no}: {stripped!r} follows a Ctrl-C line; name its "
                                     "host first")
        if _ASSIGN_RE.match(stripped):
            kind = StepKind.ASSIGN
        else:
            kind = StepKind.START if background else StepKind.RUN
        steps.append(Step(kind, hosts, stripped, no, note))
    if not any(s.kind is not StepKind.ASSIGN for s in steps):
        raise WorkedExampleError(f"{source}: the worked example's block holds no command")
    return WorkedExample(source, tuple(steps))


def pairzero_argv(command: str) -> list[str] | None:
    """The ``pairzero`` arguments of a command line (``.venv/bin/pairzero ap --config x >
    y`` -> ``["ap", "--config", "x"]``, redirections dropped), or None for another program."""
    words = shlex.split(command)
    if not words or Path(words[0]).name != "pairzero":
        return None
    out: list[str] = []
    skip = False
    for w in words[1:]:
        if skip:
            skip = False
            continue
        if w in (">", ">>", "<", "2>", "2>&1"):
            skip = w != "2>&1"
            continue
        if w[:1] in (">", "<"):
            continue
        out.append(w)
    return out
