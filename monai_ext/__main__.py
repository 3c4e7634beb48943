"""Command line: ``python -m monai_ext <command> ...``.

- ``prepare NAME SOURCE OUTPUT``: build the datalist of a public data set from its release folder
  (``monai_ext.data.public``; NAME one of isic2018, kvasir_seg, cvc_clinicdb, busi, glas, monuseg, drive,
  montgomery, promise12, physionet_ich).
- ``synthetic OUTPUT``: write the synthetic blobs-and-tubes data set (``monai_ext.data.synthetic``).
- ``demo [--output DIR]``: synthetic 3D data, brief training of a bundle, ``segment``, mask, overlay and
  metrics (``monai_ext.apps.demo``); a few minutes on a CPU.
- ``segment --bundle DIR --input PATH --output DIR``: segment a volume file, a DICOM series folder or a
  folder of cases with a bundle (``monai_ext.apps.segment``).

Errors end with exit status 2 (1 when some cases of a folder failed) and one line naming the file and
the problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional


def _prepare(args: argparse.Namespace) -> None:
    from monai_ext.data.public import prepare_dataset

    split = tuple(args.split) if args.split else None
    kwargs = {"seed": args.seed, **({"split": split} if split else {}), **_key_values(args.option)}
    path = prepare_dataset(args.name, args.source, args.output, **kwargs)
    print(f"datalist written to {path}")


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


def _synthetic(args: argparse.Namespace) -> None:
    from monai_ext.data.synthetic import make_synthetic_dataset

    size = tuple(args.size) if args.size else None
    path = make_synthetic_dataset(args.output, args.cases, args.spatial_dims, size, args.format, seed=args.seed)
    print(f"datalist written to {path}")


def _segment(args: argparse.Namespace) -> int:
    import logging

    from monai_ext.apps.segment import segment

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    device = None if args.device == "auto" else args.device
    overrides = _key_values(args.set)
    results = segment(
        args.bundle, args.input, args.output, device, args.amp, args.tta, args.format, args.overwrite, args.checkpoint,
        args.config or [], overrides, dicom_reader=args.reader,
    )
    failed = [r for r in results if r.error]
    done = len(results) - len(failed)
    print(f"{done} of {len(results)} case(s) segmented into {args.output}")
    if failed:
        for r in failed:
            print(f"error: {r.error}", file=sys.stderr)
        return 1 if done else 2
    return 0


def _demo(args: argparse.Namespace) -> int:
    import logging

    from monai_ext.apps.demo import run_demo

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    report = run_demo(args.output, args.bundle, args.epochs, args.cases)
    print(f"demo done: {args.output}/segmentation, overlay.png, metrics.json "
          f"(Dice blob {report['metrics']['dice_blob']:.3f}, tube {report['metrics']['dice_tube']:.3f})")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from monai_ext.data.public import DATASETS

    parser = argparse.ArgumentParser(prog="python -m monai_ext", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="build a public data set's datalist from its release folder")
    p.add_argument("name", choices=sorted(DATASETS))
    p.add_argument("source", help="the data set's release folder (as downloaded and unpacked)")
    p.add_argument("output", help="folder for datalist.json and the converted masks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"), help="fractions (default per data set)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a builder option, JSON-parsed: include_normal=false (busi), slices=true (promise12, physionet_ich)")
    p.set_defaults(func=_prepare)

    s = sub.add_parser("synthetic", help="write the synthetic blobs-and-tubes data set")
    s.add_argument("output")
    s.add_argument("--cases", type=int, default=40)
    s.add_argument("--spatial-dims", type=int, default=2, choices=(2, 3))
    s.add_argument("--size", type=int, nargs="+")
    s.add_argument("--format", default="nifti", choices=("nifti", "png"))
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synthetic)

    g = sub.add_parser("segment", help="segment volumes (NIfTI, NRRD, MetaImage, DICOM series) with a bundle")
    g.add_argument("--bundle", required=True, help="bundle folder, e.g. bundles/unet")
    g.add_argument("--input", required=True, help="a volume file, a DICOM series folder, or a folder of cases")
    g.add_argument("--output", required=True, help="folder for <case>_seg.nii.gz / <case>_seg.dcm")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    g.add_argument("--amp", action="store_true", help="run the network in bfloat16 autocast")
    g.add_argument("--tta", action="store_true", help="mirror test-time augmentation along every axis")
    g.add_argument("--format", default="nifti", choices=("nifti", "dicom-seg"))
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g.add_argument("--reader", default="itk", choices=("itk", "pydicom"), help="DICOM series reader")
    g.add_argument("--checkpoint", default=None, help="weights (default <bundle>/models/model.pt)")
    g.add_argument("--config", action="append", help="config file merged on inference.json (e.g. configs/datasets/promise12.json)")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="config value, JSON-parsed (e.g. spatial_dims=3)")
    g.set_defaults(func=_segment)

    d = sub.add_parser("demo", help="train a bundle briefly on synthetic 3D data and segment a held-out volume")
    d.add_argument("--output", default="demo", help="folder for the data, the run and the results")
    d.add_argument("--bundle", default=None, help="bundle folder (default bundles/unet)")
    d.add_argument("--epochs", type=int, default=80)
    d.add_argument("--cases", type=int, default=20)
    d.set_defaults(func=_demo)

    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, OSError) as e:  # DatasetLayoutError and InputError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
