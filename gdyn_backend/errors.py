"""The one exception type for problems the user can fix.

A `UserError` carries one line that says what is wrong and what to do. The
CLI prints it as `gdyn: error: <line>` and exits with status 2, without a
traceback; anything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input or a request that cannot be served; message is one line."""


class Cancelled(Exception):
    """A long job was cancelled by the user (Ctrl-C, Esc in Blender, `cancel` message)."""
