"""The one error type the CLI turns into a single line and exit status 2."""


class UserError(Exception):
    """Bad input or a missing resource the user can fix (shown as one line, exit 2)."""
