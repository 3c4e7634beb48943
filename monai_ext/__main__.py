"""Command line: ``python -m monai_ext <command> ...``.

- ``prepare NAME SOURCE OUTPUT``: build the datalist of a public data set from its release folder
  (``monai_ext.data.public``; NAME one of isic2018, kvasir_seg, cvc_clinicdb, busi, glas, monuseg, drive,
  montgomery, promise12, physionet_ich).
- ``synthetic OUTPUT``: write the synthetic blobs-and-tubes data set (``monai_ext.data.synthetic``).

Errors end with exit status 2 and one line naming the file and the problem.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _prepare(args: argparse.Namespace) -> None:
    from monai_ext.data.public import prepare_dataset

    split = tuple(args.split) if args.split else None
    kwargs = {"seed": args.seed, **({"split": split} if split else {})}
    path = prepare_dataset(args.name, args.source, args.output, **kwargs)
    print(f"datalist written to {path}")


def _synthetic(args: argparse.Namespace) -> None:
    from monai_ext.data.synthetic import make_synthetic_dataset

    size = tuple(args.size) if args.size else None
    path = make_synthetic_dataset(args.output, args.cases, args.spatial_dims, size, args.format, seed=args.seed)
    print(f"datalist written to {path}")


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
    p.set_defaults(func=_prepare)

    s = sub.add_parser("synthetic", help="write the synthetic blobs-and-tubes data set")
    s.add_argument("output")
    s.add_argument("--cases", type=int, default=40)
    s.add_argument("--spatial-dims", type=int, default=2, choices=(2, 3))
    s.add_argument("--size", type=int, nargs="+")
    s.add_argument("--format", default="nifti", choices=("nifti", "png"))
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synthetic)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as e:  # DatasetLayoutError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
