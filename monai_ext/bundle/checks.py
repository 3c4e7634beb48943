"""The training settings a user can pass to ``python -m monai.bundle run``, checked before anything is built.

``monai.bundle run`` hands ``--batch_size 0`` or ``--time_budget abc`` to the config as they are; the error
then comes from deep inside a data loader or a handler, 50 to 100 lines of traceback later. Each bundle's
``initialize`` calls :func:`check_training_settings` first, so such a value is one line naming the key and
what it must be, as ``segment``'s options are.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence

from monai_ext.errors import InputError

__all__ = ["SettingError", "check_training_settings"]


class SettingError(InputError):
    """A setting of a bundle run that cannot work; the message names the key."""


def _number(
    key: str, value: Any, integer: bool = False, minimum: Optional[float] = None, above: Optional[float] = None
) -> None:
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (integer and not float(value).is_integer()):
        raise SettingError(f"{key}: {value!r} is not {kind}")
    if not math.isfinite(float(value)):
        raise SettingError(f"{key}: {value!r} is not a finite number")
    if minimum is not None and value < minimum:
        raise SettingError(f"{key}: {value!r}; it must be at least {minimum:g}")
    if above is not None and value <= above:
        raise SettingError(f"{key}: {value!r}; it must be more than {above:g}")


def check_training_settings(
    spatial_dims: Any = None,
    patch_size: Any = None,
    batch_size: Any = None,
    num_samples: Any = None,
    max_epochs: Any = None,
    learning_rate: Any = None,
    num_workers: Any = None,
    time_budget: Any = None,
    val_interval: Any = None,
) -> None:
    """Check the values a user sets on the command line or in an overlay; ``None`` means not used here
    (``time_budget``: no budget).

    Raises:
        SettingError: one line naming the key, the value and what it must be.
    """
    if spatial_dims is not None and (isinstance(spatial_dims, bool) or spatial_dims not in (2, 3)):
        raise SettingError(f"spatial_dims: {spatial_dims!r}; it must be 2 or 3")
    if patch_size is not None:
        if isinstance(patch_size, (str, bytes)) or not isinstance(patch_size, Sequence):
            raise SettingError(f"patch_size: {patch_size!r} is not a list of sizes")
        for size in patch_size:
            _number("patch_size", size, integer=True, minimum=1)
        if spatial_dims is not None and len(patch_size) != spatial_dims:
            raise SettingError(
                f"patch_size: {list(patch_size)} has {len(patch_size)} size(s) where spatial_dims is {spatial_dims}; "
                f"give {spatial_dims} sizes"
            )
    for key, value in (
        ("batch_size", batch_size),
        ("num_samples", num_samples),
        ("max_epochs", max_epochs),
        ("val_interval", val_interval),
    ):
        if value is not None:
            _number(key, value, integer=True, minimum=1)
    if learning_rate is not None:
        _number("learning_rate", learning_rate, above=0)
    if num_workers is not None:
        _number("num_workers", num_workers, integer=True, minimum=0)
    if time_budget is not None:
        _number("time_budget", time_budget, above=0)
