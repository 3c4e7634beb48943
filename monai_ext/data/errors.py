"""The error every reader and writer raises for a bad input."""

__all__ = ["InputError"]


class InputError(ValueError):
    """A bad input: the message names the file and the problem, in one line."""
