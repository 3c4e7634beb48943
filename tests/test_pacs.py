"""A real PACS round trip: Orthanc with its DICOMweb plugin on 127.0.0.1 (Debian's ``orthanc`` and
``orthanc-dicomweb``, installed by ``.ci/run``). A generated CT series is uploaded (STOW-RS), ``segment``
reads it from the server (QIDO-RS, WADO-RS) and stores its SEG back (STOW-RS), and the SEG is found in
Orthanc, referencing that series with one frame per slice and segment."""

import contextlib
import io
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import SMALL_3D

from monai_ext.apps import segment
from monai_ext.data.dicom.export import write_dicom_series
from monai_ext.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "pacs"))
from orthanc import binary, free_port  # noqa: E402
from orthanc import orthanc as start_orthanc


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """The DICOMweb root URL of a fresh Orthanc (its own storage, loopback only, no authentication)."""
    if binary() is None:
        pytest.skip(
            "Orthanc with its DICOMweb plugin is not installed (Debian's orthanc, orthanc-dicomweb; .ci/run installs them)"
        )
    with start_orthanc(tmp_path_factory.mktemp("orthanc")) as root:
        yield root


def _upload(root, folder):
    from dicomweb_client.api import DICOMwebClient

    DICOMwebClient(url=root).store_instances([pydicom.dcmread(p) for p in sorted(folder.iterdir())])


def _ct(folder, study=None, number=1):
    image = np.full((32, 32, 6), -1000, dtype=np.int16)
    image[8:24, 6:26, 1:5] = 60
    write_dicom_series(
        image,
        np.diag([-0.8, -0.8, 2.5, 1.0]),
        folder,
        study_instance_uid=study,
        series_number=number,
        series_description=f"CT {number}",
    )
    first = pydicom.dcmread(next(folder.iterdir()))
    return first.StudyInstanceUID, first.SeriesInstanceUID


def test_segment_a_series_from_orthanc_and_store_the_seg_back(orthanc, random_unet_3d, tmp_path, dciodvfy):
    from dicomweb_client.api import DICOMwebClient

    study, series = _ct(tmp_path / "ct")
    _upload(orthanc, tmp_path / "ct")
    url = f"{orthanc}/studies/{study}/series/{series}"
    (result,) = segment(
        random_unet_3d,
        url,
        tmp_path / "out",
        device="cpu",
        output_format="dicom-seg",
        overrides=SMALL_3D,
        progress=False,
        store=True,
    )
    assert result.error is None, result.error
    dciodvfy(result.output)
    client = DICOMwebClient(url=orthanc)
    found = client.search_for_instances(study_instance_uid=study, search_filters={"Modality": "SEG"})
    assert len(found) == 1
    seg_series = found[0]["0020000E"]["Value"][0]
    (stored,) = client.retrieve_series(study_instance_uid=study, series_instance_uid=seg_series)
    stored = hd.seg.Segmentation.from_dataset(stored)
    assert stored.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    assert stored.NumberOfFrames == 6 * len(stored.SegmentSequence)  # a frame per slice and segment
    assert stored.SOPInstanceUID == pydicom.dcmread(result.output).SOPInstanceUID
    sources = sorted((tmp_path / "ct").iterdir())
    uids = [pydicom.dcmread(p).SOPInstanceUID for p in sources]
    frames = stored.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, skip_overlap_checks=True
    )
    (local,) = segment(
        random_unet_3d, tmp_path / "ct", tmp_path / "local", device="cpu", overrides=SMALL_3D, progress=False
    )
    np.testing.assert_array_equal(np.transpose(frames, (2, 1, 0)), np.asarray(nib.load(str(local.output)).dataobj))


def test_a_study_url_lists_its_series_or_segments_each(orthanc, random_unet_3d, tmp_path):
    study, first = _ct(tmp_path / "a", number=3)
    _, second = _ct(tmp_path / "b", study=study, number=4)
    _upload(orthanc, tmp_path / "a")
    _upload(orthanc, tmp_path / "b")
    url = f"{orthanc}/studies/{study}"
    with pytest.raises(
        InputError,
        match=rf"2 DICOM series; choose one with series=UID \(or a series URL\) .*{first} \(#3 CT 'CT 3'\); "
        rf"{second} \(#4 CT 'CT 4'\)",
    ):
        segment(random_unet_3d, url, tmp_path / "out", device="cpu", overrides=SMALL_3D, progress=False)
    results = segment(
        random_unet_3d, url, tmp_path / "each", device="cpu", overrides=SMALL_3D, progress=False, each_series=True
    )
    assert sorted(r.output.name for r in results) == sorted(f"{uid}_seg.nii.gz" for uid in (first, second))
    (one,) = segment(
        random_unet_3d, url, tmp_path / "one", device="cpu", overrides=SMALL_3D, progress=False, series=second
    )
    assert one.error is None and one.output.name == f"{second}_seg.nii.gz"


def test_server_errors_are_one_line(orthanc, random_unet_3d, tmp_path):
    from monai_ext.__main__ import main

    dead = f"http://127.0.0.1:{free_port()}/dicom-web/studies/1.2.3"
    cases = {
        dead: "QIDO-RS series search failed (ConnectionError",
        f"{orthanc}/studies/1.2.3.4.5": "no such study on the server",
        f"{orthanc.rsplit('/', 1)[0]}/nothing-here": "not a DICOMweb study or series URL",
    }
    for url, message in cases.items():
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(
                [
                    "segment",
                    "--bundle",
                    str(random_unet_3d),
                    "--input",
                    url,
                    "--output",
                    str(tmp_path / "out"),
                    "--set",
                    "spatial_dims=3",
                    "--set",
                    "patch_size=[16,16,16]",
                ]
            )
        lines = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and message in lines[0], (url, err.getvalue()[-2000:])
    assert not (tmp_path / "out").exists()
