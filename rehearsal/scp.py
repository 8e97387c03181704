"""``scp`` between the rehearsal's hosts: a copy into the named host's home directory.

The rehearsal's hosts are network namespaces without an sshd, so the worked example's
``scp FILE... HOST:PATH`` is played by this stand-in (on the hosts' ``PATH`` as ``scp``):
``HOST:PATH`` is ``PATH`` under ``$PAIRZERO_REHEARSAL_HOMES/HOST`` (relative paths start at the
host's home, as with ssh). It behaves as scp does where the page relies on it: a destination
ending in ``/`` or naming a directory receives the files under their names, a missing
destination directory or source file is an error (status 1, scp's words), file modes are kept
(a secret key stays 0600), local-to-local and remote sources are refused.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["HOMES_ENV", "main", "copy"]

#: Environment variable naming the directory that holds one home directory per host.
HOMES_ENV = "PAIRZERO_REHEARSAL_HOMES"


class ScpError(Exception):
    """One line, as scp would print it."""


def _remote(arg: str) -> tuple[str, str] | None:
    """("host", "path") of ``host:path``; None for a local path."""
    host, sep, path = arg.partition(":")
    if not sep or "/" in host or not host:
        return None
    return host, path


def copy(sources: list[str], dest: str, homes: Path) -> list[Path]:
    """Copy local ``sources`` to ``dest`` (``host:path``) under ``homes``; return the files written."""
    remote = _remote(dest)
    if remote is None:
        raise ScpError(f"{dest}: the rehearsal's scp copies to another host (HOST:PATH) only")
    host, path = remote
    home = homes / host
    if not home.is_dir():
        raise ScpError(f"ssh: Could not resolve hostname {host}: Name or service not known")
    target = home / path if path else home
    for s in sources:
        if _remote(s) is not None:
            raise ScpError(f"{s}: the rehearsal's scp copies from this host only")
        if not Path(s).is_file():
            raise ScpError(f"{s}: No such file or directory")
    into_dir = path.endswith("/") or path == "" or target.is_dir()
    if into_dir and not target.is_dir():
        raise ScpError(f"dest open \"{path}\": No such file or directory")
    if not into_dir and (len(sources) > 1 or not target.parent.is_dir()):
        raise ScpError(f"dest open \"{path}\": No such file or directory")
    written = []
    for s in sources:
        out = target / Path(s).name if into_dir else target
        shutil.copyfile(s, out)
        os.chmod(out, Path(s).stat().st_mode & 0o777)
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    args = [a for a in args if a not in ("-p", "-q")]  # preserve / quiet: what this does anyway
    if len(args) < 2 or any(a.startswith("-") for a in args):
        print("usage: scp FILE... HOST:PATH (the rehearsal's stand-in)", file=sys.stderr)
        return 1
    homes = os.environ.get(HOMES_ENV)
    if not homes:
        print(f"scp: {HOMES_ENV} is not set (the rehearsal sets it)", file=sys.stderr)
        return 1
    try:
        copy(args[:-1], args[-1], Path(homes))
    except ScpError as e:
        print(f"scp: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
