"""Errors a user can act on. The CLI prints their message as one line, no traceback."""


class UserError(Exception):
    """Something the user can fix: the message names the thing and what to do."""
