"""The one exception tree: every error lrsweep raises for a person to read, with its exit code.

    LrsweepError                 exit 1: the run failed
    ├── InvalidInputError        exit 2: a value, file, config or option the user gave
    │   └── UsageError           exit 2: the command line itself (argparse's complaints)
    ├── StorageError             exit 2: the storage named is malformed, unsupported, unreachable
    └── StorageLost              exit 1: a storage that worked went away for too long

Messages are one line and never contain a password (URLs are masked before they are formatted
in). An interruption (Ctrl-C, SIGTERM: `sweeps.cli.Interrupted`) stays a KeyboardInterrupt, out
of this tree on purpose: no `except Exception` may swallow a request to stop.
"""

from __future__ import annotations

EXIT_FAILURE, EXIT_USAGE = 1, 2


class LrsweepError(Exception):
    """Anything lrsweep refuses or fails with, said in one line."""

    exit_code = EXIT_FAILURE


class InvalidInputError(LrsweepError, ValueError):
    """A value, file or config given by the user is unusable: raised where it is found, with a
    message that names the value and the rule."""

    exit_code = EXIT_USAGE


class UsageError(InvalidInputError):
    """The command line does not parse (raised by the parser instead of exiting)."""


class StorageError(LrsweepError):
    """The storage the user named is malformed, unsupported or unreachable: bad input."""

    exit_code = EXIT_USAGE


class StorageLost(LrsweepError):
    """A storage that worked went away for longer than a worker waits, or a heartbeat could not
    be recorded: a failure of the run, not of its input (trials handed back where the storage
    still allows it)."""


def require_positive(name: str, value: int) -> None:
    """Refuse a count below 1, naming it as the person typed it (`--top`)."""
    if value < 1:
        raise InvalidInputError(f"{name} must be >= 1; got {value}")
