"""``prepare folder``: pairs by name, checks each case as nnU-Net's integrity check does (one line per bad
case, nothing written), splits with a seed, and writes an overlay the bundles take."""

import json
import shutil
import sys
from pathlib import Path

import forkserver
import nibabel as nib
import numpy as np
import pytest

from monai_ext.data.folder import DatasetCheckError, prepare_folder

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


def _case(
    images: Path, labels: Path, name: str, shape=(12, 10, 8), spacing=(1.0, 1.0, 2.0), channels=1, seed=0
) -> None:
    rng = np.random.default_rng(seed)
    affine = np.diag(list(spacing) + [1.0])
    label = np.zeros(shape, np.uint8)
    label[3:7, 2:6, 2:5] = 1
    if channels == 1:
        nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), affine), str(images / f"{name}.nii.gz"))
    else:
        for c in range(channels):
            nib.save(
                nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), affine),
                str(images / f"{name}_{c:04d}.nii.gz"),
            )
    nib.save(nib.Nifti1Image(label, affine), str(labels / f"{name}.nii.gz"))


@pytest.fixture()
def folders(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(5):
        _case(images, labels, f"case{i}", seed=i)
    return images, labels


def test_pairs_checks_splits_and_writes_a_datalist_and_an_overlay(folders, tmp_path):
    images, labels = folders
    before = {p: p.read_bytes() for p in sorted(images.iterdir()) + sorted(labels.iterdir())}
    path = prepare_folder(images, labels, tmp_path / "out", seed=3, label_names={1: "tumour"})
    datalist = json.loads(path.read_text())
    cases = datalist["training"] + datalist["validation"] + datalist["test"]
    assert sorted(Path(c["image"]).name for c in cases) == [f"case{i}.nii.gz" for i in range(5)]
    assert all(Path(c["image"]).name == Path(c["label"]).name for c in cases)
    assert min(len(datalist[k]) for k in ("training", "validation", "test")) >= 1
    assert datalist["labels"] == {"0": "background", "1": "tumour"}
    again = json.loads(
        prepare_folder(images, labels, tmp_path / "again", seed=3, label_names={1: "tumour"}).read_text()
    )
    assert again["training"] == datalist["training"]  # the seed fixes the split
    overlay = json.loads((tmp_path / "out" / "overlay.json").read_text())
    assert overlay["spatial_dims"] == 3 and overlay["in_channels"] == 1 and overlay["out_channels"] == 2
    assert (
        overlay["class_names"] == {"0": "background", "1": "tumour"} and overlay["pixdim"] is None
    )  # one spacing: no resampling
    assert overlay["patch_size"] == [32, 32, 32] and overlay["dataset_dir"] == str((tmp_path / "out").resolve())
    assert {p: p.read_bytes() for p in before} == before  # inputs only read
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_nnunet_channel_files_make_one_multi_channel_image(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(3):
        _case(images, labels, f"brain{i}", channels=2, seed=i)
    datalist = json.loads(prepare_folder(images, labels, tmp_path / "out").read_text())
    case = (datalist["training"] + datalist["validation"] + datalist["test"])[0]
    assert [Path(p).name for p in case["image"]] == [
        f"{Path(case['label']).name[:-7]}_{c:04d}.nii.gz" for c in range(2)
    ]
    assert json.loads((tmp_path / "out" / "overlay.json").read_text())["in_channels"] == 2


def test_every_bad_case_is_one_line_naming_its_file_and_nothing_is_written(folders, tmp_path):
    images, labels = folders
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 7), np.uint8), affine), str(labels / "case0.nii.gz"))  # a slice short
    shifted = affine.copy()
    shifted[0, 3] = 5.0
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 8), np.uint8), shifted), str(labels / "case1.nii.gz"))  # other origin
    bad = np.zeros((12, 10, 8), np.float32)
    bad[0, 0, 0] = 0.5
    nib.save(nib.Nifti1Image(bad, affine), str(labels / "case2.nii.gz"))  # not a label map
    nan = np.random.default_rng(0).normal(size=(12, 10, 8)).astype(np.float32)
    nan[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(nan, affine), str(images / "case3.nii.gz"))
    three = np.zeros((12, 10, 8), np.uint8)
    three[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(three, affine), str(labels / "case4.nii.gz"))  # a label nobody declared
    shutil.copy(images / "case4.nii.gz", images / "orphan.nii.gz")
    (images / "broken.nii.gz").write_bytes(b"\x1f\x8b not a nifti")
    shutil.copy(labels / "case4.nii.gz", labels / "broken.nii.gz")
    with pytest.raises(DatasetCheckError) as info:
        prepare_folder(images, labels, tmp_path / "out", label_names={1: "tumour"})
    problems = info.value.problems
    expected = {
        "case0.nii.gz": "shape [12, 10, 7] differs from the image's [12, 10, 8]",
        "case1.nii.gz": "affine differs from the image's",
        "case2.nii.gz": "label values must be integers, found 0.5",
        "case3.nii.gz": "NaN or infinite",
        "case4.nii.gz": "label values [3] are not among the declared labels [0, 1]",
        "orphan.nii.gz": "no label named orphan",
        "broken.nii.gz": "unreadable",
    }
    assert len(problems) == len(expected), problems
    for name, message in expected.items():
        assert [p for p in problems if name in p and message in p], (name, problems)
    assert not (tmp_path / "out").exists()

    # the command line prints them one per line and exits non-zero
    proc = forkserver.run(
        [
            sys.executable,
            "-m",
            "monai_ext",
            "prepare",
            "folder",
            "--images",
            str(images),
            "--labels",
            str(labels),
            "--label-name",
            "1=tumour",
            str(tmp_path / "out"),
        ],
        timeout=300,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == len(expected) and "nothing written" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_real_scanner_volume_with_a_derived_label_and_the_ct_scheme(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    source = nib.load(str(NIB_DATA / "anatomical.nii"))  # big-endian int16, LAS
    data = np.asarray(source.dataobj)
    for i in range(3):
        shutil.copy(NIB_DATA / "anatomical.nii", images / f"t1_{i}.nii")
        nib.save(
            nib.Nifti1Image((data > np.percentile(data, 80 + i)).astype(np.uint8), source.affine),
            str(labels / f"t1_{i}.nii.gz"),
        )
    prepare_folder(images, labels, tmp_path / "out", intensity="ct")
    overlay = json.loads((tmp_path / "out" / "overlay.json").read_text())
    intensity = overlay["intensity"]
    assert intensity["scheme"] == "window" and intensity["a_min"] < intensity["a_max"] <= float(data.max())
    assert overlay["class_names"] == {"0": "background", "1": "label_1"}
