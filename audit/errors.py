"""Errors that carry a message meant for the user.

The CLI prints an :class:`AuditError` as one line and exits with code 2; anything else is a bug
and keeps its traceback.
"""


class AuditError(Exception):
    """A problem with the user's input or environment: one line, naming the problem and the fix."""

    exit_code = 2


class StoreLockedError(AuditError):
    """The DuckDB file is held by another process."""
