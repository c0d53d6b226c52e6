"""The one error type for bad user input inside `trainer`."""

from __future__ import annotations


class InvalidInputError(ValueError):
    """A value, file or config given by the user is unusable.

    Raised where the bad value is found, with a message that names the value and the rule;
    command-line entry points turn it into one line on stderr and exit code 2.
    """
