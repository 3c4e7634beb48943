"""A real-shaped 3D tissue task from the MNI152 template that nilearn ships (no download): ICBM 2009a
symmetric T1 with its grey- and white-matter probability maps, 2 mm, 99x117x95 (Fonov et al., NeuroImage
47, 2009 and 54, 2011).

Each case is the template moved by a random affine transform (MONAI's ``RandAffined``: rotation, scaling,
translation), cropped to a random field of view around the classic FSL MNI152 grid (91x109x91 at 2 mm, so
shapes differ between cases), with a bias field, a gamma change and Rician noise (MONAI's transforms); the
label map is background 0, grey matter 1, white matter 2 from the moved probability maps (a tissue where
its probability is above 0.5 and above the other's). Every case is the same average brain, so the task
measures the training pipeline on real anatomy and shapes, not generalisation across subjects. Written as
``images/`` and ``labels/`` folders of NIfTI files, the layout ``prepare folder`` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple, Union

import nibabel as nib
import numpy as np

from monai_ext.errors import MissingPackageError

__all__ = ["make_mni152_cases", "MNI152_LABELS", "FSL_SHAPE"]

MNI152_LABELS = {0: "background", 1: "grey_matter", 2: "white_matter"}
FSL_SHAPE = (91, 109, 91)


def _template():
    try:
        from nilearn import datasets
    except ImportError as e:  # tests and benchmarks only
        raise MissingPackageError("the MNI152 cases need nilearn (pip install nilearn): it ships the template") from e
    t1 = datasets.load_mni152_template(resolution=2)
    gm = datasets.load_mni152_gm_template(resolution=2)
    wm = datasets.load_mni152_wm_template(resolution=2)
    return t1.affine, np.stack([np.asarray(img.dataobj, dtype=np.float32) for img in (t1, gm, wm)])


def make_mni152_cases(
    folder: Union[str, Path],
    num_cases: int = 8,
    seed: int = 0,
    shape: Sequence[int] = FSL_SHAPE,
    jitter: int = 4,
) -> Tuple[Path, Path]:
    """Write ``num_cases`` cases into ``folder/images`` and ``folder/labels`` (``mni_000.nii.gz`` ...); returns
    both folders. ``shape`` is the median field of view; each axis varies by up to ``jitter`` voxels."""
    import torch
    from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandBiasField, RandRicianNoise

    affine, volumes = _template()
    move = RandAffine(
        prob=1.0, rotate_range=[0.17] * 3, scale_range=[0.08] * 3, translate_range=[3] * 3, padding_mode="zeros"
    )
    scanner = Compose(
        [
            RandBiasField(prob=1.0, coeff_range=(0.1, 0.3)),
            RandAdjustContrast(prob=1.0, gamma=(0.7, 1.5)),
            RandRicianNoise(prob=1.0, std=0.04, relative=False, sample_std=True),
        ]
    )
    move.set_random_state(seed)
    scanner.set_random_state(seed + 1)
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    full = np.array(volumes.shape[1:])
    for i in range(num_cases):
        t1, gm, wm = np.asarray(move(torch.from_numpy(volumes)))  # the template and its tissue maps moved together
        t1 = np.asarray(scanner(torch.from_numpy(t1[None])))[0]
        size = np.minimum(full, np.array(shape) + rng.integers(-jitter, jitter + 1, 3))
        start = (full - size) // 2 + rng.integers(-2, 3, 3)
        start = np.clip(start, 0, full - size)
        crop = tuple(slice(int(a), int(a + n)) for a, n in zip(start, size))
        label = np.where((gm > 0.5) & (gm >= wm), 1, np.where((wm > 0.5) & (wm > gm), 2, 0)).astype(np.uint8)[crop]
        image = np.clip(t1[crop], 0, None) * 1000.0
        moved_affine = affine.copy()
        moved_affine[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
        name = f"mni_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image.astype(np.int16), moved_affine), str(images / name))
        nib.save(nib.Nifti1Image(label, moved_affine), str(labels / name))
    return images, labels
