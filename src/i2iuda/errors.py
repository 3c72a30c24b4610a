"""User-facing errors: the CLI prints them as one line and exits with code 2 (no traceback)."""


class UserError(Exception):
    """Bad input from the user: a wrong option, a missing folder, a malformed file."""


class DataError(UserError):
    """A data set or one of its files is missing, malformed or unreadable."""
