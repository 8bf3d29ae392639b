"""Errors a user can act on: the CLI prints them as one line, no traceback."""


class UserError(Exception):
    """Bad input or an unreachable resource, described in one line."""
