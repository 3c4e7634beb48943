"""The MONAI model zoo's code style: the code an export vendors is formatted as the zoo formats it, and an export is
checked with the zoo's own tools and settings (the model-zoo repository's ``setup.cfg`` ``[flake8]`` and
``[isort]``, ``pyproject.toml`` ``[tool.black]``, ``runtests.sh --codeformat`` and ``.pre-commit-config.yaml``):

- isort, profile black, 120 columns. In the zoo's repository the vendored ``monai_ext`` is neither under its
  root nor installed, so isort sorts it with the third-party packages; it is named so here, where this project
  is installed, to sort it the same way.
- black, 120 columns, ``--skip-magic-trailing-comma``, for Python 3.7 to 3.9 as the zoo's ``target-version``.
- flake8 with bugbear, comprehensions, executable and pep8-naming: the zoo's selection and ignores.
- the pre-commit hooks that look at file contents: end of file, trailing white space, docstring first, JSON
  pretty-printed (4 spaces, keys in their order), YAML that parses, one line ending, no file over 1 MB that a
  pull request would carry (the weight files, listed in ``large_files.yml``, are left out of one).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, Sequence, Set

__all__ = ["format_code", "style_findings", "hook_findings", "ZOO_ISORT", "ZOO_FLAKE8"]

ZOO_ISORT = {
    "profile": "black",
    "line_length": 120,
    "known_first_party": ["models"],
    "known_third_party": ["monai_ext"],
}
ZOO_BLACK_LINE_LENGTH = 120
ZOO_BLACK_TARGETS = ("PY37", "PY38", "PY39")
ZOO_FLAKE8 = [
    "--select=B,C,E,F,N,P,T4,W,B9",
    "--ignore=E203,E501,E741,W503,W504,C408,N812,B023,B905,B028,B907,C419",
    "--max-line-length=120",
    "--per-file-ignores=__init__.py:F401,__main__.py:F401",
]
ZOO_MAX_KB = 1024  # check-added-large-files --maxkb


def _black_mode():
    import black

    return black.Mode(
        target_versions={black.TargetVersion[t] for t in ZOO_BLACK_TARGETS},
        line_length=ZOO_BLACK_LINE_LENGTH,
        magic_trailing_comma=False,
    )


def _formatted(text: str) -> str:
    import black
    import isort

    return black.format_str(isort.code(text, config=isort.Config(**ZOO_ISORT)), mode=_black_mode())


def format_code(folder: Path) -> None:
    """Format every Python file under ``folder`` as the zoo's ``runtests.sh --autofix`` does (isort, then black).

    Raises:
        ImportError: isort or black is not installed.
    """
    for path in sorted(Path(folder).rglob("*.py")):
        text = path.read_text()
        new = _formatted(text)
        if new != text:
            path.write_text(new)


def _hook(main: Callable[[Sequence[str]], int], args: Sequence[str]) -> List[str]:
    """What a pre-commit hook prints, where it fails."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)  # some hooks write to sys.stdout.buffer
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(args))
    text = raw.getvalue().decode("utf-8", "replace")
    return [line for line in text.splitlines() if line.strip()] or ([f"exit {code}"] if code else [])


def _carried(export: Path, large_files: Set[str]) -> List[Path]:
    """The files of ``export`` that a pull request carries: all but ``large_files`` (and byte code)."""
    files = sorted(p for p in export.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [p for p in files if p.relative_to(export).as_posix() not in large_files]


def style_findings(export: Path, large_files: Set[str] = frozenset()) -> List[str]:
    """What the zoo's format checks, lint and pre-commit hooks find in the exported bundle ``export``, one line a
    finding (none: a pull request of it passes them). ``large_files``: paths (relative to ``export``) that a pull
    request leaves out (``large_files.yml``)."""
    export = Path(export)
    python = [p for p in _carried(export, large_files) if p.suffix == ".py"]
    findings = [
        f"{path.relative_to(export)}: not formatted as isort and black format it (the zoo's settings)"
        for path, text in ((p, p.read_text()) for p in python)
        if _formatted(text) != text
    ]
    flake8 = subprocess.run(
        [sys.executable, "-m", "flake8", "--isolated", *ZOO_FLAKE8, *map(str, python)],
        capture_output=True,
        text=True,
        cwd=export,
    )
    findings += flake8.stdout.splitlines() + (
        [flake8.stderr.strip()] if flake8.returncode and not flake8.stdout else []
    )
    return findings + hook_findings(export, large_files)


def hook_findings(export: Path, large_files: Set[str] = frozenset()) -> List[str]:
    """What the zoo's content pre-commit hooks find in ``export`` (``style_findings`` less the format and lint
    tools, for a caller that runs those itself with the zoo's own configuration files)."""
    from pre_commit_hooks import (
        check_docstring_first,
        check_yaml,
        end_of_file_fixer,
        mixed_line_ending,
        pretty_format_json,
        trailing_whitespace_fixer,
    )

    export = Path(export)
    carried = _carried(export, large_files)
    findings = [
        f"{path.relative_to(export)}: over {ZOO_MAX_KB} KB and not in large_files.yml"
        for path in carried
        if path.stat().st_size > ZOO_MAX_KB * 1024
    ]
    python = [p for p in carried if p.suffix == ".py"]
    text_files = [str(p) for p in carried if p.suffix in ("", ".py", ".json", ".yml", ".yaml", ".md", ".txt", ".conf")]
    findings += _hook(check_docstring_first.main, [str(p) for p in python])
    pretty = _hook(
        pretty_format_json.main, ["--no-sort-keys", "--indent=4", *[str(p) for p in carried if p.suffix == ".json"]]
    )  # a diff per file that is not as the hook writes it: one line each
    findings += [
        f"{Path(line[4:]).relative_to(export)}: not as pretty-format-json writes it (4 spaces, keys in order, ASCII)"
        for line in pretty
        if line.startswith("--- ")
    ] + [line for line in pretty if not line.startswith(("--- ", "+++ ", "@@", " ", "-", "+"))]
    findings += _hook(check_yaml.main, [str(p) for p in carried if p.suffix in (".yml", ".yaml")])
    with tempfile.TemporaryDirectory() as tmp:  # the fixing hooks, on a copy
        copies = []
        for name in text_files:
            copy = Path(tmp) / Path(name).relative_to(export)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(name, copy)
            copies.append(str(copy))
        for main in (end_of_file_fixer.main, trailing_whitespace_fixer.main, mixed_line_ending.main):
            findings += [line.replace(tmp, str(export)) for line in _hook(main, copies)]
    return findings
