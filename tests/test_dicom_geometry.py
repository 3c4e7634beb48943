"""Where a DICOM series' voxels lie, against the independent reference: dcm2niix.

1. The slice grid is the least-squares line through every slice position, found without the median gap:
   scanners round positions (0.1 mm on three coordinates in an oblique frame), so neighbouring gaps cycle
   through a few values whose median is not the pitch, and over a long series a biased pitch drifts by
   millimetres. A stray slice is still found and named.
2. Every real multi-slice series in the registry packages we test with (pydicom's test files, pydicom-data),
   and generated oblique, gapped, tilted and multi-frame series, are converted by dcm2niix as well. Where we
   read a volume, dcm2niix writes one NIfTI for it, and the world coordinates of the eight corner voxel
   centres agree within 0.1 mm. Where we refuse, dcm2niix splits, equalises or warns about the same thing:
   that is the documented counterpart (README, "DICOM series").
"""

import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest
from test_dicom import DICOMDIR_TESTS, FILES, LPS_TO_RAS, _with_geometry

from monai_ext.data import dicom
from monai_ext.data.dicom.export import write_dicom_series
from monai_ext.data.volume_io import read_volume
from monai_ext.errors import InputError

GE_PITCH = 6.972  # a real oblique GE MR series that the median-gap fit refused (issue 28)


def _rotation(degrees=(17.0, -23.0, 31.0)):
    """An oblique frame turned about all three axes, so that rounding each LPS coordinate moves a slice
    along its normal by a different amount every slice."""
    x, y, z = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _rounded_series(folder, slices, decimals, pitch=GE_PITCH, size=(8, 6)):
    """An oblique series whose positions are rounded to ``decimals`` as a scanner writes them; returns
    the true (unrounded) positions in LPS and the RAS affine they lie on."""
    affine = np.eye(4)
    affine[:3, :3] = _rotation() @ np.diag([0.9375, 0.9375, pitch])
    affine[:3, 3] = [-61.37, 84.21, -12.93]
    lps = LPS_TO_RAS @ affine
    truth = np.array([lps[:3, 3] + k * lps[:3, 2] for k in range(slices)])
    image = np.arange(size[0] * size[1] * slices, dtype=np.int16).reshape(*size, slices) % 700
    write_dicom_series(image, affine, folder, modality="MR", positions=np.round(truth, decimals).tolist())
    return truth, affine


def _grid(volume, slices):
    """Where the volume puts the centre of voxel (0, 0, k) for every k, in LPS."""
    ras = volume.image.affine.numpy() @ np.stack(
        [np.zeros(slices), np.zeros(slices), np.arange(slices), np.ones(slices)]
    )
    return (LPS_TO_RAS @ ras)[:3].T


@pytest.mark.parametrize("slices, decimals", [(20, 1), (300, 1), (300, 2)])
def test_rounded_oblique_positions_are_read_on_the_least_squares_grid(tmp_path, slices, decimals):
    truth, _ = _rounded_series(tmp_path, slices, decimals)
    normal = _rotation()[:, 2] * np.array([-1, -1, 1])
    rounded = np.round(truth, decimals) @ normal
    if decimals == 1:  # the case this guards: the median neighbouring gap is not the pitch
        assert abs(np.median(np.diff(rounded)) - GE_PITCH) > 0.005 * (20 / slices)
    volume = read_volume(tmp_path)  # default settings
    g = volume.geometry
    assert g.shape[2] == slices and g.index == list(range(slices)) and g.residual < 0.1
    assert g.pitch == pytest.approx(GE_PITCH, abs=0.002 if slices == 20 else 0.0002)
    # every slice of our grid within 0.06 mm of where the scanner put it (its rounding: at most 0.087 mm)
    assert np.abs(_grid(volume, slices) - truth).max() < 0.06


def test_gaps_cycling_through_rounded_values_are_one_grid(tmp_path):
    """Axial slices 0.625 mm apart written to 0.1 mm: the gaps are 0.6, 0.6, 0.7, 0.6, 0.7, ... ."""
    positions = [[-100.0, -120.0, round(-40.0 + 0.625 * k, 1)] for k in range(64)]
    image = np.zeros((6, 6, 64), dtype=np.int16) + np.arange(64, dtype=np.int16)
    write_dicom_series(image, np.diag([-0.7, -0.7, 0.625, 1.0]), tmp_path, positions=positions)
    assert sorted(set(np.round(np.diff([p[2] for p in positions]), 3))) == [0.6, 0.7]
    volume = read_volume(tmp_path)
    assert volume.geometry.pitch == pytest.approx(0.625, abs=1e-3)
    np.testing.assert_array_equal(volume.image[0, 0, 0].numpy(), np.arange(64))


@pytest.mark.parametrize("where", [0, 150, 299])
def test_a_stray_slice_in_a_long_rounded_series_is_refused_naming_it(tmp_path, where):
    truth, affine = _rounded_series(tmp_path, 300, 1)
    moved = tmp_path / f"IM{where + 1:04d}.dcm"
    ds = pydicom.dcmread(moved)
    normal = _rotation()[:, 2] * np.array([-1, -1, 1])
    ds.ImagePositionPatient = np.round(truth[where] + 0.6 * normal, 1).tolist()  # 0.6 mm off a 6.972 mm grid
    ds.save_as(moved)
    with pytest.raises(InputError, match=rf"IM{where + 1:04d}\.dcm lies 0\.[56]\d\d mm off the 6\.97\d mm slice grid"):
        read_volume(tmp_path)


def test_a_missing_slice_in_a_long_rounded_series_is_a_gap_not_a_drift(tmp_path):
    _rounded_series(tmp_path, 300, 1)
    (tmp_path / "IM0281.dcm").unlink()
    with pytest.raises(
        InputError, match=r"1 missing slice\(s\): a 13\.9\d\d mm gap between IM0280\.dcm and IM0282\.dcm"
    ):
        read_volume(tmp_path)
    assert read_volume(tmp_path, allow_gaps=True).geometry.index[-1] == 299


# ---------------------------------------------------------------------------------------------------------
# dcm2niix, the independent reference

DCM2NIIX = shutil.which("dcm2niix")
needs_dcm2niix = pytest.mark.skipif(
    DCM2NIIX is None, reason="dcm2niix is not installed (.ci/run installs Debian's dcm2niix)"
)
PYDICOM_DATA = Path(pydicom.data.get_testdata_file("emri_small.dcm")).parent


def _dcm2niix(folder: Path, out: Path):
    """dcm2niix on ``folder``: its NIfTI files (name -> image) and what it printed."""
    out.mkdir(parents=True)
    proc = subprocess.run(
        [DCM2NIIX, "-z", "n", "-b", "n", "-f", "out", "-o", str(out), str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {p.name: nib.load(str(p)) for p in sorted(out.glob("*.nii"))}, proc.stdout + proc.stderr


def _corners(affine, shape):
    """The world coordinates (RAS mm) of the corner voxel centres (8, or 4 for a single slice)."""
    ijk = np.array(np.meshgrid(*[[0, n - 1] for n in shape[:3]], indexing="ij")).reshape(3, -1)
    return np.unique(np.round((np.asarray(affine)[:3, :3] @ ijk).T + np.asarray(affine)[:3, 3], 6), axis=0)


def _corner_distance(ours, theirs) -> float:
    """The largest distance from one of our corners to dcm2niix's nearest (both sets: same count)."""
    assert len(ours) == len(theirs)
    return float(max(np.linalg.norm(theirs - c, axis=1).min() for c in ours))


def _series_folders(source: Path, into: Path):
    """Each image series of ``source`` in a folder of its own (dcm2niix converts a folder)."""
    for n, series in enumerate(dicom.find_series(source)):
        folder = into / f"series{n}"
        folder.mkdir(parents=True)
        for header in series.headers:
            shutil.copy(header.filename, folder)
        yield folder


# every real source with more than one image or a multi-frame object, and what we do with each of its series:
# "read" (then dcm2niix writes one volume whose corners agree), or the reason we refuse it
REAL = {
    "CT5N": (DICOMDIR_TESTS / "98892001" / "CT5N", ["read"]),
    "CT2N": (DICOMDIR_TESTS / "98892001" / "CT2N", ["different orientations"]),  # a two-image scout
    "CT2": (DICOMDIR_TESTS / "77654033" / "CT2", ["missing slice"]),  # one slice 200 mm from the rest
    "MR1": (DICOMDIR_TESTS / "98892003" / "MR1", ["read"] * 3),  # one-slice localizers
    "MR2": (DICOMDIR_TESTS / "98892003" / "MR2", ["different orientations"] * 2 + ["read"]),  # three-plane localizers
    "MR700": (DICOMDIR_TESTS / "98892003" / "MR700", ["different orientations"]),  # projections at 7 angles
    "eCT_Supplemental": (PYDICOM_DATA / "eCT_Supplemental.dcm", ["read"]),  # enhanced CT, two frames
    "emri_small": (PYDICOM_DATA / "emri_small.dcm", ["without per-frame geometry"]),  # enhanced MR, positions stripped
    "CT_small": (FILES / "CT_small.dcm", ["read"]),
    "MR_small": (FILES / "MR_small.dcm", ["read"]),
    "693_UNCR": (PYDICOM_DATA / "693_UNCR.dcm", ["read"]),
    "MR2_UNCR": (PYDICOM_DATA / "MR2_UNCR.dcm", ["read"]),  # oblique
}
# what dcm2niix prints for the series we refuse: the same finding, where it converts anyway
COUNTERPART = {
    "different orientations": r"orientation varies|gantry tilt",
    "missing slice": r"Interslice distance varies|Missing images",
    "without per-frame geometry": r"Unable to determine slice direction",
}


def _series_folders(source: Path, into: Path):
    """Each image series of ``source`` in a folder of its own (dcm2niix converts a folder), in our order."""
    if source.is_file():
        folder = into / source.stem
        folder.mkdir(parents=True)
        shutil.copy(source, folder)
        return [folder]
    folders = []
    for n, series in enumerate(dicom.find_series(source)):
        folders.append(into / f"series{n}")
        folders[-1].mkdir(parents=True)
        for header in series.headers:
            shutil.copy(header.filename, folders[-1])
    return folders


def _compare(folder: Path, out: Path, **read) -> float:
    """Read ``folder`` as we do and with dcm2niix (one volume expected); the corners' largest distance (mm)."""
    volume = read_volume(folder, min_dims=2, **read)
    written, printed = _dcm2niix(folder, out)
    assert len(written) == 1, f"dcm2niix wrote {sorted(written)} for one volume of ours:\n{printed}"
    (theirs,) = written.values()
    ours_shape = tuple(volume.image.shape[1:]) + (1,) * (4 - volume.image.dim())
    theirs_shape = tuple(theirs.shape[:3]) + (1,) * (3 - len(theirs.shape[:3]))
    assert sorted(ours_shape) == sorted(theirs_shape)
    return _corner_distance(_corners(volume.image.affine.numpy(), ours_shape), _corners(theirs.affine, theirs_shape))


@needs_dcm2niix
@pytest.mark.parametrize("name", list(REAL))
def test_every_real_series_is_read_where_dcm2niix_reads_it_or_refused_where_it_warns(tmp_path, name):
    source, expected = REAL[name]
    folders = _series_folders(source, tmp_path / "in")
    assert len(folders) == len(expected)
    for folder, decision in zip(folders, expected):
        if decision == "read":
            assert _compare(folder, tmp_path / "d2n" / folder.name) < 0.1
            continue
        with pytest.raises(InputError, match=decision):
            read_volume(folder, min_dims=2)
        _, printed = _dcm2niix(folder, tmp_path / "d2n" / folder.name)
        assert re.search(COUNTERPART[decision], printed), printed


@needs_dcm2niix
def test_an_oblique_series_with_exact_positions_has_dcm2niix_corners(tmp_path):
    _rounded_series(tmp_path / "in", 20, 4)
    assert _compare(tmp_path / "in", tmp_path / "d2n") < 0.1


@needs_dcm2niix
@pytest.mark.parametrize("slices", [20, 300])
def test_with_rounded_positions_dcm2niix_differs_only_by_taking_the_first_gap_as_the_pitch(tmp_path, slices):
    """dcm2niix spaces the slices by the distance between the first two positions; rounded to 0.1 mm that
    is 6.947 mm here, not 6.972: its last slice lies 0.5 mm (20 slices) or 7.5 mm (300) from where the scanner
    put it, where ours lies within 0.06 mm (test above). With our pitch replaced by its first gap, the eight
    corners agree within 0.1 mm: the one difference is that rule."""
    truth, _ = _rounded_series(tmp_path / "in", slices, 1)
    volume = read_volume(tmp_path / "in")
    written, printed = _dcm2niix(tmp_path / "in", tmp_path / "d2n")
    assert len(written) == 1, printed
    (theirs,) = written.values()
    first, second = (
        np.array(pydicom.dcmread(tmp_path / "in" / f"IM{k:04d}.dcm").ImagePositionPatient, dtype=float) for k in (1, 2)
    )
    gap = float(np.linalg.norm(second - first))
    shape = tuple(volume.image.shape[1:])
    assert sorted(shape) == sorted(theirs.shape)
    predicted = volume.image.affine.numpy().copy()
    predicted[:3, 2] *= gap / volume.geometry.pitch
    assert _corner_distance(_corners(predicted, shape), _corners(theirs.affine, theirs.shape)) < 0.1
    last = np.linalg.norm(
        (LPS_TO_RAS @ np.append(truth[-1], 1))[:3] - predicted[:3, :3] @ [0, 0, slices - 1] - predicted[:3, 3]
    )
    assert last == pytest.approx((slices - 1) * abs(GE_PITCH - gap), abs=0.1)


@needs_dcm2niix
def test_a_multi_frame_series_corners_agree_with_dcm2niix(tmp_path):
    (tmp_path / "in").mkdir()
    _with_geometry("emri_small.dcm", tmp_path / "in", order=range(10))
    assert _compare(tmp_path / "in", tmp_path / "d2n") < 0.1


@needs_dcm2niix
def test_a_gapped_series_is_refused_where_dcm2niix_warns_and_interpolated_on_the_true_grid_when_asked(tmp_path):
    """dcm2niix warns and writes the 9 slices 2.5 mm apart (its "equalised" copy too): the slices past the gap
    land 2.5 mm from where they were acquired. We refuse, or with ``allow_gaps`` interpolate the missing slice."""
    image = np.random.default_rng(0).integers(0, 500, size=(16, 12, 10)).astype(np.int16)
    affine = np.eye(4)
    affine[:3, :3] = _rotation() @ np.diag([0.8, 0.8, 2.5])
    paths = write_dicom_series(image, affine, tmp_path / "in")
    paths[4].unlink()
    with pytest.raises(InputError, match=r"1 missing slice\(s\)"):
        read_volume(tmp_path / "in")
    _, printed = _dcm2niix(tmp_path / "in", tmp_path / "d2n")
    assert re.search(COUNTERPART["missing slice"], printed), printed
    volume = read_volume(tmp_path / "in", allow_gaps=True)
    assert volume.image.shape[1:] == (16, 12, 10)
    np.testing.assert_allclose(volume.image.affine.numpy(), affine, atol=1e-3)  # every acquired slice where it was


@needs_dcm2niix
def test_a_tilted_series_is_refused_where_dcm2niix_names_the_same_angle(tmp_path):
    image = np.random.default_rng(0).integers(0, 500, size=(16, 16, 6)).astype(np.int16)
    affine = np.diag([-0.5, -0.5, 2.5, 1.0])
    affine[1, 2] = 2.5 * np.tan(np.radians(15))
    write_dicom_series(image, affine, tmp_path / "in")
    with pytest.raises(InputError, match=r"gantry tilt or a sheared stack, 15\.00 degrees"):
        read_volume(tmp_path / "in")
    written, printed = _dcm2niix(tmp_path / "in", tmp_path / "d2n")
    assert "gantry tilt of 15 degrees" in printed and any("_Tilt_" in k for k in written), printed
