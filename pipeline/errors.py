"""Errors a user can act on: the CLI prints them as one line, no traceback."""
import threading

# Set by the CLI on Ctrl-C. Beam may catch the KeyboardInterrupt of a
# running step (reported as the step's failure, or not at all): a run checks
# this too before it makes its files final.
interrupted = threading.Event()


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
