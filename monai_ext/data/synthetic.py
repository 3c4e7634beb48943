"""A synthetic multi-class segmentation task in 2D or 3D, for tests, demos and benchmarks.

Harder than MONAI's ``create_test_image_2d/3d`` (whose labels equal the rounded intensities, so a threshold
solves them): each case has

- **blobs** (label 1): 1-3 random ellipses / ellipsoids;
- **tubes** (label 2): 1-2 smooth random curves a few pixels thick, drawn over the blobs, whose mean
  intensity lies between the background's and the blobs' so that the two classes overlap in intensity;
- **distractors**: unlabelled bright spots, smaller than the blobs, so that intensity alone is not enough;
- partial-volume blur, a smooth multiplicative **bias field** and Gaussian **noise**.

:func:`make_synthetic_dataset` writes the cases (NIfTI, or PNG in 2D) and a MONAI datalist JSON with a
seeded train/validation/test split; the same seed gives the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

__all__ = ["SYNTHETIC_LABELS", "synthetic_case", "make_synthetic_dataset"]

SYNTHETIC_LABELS: Dict[str, str] = {"0": "background", "1": "blob", "2": "tube"}


def _grid(size: Sequence[int]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in size], indexing="ij"))


def _ellipsoid(coords: np.ndarray, rng: np.random.Generator, size: Sequence[int]) -> np.ndarray:
    nd = len(size)
    center = np.array([rng.uniform(0.25, 0.75) * s for s in size], dtype=np.float32)
    radii = np.array([rng.uniform(0.07, 0.16) * min(size) for _ in size], dtype=np.float32)
    rotation, _ = np.linalg.qr(rng.standard_normal((nd, nd)))
    d = np.tensordot(rotation.T.astype(np.float32), coords - center.reshape((nd,) + (1,) * nd), axes=1)
    return np.sum((d / radii.reshape((nd,) + (1,) * nd)) ** 2, axis=0) <= 1.0


def _tube(rng: np.random.Generator, size: Sequence[int], radius: float) -> np.ndarray:
    """A smooth random curve (cubic Bezier through four random points), dilated to ``radius``."""
    nd = len(size)
    points = np.array([[rng.uniform(0.05, 0.95) * s for s in size] for _ in range(4)])
    t = np.linspace(0, 1, 8 * max(size))[:, None]
    curve = (
        (1 - t) ** 3 * points[0] + 3 * (1 - t) ** 2 * t * points[1] + 3 * (1 - t) * t**2 * points[2] + t**3 * points[3]
    )
    centerline = np.zeros(size, dtype=bool)
    idx = np.clip(np.round(curve).astype(int), 0, np.array(size) - 1)
    centerline[tuple(idx[:, i] for i in range(nd))] = True
    return ndimage.distance_transform_edt(~centerline) <= radius


def synthetic_case(
    size: Sequence[int], rng: np.random.Generator, noise: float = 0.25, bias: float = 0.3, tube_radius: float = 2.5
) -> Tuple[np.ndarray, np.ndarray]:
    """One case: a float32 image and a uint8 label map (0 background, 1 blob, 2 tube) of ``size``."""
    size = tuple(int(s) for s in size)
    coords = _grid(size)
    label = np.zeros(size, dtype=np.uint8)
    for _ in range(rng.integers(1, 4)):
        label[_ellipsoid(coords, rng, size)] = 1
    for _ in range(rng.integers(1, 3)):
        label[_tube(rng, size, tube_radius * rng.uniform(0.8, 1.3))] = 2

    means = {0: 0.0, 1: rng.uniform(0.9, 1.1), 2: rng.uniform(0.55, 0.7)}
    image = np.zeros(size, dtype=np.float32)
    for value, mean in means.items():
        image[label == value] = mean
    # unlabelled bright spots, smaller than any blob
    for _ in range(rng.integers(2, 6)):
        center = [rng.uniform(0, s) for s in size]
        radius = rng.uniform(1.5, max(2.0, 0.05 * min(size)))
        spot = np.sum([(c - m) ** 2 for c, m in zip(coords, center)], axis=0) <= radius**2
        image[spot & (label == 0)] = rng.uniform(0.6, 1.0)
    image = ndimage.gaussian_filter(image, 0.7)  # partial volume
    field = ndimage.gaussian_filter(rng.standard_normal(size).astype(np.float32), 0.25 * min(size))
    field /= np.abs(field).max() + 1e-8
    image *= np.exp(bias * field)
    image += rng.normal(0.0, noise, size).astype(np.float32)
    return image.astype(np.float32), label


def make_synthetic_dataset(
    output_dir: Union[str, Path],
    num_cases: int = 40,
    spatial_dims: int = 2,
    size: Optional[Sequence[int]] = None,
    image_format: str = "nifti",
    split: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    spacing: Optional[Sequence[float]] = None,
) -> Path:
    """Write ``num_cases`` synthetic cases and ``datalist.json``; returns the datalist's path.

    Args:
        output_dir: folder to write ``images/``, ``labels/`` and ``datalist.json`` into (created).
        num_cases: number of cases.
        spatial_dims: 2 or 3.
        size: spatial size (default 96x96 in 2D, 48^3 in 3D).
        image_format: ``"nifti"`` (``.nii.gz``, with an affine from ``spacing``) or ``"png"`` (2D only;
            8-bit image, label values 0, 1, 2).
        split: fractions for the ``training``, ``validation`` and ``test`` lists (at least one case in each).
        seed: seeds both the cases and the split.
        spacing: voxel size in mm for NIfTI (default 1 mm).

    Raises:
        ValueError: invalid arguments.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    if image_format not in ("nifti", "png") or (image_format == "png" and spatial_dims != 2):
        raise ValueError(f"image_format must be 'nifti', or 'png' in 2D; got {image_format!r} in {spatial_dims}D.")
    if num_cases < 3:
        raise ValueError(f"num_cases must be at least 3 (one per split), got {num_cases}.")
    if len(split) != 3 or min(split) <= 0:
        raise ValueError(f"split must be three positive fractions (training, validation, test), got {split}.")
    size = tuple(size) if size is not None else ((96, 96) if spatial_dims == 2 else (48, 48, 48))
    if len(size) != spatial_dims:
        raise ValueError(f"size must have {spatial_dims} values, got {size}.")
    spacing = tuple(spacing) if spacing is not None else (1.0,) * spatial_dims

    out = Path(output_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ext = ".nii.gz" if image_format == "nifti" else ".png"
    cases = []
    for i in range(num_cases):
        image, label = synthetic_case(size, rng)
        name = f"case_{i:03d}{ext}"
        _write(out / "images" / name, image, spacing, is_label=False)
        _write(out / "labels" / name, label, spacing, is_label=True)
        cases.append({"image": f"images/{name}", "label": f"labels/{name}"})

    order = rng.permutation(num_cases)
    n_val = max(1, int(round(split[1] / sum(split) * num_cases)))
    n_test = max(1, int(round(split[2] / sum(split) * num_cases)))
    n_train = num_cases - n_val - n_test
    if n_train < 1:
        raise ValueError(f"num_cases={num_cases} leaves no training case with split {split}.")
    datalist = {
        "name": f"synthetic{spatial_dims}d",
        "description": "monai_ext synthetic blobs and tubes with noise, bias field and distractors",
        "spatial_dims": spatial_dims,
        "labels": SYNTHETIC_LABELS,
        "seed": seed,
        "training": [cases[i] for i in sorted(order[:n_train])],
        "validation": [cases[i] for i in sorted(order[n_train : n_train + n_val])],
        "test": [cases[i] for i in sorted(order[n_train + n_val :])],
    }
    path = out / "datalist.json"
    path.write_text(json.dumps(datalist, indent=4) + "\n")
    return path


def _write(path: Path, array: np.ndarray, spacing: Sequence[float], is_label: bool) -> None:
    if path.suffix == ".png":
        from PIL import Image

        data = array if is_label else np.clip((array + 0.5) / 2.0 * 255.0, 0, 255)
        Image.fromarray(data.astype(np.uint8)).save(path)
        return
    import nibabel as nib

    affine = np.diag(list(spacing) + [1.0] * (4 - len(spacing)))
    nib.save(nib.Nifti1Image(array, affine), str(path))
