"""The one error type for user errors.

Consumes: nothing (and a library's exception, for ``detail_line``). Produces: ``UserError``, the
base of every error caused by the user's files, flags or environment (a bad model spec, a corrupt
file, a missing package, an impossible target). The CLI turns a ``UserError`` into one line on
stderr and exit code 2; any other exception is a bug in edgeprune (exit 1). Library code raises a
``UserError`` (or a subclass that names the stage) whose message is one line: what is wrong,
where, and how to fix it.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message is one line (what, where, how to fix); the CLI exits 2."""

    # read by code that cannot import this module (the self-contained bench runner copied to a
    # device) to tell a user error from a runtime's own exception
    is_user_error = True


def detail_line(e: BaseException) -> str:
    """The line of a library's exception message that says what went wrong. torch's
    ``load_state_dict`` opens with "Error(s) in loading state_dict for Net:" and names the tensor
    on the next line, which a one-line error must keep."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        return lines[1]
    return lines[0]


__all__ = ["UserError", "detail_line"]
