"""MONAI Label on DICOM from a PACS: every bundle, configured for 3D, served 3D CT studies by a real Orthanc
through MONAI Label's DICOMweb datastore, as a clinic runs it. For each bundle: ``/info`` (its labels),
``/infer`` on a series (MONAI Label retrieves it over WADO-RS and converts it), then the mask saved back as a
final label (``PUT /datastore/label``), which MONAI Label turns into a DICOM SEG (dcmqi) and stores in
Orthanc (STOW-RS). The check then finds that SEG in Orthanc (QIDO-RS), referencing the series it was made
on, with the mask's segments and voxels.

Runs in the environment ``scripts/monailabel/setup_env.sh`` builds, with Orthanc and its DICOMweb plugin
installed (Debian's ``orthanc``, ``orthanc-dicomweb``) and the studies written by the project's own
environment (``scripts/pacs/make_studies.py``)::

    .venv-monailabel/bin/python scripts/monailabel/check_dicom.py [--bundles unet ...] [--work DIR]

Prints one line per step and writes ``<work>/monailabel_dicom_check.json``; exits non-zero if any step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "pacs"))

from check import BUNDLES, ROOT, check_labels, create_client, install_bundle, record_failure  # noqa: E402
from orthanc import orthanc  # noqa: E402

# 3D, small: every bundle's window a multiple of 32 (MADGNet down-samples five times)
SETTINGS_3D = {"spatial_dims": 3, "patch_size": [32, 32, 32], "num_workers": 0, "batch_size": 1}


def make_studies(folder: Path, *args: str) -> list:
    """Synthetic studies written by the project's environment (pydicom 3, highdicom):
    ``scripts/pacs/make_studies.py`` with ``args``, one dict per case."""
    python = ROOT / ".venv" / "bin" / "python"
    proc = subprocess.run(
        [str(python), str(HERE.parent / "pacs" / "make_studies.py"), str(folder), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def upload(root: str, folder: Path) -> None:
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    DICOMwebClient(url=root).store_instances([pydicom.dcmread(str(p)) for p in sorted(folder.iterdir())])


def find_seg(root: str, study: str) -> list:
    """The SEG instances of ``study`` on the server, retrieved (pydicom datasets)."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=root)
    found = client.search_for_instances(study_instance_uid=study, search_filters={"Modality": "SEG"})
    return [
        client.retrieve_instance(
            study_instance_uid=study,
            series_instance_uid=i["0020000E"]["Value"][0],
            sop_instance_uid=i["00080018"]["Value"][0],
        )
        for i in found
    ]


def check_bundle(client, root: str, name: str, case: dict, labels: dict, work: Path) -> dict:
    import nibabel as nib
    import numpy as np

    result: dict = {}
    start = time.perf_counter()
    response = client.post(f"/infer/{name}?image={case['series']}&output=image", json={"device": "cpu"})
    if response.status_code != 200:
        raise RuntimeError(f"/infer/{name}: HTTP {response.status_code}: {response.text[:500]}")
    result["infer_seconds"] = round(time.perf_counter() - start, 2)
    mask_path = work / f"{name}_pred.nii.gz"
    mask_path.write_bytes(response.content)
    mask = nib.load(str(mask_path))
    data = np.asarray(mask.dataobj).squeeze()
    values = sorted(int(v) for v in np.unique(data))
    if list(data.shape) != case["shape"]:
        raise RuntimeError(f"/infer/{name}: mask {list(data.shape)} for a {case['shape']} series")
    if not set(values) <= {0, *labels.values()}:
        raise RuntimeError(f"/infer/{name}: values {values} outside the labels {labels}")
    result.update(shape=list(data.shape), values=values)
    print(
        f"{name}: /infer on series {case['series'][-12:]} in {result['infer_seconds']} s, mask {result['shape']}, values {values}",
        flush=True,
    )
    if values == [0]:  # an untrained network may predict nothing: save a non-empty label so the SEG has content
        data = np.zeros_like(data)
        data[10:30, 12:32, 5:15] = 1
        nib.save(nib.Nifti1Image(data.astype(np.uint8), mask.affine), str(mask_path))
        result["saved_instead"] = "a box of label 1 (the untrained prediction was empty)"
    label_info = [
        {"name": n, "idx": v} for n, v in sorted(labels.items(), key=lambda kv: kv[1]) if v in set(np.unique(data))
    ]
    with open(mask_path, "rb") as f:
        response = client.put(
            f"/datastore/label?image={case['series']}&tag=final",
            files={"label": (mask_path.name, f, "application/octet-stream")},
            data={"params": json.dumps({"label_info": label_info})},
        )
    if response.status_code != 200:
        raise RuntimeError(f"PUT /datastore/label: HTTP {response.status_code}: {response.text[:500]}")
    segs = find_seg(root, case["study"])
    if len(segs) != 1:
        raise RuntimeError(f"Orthanc holds {len(segs)} SEG(s) in the study, expected 1")
    seg = segs[0]
    referenced = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    if referenced != case["series"]:
        raise RuntimeError(f"the SEG references series {referenced}, not {case['series']}")
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    written = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    voxels = int(pixels.astype(bool).sum())
    if voxels != int(np.count_nonzero(data)):
        raise RuntimeError(f"the SEG holds {voxels} labelled voxels, the saved mask {int(np.count_nonzero(data))}")
    result.update(
        seg_segments=written,
        seg_frames=int(seg.NumberOfFrames),
        seg_voxels=voxels,
        seg_series=str(seg.SeriesInstanceUID),
    )
    print(
        f"{name}: label saved back as a SEG in Orthanc: segments {written}, {seg.NumberOfFrames} frames, {voxels} voxels, "
        f"referencing the series",
        flush=True,
    )
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", default=BUNDLES, choices=BUNDLES)
    parser.add_argument("--work", type=Path, default=ROOT / ".monailabel_check" / "dicom")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ["PATH"] = (
        f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # dcmqi's itkimage2segimage
    )
    if shutil.which("itkimage2segimage") is None:
        print("dcmqi's itkimage2segimage is not installed (pip install dcmqi); MONAI Label needs it to write a SEG")
        return 2
    import monailabel

    shutil.rmtree(args.work, ignore_errors=True)
    app_dir = args.work / "apps" / "monaibundle"
    shutil.copytree(Path(sys.prefix) / "monailabel" / "sample-apps" / "monaibundle", app_dir)
    cases = make_studies(args.work / "studies", "--cases", str(len(args.bundles)))
    for name in args.bundles:
        install_bundle(name, app_dir / "model", SETTINGS_3D)
    results, failed = {}, False
    with orthanc(args.work / "orthanc") as root:
        for case in cases:
            upload(root, Path(case["folder"]))
        print(
            f"MONAI Label {monailabel.__version__}: Orthanc {root} with {len(cases)} CT series "
            f"({'x'.join(map(str, cases[0]['shape']))}), bundles {args.bundles} in 3D",
            flush=True,
        )
        os.environ["MONAI_LABEL_DICOMWEB_CACHE_PATH"] = str(args.work / "cache")
        from monailabel.config import settings

        settings.MONAI_LABEL_DICOMWEB_CACHE_PATH = str(args.work / "cache")
        client = create_client(app_dir, root, args.work, list(args.bundles))
        info = client.get("/info/").json()
        stats = client.get("/datastore/?output=stats").json()
        if stats.get("total") != len(cases):
            failed = True
            print(f"FAILED: /datastore counts {stats.get('total')} series, Orthanc holds {len(cases)}", flush=True)
        print(f"/datastore (DICOMweb) counts {stats.get('total')} series in Orthanc", flush=True)
        for name, case in zip(args.bundles, cases):
            result: dict = {"series": case["series"]}
            try:
                result["labels"] = expected = check_labels(info, app_dir, name)
                result.update(check_bundle(client, root, name, case, expected, args.work))
                result["ok"] = True
            except Exception as e:  # report every bundle, then fail
                failed = record_failure(result, name, e)
            results[name] = result
    report = {"monailabel": monailabel.__version__, "settings": SETTINGS_3D, "bundles": results}
    (args.work / "monailabel_dicom_check.json").write_text(json.dumps(report, indent=4) + "\n")
    print(f"{'FAILED' if failed else 'passed'}: {args.work / 'monailabel_dicom_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
