"""MONAI Label on MR studies in a PACS, and training from the DICOM SEG labels stored there.

MONAI Label's DICOMweb datastore lists only the series its search filter finds, ``{"Modality": "CT"}`` unless
configured, so an MR study is invisible to a bundle until the filter is set; the README tells users to set
``MONAI_LABEL_DICOMWEB_SEARCH_FILTER='{"Modality": "MR"}'``. This check sets it the same way (the environment
variable, before MONAI Label starts) and then, against a real Orthanc holding CT and MR studies:

1. ``/datastore`` lists exactly the MR series (none of the CT ones);
2. ``/infer/unet`` on an MR series (retrieved over WADO-RS) gives a mask of the series' size;
3. ``/train/unet`` trains on the MR series whose labels exist only as DICOM SEG in Orthanc: MONAI Label finds
   them (QIDO-RS ``Modality=SEG``, matched to images by ``ReferencedSeriesSequence``), retrieves and converts
   them to label maps and runs the bundle's ``train.json``; the weights must be rewritten;
4. each label map MONAI Label trained on is compared, voxel by voxel and label value by label value, with the
   ground truth the SEG was written from. The SEGs come from two writers: this project's
   (``monai_ext.data.dicom.seg.write_dicom_seg``, highdicom, what ``segment --format dicom-seg`` stores) and
   MONAI Label's own (``nifti_to_dicom_seg``, dcmqi, what saving a final label in MONAI Label stores); one
   label map of each has only label 2 (tube), where a writer that numbers segments by the labels present and a
   reader that takes segment numbers as label values disagree.

Runs in the environment ``scripts/monailabel/setup_env.sh`` builds, with Orthanc and its DICOMweb plugin
installed::

    .venv-monailabel/bin/python scripts/monailabel/check_dicom_mr.py [--work DIR] [--epochs 1]

Prints one line per step and writes ``<work>/monailabel_dicom_mr_check.json``; exits non-zero if a step failed
(a label map of this project's SEG that does not equal its ground truth included; a MONAI Label SEG that does
not is reported as MONAI Label's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "pacs"))

from check import ROOT, create_client, install_bundle  # noqa: E402
from check_dicom import SETTINGS_3D, make_studies, upload  # noqa: E402
from orthanc import orthanc  # noqa: E402

SEARCH_FILTER = {"Modality": "MR"}
NAMES = {1: "blob", 2: "tube"}


def monailabel_seg(case: dict) -> str:
    """The case's label map as MONAI Label stores a final label: its own ``nifti_to_dicom_seg`` (dcmqi)."""
    import nibabel as nib
    import numpy as np
    from monailabel.datastore.utils.convert import nifti_to_dicom_seg

    present = sorted(int(v) for v in np.unique(np.asarray(nib.load(case["label"]).dataobj)) if v)
    return nifti_to_dicom_seg(case["folder"], case["label"], [{"name": NAMES[v], "idx": v} for v in present])


def stow(root: str, path: str) -> None:
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    DICOMwebClient(url=root).store_instances([pydicom.dcmread(path)])


def trained_label(cache: Path, series: str):
    """The label map MONAI Label converted from the series' SEG for training (SimpleITK image), or None."""
    import SimpleITK as sitk  # noqa: N813

    found = sorted(p for p in cache.rglob(f"{series}*") if p.is_file() and "labels" in p.parts)
    return (sitk.ReadImage(str(found[0])), found[0]) if found else (None, None)


def compare(case: dict, cache: Path) -> dict:
    """The label map MONAI Label trained on against the ground truth: geometry, and voxels per label value."""
    import numpy as np
    import SimpleITK as sitk  # noqa: N813

    image, path = trained_label(cache, case["series"])
    if image is None:
        return {"found": False}
    truth = sitk.ReadImage(case["label"])
    # the same physical grid? (MONAI Label's converter writes in the SEG's frame order)
    resampled = sitk.Resample(image, truth, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    got, want = sitk.GetArrayFromImage(resampled).astype(int), sitk.GetArrayFromImage(truth).astype(int)
    return {
        "found": True,
        "file": path.name,
        "size": list(image.GetSize()),
        "image_size": list(truth.GetSize()),
        "voxels_by_value_truth": {int(v): int((want == v).sum()) for v in np.unique(want) if v},
        "voxels_by_value_trained": {int(v): int((got == v).sum()) for v in np.unique(got) if v},
        "equal": bool(np.array_equal(got, want)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / ".monailabel_check" / "dicom_mr")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # dcmqi
    if shutil.which("itkimage2segimage") is None:
        print("dcmqi's itkimage2segimage is not installed (pip install dcmqi); MONAI Label needs it to write a SEG")
        return 2
    # as the README tells a user: the environment variable, set before MONAI Label reads its settings
    os.environ["MONAI_LABEL_DICOMWEB_SEARCH_FILTER"] = json.dumps(SEARCH_FILTER)
    import monailabel
    from monailabel.config import settings

    shutil.rmtree(args.work, ignore_errors=True)
    report: dict = {"monailabel": monailabel.__version__, "settings": SETTINGS_3D, "steps": {}}
    steps = report["steps"]
    failed = False

    def step(name: str, ok: bool, line: str, **details) -> None:
        nonlocal failed
        failed = failed or not ok
        steps[name] = {"ok": ok, **details}
        print(f"{'' if ok else 'FAILED: '}{line}", flush=True)

    step(
        "search_filter",
        settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER == SEARCH_FILTER,
        f"MONAI_LABEL_DICOMWEB_SEARCH_FILTER read as {settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER}",
    )
    studies = args.work / "studies"
    ct = make_studies(studies, "--cases", "2", "--prefix", "ct", "--seed", "4")
    ours = make_studies(studies, "--cases", "2", "--modality", "MR", "--prefix", "mr_ours", "--seg", "--tube-only", "1")
    theirs = make_studies(studies, "--cases", "2", "--modality", "MR", "--prefix", "mr_dcmqi", "--tube-only", "1")
    unlabelled = make_studies(studies, "--cases", "1", "--modality", "MR", "--prefix", "mr_new", "--seed", "9")
    mr = ours + theirs + unlabelled
    app_dir = args.work / "apps" / "monaibundle"
    shutil.copytree(Path(sys.prefix) / "monailabel" / "sample-apps" / "monaibundle", app_dir)
    # MONAI Label converts a SEG to a label map of the frames it holds (dcmqi leaves out empty ones): the bundle
    # places such a label on its image's grid where told to, as the README tells users training from a PACS
    install_bundle("unet", app_dir / "model", {**SETTINGS_3D, "val_interval": 1, "pad_label_to_image": True})
    with orthanc(args.work / "orthanc") as root:
        for case in ct + mr:
            upload(root, Path(case["folder"]))
        for case in ours:
            stow(root, case["seg"])
        for case in theirs:
            case["seg"] = monailabel_seg(case)
            stow(root, case["seg"])
        print(
            f"MONAI Label {monailabel.__version__}: Orthanc {root} with {len(ct)} CT and {len(mr)} MR series, SEG labels "
            f"for {len(ours)} (this project's writer) and {len(theirs)} (MONAI Label's, dcmqi) of the MR series",
            flush=True,
        )
        cache = args.work / "cache"
        os.environ["MONAI_LABEL_DICOMWEB_CACHE_PATH"] = str(cache)
        settings.MONAI_LABEL_DICOMWEB_CACHE_PATH = str(cache)
        client = create_client(app_dir, root, args.work, ["unet"])

        from monailabel.interfaces.utils.app import app_instance

        stats = client.get("/datastore/?output=stats").json()
        listed = set(app_instance().datastore().list_images())
        want = {c["series"] for c in mr}
        step(
            "datastore",
            listed == want and stats.get("total") == len(want) and stats.get("completed") == len(ours + theirs),
            f"/datastore counts {stats.get('total')} series, {stats.get('completed')} with a SEG: the "
            f"{len(want & listed)} MR of {len(want)}, {len(listed & {c['series'] for c in ct})} CT",
            stats=stats,
        )

        case = unlabelled[0]
        start = time.perf_counter()
        response = client.post(f"/infer/unet?image={case['series']}&output=image", json={"device": "cpu"})
        seconds = round(time.perf_counter() - start, 2)
        if response.status_code == 200:
            import nibabel as nib
            import numpy as np

            path = args.work / "mr_pred.nii.gz"
            path.write_bytes(response.content)
            shape = list(np.asarray(nib.load(str(path)).dataobj).squeeze().shape)
            step("infer_mr", shape == case["shape"], f"/infer/unet on an MR series: {seconds} s, mask {shape}")
        else:
            step("infer_mr", False, f"/infer/unet: HTTP {response.status_code}: {response.text[:300]}")

        weights = app_dir / "model" / "unet" / "models" / "model.pt"
        before = weights.stat().st_mtime_ns
        start = time.perf_counter()
        try:
            response = client.post(
                "/train/?run_sync=True",
                json={
                    "model": "unet",
                    "max_epochs": args.epochs,
                    "device": "cpu",
                    "val_split": 0.25,
                    "multi_gpu": False,
                    "name": "check_unet_mr",
                },
            )
            status, error = response.status_code, "" if response.status_code == 200 else response.text[:300]
        except Exception as e:  # the server's exception, raised by the test client: a result, not a crash
            status, error = 500, f"{type(e).__name__}: {e}"
            (args.work / "train_traceback.txt").write_text(traceback.format_exc())
        seconds = round(time.perf_counter() - start, 1)
        rewritten = weights.stat().st_mtime_ns != before
        step(
            "train_from_seg",
            status == 200 and rewritten,
            f"/train/unet from the SEGs in Orthanc: HTTP {status}, {seconds} s, "
            f"weights {'rewritten' if rewritten else 'NOT rewritten'}" + (f": {error}" if error else ""),
            seconds=seconds,
        )

        labels = {}
        for writer, cases in (("monai_ext (highdicom)", ours), ("MONAI Label (dcmqi)", theirs)):
            for c in cases:
                result = compare(c, cache)
                labels[c["series"]] = {"writer": writer, **result}
                verdict = "equal" if result.get("equal") else "NOT equal"
                line = (
                    f"{writer} SEG of {Path(c['folder']).name}: trained on voxels by label "
                    f"{result.get('voxels_by_value_trained')}, truth {result.get('voxels_by_value_truth')}, {verdict}"
                )
                if writer.startswith("monai_ext"):
                    step(f"label_{Path(c['folder']).name}", bool(result.get("equal")), line)
                else:  # MONAI Label's own round trip: reported, not ours to fail
                    print(("" if result.get("equal") else "MONAI Label's round trip differs: ") + line, flush=True)
        report["labels"] = labels
    (args.work / "monailabel_dicom_mr_check.json").write_text(json.dumps(report, indent=4) + "\n")
    print(f"{'FAILED' if failed else 'passed'}: {args.work / 'monailabel_dicom_mr_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
