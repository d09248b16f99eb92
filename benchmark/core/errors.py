"""The two error types the CLI turns into one line and an exit status."""


class UserError(Exception):
    """Bad input or a missing resource the user can fix (shown as one line, exit 2)."""


class TrialFailed(RuntimeError):
    """A trial that cannot go on (NaN loss, ...): recorded as failed, never as a result (exit 1)."""
