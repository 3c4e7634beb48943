"""Your own data: a folder of images and a folder of label maps, checked and split for the bundles.

:func:`prepare_folder` (``python -m monai_ext prepare folder --images DIR --labels DIR OUT``)

1. pairs images and labels by file name (``case01.nii.gz`` with ``case01.nii.gz``; nnU-Net's channel files
   ``case01_0000.nii.gz``, ``case01_0001.nii.gz`` form one multi-channel image for label ``case01``);
2. checks every pair the way nnU-Net's dataset integrity check does: both readable, the same spatial
   shape and the same affine (spacing, origin, direction) within a tolerance, one-channel label maps of
   non-negative integers within the declared labels, images without NaN or infinite values, the same
   channel count and dimensionality in every case. Each bad case gets one line naming the file and the
   problem, and nothing is written unless every case passes;
3. writes ``OUT/datalist.json`` (a MONAI datalist with seeded ``training``, ``validation`` and ``test``
   lists and the label names) and ``OUT/overlay.json``, a config overlay with what the bundles need to
   know about the data (dimensionality, channels, classes, a patch size, the spacing to resample to,
   the intensity normalisation), to merge after a bundle's ``train.json``.

Inputs are only read. Both outputs are written under a temporary name and renamed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from monai_ext.atomic import write_json
from monai_ext.data import plan as data_plan
from monai_ext.data.datalist import split_cases
from monai_ext.errors import ReportedError, first_line

__all__ = ["prepare_folder", "DatasetCheckError", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


class DatasetCheckError(ReportedError, ValueError):
    """Cases that failed the integrity check: ``problems`` holds one line per bad case."""

    def __init__(self, problems: List[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _stem(path: Path) -> Optional[str]:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def _files(folder: Path) -> Dict[str, Path]:
    if not folder.is_dir():
        raise DatasetCheckError([f"{folder}: no such folder"])
    files: Dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        key = _stem(p) if p.is_file() and not p.name.startswith(".") else None
        if key is None:
            continue
        if key in files:
            raise DatasetCheckError([f"{p}: two files for case {key!r} ({files[key].name} and {p.name})"])
        files[key] = p
    if not files:
        raise DatasetCheckError([f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})"])
    return files


@dataclass
class _Pair:
    key: str
    images: List[Path]
    label: Path
    shape: Tuple[int, ...] = ()
    spacing: Tuple[float, ...] = ()
    channels: int = 0
    values: List[int] = field(default_factory=list)
    foreground: Optional[np.ndarray] = None


def _pair(images: Dict[str, Path], labels: Dict[str, Path]) -> Tuple[List[_Pair], List[str]]:
    """Cases by name; an image without a label or a label without an image is a problem line."""
    grouped: Dict[str, List[Tuple[int, Path]]] = {}
    for key, path in images.items():
        match = _CHANNEL.match(key)
        if key not in labels and match and match.group("case") in labels:
            grouped.setdefault(match.group("case"), []).append((int(match.group("channel")), path))
        else:
            grouped.setdefault(key, []).append((0, path))
    problems, cases = [], []
    for key, channel_files in sorted(grouped.items()):
        channel_files.sort()
        if key not in labels:
            problems.append(f"{channel_files[0][1]}: no label named {key}.* in the labels folder")
            continue
        numbers = [c for c, _ in channel_files]
        if numbers != list(range(len(numbers))) and len(numbers) > 1:
            problems.append(f"{channel_files[0][1]}: channel files {numbers} are not _0000 to _{len(numbers) - 1:04d}")
            continue
        cases.append(_Pair(key, [p for _, p in channel_files], labels[key]))
    for key, path in labels.items():
        if key not in grouped:
            problems.append(f"{path}: no image named {key}.* (or {key}_0000.*) in the images folder")
    return cases, problems


def _load(path: Path):
    from monai.transforms import LoadImage

    return LoadImage(image_only=True, ensure_channel_first=True)(
        str(path)
    )  # float32, as the bundles load (any byte order)


def _geometry_problem(label_path: Path, image_path: Path, image, label, tolerance: float) -> Optional[str]:
    if tuple(label.shape[1:]) != tuple(image.shape[1:]):
        return f"{label_path}: shape {list(label.shape[1:])} differs from the image's {list(image.shape[1:])} ({image_path.name})"
    a, b = np.asarray(image.affine, dtype=float), np.asarray(label.affine, dtype=float)
    if a.shape != b.shape or not np.allclose(a, b, atol=tolerance):
        spacing = lambda m: np.round(np.linalg.norm(m[:-1, :-1], axis=0), 4).tolist()  # noqa: E731
        return (
            f"{label_path}: affine differs from the image's ({image_path.name}): spacing {spacing(b)} vs {spacing(a)}, "
            f"origin {np.round(b[:-1, -1], 3).tolist()} vs {np.round(a[:-1, -1], 3).tolist()}"
        )
    return None


def _check(case: _Pair, declared: Optional[Sequence[int]], tolerance: float) -> Optional[str]:
    """Load and check one case; fill its shape, spacing, channels and label values. The problem line, or None."""
    channels = []
    for path in case.images:
        try:
            channels.append(_load(path))
        except Exception as e:  # readers raise many kinds
            return f"{path}: unreadable ({first_line(e)})"
    try:
        label = _load(case.label)
    except Exception as e:
        return f"{case.label}: unreadable ({first_line(e)})"
    image = channels[0]
    for path, other in zip(case.images[1:], channels[1:]):
        problem = _geometry_problem(path, case.images[0], image, other, tolerance)
        if problem:
            return problem.replace("the image's", "the first channel's")
    if label.shape[0] != 1:
        return f"{case.label}: {label.shape[0]} channels; a label map has one"
    problem = _geometry_problem(case.label, case.images[0], image, label, tolerance)
    if problem:
        return problem
    data = np.concatenate([np.asarray(c) for c in channels])
    if not np.isfinite(data).all():
        return f"{case.images[0]}: contains NaN or infinite values"
    values = np.asarray(label)
    if not np.isfinite(values).all() or not np.array_equal(values, np.round(values)):
        bad = values[~np.isfinite(values) | (values != np.round(values))]
        return f"{case.label}: label values must be integers, found {bad.flat[0]:g}"
    found = sorted(int(v) for v in np.unique(values))
    if found[0] < 0:
        return f"{case.label}: negative label value {found[0]}"
    if declared is not None and not set(found) <= set(declared):
        return f"{case.label}: label values {sorted(set(found) - set(declared))} are not among the declared labels {list(declared)}"
    case.shape, case.channels, case.values = tuple(image.shape[1:]), data.shape[0], found
    case.spacing = tuple(float(s) for s in np.linalg.norm(np.asarray(image.affine, dtype=float)[:-1, :-1], axis=0))[
        : len(case.shape)
    ]
    mask = values[0] > 0
    if mask.any():
        fg = data[:, mask].ravel()
        case.foreground = fg[np.random.default_rng(0).choice(fg.size, min(fg.size, 20000), replace=False)]
    return None


def prepare_folder(
    images: Union[str, Path],
    labels: Union[str, Path],
    output_dir: Union[str, Path],
    seed: int = 0,
    split: Sequence[float] = (0.7, 0.15, 0.15),
    label_names: Optional[Dict[int, str]] = None,
    intensity: str = "zscore",
    tolerance: float = 1e-3,
    name: Optional[str] = None,
    planner: Optional[Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]]] = None,
) -> Path:
    """Check, pair and split a folder of images and labels; see the module docstring.

    Args:
        images: folder of images (NIfTI, NRRD, MetaImage; PNG, JPEG, TIFF for 2D).
        labels: folder of label maps with the same case names.
        output_dir: folder for ``datalist.json`` and ``overlay.json``.
        seed: seeds the split.
        split: training, validation and test fractions.
        label_names: ``{value: name}`` of the foreground labels; other values are then an error. Default:
            every value found, named ``label_<value>``.
        intensity: ``"zscore"`` (per channel) or ``"ct"`` (nnU-Net's CT scheme: clip to the 0.5 and 99.5
            percentiles of the training cases' foreground intensities, mapped to [0, 1]).
        tolerance: affine tolerance (mm) between an image and its label.
        name: the data set's name (default: the output folder's name).
        planner: ``planner(overlay, fingerprint)`` returns the machine's part of the plan (batch, patches per
            volume, workers, a patch and strides for a given network) to merge into the overlay, e.g.
            :func:`monai_ext.bundle.plan.plan_training` for a bundle; ``fingerprint`` holds every case's
            ``spacings`` and ``shapes`` and the number of ``training_cases``. Without it the overlay has the
            data's part only (spacing, a patch of multiples of 32, augmentation).

    Returns:
        the datalist's path.

    Raises:
        DatasetCheckError: one line per bad case (or a missing folder); nothing is written.
    """
    if intensity not in ("zscore", "ct"):
        raise ValueError(f"intensity must be 'zscore' or 'ct', got {intensity!r}")
    cases, problems = _pair(_files(Path(images)), _files(Path(labels)))
    declared = sorted({0, *label_names}) if label_names else None
    for case in cases:
        problem = _check(case, declared, tolerance)
        if problem:
            problems.append(problem)
    good = [c for c in cases if c.shape]
    if good:
        dims = {len(c.shape) for c in good}
        channels = {c.channels for c in good}
        if len(dims) > 1:
            common = max(dims, key=lambda d: sum(len(c.shape) == d for c in good))
            problems += [
                f"{c.images[0]}: {len(c.shape)}D, most cases are {common}D" for c in good if len(c.shape) != common
            ]
        if len(channels) > 1:
            common = max(channels, key=lambda n: sum(c.channels == n for c in good))
            problems += [
                f"{c.images[0]}: {c.channels} channel(s), most cases have {common}"
                for c in good
                if c.channels != common
            ]
    if not problems and len(cases) < 3:
        problems.append(f"{images}: {len(cases)} case(s); training, validation and test need at least 3")
    if problems:
        raise DatasetCheckError(problems)

    output = Path(output_dir)
    keys = [c.key for c in cases]
    train, val, test = split_cases(keys, seed, split)
    values = sorted({v for c in cases for v in c.values} | set(label_names or {}))
    names = {"0": "background", **{str(v): (label_names or {}).get(v, f"label_{v}") for v in values if v > 0}}

    def entry(c: _Pair) -> dict:  # noqa: E306
        image = [str(p.resolve()) for p in c.images]
        return {"image": image[0] if len(image) == 1 else image, "label": str(c.label.resolve())}

    by_key = {c.key: c for c in cases}
    datalist = {
        "name": name or output.resolve().name,
        "labels": names,
        "seed": seed,
        "training": [entry(by_key[k]) for k in train],
        "validation": [entry(by_key[k]) for k in val],
        "test": [entry(by_key[k]) for k in test],
    }
    spatial_dims = len(cases[0].shape)
    spacings = [c.spacing for c in cases]
    spacing = data_plan.target_spacing(spacings, [c.shape for c in cases])
    pixdim = None  # resample only where the spacings differ from the target (nnU-Net's target: the median)
    if spatial_dims == 3 and any(abs(s - t) > tolerance for sp in spacings for s, t in zip(sp, spacing)):
        pixdim = spacing
    patch = data_plan.patch_size(
        data_plan.median_shape([c.shape for c in cases], spacings, spacing),
        32,
        data_plan.MAX_VOXELS[spatial_dims],
        spacing,
    )
    if intensity == "ct":
        fg = np.concatenate([c.foreground for c in cases if c.key in train and c.foreground is not None])
        low, high = (float(v) for v in np.percentile(fg, [0.5, 99.5]))
        norm = {"scheme": "window", "a_min": round(low, 3), "a_max": round(high, 3)}
    else:
        norm = {"scheme": "zscore", "channel_wise": True}
    overlay = {
        "_desc_": f"written by `python -m monai_ext prepare folder` for {len(cases)} cases "
        f"({len(train)} training, {len(val)} validation, {len(test)} test; seed {seed})",
        "dataset_dir": str(output.resolve()),
        "data_source": None,
        "spatial_dims": spatial_dims,
        "in_channels": cases[0].channels,
        "out_channels": max(values) + 1,
        "class_names": names,
        "patch_size": patch,
        "pixdim": pixdim,
        "resize": None,
        "intensity": norm,
        "augmentation": data_plan.augmentation(patch, spacing),
    }
    if planner is not None:
        overlay.update(
            planner(overlay, {"spacings": spacings, "shapes": [c.shape for c in cases], "training_cases": len(train)})
        )
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "overlay.json", overlay)
    path = output / "datalist.json"
    write_json(path, datalist)
    return path
