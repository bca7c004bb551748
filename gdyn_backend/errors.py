"""The exception types for problems the user can fix, and the one line an OS error becomes.

A `UserError` carries one line that says what is wrong and what to do. The
CLI prints it as `gdyn: error: <line>` and exits with status 2, without a
traceback; `gdyn serve` answers it as `{"error": "<line>"}`. An `OSError`
(a read-only folder, a full disk, a missing permission) is told the same
way, through `os_error_message`, by those two top layers only. Anything else
that escapes is a bug and keeps its traceback.
"""

import errno

# What to do about the OS errors a user can meet, by errno (the file name comes first).
_OS_ADVICE = {
    errno.ENOSPC: "disk full (no space left on the device); free some space or write somewhere else",
    errno.EDQUOT: "disk quota exceeded; free some space or write somewhere else",
    errno.EROFS: "read-only file system; choose an output location you can write to",
    errno.EACCES: "permission denied; check its permissions or choose another location",
    errno.EPERM: "operation not permitted; check its permissions or choose another location",
    errno.ENOTDIR: "a file stands where a folder is needed; choose another path",
    errno.EEXIST: "a file stands where a folder is needed; choose another path",
    errno.EISDIR: "is a folder, not a file; give a file name",
    errno.ENAMETOOLONG: "file name too long; choose a shorter path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) and run again",
    errno.EIO: "input/output error; the disk or network share failed, check it and run again",
}


class UserError(Exception):
    """Bad input or a request that cannot be served; message is one line."""


class Cancelled(Exception):
    """A long job was cancelled by the user (Ctrl-C, Esc in Blender, `cancel` message)."""


class Stopped(BaseException):
    """The process was asked to stop by a signal (SIGTERM, SIGHUP).

    A BaseException, like KeyboardInterrupt, so that no `except Exception`
    on the way swallows it; every atomic writer removes its partial output
    on the way out. `signum` is the signal's number (exit status 128 + signum).
    """

    def __init__(self, signum: int, name: str):
        super().__init__(f"stopped by {name}")
        self.signum = signum


def os_error_message(exc: OSError) -> str:
    """One line for an OSError: the file it names, then what is wrong and what to do.

    `[Errno 30] Read-only file system: '/x/.out.partial-7'` becomes
    `/x/out: read-only file system; choose an output location you can write to`
    (the atomic writer already renamed the temporary path to the user's).
    """
    name = exc.filename if exc.filename is not None else ""
    advice = _OS_ADVICE.get(exc.errno) or (exc.strerror or "").strip()
    if not advice:  # an OSError raised with a message only (a library's)
        advice = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return f"{name}: {advice}" if name != "" else advice
