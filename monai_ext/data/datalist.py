"""A datalist read when it is first used, not when the config is parsed.

MONAI's bundle property check (``check_properties``, what the model zoo's CI runs) instantiates a
bundle's ``dataset``; a ``load_decathlon_datalist`` call in the config then reads the data folder at that
moment and fails on a machine without the data. :class:`LazyDatalist` defers the read to the first
``len`` or index, and then fails with one line naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

__all__ = ["LazyDatalist"]


class LazyDatalist(Sequence):
    """The ``key`` list of a MONAI (Decathlon-style) datalist JSON, loaded on first use.

    Args:
        datalist_file: the datalist JSON (see the README's "Train on your own data" for the format).
        key: ``"training"``, ``"validation"``, ``"test"``, ...
        base_dir: folder that relative paths are resolved against (default: the datalist's folder).
        keys: keep only these keys of each case (e.g. ``["image"]`` for inference).
    """

    def __init__(
        self, datalist_file: Union[str, Path], key: str, base_dir: Union[str, Path, None] = None, keys: Optional[Sequence[str]] = None
    ) -> None:
        self.datalist_file = Path(datalist_file)
        self.key = key
        self.base_dir = base_dir
        self.keys = list(keys) if keys is not None else None
        self._items: Optional[List[Dict]] = None

    def _load(self) -> List[Dict]:
        if self._items is None:
            from monai.data import load_decathlon_datalist

            if not self.datalist_file.is_file():
                raise FileNotFoundError(f"{self.datalist_file}: no such datalist (prepare the data set first, or set dataset_dir)")
            try:
                items = load_decathlon_datalist(str(self.datalist_file), True, self.key, self.base_dir)
            except ValueError as e:
                raise ValueError(f"{self.datalist_file}: {e}") from e
            self._items = [{k: v for k, v in d.items() if k in self.keys} for d in items] if self.keys is not None else items
        return self._items

    def __len__(self) -> int:
        return len(self._load())

    def __getitem__(self, index):
        return self._load()[index]

    def __repr__(self) -> str:
        return f"LazyDatalist({str(self.datalist_file)!r}, {self.key!r})"
