"""Files written whole or not at all: every file this package writes goes through :func:`write_atomically`.

A file is written under a temporary name beside its target (``.<name>.<pid>.tmp<suffixes>``), flushed to
disk, then renamed: a crash or a full disk leaves the old file or none, never half of one under the target's
name, and :func:`stale_temporaries` finds what a killed process left. :func:`write_text` and
:func:`write_json` are the common cases.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, List, Union

__all__ = [
    "write_atomically",
    "write_text",
    "write_json",
    "temporary_name",
    "stale_temporaries",
    "TEMPORARY_PREFIX",
    "TEMPORARY_MARK",
]

TEMPORARY_PREFIX = "."
TEMPORARY_MARK = ".tmp"


def temporary_name(target: Path) -> Path:
    """Where :func:`write_atomically` writes ``target`` first: ``.<name>.<pid>.tmp<suffixes>`` beside it."""
    return target.with_name(f"{TEMPORARY_PREFIX}{target.name}.{os.getpid()}{TEMPORARY_MARK}{''.join(target.suffixes)}")


def write_atomically(target: Path, write: Callable[[Path], Any]) -> Path:
    """Run ``write(temporary_path)`` in the target's folder, flush it to disk (fsync), then rename it to
    ``target`` and flush the folder: no half-written file ever has the target's name (a crash or a full
    disk leaves the old file, or none), and a power loss after the return keeps the new one.

    Raises:
        OSError: with ``filename`` the target, when the file cannot be written.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(target)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_folder(target.parent)
    except OSError as e:  # a full disk, a read-only folder: name the file meant, not the temporary one
        raise OSError(e.errno, e.strerror or str(e), str(target)) from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def stale_temporaries(folder: Path) -> List[Path]:
    """Temporary files of :func:`write_atomically` in ``folder`` left by processes that no longer run
    (a killed run); a running process's own are not listed."""
    pattern = re.compile(rf"^{re.escape(TEMPORARY_PREFIX)}.+\.(\d+){re.escape(TEMPORARY_MARK)}(\..*)?$")
    stale = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        m = pattern.match(p.name)
        if m and p.is_file() and not _running(int(m.group(1))):
            stale.append(p)
    return stale


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(target: Union[str, Path], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    return write_atomically(Path(target), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(target: Union[str, Path], data: Any, ensure_ascii: bool = True) -> Path:
    """Write ``data`` as 4-space JSON with a final newline to ``target`` atomically."""
    return write_text(target, json.dumps(data, indent=4, ensure_ascii=ensure_ascii) + "\n")
