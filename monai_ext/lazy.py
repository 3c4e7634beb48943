"""Names of a package that load their module on first use (PEP 562), so that importing one name of a
sub-package does not import its siblings: a bundle that uses MONAI's UNet does not load MedSegDiff, and an
export vendors only the modules its configs reach."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, List, Mapping, Sequence, Tuple

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]) -> Tuple[Callable[[str], Any], List[str]]:
    """The module ``__getattr__`` and ``__all__`` of ``package`` for ``exports`` (submodule, relative to the
    package: the names it provides, as ``from .submodule import names`` would list them). A submodule is also an attribute by its
    own name. A name, once loaded, is set on the package, so each costs one lookup.

    Use in a package's ``__init__.py``: ``__getattr__, __all__ = lazy_exports(__name__, {".dwt": ["DWT", "IDWT"]})``.
    """
    where = {name: module for module, names in exports.items() for name in names}
    submodules = {module.lstrip("."): module for module in exports}

    def load(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(where[name], package), name)
        elif name in submodules:
            value = importlib.import_module(submodules[name], package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    return load, list(where)
