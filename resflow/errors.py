"""The one package exception. The CLI maps it to a one-line message and an exit code."""

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
