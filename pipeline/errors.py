"""Errors a user can act on: the CLI prints them as one line, no traceback."""


class UserError(Exception):
    """Bad input or an unreachable resource, described in one line."""
    exit_status = 1
    command = 'starcompactor'   # who says so, in the printed line


class UsageError(UserError):
    """A command line that cannot be taken as given (an unknown or
    misspelled option, a missing or malformed value): nothing is read or
    written, exit status 2."""
    exit_status = 2

    def __init__(self, message, command='starcompactor'):
        super().__init__(message)
        self.command = command
