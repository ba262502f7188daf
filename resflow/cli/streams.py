"""The command's own stdout and stderr: text an encoding cannot carry is printed as the closest
ASCII (PYTHONIOENCODING=ascii or latin-1 must not turn a finished run into a crash), and a write to
stdout that fails (stdout on a full disk, /dev/full) is told apart from a results file that failed."""

from __future__ import annotations

import codecs
import contextlib
import sys

from resflow.errors import ResflowError

HANDLER = "resflow-closest"
# What resflow's own output uses beyond ASCII, and what to print where the encoding lacks it.
CLOSEST = {
    "×": "x",
    "→": "->",
    "←": "<-",
    "…": "...",
    "—": "-",
    "–": "-",
    "≈": "~",
    "≤": "<=",
    "≥": ">=",
    "±": "+/-",
    "²": "^2",
    "√": "sqrt",
    "·": ".",
    "µ": "u",
    "−": "-",
    "’": "'",
    "‘": "'",
    "“": '"',
    "”": '"',
}


def _closest(err: UnicodeError):
    if not isinstance(err, UnicodeEncodeError):
        raise err
    text = err.object[err.start : err.end]
    return "".join(CLOSEST.get(ch) or _ascii(ch) for ch in text), err.end


def _ascii(ch: str) -> str:
    """A Greek letter's name (φ -> phi), an accented letter's base (é -> e), else '?'."""
    import unicodedata

    name = unicodedata.name(ch, "")
    if name.startswith("GREEK SMALL LETTER ") or name.startswith("GREEK CAPITAL LETTER "):
        word = name.rsplit(" ", 1)[-1].lower()
        return word if "SMALL" in name else word.capitalize()
    base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    return base or "?"


codecs.register_error(HANDLER, _closest)  # (a named handler; registering it again is harmless)


def carry_what_the_encoding_can(*streams) -> None:
    """Reconfigure text streams whose encoding is not a UTF one to print the closest ASCII for a
    character they cannot encode, instead of raising UnicodeEncodeError."""
    for stream in streams:
        encoding = (getattr(stream, "encoding", None) or "").lower()
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None or not encoding:
            continue
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            continue
        if not name.startswith("utf"):
            with contextlib.suppress(ValueError, OSError, TypeError):
                reconfigure(errors=HANDLER)


class StdoutFault(ResflowError):
    """Printing to stdout failed (a full disk behind a redirect, /dev/full): only the printout."""

    def __init__(self, err: OSError):
        cause = err.strerror or str(err)
        super().__init__(f"cannot print to stdout: {cause} (only the printout failed: files written are complete)")


class GuardedStdout:
    """A stdout whose write and flush errors (but a closed pipe, which the CLI handles as such)
    surface as StdoutFault; everything else is the wrapped stream's."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as err:
            raise StdoutFault(err) from None

    def flush(self):
        try:
            return self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise StdoutFault(err) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def guarded_stdout():
    """sys.stdout as a GuardedStdout for the block, flushed at its end (so a failing flush is
    reported here, not by the interpreter on its way out); restored after. Also: a helper thread's
    environment error (TensorBoard's event writer thread on a full disk) prints no traceback, which
    would garble the one line the command prints for it."""
    with _quiet_thread_environment_errors():
        yield from _guarded()


def _guarded():
    original = sys.stdout
    carry_what_the_encoding_can(sys.stdout, sys.stderr)
    if original is None:
        yield
        return
    sys.stdout = GuardedStdout(original)
    try:
        yield
        sys.stdout.flush()
    except StdoutFault:
        silence_stdout()  # so that the interpreter's last flush cannot fail again
        raise
    finally:
        sys.stdout = original


@contextlib.contextmanager
def _quiet_thread_environment_errors():
    import threading

    from resflow.errors import ENVIRONMENT_ERRNOS

    previous = threading.excepthook

    def hook(args):
        if isinstance(args.exc_value, OSError) and args.exc_value.errno in ENVIRONMENT_ERRNOS:
            return  # (the main thread meets the same error when it writes or closes, and says it in one line)
        previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno() if sys.__stdout__ is not None else 1)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
