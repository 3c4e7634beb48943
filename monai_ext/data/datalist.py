"""A datalist read when it is first used, not when the config is parsed.

MONAI's bundle property check (``check_properties``, what the model zoo's CI runs) instantiates a
bundle's ``dataset`` and ``evaluator`` (which takes the data loader's length); a ``load_decathlon_datalist``
call in the config then reads the data folder at that moment and fails on a machine without the data.
:class:`LazyDatalist` reads the file on first use and counts a missing file as no cases, as the model
zoo's bundles do with a glob over an absent folder; a bundle's ``run`` then calls :func:`require_cases`,
so that a real run without its data stops with one line naming the file instead of doing nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from monai_ext.errors import InputError, first_line

__all__ = ["LazyDatalist", "require_cases", "split_cases", "Entry"]

logger = logging.getLogger("monai_ext.data")

Entry = Dict[str, Any]  # one case of a datalist: {"image": path or [channel paths], "label": path, ...}


def split_cases(keys: Sequence[str], seed: int, split: Sequence[float]) -> Tuple[List[str], List[str], List[str]]:
    """``keys`` split by ``seed`` into training, validation and test in the proportions ``split`` (each at least one
    case when there are three); each part sorted."""
    if len(split) != 3 or min(split) < 0 or sum(split) <= 0:
        raise ValueError(f"split must be three non-negative fractions (training, validation, test), got {split}.")
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    total = sum(split)
    n_val = int(round(split[1] / total * len(keys)))
    n_test = int(round(split[2] / total * len(keys)))
    if len(keys) >= 3:
        n_val, n_test = max(n_val, 1 if split[1] else 0), max(n_test, 1 if split[2] else 0)
    n_train = len(keys) - n_val - n_test
    return sorted(order[:n_train]), sorted(order[n_train : n_train + n_val]), sorted(order[n_train + n_val :])


class LazyDatalist(Sequence):
    """The ``key`` list of a MONAI (Decathlon-style) datalist JSON, loaded on first use.

    Args:
        datalist_file: the datalist JSON (see the README's "Train on your own data" for the format).
        key: ``"training"``, ``"validation"``, ``"test"``, ...
        base_dir: folder that relative paths are resolved against (default: the datalist's folder).
        keys: keep only these keys of each case (e.g. ``["image"]`` for inference).
    """

    def __init__(
        self,
        datalist_file: Union[str, Path],
        key: str,
        base_dir: Union[str, Path, None] = None,
        keys: Optional[Sequence[str]] = None,
    ) -> None:
        self.datalist_file = Path(datalist_file)
        self.key = key
        self.base_dir = base_dir
        self.keys = list(keys) if keys is not None else None
        self._items: Optional[List[Dict]] = None

    def require(self) -> None:
        """Read the datalist now and check that it names files that exist.

        Raises:
            InputError: the file is missing or unreadable, it has no case under ``key``, or a case names a
                file that does not exist (one line naming the datalist and the file).
        """
        if not self.datalist_file.is_file():
            where = "dataset_dir " + str(self.base_dir) if self.base_dir is not None else str(self.datalist_file.parent)
            raise InputError(
                f"{self.datalist_file}: no such datalist ({where}: prepare the data set there first, or set dataset_dir)"
            )
        if not self._load():
            raise InputError(f"{self.datalist_file}: no cases under {self.key!r}")
        for number, case in enumerate(self._load()):
            for key, path in _paths(case):
                if not Path(path).exists():
                    raise InputError(f"{self.datalist_file}: {self.key} case {number} ({key}): {path}: no such file")

    def _load(self) -> List[Dict]:
        if self._items is None:
            from monai.data import load_decathlon_datalist

            if not self.datalist_file.is_file():
                logger.warning("%s: no such datalist; no %s cases", self.datalist_file, self.key)
                return []
            try:
                items = load_decathlon_datalist(str(self.datalist_file), True, self.key, self.base_dir)
            except ValueError as e:  # json.JSONDecodeError is one
                raise InputError(f"{self.datalist_file}: not a datalist ({first_line(e)})") from e
            self._items = (
                [{k: v for k, v in d.items() if k in self.keys} for d in items] if self.keys is not None else items
            )
        return self._items

    def __len__(self) -> int:
        return len(self._load())

    def __getitem__(self, index):
        return self._load()[index]

    def __repr__(self) -> str:
        return f"LazyDatalist({str(self.datalist_file)!r}, {self.key!r})"


def require_cases(*datasets: Any) -> None:
    """Stop a run whose data is missing: each argument (a dataset, a :class:`LazyDatalist` or a list of
    cases) must hold at least one case.

    Raises:
        InputError: a datalist file is missing or names files that do not exist, or a data source is empty.
    """
    for data in datasets:
        data = getattr(data, "data", data)  # a MONAI Dataset holds its cases in .data
        if isinstance(data, LazyDatalist):
            data.require()
        elif len(data) == 0:
            raise InputError("no cases to run on (an empty data list)")


def _paths(case: Any) -> Iterator[tuple]:
    """``(key, path)`` for the file paths of a datalist case (an image may be a list of channel files)."""
    for key, value in case.items() if isinstance(case, dict) else ():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and key in ("image", "label"):
                yield key, v
