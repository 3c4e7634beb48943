"""``python -m monai_ext segment``: geometry kept for NIfTI and DICOM inputs, DICOM SEG out, clear errors."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import BUNDLES_DIR, LIGHT
from monai.bundle import ConfigParser

import monai_ext.data.volume_io as vio
from monai_ext.apps import segment
from monai_ext.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
NIB_DATA = Path(nib.__file__).parent / "tests" / "data"
DICOM = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"
CT5N, CT2, MR700 = DICOM / "98892001" / "CT5N", DICOM / "77654033" / "CT2", DICOM / "98892003" / "MR700"
SMALL_3D = {"spatial_dims": 3, "patch_size": [16, 16, 16]}


@pytest.fixture(scope="module")
def bundle(random_unet_3d):
    return random_unet_3d


def _digest(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def _cli(*args):
    """``python -m monai_ext segment ...`` in this process (``main`` is what the module runs)."""
    import contextlib
    import io

    from monai_ext.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["segment", *args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_oblique_nifti_keeps_shape_affine_and_world_coordinates(bundle, tmp_path):
    source = NIB_DATA / "anatomical.nii"  # big-endian int16, LAS
    before = _digest(source)
    (result,) = segment(bundle, source, tmp_path, device="cpu", overrides=SMALL_3D, progress=False)
    assert result.error is None and result.output == tmp_path / "anatomical_seg.nii.gz"
    assert set(result.seconds) == {"read", "preprocess", "predict", "postprocess", "write"}
    image, mask = nib.load(str(source)), nib.load(str(result.output))
    assert mask.shape == image.shape
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-5)
    index = np.array([3, 17, 9, 1.0])  # a voxel maps to the same world point in input and output
    np.testing.assert_allclose(mask.affine @ index, image.affine @ index, atol=1e-4)
    assert _digest(source) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_dicom_series_to_nifti_and_to_dicom_seg(bundle, tmp_path):
    (nifti,) = segment(bundle, CT5N, tmp_path / "nii", device="cpu", overrides=SMALL_3D, progress=False)
    reference = vio.read_volume(CT5N)
    mask = nib.load(str(nifti.output))
    assert mask.shape == tuple(reference.image.shape[1:])
    np.testing.assert_allclose(mask.affine, reference.image.affine.numpy(), atol=1e-4)

    (seg,) = segment(
        bundle, CT5N, tmp_path / "seg", device="cpu", output_format="dicom-seg", overrides=SMALL_3D, progress=False
    )
    assert seg.output.suffix == ".dcm"
    dataset = hd.seg.segread(seg.output)
    uids = [h.SOPInstanceUID for h in reference.series.headers]
    frames = dataset.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, skip_overlap_checks=True
    )
    # the SEG's frames are the NIfTI mask's slices, on the source images' grid
    order = [
        reference.geometry.index[[str(s.path) for s in reference.geometry.slices].index(h.filename)]
        for h in reference.series.headers
    ]
    np.testing.assert_array_equal(np.transpose(frames, (2, 1, 0)), np.asarray(mask.dataobj)[:, :, order])
    assert dataset.ReferencedSeriesSequence[0].SeriesInstanceUID == reference.series.uid


def test_folder_of_cases_and_no_overwrite_without_the_flag(bundle, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(NIB_DATA / "anatomical.nii", cases / "a.nii")
    shutil.copytree(CT5N, cases / "ct")
    results = segment(bundle, cases, tmp_path / "out", device="cpu", overrides=SMALL_3D, progress=False)
    assert sorted(r.output.name for r in results) == ["a_seg.nii.gz", "ct_seg.nii.gz"]
    again = segment(bundle, cases, tmp_path / "out", device="cpu", overrides=SMALL_3D, progress=False)
    assert all(r.output is None and "exists (pass --overwrite" in r.error for r in again)
    again = segment(bundle, cases, tmp_path / "out", device="cpu", overrides=SMALL_3D, overwrite=True, progress=False)
    assert all(r.error is None for r in again)


def test_a_2d_bundle_segments_a_volume_slice_by_slice(tmp_path):
    root = tmp_path / "unet2d"
    shutil.copytree(BUNDLES_DIR / "unet", root)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    (root / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    (result,) = segment(root, NIB_DATA / "anatomical.nii", tmp_path / "out", device="cpu", progress=False)
    assert result.error is None and nib.load(str(result.output)).shape == (33, 41, 25)


def _write_nifti(path, data):
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def test_bad_inputs_end_with_one_line_and_a_non_zero_exit(bundle, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in list(CT5N.iterdir())[:2] + list(MR700.iterdir())[:2]:
        shutil.copy(f, mixed / f"{f.parent.name}_{f.name}")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not a nifti file")
    flat = _write_nifti(tmp_path / "flat.nii.gz", np.zeros((12, 12, 12), np.float32))
    nan = _write_nifti(tmp_path / "nan.nii.gz", np.full((12, 12, 12), np.nan, np.float32))
    image2d = _write_nifti(tmp_path / "slice.nii.gz", np.random.rand(20, 20).astype(np.float32))
    from monai_ext.data.dicom.export import write_dicom_series

    series = np.random.default_rng(0).integers(0, 500, size=(40, 40, 8)).astype(np.int16)
    for name in ("gap", "nopixels", "truncated"):  # 8 slices at 2.5 mm, each broken one way
        write_dicom_series(series, np.diag([-0.5, -0.5, 2.5, 1.0]), tmp_path / name)
    (tmp_path / "gap" / "IM0005.dcm").unlink()
    ds = pydicom.dcmread(tmp_path / "nopixels" / "IM0004.dcm")
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels" / "IM0004.dcm")
    raw = (tmp_path / "truncated" / "IM0006.dcm").read_bytes()
    (tmp_path / "truncated" / "IM0006.dcm").write_bytes(raw[:-700])
    seg_file = Path(pydicom.__file__).parent / "data" / "test_files" / "liver_1frame.dcm"
    cases = {
        tmp_path / "missing.nii.gz": "no such file or folder",
        broken: "unreadable",
        flat: "empty volume",
        nan: "NaN",
        image2d: "not a volume",
        NIB_DATA / "example4d.nii.gz": "wrong channel count: 2 channel(s), the network takes 1",
        mixed: "2 DICOM series; choose one with --series",
        CT2: "missing slice(s)",
        MR700: "different orientations",
        tmp_path / "gap": "1 missing slice(s): a 5.000 mm gap between IM0004.dcm and IM0006.dcm",
        tmp_path / "nopixels": "IM0004.dcm: no pixel data",
        tmp_path / "truncated": "IM0006.dcm: truncated",
        seg_file: "not an image: Segmentation Storage (SEG)",
    }
    common = [
        "--bundle",
        str(bundle),
        "--output",
        str(tmp_path / "out"),
        "--set",
        "spatial_dims=3",
        "--set",
        "patch_size=[16,16,16]",
    ]
    for path, message in cases.items():
        before = _digest(path) if path.exists() else None
        proc = _cli("--input", str(path), *common)
        assert proc.returncode != 0, path
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0] and path.name in errors[0], (path, proc.stderr[-2000:])
        if before:
            assert _digest(path) == before
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

    proc = _cli("--input", str(NIB_DATA / "anatomical.nii"), "--format", "dicom-seg", *common)
    assert proc.returncode != 0 and "needs a DICOM series" in proc.stderr
    empty = tmp_path / "empty_bundle"
    shutil.copytree(bundle, empty)
    (empty / "models" / "model.pt").unlink()
    proc = _cli("--input", str(CT5N), "--bundle", str(empty), "--output", str(tmp_path / "o2"))
    assert proc.returncode == 2 and "missing checkpoint" in proc.stderr and proc.stderr.count("\n") == 1
    # and as a process, the way users run it
    real = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai_ext",
            "segment",
            "--input",
            str(tmp_path / "nothing"),
            "--bundle",
            str(bundle),
            "--output",
            str(tmp_path / "o4"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert real.returncode == 2 and real.stderr.strip().startswith("error:") and "no such file or folder" in real.stderr
    proc = _cli(
        "--input", str(CT5N), "--bundle", str(bundle), "--output", str(tmp_path / "o3")
    )  # 3D weights, 2D config
    assert proc.returncode == 2 and "weights do not fit the configured network" in proc.stderr


def test_demo_runs_from_an_installed_package(tmp_path):
    """The wheel carries the bundles: the demo runs from it, away from the checkout."""
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in the environment")
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info into the source folder
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for name in ("monai_ext", "datasets", "recipes", "schemas"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(BUNDLES_DIR, source / "bundles")  # as git tracks them
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "wheel"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    import zipfile

    (wheel,) = (tmp_path / "wheel").glob("monai_ext-*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    assert (tmp_path / "site" / "monai_ext" / "datasets" / "promise12.json").is_file()  # the overlays ship too
    assert (tmp_path / "site" / "monai_ext" / "recipes" / "nnunet.json").is_file()  # and the shared recipes
    run = (
        "import runpy, sys, monai_ext; assert monai_ext.__file__.startswith(sys.argv[1]), monai_ext.__file__; "
        "sys.argv = ['monai_ext', 'demo', '--output', sys.argv[2], '--epochs', '2', '--cases', '5']; "
        "runpy.run_module('monai_ext', run_name='__main__')"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "site")}
    proc = subprocess.run(
        [sys.executable, "-c", run, str(tmp_path / "site"), str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "demo"
    report = __import__("json").loads((out / "metrics.json").read_text())
    mask = nib.load(report["mask"])
    source = nib.load(str(out / "data" / report["case"]))
    assert mask.shape == source.shape and np.allclose(mask.affine, source.affine)
    assert 0 <= report["metrics"]["dice_blob"] <= 1
    # every held-out volume is segmented and scored; the mean is what the closing block reports
    datalist = __import__("json").loads((out / "data" / "datalist.json").read_text())
    held = report["heldout"]
    assert (
        held["cases"]
        == len(datalist["test"])
        == len(held["per_case"])
        == len(list((out / "segmentation").glob("*_seg.nii.gz")))
    )
    assert held["dice_tube"] == pytest.approx(np.nanmean([m["dice_tube"] for m in held["per_case"].values()]))
    assert (
        f"held-out Dice blob {held['dice_blob']:.3f}, tube {held['dice_tube']:.3f}" in proc.stdout
        and "lowest held-out" in proc.stdout
    )
    from PIL import Image

    assert max(Image.open(out / "overlay.png").size) >= 512 and Path(report["training_curves"]).is_file()
    # the closing block: where everything is, and the command that reuses the model with nothing to guess
    command = (
        f"python -m monai_ext segment --bundle {report['bundle']} --checkpoint {report['model']} "
        "--input <volume> --output <folder>"
    )
    assert (
        command in proc.stdout
        and str(Path(report["mask"]).parent) in proc.stdout
        and str(out / "overlay.png") in proc.stdout
    )
    reuse = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy, sys; sys.argv = ['monai_ext'] + sys.argv[1:]; runpy.run_module('monai_ext', run_name='__main__')",
            *command.replace("python -m monai_ext ", "")
            .replace("<volume>", str(out / "data" / report["case"]))
            .replace("<folder>", str(tmp_path / "reuse"))
            .split(),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert reuse.returncode == 0, reuse.stderr[-2000:]
    assert "Iter:" not in proc.stdout + proc.stderr  # quiet: no per-iteration lines
    assert {"data", "train", "segment"} <= set(report["seconds"])


def test_oblique_volume_nrrd_and_metaimage_inputs(bundle, tmp_path):
    import itk

    four_d = nib.load(str(NIB_DATA / "example4d.nii.gz"))  # oblique, LAS
    oblique = tmp_path / "oblique.nii.gz"
    frame = np.asarray(four_d.dataobj)[:40, :36, :12, 0]  # a corner keeps the affine: the same index -> world map
    nib.save(nib.Nifti1Image(frame, four_d.affine, four_d.header), str(oblique))
    assert not np.allclose(four_d.affine[:3, :3], np.diag(np.diag(four_d.affine[:3, :3])))  # really oblique
    volume = np.random.default_rng(0).normal(size=(20, 24, 18)).astype(np.float32)
    image = itk.image_from_array(volume)
    image.SetSpacing([0.8, 0.9, 2.0])
    image.SetOrigin([10.0, -5.0, 3.0])
    for suffix in (".nrrd", ".mhd"):
        itk.imwrite(image, str(tmp_path / f"vol{suffix}"))
    for i, source in enumerate((oblique, tmp_path / "vol.nrrd", tmp_path / "vol.mhd")):
        (result,) = segment(bundle, source, tmp_path / f"out{i}", device="cpu", overrides=SMALL_3D, progress=False)
        assert result.error is None, result.error
        reference = vio.read_volume(source)
        mask = nib.load(str(result.output))
        assert mask.shape == tuple(reference.image.shape[1:])
        np.testing.assert_allclose(mask.affine, reference.image.affine.numpy(), atol=1e-4)
    np.testing.assert_allclose(nib.load(str(tmp_path / "out0" / "oblique_seg.nii.gz")).affine, four_d.affine, atol=1e-4)
    cases = tmp_path / "cases"
    cases.mkdir()
    for suffix in (".nrrd", ".mhd", ".raw"):
        shutil.copy(tmp_path / f"vol{suffix}", cases / f"vol{suffix}")
    with pytest.raises(InputError, match="would both be written to"):
        segment(bundle, cases, tmp_path / "clash", device="cpu", overrides=SMALL_3D, progress=False)


def test_a_diffusion_bundle_writes_probability_and_uncertainty_maps(tmp_path):
    root = tmp_path / "medsegdiff"
    shutil.copytree(BUNDLES_DIR / "medsegdiff", root)
    settings = {
        "spatial_dims": 3,
        "patch_size": [16, 16, 16],
        "num_inference_steps": 2,
        "ensemble": 2,
        **LIGHT["medsegdiff"],
    }
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.update(settings)
    (root / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    (result,) = segment(
        root, NIB_DATA / "anatomical.nii", tmp_path / "out", device="cpu", overrides=settings, progress=False
    )
    assert result.error is None, result.error
    image = nib.load(str(NIB_DATA / "anatomical.nii"))
    written = {p.name: nib.load(str(p)) for p in (tmp_path / "out").iterdir()}
    assert set(written) == {f"anatomical_{m}.nii.gz" for m in ("seg", "probability", "variance", "entropy")}
    for name, img in written.items():
        assert img.shape[:3] == image.shape and np.allclose(img.affine, image.affine, atol=1e-5), name
    probability = np.asarray(written["anatomical_probability.nii.gz"].dataobj)
    assert probability.shape == image.shape + (2,) and 0 <= probability.min() and probability.max() <= 1


def test_options_override_the_bundles_inferer_values_and_name_what_it_lacks(bundle, tmp_path):
    (plain,) = segment(
        bundle, NIB_DATA / "anatomical.nii", tmp_path / "plain", device="cpu", overrides=SMALL_3D, progress=False
    )
    (tta,) = segment(
        bundle,
        NIB_DATA / "anatomical.nii",
        tmp_path / "tta",
        device="cpu",
        overrides=SMALL_3D,
        progress=False,
        tta=True,
        sw_batch_size=2,
        overlap=0.25,
    )
    a, b = nib.load(str(plain.output)), nib.load(str(tta.output))
    assert a.shape == b.shape and np.allclose(a.affine, b.affine)
    assert not np.array_equal(
        np.asarray(a.dataobj), np.asarray(b.dataobj)
    )  # eight mirrored passes averaged: another mask
    medsegdiff = tmp_path / "medsegdiff"
    shutil.copytree(BUNDLES_DIR / "medsegdiff", medsegdiff)
    with pytest.raises(
        InputError, match="--tta: the bundle's inferer .*DiffusionSegmentationInferer.* has no 'tta_axes'"
    ):
        segment(medsegdiff, NIB_DATA / "anatomical.nii", tmp_path / "out", device="cpu", tta=True, progress=False)


def test_a_stopped_folder_run_is_finished_with_skip_existing_and_summarised(bundle, tmp_path, monkeypatch):
    cases = tmp_path / "cases"
    cases.mkdir()
    for name in ("a", "b", "c"):
        _write_nifti(
            cases / f"{name}.nii.gz", np.random.default_rng(ord(name)).normal(size=(20, 18, 12)).astype(np.float32)
        )
    out = tmp_path / "out"
    common = [
        "--bundle",
        str(bundle),
        "--input",
        str(cases),
        "--output",
        str(out),
        "--set",
        "spatial_dims=3",
        "--set",
        "patch_size=[16,16,16]",
    ]
    first = [*common[:2], "--input", str(cases / "a.nii.gz"), *common[4:]]
    assert _cli(*first).returncode == 0  # the run that was stopped after case a...
    stale = out / ".b_seg.nii.gz.999999999.tmp.nii.gz"  # ...while writing case b (its process is gone)
    stale.write_bytes(b"half a file")
    mine = out / f".other.nii.gz.{os.getpid()}.tmp.nii.gz"  # a running process's temporary file is not touched
    mine.write_bytes(b"being written")
    a_before = _digest(out / "a_seg.nii.gz")

    proc = _cli(*common, "--skip-existing")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "segment: 2 written, 1 skipped, 0 failed of 3 case(s)" in proc.stdout
    assert not stale.exists() and mine.exists()
    mine.unlink()
    assert sorted(p.name for p in out.iterdir()) == ["a_seg.nii.gz", "b_seg.nii.gz", "c_seg.nii.gz"]
    assert _digest(out / "a_seg.nii.gz") == a_before  # skipped, not rewritten

    again = _cli(*common)  # without --skip-existing or --overwrite every case fails: nothing could be done
    assert again.returncode == 2 and "0 written, 0 skipped, 3 failed" in again.stdout
    assert again.stderr.count("error:") == 3 and "--skip-existing to keep it" in again.stderr


def test_a_full_disk_fails_the_case_it_hits_names_the_file_and_keeps_earlier_outputs(bundle, tmp_path, monkeypatch):
    import errno

    import nibabel

    cases = tmp_path / "cases"
    cases.mkdir()
    for name in ("a", "b"):
        _write_nifti(cases / f"{name}.nii.gz", np.random.default_rng(1).normal(size=(20, 18, 12)).astype(np.float32))
    real_save = nibabel.save

    def disk_fills_up(image, filename, *args, **kwargs):
        if "b_seg" in str(filename):
            Path(filename).write_bytes(b"\0" * 64)
            raise OSError(errno.ENOSPC, "No space left on device", str(filename))
        return real_save(image, filename, *args, **kwargs)

    monkeypatch.setattr(nibabel, "save", disk_fills_up)
    out = tmp_path / "out"
    proc = _cli(
        "--bundle",
        str(bundle),
        "--input",
        str(cases),
        "--output",
        str(out),
        "--set",
        "spatial_dims=3",
        "--set",
        "patch_size=[16,16,16]",
    )
    assert proc.returncode == 1  # some cases done, some failed
    assert "segment: 1 written, 0 skipped, 1 failed of 2 case(s)" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {out / 'b_seg.nii.gz'}: could not be written (No space left on device); earlier outputs are kept"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["a_seg.nii.gz"]  # and no temporary file
    assert nib.load(str(out / "a_seg.nii.gz")).shape == (20, 18, 12)


def test_segment_runs_the_network_on_each_backend_and_caches_it_beside_the_weights(bundle, tmp_path):
    source = NIB_DATA / "anatomical.nii"
    (eager,) = segment(bundle, source, tmp_path / "torch", device="cpu", overrides=SMALL_3D, progress=False)
    for backend in ("openvino", "onnxruntime", "pt2"):
        (result,) = segment(
            bundle, source, tmp_path / backend, device="cpu", overrides=SMALL_3D, progress=False, backend=backend
        )
        assert result.error is None, result.error
        a, b = np.asarray(nib.load(str(result.output)).dataobj), np.asarray(nib.load(str(eager.output)).dataobj)
        assert (a == b).mean() > 0.999  # the same logits to 1e-4: only exact ties may differ
        np.testing.assert_allclose(nib.load(str(result.output)).affine, nib.load(str(eager.output)).affine)
    cached = sorted(p.suffix for p in (bundle / "models" / "compiled").iterdir())
    assert ".xml" in cached and ".onnx" in cached and ".pt2" in cached
    shutil.rmtree(bundle / "models" / "compiled")  # the bundle fixture is shared


def test_label_maps_stay_uint8_from_the_arg_max_to_the_writer(bundle, tmp_path, monkeypatch):
    from monai_ext.apps.segment import OutputWriter

    handed = {}
    write = OutputWriter.write

    def spy(self, outputs, *args):
        handed.update(outputs)
        return write(self, outputs, *args)

    monkeypatch.setattr(OutputWriter, "write", spy)
    source = NIB_DATA / "anatomical.nii"  # LAS, 2 x 2 x 2.2 mm: reoriented and resampled to 1.5 mm and back
    (result,) = segment(
        bundle, source, tmp_path, device="cpu", overrides={**SMALL_3D, "pixdim": [1.5, 1.5, 1.5]}, progress=False
    )
    assert result.error is None
    assert handed["pred"].dtype == torch.uint8 and tuple(handed["pred"].shape[1:]) == nib.load(str(source)).shape
    monais = {
        **SMALL_3D,
        "pixdim": [1.5, 1.5, 1.5],
        "postprocessing#transforms#0#_target_": "Invertd",
    }  # MONAI's: float32 grid_sample
    (reference,) = segment(bundle, source, tmp_path / "monai", device="cpu", overrides=monais, progress=False)
    assert handed["pred"].dtype == torch.float32
    assert np.array_equal(
        np.asarray(nib.load(str(result.output)).dataobj), np.asarray(nib.load(str(reference.output)).dataobj)
    )


def test_outputs_keep_the_inputs_nifti_header_codes(bundle, tmp_path):
    image = nib.load(str(NIB_DATA / "anatomical.nii"))
    mni = nib.Nifti1Image(np.asarray(image.dataobj), image.affine)
    mni.set_sform(image.affine, code=4)  # MNI-152 coordinates, no qform, micrometres
    mni.set_qform(None, code=0)
    mni.header.set_xyzt_units("micron", "sec")
    nib.save(mni, str(tmp_path / "mni.nii.gz"))
    for source, expected in ((NIB_DATA / "anatomical.nii", (2, 2, 10)), (tmp_path / "mni.nii.gz", (0, 4, 11))):
        (result,) = segment(bundle, source, tmp_path / "out", device="cpu", overrides=SMALL_3D, progress=False)
        header = nib.load(str(result.output)).header
        assert (int(header["qform_code"]), int(header["sform_code"]), int(header["xyzt_units"])) == expected
        np.testing.assert_allclose(nib.load(str(result.output)).affine, nib.load(str(source)).affine, atol=1e-5)
    (series,) = segment(
        bundle, CT5N, tmp_path / "dicom", device="cpu", overrides=SMALL_3D, progress=False
    )  # DICOM: scanner, mm
    header = nib.load(str(series.output)).header
    assert (int(header["qform_code"]), int(header["sform_code"]), int(header["xyzt_units"])) == (1, 1, 10)
