"""The seven bundles from one source: a template and a small delta per bundle.

``bundle_source/template/`` holds the pipeline every bundle shares (``train.json``, ``inference.json``,
``evaluate.json``, ``multi_gpu_train.json``, ``metadata.json``, ``logging.conf``, ``LICENSE``);
``bundle_source/<name>.json`` holds what one bundle changes: its network, its paper's recipe and its
metadata text. :func:`render` writes each bundle's files into ``bundles/<name>/`` as self-contained configs
(the model zoo and MONAI Label read a bundle folder on its own, so nothing is merged at run time), and
``tests/test_bundle_source.py`` fails when a committed file differs from its rendering.

A delta is JSON. Its key ``"configs"`` holds edits made to both ``train.json`` and ``inference.json`` (the
network is defined once); a key named after a template file holds that file's edits. Edits name places as
MONAI's config ids do (``"train#handlers#3"``: keys, and list indexes of the template) and are applied in
this order:

- ``"set"``: ``{id: value}``, a value replaced, or a key added at the end of its dictionary;
- ``"remove"``: ``[id, ...]``, a key or a list item of the template dropped;
- ``"insert"``: ``{id: [items]}``, where ``id`` ends in a list index of the template: the items go before
  that item (the list's length appends them).

A template value ``"<bundle>"`` must be set by every delta. Run ``python -m monai_ext.bundle.render`` after
changing the source, ``--check`` to list the files that differ without writing them.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from monai_ext.atomic import write_text
from monai_ext.bundle.shipped import shipped
from monai_ext.errors import ReportedError

__all__ = ["render", "render_all", "bundle_names", "REQUIRED", "PIPELINE", "SOURCE"]

REQUIRED = "<bundle>"
SOURCE = Path(__file__).resolve().parents[2] / "bundle_source"  # in the repository, beside bundles/
PIPELINE = ("train.json", "inference.json")  # the files a delta's "configs" edits
_OPERATIONS = ("set", "remove", "insert")


class RenderError(ReportedError, ValueError):
    """A delta that does not fit the template."""


def bundle_names(source: Optional[Path] = None) -> List[str]:
    """The bundles that ``source`` (default :data:`SOURCE`) has a delta for."""
    source = source or SOURCE
    return sorted(p.stem for p in source.glob("*.json"))


def _key(node: Any, part: str) -> Any:
    """``part`` of an id as ``node`` is indexed: a list's index, a dictionary's key (``"0"`` stays a string there)."""
    return int(part) if isinstance(node, list) and part.isdigit() else part


def _parent(config: Any, config_id: str, where: str):
    *path, last = config_id.split("#")
    node = config
    for i, part in enumerate(path):
        try:
            node = node[_key(node, part)]
        except (KeyError, IndexError, TypeError):
            raise RenderError(f"{where}: {config_id!r} has no {'#'.join(path[: i + 1])!r} in the template") from None
    return node, _key(node, last)


def _apply(config: Any, edits: Mapping[str, Any], where: str) -> Any:
    unknown = set(edits) - set(_OPERATIONS)
    if unknown:
        raise RenderError(f"{where}: unknown edit {sorted(unknown)}; expected {list(_OPERATIONS)}")
    for config_id, value in edits.get("set", {}).items():
        node, last = _parent(config, config_id, where)
        if isinstance(node, list) and (not isinstance(last, int) or last >= len(node)):
            raise RenderError(f"{where}: set {config_id!r}: no such item in the template's list")
        node[last] = copy.deepcopy(value)
    # removals and insertions name the template's list indexes: apply them per list, from a copy of each
    dropped: Dict[int, set] = {}
    lists: Dict[int, list] = {}
    for config_id in edits.get("remove", []):
        node, last = _parent(config, config_id, where)
        if isinstance(node, dict):
            if last not in node:
                raise RenderError(f"{where}: remove {config_id!r}: no such key in the template")
            del node[last]
        else:
            if not isinstance(last, int) or last >= len(node):
                raise RenderError(f"{where}: remove {config_id!r}: no such item in the template's list")
            lists[id(node)] = node
            dropped.setdefault(id(node), set()).add(last)
    added: Dict[int, Dict[int, list]] = {}
    for config_id, items in edits.get("insert", {}).items():
        node, last = _parent(config, config_id, where)
        if not isinstance(node, list) or not isinstance(last, int) or last > len(node) or not isinstance(items, list):
            raise RenderError(
                f"{where}: insert {config_id!r}: expected a list index of the template and a list of items"
            )
        lists[id(node)] = node
        added.setdefault(id(node), {})[last] = copy.deepcopy(items)
    for key, node in lists.items():
        before, gone, new = list(node), dropped.get(key, set()), added.get(key, {})
        node[:] = [
            x
            for i in range(len(before) + 1)
            for x in new.get(i, []) + ([before[i]] if i < len(before) and i not in gone else [])
        ]
    return config


def _required(config: Any, path: str = "") -> List[str]:
    if config == REQUIRED:
        return [path or "(the file)"]
    children = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else []
    return [p for k, v in children for p in _required(v, f"{path}#{k}" if path else str(k))]


def render(name: str, source: Optional[Path] = None) -> Dict[str, str]:
    """The files of bundle ``name`` (relative path -> text) from the template and its delta in ``source``."""
    source = source or SOURCE
    delta_file = source / f"{name}.json"
    delta = json.loads(delta_file.read_text())
    template = source / "template"
    files = sorted(p for p in template.rglob("*") if p.is_file())
    names = {p.name for p in files}
    unknown = set(delta) - names - {"configs", "_desc_"}
    if unknown:
        raise RenderError(f"{delta_file}: {sorted(unknown)} are not template files ({sorted(names)})")
    out = {}
    for path in files:
        relative = path.relative_to(template).as_posix()
        if path.suffix != ".json":
            if path.name in delta:
                raise RenderError(f"{delta_file}: {path.name} is copied as it is; it has no edits")
            out[relative] = path.read_text()
            continue
        where = f"{delta_file.name}: {path.name}"
        config = json.loads(path.read_text())
        if path.name in PIPELINE:
            config = _apply(config, delta.get("configs", {}), where)
        config = _apply(config, delta.get(path.name, {}), where)
        missing = _required(config)
        if missing:
            raise RenderError(f"{where}: the template asks each bundle to set {missing}")
        out[relative] = json.dumps(config, indent=4) + "\n"
    return out


def render_all(
    bundles: Optional[Path] = None,
    check: bool = False,
    names: Optional[Sequence[str]] = None,
    source: Optional[Path] = None,
) -> List[Path]:
    """Render every bundle with a delta in ``source`` (default: ``bundle_source/`` beside ``bundles``) into
    ``bundles`` (default: the checkout's ``bundles/``); returns the files that differed from their rendering (with
    ``check``, left as they are)."""
    bundles = Path(bundles) if bundles else shipped("bundles")
    source = Path(source) if source else bundles.parent / "bundle_source"
    if not (source / "template").is_dir():
        raise RenderError(
            f"{source}: no bundle source here (it is the repository's bundle_source/, not in an installed package)"
        )
    rendered = {
        bundles / name / relative: text
        for name in names or bundle_names(source)
        for relative, text in render(name, source).items()
    }  # every delta rendered before anything is written
    differ = [path for path, text in rendered.items() if not (path.is_file() and path.read_text() == text)]
    for path in differ if not check else []:
        write_text(path, rendered[path])
    return differ


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monai_ext.bundle.render",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundles", nargs="*", help="the bundles to render (default: every one with a delta)")
    parser.add_argument("--check", action="store_true", help="list the files that differ from their rendering")
    parser.add_argument(
        "--folder", type=Path, help="the bundles folder (default: the checkout's; the source beside it)"
    )
    args = parser.parse_args(argv)
    try:
        differ = render_all(args.folder, args.check, args.bundles or None)
    except (RenderError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in differ:
        print(f"{'differs' if args.check else 'written'}: {path}")
    if args.check and differ:
        print(f"{len(differ)} file(s) differ from the source: run python -m monai_ext.bundle.render", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
