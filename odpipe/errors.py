"""Errors a user can act on.

A `UserError` carries a one-line message that names the file, the problem and the fix. The CLI
prints it and exits with code 2; it never shows a traceback for bad input.
"""


class UserError(Exception):
    """Bad input or bad usage; the message is shown to the user as is."""

    exit_code = 2
