"""A handler defined once in a bundle config, named, and listed among a trainer's handlers by that name."""

from __future__ import annotations

from typing import Any

__all__ = ["Attach"]


class Attach:
    """Attach ``handler`` (any object with ``attach(engine)``) where a handler list holds this entry.

    A handler that other components refer to (the weight average, whose state the checkpoint saver keeps) is
    defined once under its own name (``"weight_average"``) and listed as
    ``{"_target_": "monai_ext.handlers.Attach", "handler": "@weight_average"}``. Referring to it by its place in
    the list (``"@train#handlers#2"``) breaks where the list grows in front of it: MONAI Label inserts its
    ``CheckpointLoader`` first. A bare ``"@weight_average"`` in the list would do for MONAI, but MONAI Label reads
    every entry as a dict.
    """

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def attach(self, engine) -> None:
        self.handler.attach(engine)
