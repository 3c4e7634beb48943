"""An ignite handler that writes an evaluator's per-case metrics, their summary and overlays."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

import torch
from ignite.engine import Engine, Events

from monai_ext.atomic import write_atomically, write_json
from monai_ext.metrics.segmentation import segmentation_metrics, summarise
from monai_ext.visualize.overlay import overlay_png

__all__ = ["SegmentationReport"]

logger = logging.getLogger(__name__)


class SegmentationReport:
    """Per-case metrics CSV, summary JSON (mean, std, median) and PNG overlays for a MONAI evaluator.

    Attach it to a ``SupervisedEvaluator`` whose post-processing leaves one-hot ``pred`` and ``label``
    (and the ``image``) in each decollated output. For every case it computes
    :func:`monai_ext.metrics.segmentation_metrics` (distances in mm from the label's voxel size) and, if
    ``overlays``, writes ``overlays/<case>.png`` (3D: middle slice). At the end of the run it writes
    ``metrics_per_case.csv`` and ``metrics_summary.json`` into ``output_dir`` (temporary name, then rename).

    Args:
        output_dir: folder for the report (created).
        class_names: ``{index: name}`` (or ``{"index": name}``, as in a bundle's ``channel_def``) of the
            foreground classes.
        boundary_tolerance: boundary F1 tolerance in mm.
        surface_tolerance: surface Dice tolerance in mm.
        overlays: whether to write the PNG overlays.
    """

    def __init__(
        self,
        output_dir: Union[str, Path],
        class_names: Optional[Mapping[Union[int, str], str]] = None,
        boundary_tolerance: float = 2.0,
        surface_tolerance: float = 2.0,
        overlays: bool = True,
        image_key: str = "image",
        pred_key: str = "pred",
        label_key: str = "label",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = {int(k): v for k, v in (class_names or {}).items()}
        self.boundary_tolerance = boundary_tolerance
        self.surface_tolerance = surface_tolerance
        self.overlays = overlays
        self.keys = (image_key, pred_key, label_key)
        self.rows: List[Dict[str, Union[str, float]]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.rows = []

    def _collect(self, engine: Engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        image_key, pred_key, label_key = self.keys
        for item in outputs:
            pred, label = item[pred_key], item[label_key]
            name = _case_name(pred, len(self.rows))
            spacing = [float(s) for s in label.pixdim] if hasattr(label, "pixdim") else None
            metrics = segmentation_metrics(
                pred, label, self.class_names, spacing, self.boundary_tolerance, self.surface_tolerance
            )
            self.rows.append({"case": name, **metrics})
            if self.overlays and image_key in item:
                try:
                    overlay_png(
                        item[image_key], pred.argmax(0), label.argmax(0), self.output_dir / "overlays" / f"{name}.png"
                    )
                except ImportError:  # matplotlib: an optional package (a bundle's metadata does not require it)
                    logger.warning("matplotlib is not installed: no overlay pictures (pip install matplotlib)")
                    self.overlays = False

    def _write(self, engine: Engine) -> None:
        if not self.rows:
            return

        def table(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
                writer.writeheader()
                writer.writerows(self.rows)

        write_atomically(self.output_dir / "metrics_per_case.csv", table)
        write_json(self.output_dir / "metrics_summary.json", {"cases": len(self.rows), "metrics": summarise(self.rows)})
        logger.info("segmentation report of %d cases written to %s", len(self.rows), self.output_dir)


def _case_name(pred: torch.Tensor, index: int) -> str:
    meta = getattr(pred, "meta", {}) or {}
    source = meta.get("filename_or_obj")
    if not source:
        return f"case_{index:04d}"
    name = os.path.basename(str(source))
    for ext in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name
