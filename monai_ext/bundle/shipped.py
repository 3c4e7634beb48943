"""Where the bundles, the data-set overlays and the metadata schema are: inside an installed package
(``monai_ext/bundles``, ``monai_ext/datasets``, ``monai_ext/schemas``, see ``pyproject.toml``) or in the
source checkout (``bundles/``, ``datasets/``, ``schemas/``, for an editable install)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["shipped"]

_PACKAGE = Path(__file__).resolve().parents[1]


def shipped(name: str) -> Path:
    """The folder ``name`` (``"bundles"``, ``"datasets"`` or ``"schemas"``) as installed, else as in the checkout.

    Raises:
        FileNotFoundError: neither exists.
    """
    for base in (_PACKAGE / name, _PACKAGE.parent / name):
        if base.is_dir():
            return base
    raise FileNotFoundError(f"{name}: not found in {_PACKAGE} or {_PACKAGE.parent} (a broken installation?)")
