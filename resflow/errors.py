"""The one package exception. The CLI maps it to a one-line message and an exit code."""

import errno

USAGE = 2  # bad config, bad arguments, bad paths
RUNTIME = 1  # something failed while running
FIGURE = 3  # the results (tables, config, meta.json) are written, but a figure could not be drawn


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


class FigureError(ResflowError):
    """One or more figures could not be drawn (a bug in resflow); the tables were written all the same.

    `failed`: (figure file name, the exception) per figure; `directory`: where the figures go; `drawn`:
    the figures that were drawn. The message is one line naming each failed figure and its error."""

    exit_code = FIGURE

    def __init__(self, failed: list, directory, drawn: list | None = None, written: str | None = None):
        self.failed, self.directory, self.drawn = list(failed), directory, list(drawn or [])
        what = ", ".join(f"{name} ({type(err).__name__}: {_first_line(err)})" for name, err in self.failed)
        written = written or (
            f"the tables, config.yaml and meta.json in {str(directory)!r} are complete (redraw with: resflow plot {directory})"
        )
        super().__init__(f"a bug in resflow: could not draw {what}; {written}")

    def at(self, directory) -> "FigureError":
        """The same failure, told of `directory` (a results dir staged elsewhere, then renamed)."""
        return FigureError(self.failed, directory, drawn=self.drawn)


def _first_line(err: BaseException, limit: int = 160) -> str:
    return (str(err).strip().splitlines() or [""])[0][:limit]


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
