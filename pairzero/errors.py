"""Errors every pAirZero process reports the same way.

:class:`OperationalError` is a failure of a running experiment whose message already says what
happened and what to do (the AP refused a node, the round log is corrupt, the AP went away):
the CLI prints it in one line and exits with status 1, with the traceback at DEBUG level. Bad
input (config, arguments) stays ``ValueError`` / ``ConfigError``: one line, status 2.
"""

from __future__ import annotations

__all__ = ["OperationalError"]


class OperationalError(RuntimeError):
    """A run cannot go on; the message says why and what to do."""
