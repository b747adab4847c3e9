"""Errors a user can act on.

A `UserError` carries a one-line message that names the file, the problem and the fix. The CLI
prints it and exits with code 2; it never shows a traceback for bad input.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or bad usage; the message is shown to the user as is."""

    exit_code = 2


def first_line(err: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of an exception's message (its type name when it has none), at most
    `limit` characters: the part of a library's error that fits inside a one-line UserError."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:limit]
