"""The package's errors: one root, a subclass per domain, each message one line naming the file and the problem.

Every error this package raises for a user to read is a :class:`ReportedError`; a boundary (the command
line, ``segment``'s per-case loop, a bundle's training) catches that one class, never a list. The domains
subclass it beside the built-in error they stand for, so ``except ValueError`` still works:
:class:`InputError` (a bad input file or value), :class:`CheckpointError` (weights that cannot be written or
resumed), :class:`MissingPackageError` (an optional package the chosen path needs), and in their own modules
the setting, training, export, data-set and bundle-source errors.

A :class:`ReportedError` that nobody catches is printed as ``error: <message>`` without a traceback, and the
process exits with status 1, once :func:`install_excepthook` has run: the command line runs it, and so does
each bundle's ``initialize`` (so ``python -m monai.bundle run`` reports a missing datalist or a full disk in
one line); importing the package does not (a MONAI Label server, a notebook or pytest keep their own hook).
MONAI wraps errors raised inside config expressions and transforms (``Failed to evaluate ...``, ``applying
transform ...``); the hook looks through that chain of causes. Set ``MONAI_EXT_TRACEBACK=1`` to see the full
traceback.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Optional

__all__ = [
    "ReportedError",
    "InputError",
    "CheckpointError",
    "MissingPackageError",
    "reported_cause",
    "install_excepthook",
    "one_line",
    "first_line",
]

# control characters (C0, DEL, C1) and the Unicode line and paragraph separators: shown escaped in error lines
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: object) -> str:
    """``text`` as one printable line: a newline, carriage return, escape sequence or other control
    character (in a file name, say) is written as Python writes it in a string (``\\n``, ``\\x1b``), so it
    can neither split the line nor hide the reason after it."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))


def first_line(e: BaseException) -> str:
    """The first line of ``e``'s message (as :func:`one_line` prints it), or its type's name when it has none."""
    text = str(e).strip()
    return one_line(text.splitlines()[0]) if text else type(e).__name__


class ReportedError(Exception):
    """The root: an error whose message names the file and the problem, in one line."""


class InputError(ReportedError, ValueError):
    """A bad input: the message names the file and the problem, in one line."""


class CheckpointError(ReportedError, OSError):
    """A checkpoint that cannot be written or resumed from; the message names the file."""


class MissingPackageError(ReportedError, ImportError):
    """An optional package that the chosen path needs is not installed; the message names it and how to install it."""


def reported_cause(e: Optional[BaseException]) -> Optional[ReportedError]:
    """The first :class:`ReportedError` in ``e``'s chain of causes (``__cause__``, then ``__context__``), if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, ReportedError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _excepthook(kind, value, tb, _previous=sys.excepthook) -> None:
    reported = reported_cause(value)
    if reported is None or os.environ.get("MONAI_EXT_TRACEBACK"):
        _previous(kind, value, tb)
        return
    print(f"error: {one_line(reported)}", file=sys.stderr)


def install_excepthook() -> None:
    """Print an uncaught :class:`ReportedError` as one line (see the module docstring); idempotent."""
    if sys.excepthook is not _excepthook:
        _excepthook.__defaults__ = (sys.excepthook,)
        sys.excepthook = _excepthook
