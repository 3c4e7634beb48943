"""Datalist builders for the public segmentation data sets, each read in its own release layout.

Each ``prepare_<name>(source_dir, output_dir, seed=0, split=(0.8, 0.1, 0.1))`` finds the images and masks
where the data set's release puts them, pairs them, converts the masks to class-index maps where the
release stores them otherwise (0/255 values, one file per structure, several files per lesion, polygon
XML), and writes ``output_dir/datalist.json``: a MONAI datalist with seeded ``training``, ``validation``
and ``test`` lists (the official test set where the release has one). Images are referenced where they
are (absolute paths) and never modified; converted masks go to ``output_dir/labels/`` (written to a
temporary name, then renamed). The same source and seed give the same datalist.

A folder missing from the layout, an image without a mask or a mask without an image raises
:class:`DatasetLayoutError` naming the path.

``prepare_dataset(name, ...)`` dispatches by name; ``python -m monai_ext prepare <name> SOURCE OUTPUT``
runs it from the command line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union
from xml.etree import ElementTree

import numpy as np

from monai_ext.atomic import write_atomically, write_json
from monai_ext.data.datalist import Entry, split_cases
from monai_ext.errors import ReportedError

__all__ = ["DatasetLayoutError", "DATASETS", "prepare_dataset"] + [
    f"prepare_{n}"
    for n in (
        "isic2018",
        "kvasir_seg",
        "cvc_clinicdb",
        "busi",
        "glas",
        "monuseg",
        "drive",
        "montgomery",
        "promise12",
        "physionet_ich",
    )
]

PathLike = Union[str, Path]
Split = Sequence[float]
SPLIT = (0.8, 0.1, 0.1)  # training, validation, test, where a release has no official split


class DatasetLayoutError(ReportedError, ValueError):
    """The source folder does not have the data set's release layout."""


# ---------------------------------------------------------------------------------------------- helpers


def _folder(root: Path, *candidates: str) -> Path:
    """The first existing sub-folder among ``candidates`` (release variants), or an error naming them."""
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise DatasetLayoutError(f"missing folder: expected {' or '.join(str(root / c) for c in candidates)}")


def _files(folder: Path, pattern: str) -> List[Path]:
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DatasetLayoutError(f"no files matching {pattern!r} in {folder}")
    return files


def _pair(images: Dict[str, Path], masks: Dict[str, Path], what: str) -> List[Tuple[str, Path, Path]]:
    """Pair images and masks by case key; any leftover on either side is an error naming the file."""
    for key, path in images.items():
        if key not in masks:
            raise DatasetLayoutError(f"unpaired image: {path} has no {what}")
    for key, path in masks.items():
        if key not in images:
            raise DatasetLayoutError(f"unpaired {what}: {path} has no image")
    return [(key, images[key], masks[key]) for key in sorted(images)]


def _atomic_save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    write_atomically(path, lambda tmp: Image.fromarray(array.astype(np.uint8)).save(tmp, format="PNG"))


def _read_gray(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L"))


def _binary_mask_png(masks: Sequence[Path], out: Path, threshold: int = 127) -> Path:
    """The union of one or more 8-bit masks (values above ``threshold``) as a 0/1 PNG."""
    merged = None
    for mask in masks:
        m = _read_gray(mask) > threshold
        if merged is not None and m.shape != merged.shape:
            raise DatasetLayoutError(f"mask {mask} has shape {m.shape}, the case's other masks {merged.shape}")
        merged = m if merged is None else merged | m
    _atomic_save_png(merged.astype(np.uint8), out)
    return out


def _binary_mask_nifti(mask: Path, out: Path) -> Path:
    """A NIfTI mask (any positive value) as uint8 0/1 on the same grid and affine."""
    import nibabel as nib

    img = nib.load(str(mask))
    data = (np.asarray(img.dataobj) > 0).astype(np.uint8)
    return write_atomically(out, lambda tmp: nib.save(nib.Nifti1Image(data, img.affine, img.header), str(tmp)))


def _write_datalist(
    output_dir: Path,
    name: str,
    labels: Dict[str, str],
    cases: Dict[str, Entry],
    splits: Sequence[Iterable[str]],
    extra: Optional[dict] = None,
) -> Path:
    datalist = {"name": name, "labels": labels, **(extra or {})}
    for key, members in zip(("training", "validation", "test"), splits):
        datalist[key] = [cases[k] for k in members]
    return write_json(output_dir / "datalist.json", datalist)


def _binary_2d(
    name: str,
    foreground: str,
    pairs: List[Tuple[str, Path, Sequence[Path]]],
    output_dir: Path,
    seed: int,
    split: Sequence[float],
    test_pairs: Optional[List[Tuple[str, Path, Sequence[Path]]]] = None,
    threshold: int = 127,
    case_fields: Optional[Dict[str, Dict[str, str]]] = None,
) -> Path:
    """Common path of the 2D binary data sets: masks to 0/1 PNG, seeded split (or the official test set)."""
    cases: Dict[str, Entry] = {}
    for key, image, masks in pairs + (test_pairs or []):
        label = _binary_mask_png(masks, output_dir / "labels" / f"{key}.png", threshold)
        cases[key] = {"image": str(image.resolve()), "label": str(label.resolve()), **(case_fields or {}).get(key, {})}
    keys = [k for k, _, _ in pairs]
    if test_pairs:
        train, val, _ = split_cases(keys, seed, (split[0], split[1], 0.0))
        test = sorted(k for k, _, _ in test_pairs)
    else:
        train, val, test = split_cases(keys, seed, split)
    return _write_datalist(
        output_dir, name, {"0": "background", "1": foreground}, cases, (train, val, test), {"seed": seed}
    )


# ----------------------------------------------------------------------------------------- data sets


def prepare_isic2018(source_dir: PathLike, output_dir: PathLike, seed: int = 0, split: Split = SPLIT) -> Path:
    """ISIC 2018 Task 1 (lesion boundary segmentation).

    Layout: ``ISIC2018_Task1-2_Training_Input/ISIC_<id>.jpg`` and
    ``ISIC2018_Task1_Training_GroundTruth/ISIC_<id>_segmentation.png`` (0/255). The official validation and
    test sets, when present with their ground truth, are not used: like the papers (e.g. 2074/260/260 in
    Hi-gMISnet) the training set is split.
    """
    root = Path(source_dir)
    images = {p.stem: p for p in _files(_folder(root, "ISIC2018_Task1-2_Training_Input"), "ISIC_*.jpg")}
    masks = {
        p.stem.replace("_segmentation", ""): p
        for p in _files(_folder(root, "ISIC2018_Task1_Training_GroundTruth"), "ISIC_*_segmentation.png")
    }
    pairs = [(k, i, [m]) for k, i, m in _pair(images, masks, "ground-truth mask")]
    return _binary_2d("ISIC2018_Task1", "lesion", pairs, Path(output_dir), seed, split)


def prepare_kvasir_seg(source_dir: PathLike, output_dir: PathLike, seed: int = 0, split: Split = SPLIT) -> Path:
    """Kvasir-SEG: ``images/<id>.jpg`` and ``masks/<id>.jpg`` (JPEG masks, thresholded at 127)."""
    root = Path(source_dir)
    if (root / "Kvasir-SEG").is_dir():
        root = root / "Kvasir-SEG"
    images = {p.stem: p for p in _files(_folder(root, "images"), "*.jpg")}
    masks = {p.stem: p for p in _files(_folder(root, "masks"), "*.jpg")}
    pairs = [(k, i, [m]) for k, i, m in _pair(images, masks, "mask")]
    return _binary_2d("Kvasir-SEG", "polyp", pairs, Path(output_dir), seed, split)


def prepare_cvc_clinicdb(source_dir: PathLike, output_dir: PathLike, seed: int = 0, split: Split = SPLIT) -> Path:
    """CVC-ClinicDB: ``Original/<n>.tif`` and ``Ground Truth/<n>.tif`` (TIFF, 0/255); the PNG release's
    ``PNG/Original`` and ``PNG/Ground Truth`` are accepted too."""
    root = Path(source_dir)
    if (root / "CVC-ClinicDB").is_dir():
        root = root / "CVC-ClinicDB"
    if not (root / "Original").is_dir() and (root / "PNG").is_dir():
        root = root / "PNG"
    images = {
        p.stem: p for p in _files(_folder(root, "Original"), "*.*") if p.suffix.lower() in (".tif", ".tiff", ".png")
    }
    masks = {
        p.stem: p
        for p in _files(_folder(root, "Ground Truth", "GroundTruth"), "*.*")
        if p.suffix.lower() in (".tif", ".tiff", ".png")
    }
    pairs = [(f"cvc_{int(k):03d}" if k.isdigit() else k, i, [m]) for k, i, m in _pair(images, masks, "ground truth")]
    return _binary_2d("CVC-ClinicDB", "polyp", pairs, Path(output_dir), seed, split)


def prepare_busi(
    source_dir: PathLike, output_dir: PathLike, seed: int = 0, split: Split = SPLIT, include_normal: bool = True
) -> Path:
    """BUSI (Dataset_BUSI_with_GT): ``benign/``, ``malignant/``, ``normal/`` with ``<class> (<n>).png`` and one or
    more ``<class> (<n>)_mask[_k].png``; a case's masks are merged. The normal class (empty masks) is kept
    unless ``include_normal`` is False (Hi-gMISnet excludes it). The class is stored as ``category``."""
    root = Path(source_dir)
    if (root / "Dataset_BUSI_with_GT").is_dir():
        root = root / "Dataset_BUSI_with_GT"
    classes = ["benign", "malignant"] + (["normal"] if include_normal else [])
    pairs, fields = [], {}
    for cls in classes:
        folder = _folder(root, cls)
        files = _files(folder, "*.png")
        images = {p.stem: p for p in files if "_mask" not in p.stem}
        masks: Dict[str, List[Path]] = {}
        for p in files:
            match = re.fullmatch(r"(.+)_mask(_\d+)?", p.stem)
            if match:
                masks.setdefault(match.group(1), []).append(p)
        for key, image, mask_list in _pair(images, masks, "mask"):
            case = re.sub(r"\W+", "_", key).strip("_")
            pairs.append((case, image, sorted(mask_list)))
            fields[case] = {"category": cls}
    return _binary_2d("BUSI", "lesion", pairs, Path(output_dir), seed, split, case_fields=fields)


def prepare_glas(source_dir: PathLike, output_dir: PathLike, seed: int = 0, split: Split = (0.85, 0.15, 0.0)) -> Path:
    """GlaS (Warwick-QU): ``train_<n>.bmp`` / ``train_<n>_anno.bmp`` (instance masks: 0 background, 1..N glands)
    are split into training and validation; ``testA_*`` and ``testB_*`` are the official test set."""
    root = Path(source_dir)
    for sub in ("Warwick QU Dataset (Released 2016_07_08)", "Warwick_QU_Dataset", "GlaS"):
        if (root / sub).is_dir():
            root = root / sub
    files = _files(root, "*.bmp")
    images = {p.stem: p for p in files if not p.stem.endswith("_anno")}
    masks = {p.stem[: -len("_anno")]: p for p in files if p.stem.endswith("_anno")}
    pairs = [(k, i, [m]) for k, i, m in _pair(images, masks, "annotation (_anno.bmp)")]
    train = [p for p in pairs if p[0].startswith("train_")]
    test = [p for p in pairs if p[0].startswith(("testA_", "testB_"))]
    if not train:
        raise DatasetLayoutError(f"no train_<n>.bmp images in {root}")
    # instance labels 1..N: any gland pixel (> 0) is foreground
    return _binary_2d("GlaS", "gland", train, Path(output_dir), seed, split, test_pairs=test or None, threshold=0)


def _monuseg_mask(xml_path: Path, shape: Tuple[int, int], out: Path) -> Path:
    """Rasterise the polygons of an Aperio ImageScope XML (``Region/Vertices/Vertex X= Y=``) to a 0/1 PNG."""
    from PIL import Image, ImageDraw

    try:
        tree = ElementTree.parse(xml_path)
    except ElementTree.ParseError as e:
        raise DatasetLayoutError(f"unreadable annotation {xml_path}: {e}") from e
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    regions = 0
    for region in tree.getroot().iter("Region"):
        points = [(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
        if len(points) >= 3:
            draw.polygon(points, outline=1, fill=1)
            regions += 1
    if regions == 0:
        raise DatasetLayoutError(f"annotation {xml_path} has no polygon (Region with 3 or more Vertex)")
    _atomic_save_png(np.asarray(canvas), out)
    return out


def prepare_monuseg(source_dir: PathLike, output_dir: PathLike, seed: int = 0, split: Split = (0.8, 0.2, 0.0)) -> Path:
    """MoNuSeg 2018: ``MoNuSeg 2018 Training Data/Tissue Images/<id>.tif`` with ``Annotations/<id>.xml``
    (nucleus polygons, rasterised to a binary mask) split into training and validation; the official test
    set ``MoNuSegTestData/<id>.tif`` + ``<id>.xml`` is the test list."""
    from PIL import Image

    root = Path(source_dir)
    train_root = _folder(root, "MoNuSeg 2018 Training Data", "MoNuSeg2018TrainingData", "MoNuSegTrainingData")
    groups = [(_folder(train_root, "Tissue Images", "Tissue_Images"), _folder(train_root, "Annotations"))]
    test_root = next((root / n for n in ("MoNuSegTestData", "MoNuSeg 2018 Test Data") if (root / n).is_dir()), None)
    if test_root is not None:
        groups.append((test_root, test_root))
    out = Path(output_dir)
    cases: Dict[str, Entry] = {}
    members: List[List[str]] = []
    for image_dir, xml_dir in groups:
        images = {p.stem: p for p in _files(image_dir, "*.tif")}
        xmls = {p.stem: p for p in _files(xml_dir, "*.xml")}
        keys = []
        for key, image, xml in _pair(images, xmls, "XML annotation"):
            with Image.open(image) as img:
                shape = (img.height, img.width)
            label = _monuseg_mask(xml, shape, out / "labels" / f"{key}.png")
            cases[key] = {"image": str(image.resolve()), "label": str(label.resolve())}
            keys.append(key)
        members.append(keys)
    train, val, test = split_cases(members[0], seed, split if test_root is None else (split[0], split[1], 0.0))
    if test_root is not None:
        test = sorted(members[1])
    return _write_datalist(
        out, "MoNuSeg2018", {"0": "background", "1": "nucleus"}, cases, (train, val, test), {"seed": seed}
    )


def prepare_drive(source_dir: PathLike, output_dir: PathLike, seed: int = 0, split: Split = (0.8, 0.2, 0.0)) -> Path:
    """DRIVE: ``training/images/<n>_training.tif``, ``training/1st_manual/<n>_manual1.gif`` (vessels) and
    ``training/mask/<n>_training_mask.gif`` (field of view, stored as ``fov``), split into training and
    validation; ``test/`` (with ``1st_manual``) is the test list. Masks are GIF, 0/255."""
    root = Path(source_dir)
    if (root / "DRIVE").is_dir():
        root = root / "DRIVE"
    out = Path(output_dir)
    cases: Dict[str, Entry] = {}
    members: List[List[str]] = []
    for part in ("training", "test"):
        folder = root / part
        if part == "test" and not (folder / "1st_manual").is_dir():
            members.append([])  # releases without the test ground truth: no test list
            continue
        folder = _folder(root, part)
        images = {p.stem.split("_")[0]: p for p in _files(_folder(folder, "images"), "*.tif")}
        manual = {p.stem.split("_")[0]: p for p in _files(_folder(folder, "1st_manual"), "*_manual1.gif")}
        fov = {p.stem.split("_")[0]: p for p in _files(_folder(folder, "mask"), "*_mask.gif")}
        keys = []
        for key, image, vessels in _pair(images, manual, "1st_manual vessel mask"):
            if key not in fov:
                raise DatasetLayoutError(f"unpaired image: {image} has no field-of-view mask in {folder / 'mask'}")
            name = f"drive_{key}"
            label = _binary_mask_png([vessels], out / "labels" / f"{name}.png")
            field = _binary_mask_png([fov[key]], out / "fov" / f"{name}.png")
            cases[name] = {"image": str(image.resolve()), "label": str(label.resolve()), "fov": str(field.resolve())}
            keys.append(name)
        members.append(keys)
    train, val, test = split_cases(members[0], seed, (split[0], split[1], 0.0) if members[1] else split)
    if members[1]:
        test = sorted(members[1])
    return _write_datalist(out, "DRIVE", {"0": "background", "1": "vessel"}, cases, (train, val, test), {"seed": seed})


def prepare_montgomery(source_dir: PathLike, output_dir: PathLike, seed: int = 0, split: Split = SPLIT) -> Path:
    """Montgomery County chest X-rays: ``CXR_png/<id>.png`` with ``ManualMask/leftMask/<id>.png`` and
    ``ManualMask/rightMask/<id>.png``, merged into one lung mask."""
    root = Path(source_dir)
    if (root / "MontgomerySet").is_dir():
        root = root / "MontgomerySet"
    images = {p.stem: p for p in _files(_folder(root, "CXR_png"), "*.png")}
    masks_root = _folder(root, "ManualMask")
    left = {p.stem: p for p in _files(_folder(masks_root, "leftMask"), "*.png")}
    right = {p.stem: p for p in _files(_folder(masks_root, "rightMask"), "*.png")}
    _pair(images, left, "left-lung mask")
    pairs = [(k, i, [left[k], m]) for k, i, m in _pair(images, right, "right-lung mask")]
    return _binary_2d("Montgomery", "lung", pairs, Path(output_dir), seed, split)


def prepare_promise12(
    source_dir: PathLike, output_dir: PathLike, seed: int = 0, split: Split = SPLIT, slices: bool = False
) -> Path:
    """PROMISE12: ``Case<nn>.mhd`` (+ ``.raw``/``.zraw``) with ``Case<nn>_segmentation.mhd`` (0/1), in the
    source folder or its ``TrainingData_Part*`` / ``training_data`` sub-folders. The challenge's test cases
    have no public segmentation, so the labelled cases are split. Masks are used as they are (MetaImage).
    ``slices``: 2D slices with prostate instead of volumes, split at random 8:1:1 (Hi-gMISnet's protocol)."""
    root = Path(source_dir)
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir() and re.match(r"(?i)training", p.name))
    files = [p for f in folders for p in f.glob("Case*.mhd")]
    if not files:
        raise DatasetLayoutError(f"no Case<nn>.mhd files in {root} or its TrainingData_Part* folders")
    images = {p.stem: p for p in files if not p.stem.endswith("_segmentation")}
    masks = {p.stem[: -len("_segmentation")]: p for p in files if p.stem.endswith("_segmentation")}
    for path in list(images.values()) + list(masks.values()):
        header = path.read_text(errors="replace")
        data = re.search(r"ElementDataFile\s*=\s*(\S+)", header)
        if data is None or not (path.parent / data.group(1)).is_file():
            raise DatasetLayoutError(f"MetaImage header {path} names no existing data file (ElementDataFile)")
    cases = {
        k: {"image": str(i.resolve()), "label": str(m.resolve())}
        for k, i, m in _pair(images, masks, "_segmentation.mhd")
    }
    labels = {"0": "background", "1": "prostate"}
    if slices:
        return _foreground_slices("PROMISE12", cases, Path(output_dir), seed, split, labels)
    return _write_datalist(
        Path(output_dir), "PROMISE12", labels, cases, split_cases(sorted(cases), seed, split), {"seed": seed}
    )


def prepare_physionet_ich(
    source_dir: PathLike, output_dir: PathLike, seed: int = 0, split: Split = SPLIT, slices: bool = False
) -> Path:
    """PhysioNet CT-ICH (Hssayeni et al. 2020): ``ct_scans/<nnn>.nii`` with ``masks/<nnn>.nii``; masks are
    made 0/1 (uint8, same affine) under ``output_dir/labels``. ``slices``: 2D slices with haemorrhage
    instead of volumes, split at random 8:1:1 (Hi-gMISnet's protocol: "lesion slices only")."""
    root = Path(source_dir)
    images = {p.name.split(".")[0]: p for p in _files(_folder(root, "ct_scans"), "*.nii*")}
    masks = {p.name.split(".")[0]: p for p in _files(_folder(root, "masks"), "*.nii*")}
    out = Path(output_dir)
    cases: Dict[str, Entry] = {}
    for key, image, mask in _pair(images, masks, "mask"):
        label = _binary_mask_nifti(mask, out / "labels" / f"ich_{key}.nii.gz")
        cases[f"ich_{key}"] = {"image": str(image.resolve()), "label": str(label.resolve())}
    labels = {"0": "background", "1": "hemorrhage"}
    if slices:
        return _foreground_slices("PhysioNet-CT-ICH", cases, out, seed, split, labels)
    return _write_datalist(
        out, "PhysioNet-CT-ICH", labels, cases, split_cases(sorted(cases), seed, split), {"seed": seed}
    )


def _foreground_slices(
    name: str, cases: Dict[str, Entry], output_dir: Path, seed: int, split: Sequence[float], labels: Dict[str, str]
) -> Path:
    """Cut every volume into 2D slices along its last axis, keep those whose label has foreground, write
    them as 2D NIfTI (in-plane affine kept) and split the slices 8:1:1 at random (seeded): the protocol of
    papers that train 2D networks on these volumes (e.g. Hi-gMISnet: "lesion slices only, random 8:1:1")."""
    import nibabel as nib
    from monai.transforms import LoadImage

    loader = LoadImage(image_only=True)
    sliced: Dict[str, Entry] = {}
    for key in sorted(cases):
        image, label = loader(cases[key]["image"]), loader(cases[key]["label"])
        affine = np.eye(4)
        affine[:2, :2] = image.affine.numpy()[:2, :2]
        affine[:2, 3] = image.affine.numpy()[:2, 3]
        img, lab = image.numpy(), (label.numpy() > 0).astype(np.uint8)
        for z in range(lab.shape[-1]):
            if not lab[..., z].any():
                continue
            stem = f"{key}_z{z:03d}"
            for kind, data in (("images", img[..., z].astype(np.float32)), ("labels", lab[..., z])):
                write_atomically(
                    output_dir / "slices" / kind / f"{stem}.nii.gz",
                    lambda tmp, data=data: nib.save(nib.Nifti1Image(data, affine), str(tmp)),
                )
            sliced[stem] = {
                "image": str((output_dir / "slices" / "images" / f"{stem}.nii.gz").resolve()),
                "label": str((output_dir / "slices" / "labels" / f"{stem}.nii.gz").resolve()),
                "case": key,
            }
    if not sliced:
        raise DatasetLayoutError(f"{name}: no slice with foreground in any label")
    return _write_datalist(
        output_dir,
        f"{name}-slices",
        labels,
        sliced,
        split_cases(sorted(sliced), seed, split),
        {"seed": seed, "slices": True},
    )


DATASETS: Dict[str, Callable[..., Path]] = {
    "isic2018": prepare_isic2018,
    "kvasir_seg": prepare_kvasir_seg,
    "cvc_clinicdb": prepare_cvc_clinicdb,
    "busi": prepare_busi,
    "glas": prepare_glas,
    "monuseg": prepare_monuseg,
    "drive": prepare_drive,
    "montgomery": prepare_montgomery,
    "promise12": prepare_promise12,
    "physionet_ich": prepare_physionet_ich,
}


def prepare_dataset(name: str, source_dir: PathLike, output_dir: PathLike, **kwargs) -> Path:
    """Run the builder of data set ``name`` (one of :data:`DATASETS`); returns the datalist's path."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}.")
    if not Path(source_dir).is_dir():
        raise DatasetLayoutError(f"source folder {source_dir} does not exist")
    return DATASETS[name](source_dir, output_dir, **kwargs)
