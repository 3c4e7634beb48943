"""Command line: ``python -m monai_ext <command> ...``.

- ``prepare folder --images DIR --labels DIR OUTPUT [--bundle NAME] [--device D] [--step-seconds S]``: check and split your own
  images and label maps, write a datalist and a config overlay with the training plan for that bundle on this
  machine (``monai_ext.data.folder``, ``monai_ext.bundle.plan``).
- ``prepare NAME SOURCE OUTPUT``: build the datalist of a public data set from its release folder
  (``monai_ext.data.public``; NAME one of isic2018, kvasir_seg, cvc_clinicdb, busi, glas, monuseg, drive,
  montgomery, promise12, physionet_ich).
- ``synthetic OUTPUT``: write the synthetic blobs-and-tubes data set (``monai_ext.data.synthetic``).
- ``list [--json]``: the bundles with their task, parameter count, dimensions and whether each is trained
  (``monai_ext.bundle.catalog``);
- ``demo [--output DIR]``: synthetic 3D data, brief training of a bundle, ``segment``, mask, overlay and
  metrics (``monai_ext.apps.demo``); a few minutes on a CPU.
- ``segment --bundle DIR --input PATH --output DIR``: segment a volume file, a DICOM input (folder,
  DICOMDIR, file, DICOMweb URL) or a folder of cases with a bundle (``monai_ext.apps.segment``).
- ``export --bundle DIR --output DIR``: a self-contained, distributable bundle with the trained weights and
  settings baked in (``monai_ext.bundle.export``).
- ``convert madgnet-official CHECKPOINT OUTPUT``: the authors' published MADGNet weights as a checkpoint the
  MADGNet bundle loads, with its settings recorded (``monai_ext.networks.nets.madgnet_official``).

Errors are one line naming the file and the problem. Exit status: 0 when everything was done (for
``segment``: every case written, or skipped with ``--skip-existing``), 1 when some cases of a folder failed
and the others were done, 2 when nothing could be done (a bad option, bundle, checkpoint or input; every
case failed).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import List, Optional

from monai_ext.errors import ReportedError, install_excepthook, one_line

# monai_ext.data.public.DATASETS, named here so that parsing the command line imports neither MONAI nor torch
# (a test keeps the two the same)
PUBLIC_DATASETS = (
    "busi", "cvc_clinicdb", "drive", "glas", "isic2018", "kvasir_seg", "montgomery", "monuseg", "physionet_ich", "promise12"
)  # fmt: skip


def _prepare(args: argparse.Namespace) -> int:
    split = tuple(args.split) if args.split else None
    if args.name == "folder":
        from monai_ext.data.folder import DatasetCheckError, prepare_folder

        if len(args.paths) != 1 or not args.images or not args.labels:
            raise ValueError("usage: prepare folder --images DIR --labels DIR OUTPUT")
        names = {int(k): str(v) for k, v in _key_values(args.label_name).items()}
        planner = None
        if args.bundle != "none":
            from functools import partial
            from pathlib import Path

            from monai_ext.bundle.plan import plan_training
            from monai_ext.bundle.shipped import shipped
            from monai_ext.threads import limit_threads

            bundle = Path(args.bundle) if Path(args.bundle).is_dir() else shipped("bundles") / args.bundle
            if not (bundle / "configs" / "train.json").is_file():
                raise ValueError(f"--bundle {args.bundle}: not a bundle folder nor one of the shipped bundles")
            step = {}
            if args.step_seconds is not None:
                if not 0 < args.step_seconds <= 3600:
                    raise ValueError(f"--step-seconds {args.step_seconds}: expected seconds above 0, at most 3600")
                step = {"step_seconds": args.step_seconds}
            limit_threads()  # the probe measures with the threads training will have
            planner = partial(plan_training, bundle, device=None if args.device == "auto" else args.device, **step)
        try:
            path = prepare_folder(
                args.images,
                args.labels,
                args.paths[0],
                args.seed,
                split or (0.7, 0.15, 0.15),
                names or None,
                args.intensity,
                args.tolerance,
                planner=planner,
            )
        except DatasetCheckError as e:
            for line in e.problems:
                print(f"error: {one_line(line)}", file=sys.stderr)
            print(f"{len(e.problems)} problem(s); nothing written", file=sys.stderr)
            return 2
        datalist = json.loads(path.read_text())
        plan = json.loads((path.parent / "overlay.json").read_text()).get("plan")
        if plan:
            print(
                f"plan for {plan['bundle']} on {plan['machine']['device']}: patch {plan['patch_size']}, "
                f"batch {plan['batch_size']} x "
                f"{plan['num_samples']} patches per volume, {plan['num_workers']} data-loader worker(s), "
                f"spacing {plan['target_spacing']}"
            )
        print(
            f"datalist written to {path} ({len(datalist['training'])} training, {len(datalist['validation'])} validation, "
            f"{len(datalist['test'])} test), overlay {path.parent / 'overlay.json'}"
        )
        return 0
    from monai_ext.data.public import prepare_dataset

    if len(args.paths) != 2 or args.images or args.labels:
        raise ValueError(f"usage: prepare {args.name} SOURCE OUTPUT")
    kwargs = {"seed": args.seed, **({"split": split} if split else {}), **_key_values(args.option)}
    path = prepare_dataset(args.name, args.paths[0], args.paths[1], **kwargs)
    print(f"datalist written to {path}")
    return 0


# what the data layer's messages call an argument, as the command line spells it
_FLAGS = (
    (re.compile(r"\ballow_gaps=True"), "--allow-gaps"),
    (re.compile(r"\beach_series=True"), "--each-series"),
    (re.compile(r"\bseries=UID"), "--series UID"),
    (re.compile(r"\bseries="), "--series"),
)


def _in_flags(message: object) -> str:
    """``message`` as one line, with the arguments it names written as this command line's flags."""
    text = one_line(message)
    for pattern, flag in _FLAGS:
        text = pattern.sub(flag, text)
    return text


def _key_values(items: Optional[List[str]]) -> dict:
    """``["a=1", "b=[2, 3]", "c=text"]`` -> ``{"a": 1, "b": [2, 3], "c": "text"}`` (values JSON-parsed when they can be)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _bundle_options(parser: argparse.ArgumentParser, configs: str) -> None:
    """The options that name a bundle, its weights and what is merged on ``configs`` (segment's and export's)."""
    parser.add_argument("--bundle", required=True, help="bundle folder, e.g. bundles/unet")
    parser.add_argument(
        "--checkpoint", help="weights (default <bundle>/models/model.pt); they carry their trained settings"
    )
    parser.add_argument(
        "--config", action="append", help=f"config file merged on {configs} (e.g. datasets/promise12.json)"
    )
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="config value, JSON-parsed (e.g. inferer#overlap=0.25)"
    )


def _synthetic(args: argparse.Namespace) -> None:
    from monai_ext.data.synthetic import make_synthetic_dataset

    size = tuple(args.size) if args.size else None
    path = make_synthetic_dataset(args.output, args.cases, args.spatial_dims, size, args.format, seed=args.seed)
    print(f"datalist written to {path}")


def _segment(args: argparse.Namespace) -> int:
    import logging

    from monai_ext.apps.segment import segment
    from monai_ext.threads import limit_threads

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    limit_threads()  # the cores this process may use (OMP_NUM_THREADS, affinity, cgroup quota)
    device = None if args.device == "auto" else args.device
    overrides = _key_values(args.set)
    results = segment(
        args.bundle,
        args.input,
        args.output,
        device,
        args.amp,
        args.tta,
        args.format,
        args.overwrite,
        args.checkpoint,
        args.config or [],
        overrides,
        sw_batch_size=args.sw_batch_size,
        overlap=args.overlap,
        series=args.series,
        each_series=args.each_series,
        allow_gaps=args.allow_gaps,
        slice_tolerance=args.slice_tolerance,
        store=args.store,
        skip_existing=args.skip_existing,
        backend=args.backend,
        precision=args.precision,
    )
    failed = [r for r in results if r.error]
    skipped = [r for r in results if r.skipped]
    written = len(results) - len(failed) - len(skipped)
    print(
        f"segment: {written} written, {len(skipped)} skipped, {len(failed)} failed of {len(results)} case(s), in {args.output}"
    )
    for r in failed:
        print(f"error: {_in_flags(r.error)}", file=sys.stderr)
    if not failed:
        return 0
    return 1 if written or skipped else 2


def _list(args: argparse.Namespace) -> int:
    import json

    from monai_ext.bundle.catalog import format_bundles, list_bundles

    entries = list_bundles(args.folder)
    print(json.dumps(entries, indent=4) if args.json else format_bundles(entries))
    return 0


def _demo(args: argparse.Namespace) -> int:
    import logging

    from monai_ext.apps.demo import closing_block, run_demo

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    report = run_demo(args.output, args.bundle, args.epochs, args.cases, target=args.target, minutes=args.minutes)
    print(closing_block(report))
    return 0


def _export(args: argparse.Namespace) -> int:
    import logging

    from monai_ext.bundle.export import export_bundle

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = export_bundle(
        args.bundle,
        args.output,
        checkpoint=args.checkpoint,
        configs=args.config or [],
        overrides=_key_values(args.set),
        version=args.version,
        changelog=args.changelog,
        large_files_url=args.large_files_url,
        local_only=args.local_only,
        overwrite=args.overwrite,
    )
    print(f"bundle exported to {out}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from monai_ext.atomic import write_atomically
    from monai_ext.bundle.trained import with_record
    from monai_ext.networks.nets.madgnet_official import OFFICIAL_SETTINGS, load_official_checkpoint

    source, output = Path(args.checkpoint), Path(args.output)
    if output.exists() and (output.resolve() == source.resolve() or not args.overwrite):
        raise ReportedError(f"{output}: exists (--overwrite replaces it; never the input itself)")
    state = load_official_checkpoint(source)
    settings = dict(OFFICIAL_SETTINGS, class_names={"0": "background", "1": args.class_name})
    state = with_record(state, settings, converted_from=f"{args.source}:{source.name}")
    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(output, lambda tmp: torch.save(state, tmp))
    print(
        f"{output}: MADGNet weights with their settings; run them with --bundle bundles/madgnet --checkpoint {output}"
    )
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monai_ext", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="check and split your own data (folder), or build a public data set's datalist")
    p.add_argument("name", choices=["folder", *PUBLIC_DATASETS])
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="folder: OUTPUT; a public data set: SOURCE (its release folder) OUTPUT"
    )
    p.add_argument("--images", help="folder: the images (NIfTI, NRRD, MetaImage; PNG/JPEG/TIFF for 2D)")
    p.add_argument("--labels", help="folder: the label maps, named as the images")
    p.add_argument(
        "--label-name", action="append", metavar="VALUE=NAME", help="folder: a foreground label's name, e.g. 1=tumour"
    )
    p.add_argument("--intensity", default="zscore", choices=("zscore", "ct"), help="folder: intensity normalisation")
    p.add_argument("--tolerance", type=float, default=1e-3, help="folder: image/label affine tolerance (mm)")
    p.add_argument(
        "--bundle",
        default="unet",
        help="folder: the bundle to plan patch, batch and workers for (a shipped bundle's name or a bundle folder; "
        "'none': the data's part of the plan only)",
    )
    p.add_argument(
        "--device", default="auto", help="folder: the device to plan for (auto: CUDA when present; cpu, cuda, cuda:N)"
    )
    p.add_argument(
        "--step-seconds",
        type=float,
        default=None,
        metavar="S",
        help="folder, on a CPU: the seconds a training step may take (default 2); the patch is shortened until "
        "a step holds two, so a longer run can afford a larger patch",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--split", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"), help="fractions (default per data set)"
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a builder option, JSON-parsed: include_normal=false (busi), slices=true (promise12, physionet_ich)",
    )
    p.set_defaults(func=_prepare)

    s = sub.add_parser("synthetic", help="write the synthetic blobs-and-tubes data set")
    s.add_argument("output")
    s.add_argument("--cases", type=int, default=40)
    s.add_argument("--spatial-dims", type=int, default=2, choices=(2, 3))
    s.add_argument("--size", type=int, nargs="+")
    s.add_argument("--format", default="nifti", choices=("nifti", "png"))
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synthetic)

    g = sub.add_parser(
        "segment",
        help="segment volumes (NIfTI, NRRD, MetaImage, DICOM series) with a bundle",
        epilog="exit status: 0 every case written (or skipped with --skip-existing); 1 some cases failed, the others "
        "were done; 2 nothing could be done (a bad option, bundle, checkpoint or input, or every case failed)",
    )
    _bundle_options(g, "inference.json")
    g.add_argument(
        "--input",
        required=True,
        help="a volume file; a DICOM folder, DICOMDIR or file; a DICOMweb study or series URL "
        "(http://HOST:PORT/dicom-web/studies/UID[/series/UID]); or a folder of cases",
    )
    g.add_argument("--output", required=True, help="folder for <case>_seg.nii.gz / <case>_seg.dcm")
    g.add_argument("--device", default="auto", help="auto: the bundle's device (CUDA when present); cpu, cuda, cuda:N")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, help="mixed precision (default: the bundle's amp)")
    g.add_argument(
        "--backend",
        choices=("torch", "pt2", "openvino", "onnxruntime"),
        help="what runs the network (default: the bundle's, torch); pt2: its torch.export program (an export's "
        "models/model.pt2); openvino and onnxruntime run on the CPU; compiled once and cached in models/compiled/",
    )
    g.add_argument(
        "--precision",
        choices=("fp32", "bf16", "int8"),
        help="fp32 (default); bf16 with --backend torch on CPUs with bfloat16 instructions; int8 with --backend openvino "
        "(NNCF quantisation calibrated on the bundle's validation cases)",
    )
    g.add_argument("--tta", action="store_true", help="mirror test-time augmentation along every axis of the window")
    g.add_argument("--sw-batch-size", type=int, default=None, help="windows per network call (default: the bundle's)")
    g.add_argument("--overlap", type=float, default=None, help="window overlap (default: the bundle's)")
    g.add_argument(
        "--format",
        default="nifti",
        choices=("nifti", "dicom-seg", "rtstruct"),
        help="NIfTI mask (default), DICOM SEG or RT Structure Set (DICOM inputs) referencing the source series",
    )
    g.add_argument("--series", metavar="UID", help="the SeriesInstanceUID to segment where a DICOM input holds several")
    g.add_argument("--each-series", action="store_true", help="segment every series of a DICOM input, one output each")
    g.add_argument("--allow-gaps", action="store_true", help="interpolate missing DICOM slices rather than refuse")
    g.add_argument(
        "--slice-tolerance",
        type=float,
        default=None,
        metavar="MM",
        help="how far a DICOM slice may lie off the fitted slice grid (default: 0.1 mm or 2%% of the pitch)",
    )
    g.add_argument(
        "--store", action="store_true", help="store the DICOM output on the input's DICOMweb server (STOW-RS)"
    )
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip the cases whose outputs all exist (finish a folder run that was stopped); "
        "without it or --overwrite an existing output fails its case",
    )
    g.set_defaults(func=_segment)

    x = sub.add_parser("export", help="write a self-contained bundle with the trained weights and settings baked in")
    _bundle_options(x, "the bundle's configs")
    x.add_argument("--output", required=True, help="the exported bundle's folder (new, or empty)")
    x.add_argument(
        "--version", default=None, help="the exported bundle's version (default: the bundle's, with a build suffix)"
    )
    x.add_argument("--changelog", default=None, help="the changelog entry of that version")
    x.add_argument(
        "--large-files-url",
        default=None,
        help="base URL the weight files will be published under (each at URL/<path>; written to large_files.yml, "
        "which a model-zoo pull request needs); required unless --local-only",
    )
    x.add_argument("--local-only", action="store_true", help="an export that keeps its weights, not for publishing")
    x.add_argument("--overwrite", action="store_true", help="replace an existing export")
    x.set_defaults(func=_export)

    c = sub.add_parser("convert", help="published weights as a checkpoint of our bundle (MADGNet's authors' file)")
    c.add_argument("source", choices=("madgnet-official",), help="whose weights: the MADGNet authors' checkpoint")
    c.add_argument("checkpoint", help="the published file (.pth.tar with model_state_dict)")
    c.add_argument("output", help="the converted checkpoint, e.g. bundles/madgnet/models/model.pt")
    c.add_argument("--class-name", default="foreground", help="the name of the segmented class (default foreground)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output")
    c.set_defaults(func=_convert)

    ls = sub.add_parser("list", help="the bundles: task, parameters, dimensions, trained or not")
    ls.add_argument(
        "--folder", default=None, help="a folder of bundles (default: the bundles shipped with the package)"
    )
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_list)

    d = sub.add_parser("demo", help="train a bundle briefly on synthetic 3D data and segment the held-out volumes")
    d.add_argument("--output", default="demo", help="folder for the data, the run and the results")
    d.add_argument("--bundle", default=None, help="bundle folder (default bundles/unet)")
    d.add_argument("--epochs", type=int, default=30, help="at most this many epochs")
    d.add_argument(
        "--cases", type=int, default=40, help="synthetic volumes (70%% train, 15%% validation, 15%% held out)"
    )
    d.add_argument("--target", type=float, default=0.85, help="stop once both classes reach this validation Dice")
    d.add_argument(
        "--minutes",
        type=float,
        default=10.0,
        help="training time cap, a safety net only: the run is fixed in epochs (0: none)",
    )
    d.set_defaults(func=_demo)

    args = parser.parse_args(argv)
    install_excepthook()  # a one-line error raised where nothing catches it (a DataLoader worker's, re-raised) prints as that line
    try:
        return args.func(args) or 0
    except (ReportedError, ValueError, OSError) as e:  # ours, and a bad value or file met inside a library
        print(f"error: {_in_flags(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
