"""Hostile inputs to ``python -m monai_ext segment``, as a tester who wants it to fail would try them.

Every case asserts the same four things: the documented exit status; exactly one ``error:`` line, naming
the file (or the option) and the problem; no output and no temporary file left behind; the input unchanged.
"""

import errno
import gzip
import hashlib
import io
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from monai_ext.data.dicom.export import write_dicom_series

ROOT = Path(__file__).resolve().parents[1]
NIB_DATA = Path(nib.__file__).parent / "tests" / "data"
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
CT5N = PYDICOM_FILES / "dicomdirtests" / "98892001" / "CT5N"


@pytest.fixture(scope="module")
def bundle(unet_3d_with_settings) -> Path:
    """The U-Net bundle's tracked files with random 3D weights that carry their settings (nothing to --set)."""
    return unet_3d_with_settings


@dataclass
class Bad:
    """A hostile run: its arguments (``--input`` and ``--output`` added unless given), what the one error
    line must contain, the exit status, and the inputs that must stay as they were."""

    message: str
    names: str  # the file or option the line must name
    args: List[str] = field(default_factory=list)
    input: Optional[object] = None  # a path, or a URL
    code: int = 2
    inputs: List[Path] = field(default_factory=list)
    secret: Optional[str] = None  # must appear nowhere in the output


def _volume(path: Path, data: Optional[np.ndarray] = None, affine: Optional[np.ndarray] = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).normal(size=(20, 18, 12)).astype(np.float32) if data is None else data
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.0, 1.0]) if affine is None else affine), str(path))
    return path


def _png(path: Path) -> Path:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24), dtype=np.uint8)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def _with_header(path: Path, edit: Callable) -> Path:
    """A valid NIfTI whose header fields are then set raw by ``edit(header)``."""
    image = nib.Nifti1Image(
        np.random.default_rng(0).normal(size=(20, 18, 12)).astype(np.float32), np.diag([0.8, 0.8, 2.0, 1.0])
    )
    image.header["vox_offset"] = 352
    edit(image.header)
    raw = image.header.binaryblock + b"\0" * 4 + np.asarray(image.dataobj).tobytes()
    path.write_bytes(raw)
    return path


def _series(folder: Path) -> Path:
    series = np.random.default_rng(0).integers(0, 500, size=(40, 40, 8)).astype(np.int16)
    write_dicom_series(series, np.diag([-0.5, -0.5, 2.5, 1.0]), folder)
    return folder


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _copy(source: Path, folder: Path) -> Path:
    return Path(shutil.copy(source, folder))


def _cli(*args) -> subprocess.CompletedProcess:
    """``python -m monai_ext segment ...`` in this process (``main`` is what the module runs)."""
    import contextlib

    from monai_ext.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["segment", *args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


# ------------------------------------------------------------------------------------------- the cases
# each returns a Bad; ``t`` is a fresh folder, ``b`` the bundle


def _files():
    def truncated_gz(t):
        raw = _volume(t / "v.nii.gz").read_bytes()
        (t / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
        return Bad("unreadable", "cut.nii.gz", input=t / "cut.nii.gz")

    def truncated_nii(t):
        raw = _volume(t / "v.nii").read_bytes()
        (t / "short.nii").write_bytes(raw[:2000])
        return Bad("unreadable", "short.nii", input=t / "short.nii")

    def gz_text(t):
        (t / "text.nii.gz").write_bytes(gzip.compress(b"hello, not an image" * 50))
        return Bad("not a NIfTI file (its header is not one)", "text.nii.gz", input=t / "text.nii.gz")

    def minc_as_nii(t):
        shutil.copy(NIB_DATA / "minc1_1_scale.mnc", t / "brain.nii")
        return Bad("not a NIfTI file", "brain.nii", input=t / "brain.nii")

    def jpeg_as_nrrd(t):
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("L", (16, 16)).save(buffer, format="JPEG")
        (t / "photo.nrrd").write_bytes(buffer.getvalue())
        return Bad("not an NRRD file (it is a JPEG image)", "photo.nrrd", input=t / "photo.nrrd")

    def text_as_mha(t):
        (t / "notes.mha").write_text("shopping list\n" * 20)
        return Bad("not a MetaImage file", "notes.mha", input=t / "notes.mha")

    def mhd_without_raw(t):
        (t / "lost.mhd").write_text(
            "ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_FLOAT\nElementDataFile = lost.raw\n"
        )
        return Bad("unreadable", "lost.mhd", input=t / "lost.mhd")

    def nrrd_bad_header(t):
        (t / "bad.nrrd").write_bytes(b"NRRD0004\ntype: float\ndimension: three\n\n" + b"\0" * 64)
        return Bad("unreadable", "bad.nrrd", input=t / "bad.nrrd")

    def folder_named_like_a_file(t):
        (t / "scan.nii.gz").mkdir()
        return Bad("no volumes", "scan.nii.gz", input=t / "scan.nii.gz")

    def empty_folder(t):
        (t / "nothing").mkdir()
        return Bad("no volumes", "nothing", input=t / "nothing")

    def other_suffix(t):
        (t / "notes.txt").write_text("not an image")
        return Bad("unreadable", "notes.txt", input=t / "notes.txt")

    return {
        "missing file": lambda t: Bad("no such file or folder", "absent.nii.gz", input=t / "absent.nii.gz"),
        "empty file": lambda t: Bad(
            "not a NIfTI file (it is empty)", "empty.nii.gz", input=_bytes(t / "empty.nii.gz", b"")
        ),
        "random bytes": lambda t: Bad("not a NIfTI file", "noise.nii", input=_bytes(t / "noise.nii", os.urandom(4096))),
        "truncated gzip": truncated_gz,
        "truncated data": truncated_nii,
        "png renamed .nii": lambda t: Bad(
            "not a NIfTI file (it is a PNG image)", "slice.nii", input=_png(t / "slice.nii")
        ),
        "png renamed .nii.gz": lambda t: Bad(
            "not a NIfTI file (it is a PNG image)", "slice.nii.gz", input=_png(t / "slice.nii.gz")
        ),
        "gzip of text": gz_text,
        "a MINC file renamed .nii (real file)": minc_as_nii,
        "jpeg renamed .nrrd": jpeg_as_nrrd,
        "text renamed .mha": text_as_mha,
        "metaimage without its data": mhd_without_raw,
        "nrrd with a broken header": nrrd_bad_header,
        "a folder named like a file": folder_named_like_a_file,
        "an empty folder": empty_folder,
        "not an image format": other_suffix,
    }


def _values():
    def one_inf(t):
        data = np.random.default_rng(0).normal(size=(20, 18, 12)).astype(np.float32)
        data[3, 4, 5] = np.inf
        return Bad("contains NaN or infinite values", "inf.nii.gz", input=_volume(t / "inf.nii.gz", data))

    def one_nan(t):
        data = np.random.default_rng(0).normal(size=(20, 18, 12)).astype(np.float32)
        data[0, 0, 0] = np.nan
        return Bad("contains NaN or infinite values", "onenan.nii.gz", input=_volume(t / "onenan.nii.gz", data))

    return {
        "all NaN": lambda t: Bad(
            "contains NaN or infinite values",
            "nan.nii.gz",
            input=_volume(t / "nan.nii.gz", np.full((20, 18, 12), np.nan, np.float32)),
        ),
        "one NaN": one_nan,
        "one infinite voxel": one_inf,
        "all zero": lambda t: Bad(
            "empty volume (every voxel is 0)",
            "zero.nii.gz",
            input=_volume(t / "zero.nii.gz", np.zeros((20, 18, 12), np.float32)),
        ),
        "constant": lambda t: Bad(
            "empty volume (every voxel is 5)",
            "five.nii.gz",
            input=_volume(t / "five.nii.gz", np.full((20, 18, 12), 5, np.int16)),
        ),
        "a zero-length axis": lambda t: Bad(
            "empty", "flat.nii.gz", input=_volume(t / "flat.nii.gz", np.zeros((20, 0, 12), np.float32))
        ),
    }


def _dimensions():
    return {
        "2D image to a 3D bundle": lambda t: Bad(
            "not a volume", "slice.nii.gz", input=_volume(t / "slice.nii.gz", np.random.rand(20, 18).astype(np.float32))
        ),
        "1D": lambda t: Bad(
            "not a volume", "line.nii.gz", input=_volume(t / "line.nii.gz", np.random.rand(40).astype(np.float32))
        ),
        "two channels (real 4D file)": lambda t: Bad(
            "wrong channel count: 2 channel(s), the network takes 1",
            "example4d.nii.gz",
            input=_copy(NIB_DATA / "example4d.nii.gz", t),
        ),
        "a time series (real 4D file)": lambda t: Bad(
            "wrong channel count", "functional.nii", input=_copy(NIB_DATA / "functional.nii", t)
        ),
        "5D": lambda t: Bad(
            "not a volume",
            "five.nii.gz",
            input=_volume(t / "five.nii.gz", np.random.rand(8, 8, 8, 1, 2).astype(np.float32)),
        ),
        "CIFTI matrix (real file)": lambda t: Bad(
            "row_major.dconn.nii", "row_major.dconn.nii", input=_copy(NIB_DATA / "row_major.dconn.nii", t)
        ),
    }


def _headers():
    def zero_spacing(h):
        h.set_qform(None, code=0)
        h.set_sform(None, code=0)
        h["pixdim"][1:4] = [0.8, 0.0, 2.0]

    def nan_sform(h):
        h["sform_code"] = 1
        h["srow_x"] = [np.nan, 0, 0, 0]

    def singular_sform(h):
        h.set_qform(None, code=0)
        h["sform_code"] = 1
        h["srow_x"], h["srow_y"], h["srow_z"] = [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 2, 0]

    def dims_beyond_data(h):
        h["dim"][1:4] = [400, 400, 400]

    return {
        "zero voxel spacing": lambda t: Bad(
            "degenerate affine", "spacing0.nii", input=_with_header(t / "spacing0.nii", zero_spacing)
        ),
        "NaN in the sform": lambda t: Bad(
            "degenerate affine", "nansform.nii", input=_with_header(t / "nansform.nii", nan_sform)
        ),
        "collinear axes": lambda t: Bad(
            "degenerate affine", "collinear.nii", input=_with_header(t / "collinear.nii", singular_sform)
        ),
        "dimensions beyond the data": lambda t: Bad(
            "unreadable", "huge.nii", input=_with_header(t / "huge.nii", dims_beyond_data)
        ),
    }


def _dicom():
    def gap(t):
        folder = _series(t / "gap")
        (folder / "IM0005.dcm").unlink()
        return Bad("1 missing slice(s)", "gap", input=folder)

    def no_pixels(t):
        folder = _series(t / "nopixels")
        ds = pydicom.dcmread(folder / "IM0004.dcm")
        del ds.PixelData
        ds.save_as(folder / "IM0004.dcm")
        return Bad("IM0004.dcm: no pixel data", "nopixels", input=folder)

    def truncated(t):
        folder = _series(t / "truncated")
        raw = (folder / "IM0006.dcm").read_bytes()
        (folder / "IM0006.dcm").write_bytes(raw[:-700])
        return Bad("IM0006.dcm: truncated", "truncated", input=folder)

    def stray(t):
        folder = _series(t / "stray")
        ds = pydicom.dcmread(folder / "IM0003.dcm")
        ds.ImagePositionPatient = [float(v) + (1.0 if i == 2 else 0.0) for i, v in enumerate(ds.ImagePositionPatient)]
        ds.save_as(folder / "IM0003.dcm")
        return Bad("off the", "stray", input=folder)

    def garbage(t):
        folder = _series(t / "garbage")
        raw = bytearray((folder / "IM0002.dcm").read_bytes())
        raw[132:400] = os.urandom(268)
        (folder / "IM0002.dcm").write_bytes(bytes(raw))
        return Bad("IM0002.dcm", "garbage", input=folder)

    def two_series(t):
        folder = t / "mixed"
        folder.mkdir()
        for f in (
            list(CT5N.iterdir())[:2] + list((PYDICOM_FILES / "dicomdirtests" / "98892003" / "MR700").iterdir())[:2]
        ):
            shutil.copy(f, folder / f"{f.parent.name}_{f.name}")
        return Bad("2 DICOM series; choose one with --series", "mixed", input=folder)

    return {
        "missing slice": gap,
        "no pixel data": no_pixels,
        "truncated pixel data": truncated,
        "a slice off the grid": stray,
        "a corrupted header": garbage,
        "several series": two_series,
        "a SEG object (real file)": lambda t: Bad(
            "not an image: Segmentation Storage (SEG)",
            "liver_1frame.dcm",
            input=_copy(PYDICOM_FILES / "liver_1frame.dcm", t),
        ),
        "a truncated MR (real file)": lambda t: Bad(
            "MR_truncated.dcm", "MR_truncated.dcm", input=_copy(PYDICOM_FILES / "MR_truncated.dcm", t)
        ),
    }


def _checkpoints():
    def ckpt(name, write, message):
        def build(t):
            path = t / name
            write(path)
            return Bad(
                message, name, args=["--checkpoint", str(path)], input=_volume(t / "in" / "v.nii.gz"), inputs=[path]
            )

        return build

    def truncated(path):
        buffer = io.BytesIO()
        torch.save(torch.nn.Conv3d(1, 3, 3).state_dict(), buffer)
        path.write_bytes(buffer.getvalue()[:300])

    return {
        "missing checkpoint": lambda t: Bad(
            "missing checkpoint",
            "gone.pt",
            args=["--checkpoint", str(t / "gone.pt")],
            input=_volume(t / "in" / "v.nii.gz"),
        ),
        "truncated checkpoint": ckpt("cut.pt", truncated, "a damaged or truncated checkpoint"),
        "empty checkpoint": ckpt("empty.pt", lambda p: p.write_bytes(b""), "an empty file, not a checkpoint"),
        "not a checkpoint": ckpt("noise.pt", lambda p: p.write_bytes(b"weights? no" * 30), "not a PyTorch checkpoint"),
        "a pickled network (unsafe)": ckpt(
            "whole.pt",
            lambda p: torch.save(torch.nn.Conv3d(1, 3, 3), p),
            "holds pickled Python objects (torch.nn.modules.conv.Conv3d) besides weights, which are not loaded",
        ),
        "a foreign network": ckpt(
            "other.pt",
            lambda p: torch.save(torch.nn.Conv3d(1, 3, 3).state_dict(), p),
            "weights do not fit the configured network",
        ),
        "no weights inside": ckpt("meta.pt", lambda p: torch.save({"epoch": 3}, p), "holds no weights"),
        "weights of another dimension": lambda t: Bad(
            "weights do not fit the configured network (spatial_dims: trained 3, configured 2;",
            "model.pt",
            args=["--set", "spatial_dims=2", "--set", "patch_size=[16,16]"],
            input=_volume(t / "in" / "v.nii.gz"),
        ),
    }


def _options():
    def opt(*args, message, names, code=2):
        return lambda t: Bad(message, names, args=list(args), input=_volume(t / "in" / "v.nii.gz"), code=code)

    def no_cuda(*args, message):
        def build(t):
            if torch.cuda.is_available():
                pytest.skip("this machine has CUDA")
            return opt(*args, message=message, names=f"--device {args[-1]}")(t)

        return build

    def config_broken(t):
        (t / "broken.json").write_text("{ not json")
        return Bad(
            "not a JSON config",
            "broken.json",
            args=["--config", str(t / "broken.json")],
            input=_volume(t / "in" / "v.nii.gz"),
            inputs=[t / "broken.json"],
        )

    return {
        "--device cuda without CUDA": no_cuda("--device", "cuda", message="CUDA is not available"),
        "--device cuda:3 without CUDA": no_cuda("--device", "cuda:3", message="CUDA is not available"),
        "--device banana": opt("--device", "banana", message="not a device", names="--device banana"),
        "--device xla (not supported)": opt("--device", "xla", message="not supported", names="--device xla"),
        "--set an unknown key": opt(
            "--set", "nope=3", message="the bundle's config has no 'nope'", names="--set nope=3"
        ),
        "--set a key inside the network": opt(
            "--set", "network_def#nope=3", message="has no 'network_def#nope'", names="--set network_def#nope=3"
        ),
        "--set a near miss": opt(
            "--set", "patch_sizes=[16,16,16]", message="did you mean 'patch_size'?", names="patch_sizes"
        ),
        "--set spatial_dims=7": opt(
            "--set", "spatial_dims=7", message="the bundles are 2D or 3D", names="--set spatial_dims=7"
        ),
        "--set patch_size=abc": opt(
            "--set", "patch_size=abc", message="expected a list", names='--set patch_size="abc"'
        ),
        "--set patch_size of the wrong length": opt(
            "--set",
            "patch_size=[16,16]",
            message="patch_size [16, 16] has 2 value(s) for spatial_dims 3",
            names="patch_size",
        ),
        "--set out_channels=0": opt("--set", "out_channels=0", message="at least 1", names="--set out_channels=0"),
        "--set amp=yes": opt("--set", "amp=yes", message="expected true or false", names='--set amp="yes"'),
        "--set without a value": opt("--set", "spatial_dims", message="expected KEY=VALUE", names="spatial_dims"),
        "--format dicom-seg for a NIfTI input": opt(
            "--format", "dicom-seg", message="needs a DICOM series as input", names="v.nii.gz"
        ),
        "--series for a NIfTI input": opt(
            "--series", "1.2.3", message="--series selects a DICOM series", names="v.nii.gz"
        ),
        "--store without DICOMweb": opt("--store", message="--store sends a DICOM output", names="--store"),
        "--overwrite with --skip-existing": opt(
            "--overwrite", "--skip-existing", message="exclude each other", names="--skip-existing"
        ),
        "--overlap 1.5": opt("--overlap", "1.5", message="must be at least 0 and below 1", names="--overlap 1.5"),
        "--sw-batch-size 0": opt("--sw-batch-size", "0", message="at least 1 window", names="--sw-batch-size 0"),
        "a missing --config": opt(
            "--config", "/no/such/overlay.json", message="missing config file", names="/no/such/overlay.json"
        ),
        "a broken --config": config_broken,
        "a DICOMweb URL with a password, no server": lambda t: Bad(
            "bob:***@127.0.0.1:9",
            "/studies/1.2.3",
            input="http://bob:s3cret@127.0.0.1:9/dicom-web/studies/1.2.3",
            secret="s3cret",
        ),
        "not a bundle": lambda t: Bad(
            "missing config file", "configs", args=["--bundle", str(t)], input=_volume(t / "in" / "v.nii.gz")
        ),
    }


def _outputs():
    def exists(t):
        source = _volume(t / "in" / "v.nii.gz")
        (t / "out").mkdir()
        (t / "out" / "v_seg.nii.gz").write_bytes(b"an earlier result")
        return Bad(
            "v_seg.nii.gz: exists (pass --overwrite", "v_seg.nii.gz", input=source, inputs=[t / "out" / "v_seg.nii.gz"]
        )

    def output_is_a_file(t):
        (t / "out").write_text("a file where the folder should be")
        return Bad("a file, not a folder", "--output", input=_volume(t / "in" / "v.nii.gz"), inputs=[t / "out"])

    def name_clash(t):
        _volume(t / "in" / "a.nii")
        _volume(t / "in" / "a.nii.gz")
        return Bad("would both be written to", "a_seg.nii.gz", input=t / "in")

    def into_the_input(t):
        _volume(t / "in" / "a.nii.gz")
        return Bad("is the input folder", "--output", args=["--output", str(t / "in")], input=t / "in")

    def full_disk(t):
        return Bad(
            "v_seg.nii.gz: could not be written (No space left on device)",
            "v_seg.nii.gz",
            input=_volume(t / "in" / "v.nii.gz"),
        )

    def read_only(t):
        return Bad(
            "v_seg.nii.gz: could not be written (Permission denied)",
            "v_seg.nii.gz",
            input=_volume(t / "in" / "v.nii.gz"),
        )

    return {
        "an existing output": exists,
        "--output is a file": output_is_a_file,
        "two cases, one output name": name_clash,
        "--output is the input folder": into_the_input,
        "a full disk": full_disk,
        "a read-only output folder": read_only,
    }


def _second_corpus():
    """The next corpus tried from outside: headers that disagree or lie, values that would flatten
    normalisation, damaged rescaling, a DICOMDIR without its files, names that would split the line."""

    def qform_sform(t):
        image = nib.Nifti1Image(np.random.default_rng(0).normal(size=(20, 18, 12)).astype(np.float32), None)
        image.set_qform(np.diag([0.8, 0.8, 2.0, 1.0]), code=1)
        moved = np.diag([0.8, 0.8, 2.0, 1.0])
        moved[0, 3] = 10.0
        image.set_sform(moved, code=2)  # "aligned": nibabel uses it, ITK the qform
        nib.save(image, str(t / "qs.nii.gz"))
        return Bad("its qform and sform place the image up to 10.0 mm apart", "qs.nii.gz", input=t / "qs.nii.gz")

    def complex_voxels(t):
        data = (np.random.default_rng(0).normal(size=(20, 18, 12)) * (1 + 1j)).astype(np.complex64)
        return Bad("complex voxels (complex64)", "complex.nii.gz", input=_volume(t / "complex.nii.gz", data))

    def huge_voxel(t):
        data = np.random.default_rng(0).normal(size=(20, 18, 12)).astype(np.float32)
        data[4, 5, 6] = 3e38
        return Bad("an intensity of 3e+38", "huge.nii.gz", input=_volume(t / "huge.nii.gz", data))

    def outlier(t):
        data = np.random.default_rng(0).normal(size=(20, 18, 12))
        data[1, 2, 3] = 1e9  # float64: finite statistics, but every other voxel would normalise to the same value
        return Bad(
            "an intensity of 1e+09 where 99% of the voxels lie in",
            "spike.nii.gz",
            input=_volume(t / "spike.nii.gz", data),
        )

    def claims_2gib(t):
        image = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
        image.header["dim"][1:4] = [1024, 1024, 512]  # float32: 2 GiB of voxels
        raw = gzip.compress(image.header.binaryblock + b"\0" * 4 + b"\1" * 256)
        return Bad(
            "need 2,147,484,000 bytes; the file holds at most", "claims.nii.gz", input=_bytes(t / "claims.nii.gz", raw)
        )

    def rescale_slope_zero(t):
        folder = _series(t / "slope0")
        ds = pydicom.dcmread(folder / "IM0003.dcm")
        ds.RescaleSlope = 0
        ds.save_as(folder / "IM0003.dcm")
        return Bad("RescaleSlope 0", "IM0003.dcm", input=folder)

    def dicomdir_without_files(t):
        shutil.copytree(PYDICOM_FILES / "dicomdirtests", t / "disc")
        for f in (t / "disc").rglob("*"):
            if f.is_file() and not f.name.startswith("DICOMDIR"):
                f.unlink()
        return Bad("the DICOMDIR lists 31 file(s) that do not exist", "DICOMDIR", input=t / "disc" / "DICOMDIR")

    def newline_in_name(t):
        return Bad("not a NIfTI file (it is a PNG image)", "a\\nb.nii.gz", input=_png(t / "a\nb.nii.gz"))

    def escape_in_name(t):
        return Bad("not a NIfTI file (it is a PNG image)", "x\\x1b[2Ky.nii.gz", input=_png(t / "x\x1b[2Ky.nii.gz"))

    return {
        "qform and sform disagree where readers differ": qform_sform,
        "complex voxels": complex_voxels,
        "one voxel of 3e38": huge_voxel,
        "one voxel a billion times the rest": outlier,
        "a 69-byte .nii.gz claiming 2 GiB": claims_2gib,
        "RescaleSlope 0": rescale_slope_zero,
        "a DICOMDIR whose files are missing": dicomdir_without_files,
        "a newline in the file name": newline_in_name,
        "an escape sequence in the file name": escape_in_name,
    }


CASES = {
    f"{group}: {name}": build
    for group, cases in (
        ("file", _files()),
        ("values", _values()),
        ("dimensions", _dimensions()),
        ("header", _headers()),
        ("dicom", _dicom()),
        ("checkpoint", _checkpoints()),
        ("option", _options()),
        ("output", _outputs()),
        ("corpus 2", _second_corpus()),
    )
    for name, build in cases.items()
}


def test_there_are_at_least_fifty_hostile_cases():
    assert len(CASES) >= 50


def _digest(paths) -> str:
    h = hashlib.sha256()
    for path in paths:
        for p in (
            [path] if path.is_file() else sorted(q for q in path.rglob("*") if q.is_file()) if path.exists() else []
        ):
            h.update(str(p).encode() + p.read_bytes() + oct(p.stat().st_mode).encode())
    return h.hexdigest()


def _inject(name: str, monkeypatch) -> None:
    """A full disk or a read-only folder, at the moment the mask is written (CI runs as root, whom file
    modes do not stop): the writer fails half-way, as the kernel would make it."""
    import nibabel

    failure = {
        "output: a full disk": (errno.ENOSPC, "No space left on device"),
        "output: a read-only output folder": (errno.EACCES, "Permission denied"),
    }
    if name not in failure:
        return
    code, text = failure[name]

    def fail(image, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\0" * 64)  # half a file
        raise OSError(code, text, str(filename))

    monkeypatch.setattr(nibabel, "save", fail)


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_input_gets_one_line_a_non_zero_exit_and_no_output(name, bundle, tmp_path, monkeypatch):
    case = CASES[name](tmp_path)
    args = list(case.args)
    if "--bundle" not in args:
        args = ["--bundle", str(bundle)] + args
    if "--output" not in args:
        args += ["--output", str(tmp_path / "out")]
    inputs = [p for p in [case.input] + case.inputs if isinstance(p, Path)] + [bundle]
    before = _digest(inputs)
    outputs_before = sorted(p.name for p in (tmp_path / "out").iterdir()) if (tmp_path / "out").is_dir() else None
    _inject(name, monkeypatch)

    proc = _cli("--input", str(case.input), *args)

    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == case.code, (proc.returncode, proc.stderr[-2000:])
    assert len(errors) == 1, proc.stderr[-3000:]
    assert case.message in errors[0] and case.names in errors[0], errors[0]
    assert "Traceback" not in proc.stderr
    assert case.secret is None or case.secret not in proc.stdout + proc.stderr
    assert _digest(inputs) == before  # nothing read was changed
    out = tmp_path / "out"
    if out.is_dir():
        assert sorted(p.name for p in out.iterdir()) == (outputs_before or [])  # nothing new, no temporary file
