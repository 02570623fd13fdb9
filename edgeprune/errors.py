"""The one error type for user errors.

Consumes: nothing. Produces: ``UserError``, the base of every error caused by the user's files,
flags or environment (a bad model spec, a corrupt file, a missing package, an impossible target).
The CLI turns a ``UserError`` into one line on stderr and exit code 2; any other exception is a
bug in edgeprune (exit 1). Library code raises a ``UserError`` (or a subclass that names the
stage) whose message is one line: what is wrong, where, and how to fix it.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message is one line (what, where, how to fix); the CLI exits 2."""

    # read by code that cannot import this module (the self-contained bench runner copied to a
    # device) to tell a user error from a runtime's own exception
    is_user_error = True


__all__ = ["UserError"]
