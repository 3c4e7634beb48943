"""``python -m monai_ext list``: the bundles, what each does, its size, its dimensions and whether it is trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Union

import torch

from monai_ext.bundle.shipped import shipped
from monai_ext.bundle.trained import read_record

__all__ = ["list_bundles", "format_bundles"]


def _parameters(bundle: Path, spatial_dims: int) -> Optional[int]:
    """The network's parameter count as ``inference.json`` builds it (on the meta device: no memory, no time)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle), "spatial_dims": spatial_dims, "dataset_dir": "/nonexistent"})
    try:
        with torch.device("meta"):
            net = parser.get_parsed_content("network_def")
        return sum(p.numel() for p in net.parameters())
    except Exception:  # a bundle that cannot be built here still lists
        return None


def list_bundles(folder: Union[str, Path, None] = None) -> List[dict]:
    """One entry per bundle in ``folder`` (default: the bundles shipped with the package): ``name``, ``title``,
    ``task``, ``version``, ``parameters`` (2D, at the bundle's defaults), ``dimensions`` (those its network builds in,
    with ``spatial_dims`` 2 and 3) and ``trained``: the
    settings and validation score recorded in ``models/model.pt``, or ``None``."""
    folder = Path(folder) if folder else shipped("bundles")
    entries = []
    for bundle in sorted(p for p in folder.iterdir() if (p / "configs" / "metadata.json").is_file()):
        meta = json.loads((bundle / "configs" / "metadata.json").read_text())
        model = bundle / "models" / "model.pt"
        trained = None
        if model.is_file():
            try:
                record = read_record(model)
            except ValueError:  # listed, not refused: segment says what is wrong with it
                record = {"metric": {"name": "unreadable checkpoint"}}
            settings = (record or {}).get("settings", {})
            metric = (record or {}).get("metric") or {}
            trained = {
                "checkpoint": str(model),
                "spatial_dims": settings.get("spatial_dims"),
                "metric": metric.get("name"),
                "value": metric.get("value"),
                "epoch": metric.get("epoch"),
            }
        parameters = {f"{d}D": _parameters(bundle, d) for d in (2, 3)}
        entries.append(
            {
                "name": bundle.name,
                "title": meta.get("name", bundle.name),
                "task": meta.get("task", ""),
                "version": meta.get("version"),
                "parameters": parameters["2D"],
                "dimensions": [d for d, n in parameters.items() if n is not None],
                "folder": str(bundle),
                "trained": trained,
            }
        )
    return entries


def format_bundles(entries: List[dict]) -> str:
    """A table for the console."""
    lines = [f"{'bundle':17s} {'parameters':>11s}  {'dims':6s} {'trained':34s} task"]
    for e in entries:
        params = f"{e['parameters'] / 1e6:.1f} M" if e["parameters"] else "?"
        t = e["trained"]
        if t is None:
            state = "no (models/model.pt absent)"
        else:
            score = f", {t['metric']} {t['value']:.3f}" if isinstance(t.get("value"), (int, float)) else ""
            state = f"yes ({t['spatial_dims'] or '?'}D{score})"
        lines.append(f"{e['name']:17s} {params:>11s}  {'/'.join(e['dimensions']) or '-':6s} {state:34s} {e['task']}")
    return "\n".join(lines)
