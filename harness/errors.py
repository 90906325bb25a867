"""User-facing errors: one clear message, exit status 2, no traceback."""


class UserError(Exception):
    """Bad input from the user (path, file, option, data). The message says what and what to do."""

    exit_code = 2
