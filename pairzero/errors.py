"""Errors every pAirZero process reports the same way.

:class:`OperationalError` is a failure of a running experiment whose message already says what
happened and what to do (the AP refused a node, the round log is corrupt, the AP went away):
the CLI prints it in one line and exits with status 1, with the traceback at DEBUG level. Bad
input (config, arguments) stays ``ValueError`` / ``ConfigError``: one line, status 2.

Exit statuses of every ``pairzero`` command (a supervisor such as ``pairzero loopback`` reads
them: it restarts a process that crashed, never one that stopped for a reason it stated):
"""

from __future__ import annotations

__all__ = ["OperationalError", "RunDirUnwritable", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE",
           "EXIT_CRASH", "EXIT_INTERRUPTED"]

#: Done.
EXIT_OK = 0
#: Stopped for an operational reason it stated in one line (refused, unfinished, disk full).
EXIT_FAILED = 1
#: Bad config or arguments.
EXIT_USAGE = 2
#: An unexpected exception (a bug): traceback logged (sysexits' EX_SOFTWARE).
EXIT_CRASH = 70
#: Ctrl-C.
EXIT_INTERRUPTED = 130


class OperationalError(RuntimeError):
    """A run cannot go on; the message says why and what to do."""


class RunDirUnwritable(OperationalError):
    """A result file in the run directory cannot be written (full disk, read-only directory)."""

    @classmethod
    def at(cls, path: object, e: OSError) -> RunDirUnwritable:
        """The one-line error for a failed write of ``path``."""
        return cls(
            f"{path}: cannot write: {e.strerror or e} (full disk or read-only run directory?); "
            "the round log is consistent: free space or make the run directory writable, then "
            "restart the AP on this run directory")
