"""The one package exception. The CLI maps it to a one-line message and an exit code."""

import errno

USAGE = 2  # bad config, bad arguments, bad paths
RUNTIME = 1  # something failed while running


class ResflowError(Exception):
    """An error with a message fit for a user: one line, naming the problem."""

    exit_code = RUNTIME

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(ResflowError):
    """The config (YAML, --set, a path) is wrong; nothing has been run or written."""

    exit_code = USAGE


class Interrupted(ResflowError):
    """Ctrl-C: stopped cleanly; the message says what was kept and how to resume."""

    exit_code = 130


# What the user's environment does to a write, not a bug in resflow: a full disk or quota, a read-only
# or failing file system, a name or file too long for it, a permission taken away mid-run.
ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EROFS", "EFBIG", "ENAMETOOLONG", "EIO", "EACCES", "EPERM")
    if hasattr(errno, name)
)


class EnvironmentFault(ResflowError):
    """A write failed because of the user's environment (disk full, name too long, ...), not a bug."""


def environment_error(err: OSError, path=None, doing: str = "cannot write") -> EnvironmentFault | None:
    """A one-line ResflowError (exit 1) naming the path and the cause of an OSError that comes from the
    user's environment (ENVIRONMENT_ERRNOS), or None for any other error. `doing`: what failed
    ("cannot write"; "" where it is not known, as in the CLI's last line of defence)."""
    if not isinstance(err, OSError) or err.errno not in ENVIRONMENT_ERRNOS:
        return None
    where = path if path is not None else err.filename
    cause = err.strerror or errno.errorcode.get(err.errno, str(err))
    lead = f"{doing} " if doing else ""
    return EnvironmentFault(f"{lead}{str(where)!r}: {cause}" if where is not None else f"{doing or 'failed'}: {cause}")
