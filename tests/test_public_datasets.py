"""Datalist builders on tiny replicas of each public data set, written in the release's layout and formats."""

import hashlib
import json
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from monai_ext.data.public import DATASETS, DatasetLayoutError, prepare_dataset

RNG = np.random.default_rng(0)
SHAPE = (40, 48)  # rows, columns


def _rgb(path: Path, shape=SHAPE):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 255, shape + (3,), dtype=np.uint8)).save(path)


def _mask(path: Path, box, shape=SHAPE, value=255, mode="L"):
    """A rectangle ``box = (r0, r1, c0, c1)`` of ``value`` on zeros."""
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros(shape, dtype=np.uint8)
    m[box[0] : box[1], box[2] : box[3]] = value
    Image.fromarray(m).convert(mode).save(path)
    return m > 0


def _label(case) -> np.ndarray:
    return np.asarray(Image.open(case["label"]))


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def _all_cases(datalist):
    return datalist["training"] + datalist["validation"] + datalist["test"]


def _build(name, source, out, **kwargs):
    before = _digest(source)
    path = prepare_dataset(name, source, out, **kwargs)
    assert _digest(source) == before, "the builder modified its input"
    datalist = json.loads(path.read_text())
    for case in _all_cases(datalist):
        assert Path(case["image"]).is_absolute() and Path(case["image"]).is_file()
        assert str(source) in case["image"]  # the original image, referenced in place
    return datalist


# ------------------------------------------------------------------------------------- replicas


def make_isic(root: Path, n=6):
    for i in range(n):
        _rgb(root / "ISIC2018_Task1-2_Training_Input" / f"ISIC_{i:07d}.jpg")
        _mask(root / "ISIC2018_Task1_Training_GroundTruth" / f"ISIC_{i:07d}_segmentation.png", (5, 20, 10, 30))
    (root / "ISIC2018_Task1-2_Training_Input" / "ATTRIBUTION.txt").write_text("replica")


def make_kvasir(root: Path, n=5):
    for i in range(n):
        _rgb(root / "Kvasir-SEG" / "images" / f"cju{i:04d}.jpg")
        _mask(root / "Kvasir-SEG" / "masks" / f"cju{i:04d}.jpg", (10, 30, 10, 30))
    (root / "Kvasir-SEG" / "kavsir_bboxes.json").write_text("{}")


def make_cvc(root: Path, n=5):
    for i in range(1, n + 1):
        _rgb(root / "CVC-ClinicDB" / "Original" / f"{i}.tif")
        _mask(root / "CVC-ClinicDB" / "Ground Truth" / f"{i}.tif", (8, 16, 8, 16))


def make_busi(root: Path):
    base = root / "Dataset_BUSI_with_GT"
    for cls, n in (("benign", 3), ("malignant", 2), ("normal", 2)):
        (base / cls).mkdir(parents=True)
        for i in range(1, n + 1):
            Image.fromarray(RNG.integers(0, 255, SHAPE, dtype=np.uint8)).convert("RGB").save(
                base / cls / f"{cls} ({i}).png"
            )
            _mask(base / cls / f"{cls} ({i})_mask.png", (0, 0, 0, 0) if cls == "normal" else (2, 10, 2, 10), mode="RGB")
    # a second lesion of benign (1) in its own file
    _mask(base / "benign" / "benign (1)_mask_1.png", (20, 30, 30, 40), mode="RGB")


def make_glas(root: Path):
    base = root / "Warwick QU Dataset (Released 2016_07_08)"
    base.mkdir(parents=True)
    for prefix, n in (("train", 5), ("testA", 2), ("testB", 1)):
        for i in range(1, n + 1):
            Image.fromarray(RNG.integers(0, 255, SHAPE + (3,), dtype=np.uint8)).save(base / f"{prefix}_{i}.bmp")
            inst = np.zeros(SHAPE, dtype=np.uint8)
            inst[2:10, 2:10] = 1
            inst[20:30, 20:35] = 2  # instance ids, not 255
            Image.fromarray(inst).save(base / f"{prefix}_{i}_anno.bmp")
    (base / "Grade.csv").write_text("name,grade\n")


def _imagescope_xml(path: Path, polygons):
    regions = "".join(
        f'<Region Id="{i}"><Vertices>'
        + "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in poly)
        + "</Vertices></Region>"
        for i, poly in enumerate(polygons)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<?xml version="1.0"?><Annotations><Annotation Id="1"><Regions>{regions}</Regions></Annotation></Annotations>'
    )


def make_monuseg(root: Path):
    train = root / "MoNuSeg 2018 Training Data"
    for i in range(4):
        _rgb(train / "Tissue Images" / f"TCGA-{i:02d}.tif")
        # a 10 x 10 axis-aligned square (x = column 4..14, y = row 5..15) and a triangle
        _imagescope_xml(
            train / "Annotations" / f"TCGA-{i:02d}.xml",
            [[(4, 5), (14, 5), (14, 15), (4, 15)], [(30, 20), (40, 20), (35, 30)]],
        )
    for i in range(2):
        _rgb(root / "MoNuSegTestData" / f"TCGA-T{i}.tif")
        _imagescope_xml(root / "MoNuSegTestData" / f"TCGA-T{i}.xml", [[(1, 1), (6, 1), (6, 6)]])


def make_drive(root: Path):
    for part, ids in (("training", range(21, 25)), ("test", range(1, 3))):
        for i in ids:
            tag = "training" if part == "training" else "test"
            _rgb(root / "DRIVE" / part / "images" / f"{i:02d}_{tag}.tif")
            _mask(root / "DRIVE" / part / "1st_manual" / f"{i:02d}_manual1.gif", (10, 12, 0, 48))
            _mask(root / "DRIVE" / part / "mask" / f"{i:02d}_{tag}_mask.gif", (2, 38, 2, 46))


def make_montgomery(root: Path, n=4):
    base = root / "MontgomerySet"
    for i in range(n):
        name = f"MCUCXR_{i:04d}_{i % 2}.png"
        (base / "CXR_png").mkdir(parents=True, exist_ok=True)
        Image.fromarray(RNG.integers(0, 255, SHAPE, dtype=np.uint8)).save(base / "CXR_png" / name)
        _mask(base / "ManualMask" / "leftMask" / name, (5, 35, 28, 44))
        _mask(base / "ManualMask" / "rightMask" / name, (5, 35, 4, 20))
    (base / "ClinicalReadings").mkdir()


def make_promise12(root: Path, n=4):
    for i in range(n):
        folder = root / ("TrainingData_Part1" if i < 2 else "TrainingData_Part2")
        folder.mkdir(parents=True, exist_ok=True)
        vol = RNG.integers(0, 1000, (6, 20, 24)).astype(np.int16)
        seg = np.zeros((6, 20, 24), dtype=np.uint8)
        seg[2:4, 5:15, 5:15] = 1
        for array, name in ((vol, f"Case{i:02d}.mhd"), (seg, f"Case{i:02d}_segmentation.mhd")):
            img = itk.image_from_array(array)
            img.SetSpacing([0.6, 0.6, 3.6])
            itk.imwrite(img, str(folder / name))


def make_ich(root: Path, n=4):
    for i in range(49, 49 + n):
        affine = np.diag([0.45, 0.45, 5.0, 1.0])
        (root / "ct_scans").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        nib.save(
            nib.Nifti1Image(RNG.integers(-1024, 2000, (24, 20, 5)).astype(np.int16), affine),
            str(root / "ct_scans" / f"{i:03d}.nii"),
        )
        mask = np.zeros((24, 20, 5), dtype=np.uint8)
        mask[5:10, 5:10, 2] = 255
        nib.save(nib.Nifti1Image(mask, affine), str(root / "masks" / f"{i:03d}.nii"))
    (root / "hemorrhage_diagnosis_raw_ct.csv").write_text("PatientNumber,SliceNumber\n")


REPLICAS = {
    "isic2018": make_isic,
    "kvasir_seg": make_kvasir,
    "cvc_clinicdb": make_cvc,
    "busi": make_busi,
    "glas": make_glas,
    "monuseg": make_monuseg,
    "drive": make_drive,
    "montgomery": make_montgomery,
    "promise12": make_promise12,
    "physionet_ich": make_ich,
}


def test_every_data_set_has_a_builder_and_a_replica():
    assert set(DATASETS) == set(REPLICAS)


@pytest.mark.parametrize("name", sorted(REPLICAS))
def test_builder_reads_the_release_layout_and_is_reproducible(name, tmp_path):
    source = tmp_path / "source"
    REPLICAS[name](source)
    a = _build(name, source, tmp_path / "a", seed=3)
    b = _build(name, source, tmp_path / "b", seed=3)
    assert [Path(c["image"]).name for c in _all_cases(a)] == [Path(c["image"]).name for c in _all_cases(b)]
    assert a["labels"]["0"] == "background" and len(a["labels"]) == 2
    images = [c["image"] for c in _all_cases(a)]
    assert len(images) == len(set(images))
    assert a["training"] and a["validation"]
    for case in _all_cases(a):
        assert Path(case["label"]).is_file()


def test_isic_masks_become_0_1_and_the_split_is_seeded(tmp_path):
    make_isic(tmp_path / "src", n=10)
    d = _build("isic2018", tmp_path / "src", tmp_path / "out", seed=0)
    assert (len(d["training"]), len(d["validation"]), len(d["test"])) == (8, 1, 1)
    label = _label(d["training"][0])
    assert set(np.unique(label)) == {0, 1} and label[5:20, 10:30].all() and label.sum() == 15 * 20
    other = _build("isic2018", tmp_path / "src", tmp_path / "out2", seed=1)
    assert [c["image"] for c in other["training"]] != [c["image"] for c in d["training"]]


def test_busi_merges_several_masks_and_keeps_the_normal_class(tmp_path):
    make_busi(tmp_path / "src")
    d = _build("busi", tmp_path / "src", tmp_path / "out")
    cases = {Path(c["image"]).name: c for c in _all_cases(d)}
    assert len(cases) == 7 and {c["category"] for c in cases.values()} == {"benign", "malignant", "normal"}
    merged = _label(cases["benign (1).png"])
    assert merged[2:10, 2:10].all() and merged[20:30, 30:40].all() and merged.sum() == 64 + 100
    assert _label(cases["normal (1).png"]).sum() == 0
    without = _build("busi", tmp_path / "src", tmp_path / "out2", include_normal=False)
    assert len(_all_cases(without)) == 5


def test_glas_instances_become_foreground_and_tests_a_b_are_the_test_set(tmp_path):
    make_glas(tmp_path / "src")
    d = _build("glas", tmp_path / "src", tmp_path / "out")
    assert sorted(Path(c["image"]).stem for c in d["test"]) == ["testA_1", "testA_2", "testB_1"]
    assert len(d["training"]) + len(d["validation"]) == 5
    assert _label(d["test"][0]).sum() == 64 + 150  # both instances, value 1


def test_monuseg_polygons_are_rasterised(tmp_path):
    make_monuseg(tmp_path / "src")
    d = _build("monuseg", tmp_path / "src", tmp_path / "out")
    assert len(d["test"]) == 2 and len(d["training"]) + len(d["validation"]) == 4
    label = _label(d["training"][0])
    assert label.shape == SHAPE
    assert label[5:16, 4:15].all()  # the square, outline included (rows = Y, columns = X)
    assert label[22, 35] == 1 and label[0, 47] == 0  # inside the triangle; a far corner


def test_drive_keeps_the_field_of_view(tmp_path):
    make_drive(tmp_path / "src")
    d = _build("drive", tmp_path / "src", tmp_path / "out")
    assert len(d["test"]) == 2
    case = d["training"][0]
    assert np.asarray(Image.open(case["fov"])).sum() == 36 * 44
    assert _label(case).sum() == 2 * 48


def test_montgomery_merges_both_lungs(tmp_path):
    make_montgomery(tmp_path / "src")
    d = _build("montgomery", tmp_path / "src", tmp_path / "out")
    assert _label(d["training"][0]).sum() == 30 * 16 * 2


def test_promise12_uses_metaimage_masks_in_place(tmp_path):
    make_promise12(tmp_path / "src")
    d = _build("promise12", tmp_path / "src", tmp_path / "out")
    assert all(c["label"].endswith("_segmentation.mhd") for c in _all_cases(d))
    assert len(_all_cases(d)) == 4


def test_ich_masks_become_0_1_with_the_same_affine(tmp_path):
    make_ich(tmp_path / "src")
    d = _build("physionet_ich", tmp_path / "src", tmp_path / "out")
    case = d["training"][0]
    src_mask = nib.load(str(tmp_path / "src" / "masks" / (Path(case["image"]).name)))
    label = nib.load(case["label"])
    np.testing.assert_allclose(label.affine, src_mask.affine)
    assert set(np.unique(np.asarray(label.dataobj))) == {0, 1}


def test_missing_folder_and_unpaired_files_are_named(tmp_path):
    make_isic(tmp_path / "isic")
    (tmp_path / "isic" / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000002_segmentation.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"unpaired image: .*ISIC_0000002\.jpg"):
        prepare_dataset("isic2018", tmp_path / "isic", tmp_path / "o1")

    make_montgomery(tmp_path / "mc")
    (tmp_path / "mc" / "MontgomerySet" / "ManualMask" / "rightMask" / "MCUCXR_0000_0.png").unlink()
    with pytest.raises(DatasetLayoutError, match="right-lung mask"):
        prepare_dataset("montgomery", tmp_path / "mc", tmp_path / "o2")

    make_kvasir(tmp_path / "kv")
    _mask(tmp_path / "kv" / "Kvasir-SEG" / "masks" / "extra.jpg", (0, 1, 0, 1))
    with pytest.raises(DatasetLayoutError, match=r"unpaired mask: .*extra\.jpg has no image"):
        prepare_dataset("kvasir_seg", tmp_path / "kv", tmp_path / "o3")

    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"missing folder: expected .*ct_scans"):
        prepare_dataset("physionet_ich", tmp_path / "empty", tmp_path / "o4")
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        prepare_dataset("drive", tmp_path / "nowhere", tmp_path / "o5")
    with pytest.raises(ValueError, match="unknown data set"):
        prepare_dataset("lits", tmp_path / "empty", tmp_path / "o6")


@pytest.mark.parametrize("name", ["physionet_ich", "promise12"])
def test_volumes_cut_into_foreground_slices_for_2d_protocols(name, tmp_path):
    REPLICAS[name](tmp_path / "src")
    from monai_ext.__main__ import main

    assert (
        main(["prepare", name, str(tmp_path / "src"), str(tmp_path / "out"), "--option", "slices=true", "--seed", "1"])
        == 0
    )
    d = json.loads((tmp_path / "out" / "datalist.json").read_text())
    cases = _all_cases(d)
    # every replica volume has foreground on exactly its labelled slices (ICH: 1 per volume, PROMISE12: 2)
    assert len(cases) == 4 * (1 if name == "physionet_ich" else 2) and d["slices"] is True
    for case in cases:
        label = nib.load(case["label"])
        assert label.ndim == 2 and np.asarray(label.dataobj).any()
        assert nib.load(case["image"]).shape == label.shape
    assert len(d["training"]) >= len(d["validation"]) >= 1


def test_the_public_data_sets_are_described_in_one_place():
    """datasets/README.md lists every overlay, each overlay has a builder, and the bundles' docs point there."""
    import re

    from monai_ext.data.public import DATASETS

    root = Path(__file__).resolve().parents[1]
    overlays = sorted(p.stem for p in (root / "datasets").glob("*.json"))
    listed = re.findall(r"^\| `([a-z0-9_]+)` \|", (root / "datasets" / "README.md").read_text(), flags=re.M)
    assert listed == overlays == sorted(DATASETS)
    for docs in (root / "bundles").glob("*/docs/README.md"):
        assert "| `kvasir_seg` | Kvasir-SEG" not in docs.read_text(), f"{docs}: the table belongs in datasets/README.md"
