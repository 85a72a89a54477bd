"""python -m data_prep {openmoji,folder,pairs} ... --out DIR --size N"""
from __future__ import annotations

import argparse
import sys

from . import folder, openmoji, pairs
from .common import PrepError
from .lineart import XDoG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__)
    sub = parser.add_subparsers(dest="source", required=True)

    def common(p):
        p.add_argument("--out", required=True, help="output folder (refused if not empty, unless --overwrite)")
        p.add_argument("--size", type=int, default=256, help="side of the square output images in pixels")
        p.add_argument("--workers", type=int, default=openmoji.default_workers(), help="processes")
        p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")

    p = sub.add_parser("openmoji", help="the embedded OpenMoji set: the artist's line layer and the colour render")
    common(p)
    p.add_argument("--limit", type=int, default=0, help="only the first N SVGs, sorted by name (0 = all)")

    d = XDoG()
    p = sub.add_parser("folder", help="a folder tree of colour illustrations; line art extracted with XDoG")
    p.add_argument("src", help="folder of PNG, JPEG, WebP, BMP, TIFF or GIF files (searched recursively)")
    common(p)
    p.add_argument("--sigma", type=float, default=d.sigma, help="XDoG: finer Gaussian sigma in pixels")
    p.add_argument("--k", type=float, default=d.k, help="XDoG: coarse/fine sigma ratio")
    p.add_argument("--tau", type=float, default=d.tau, help="XDoG: weight of the coarse Gaussian")
    p.add_argument("--epsilon", type=float, default=d.epsilon, help="XDoG: threshold")
    p.add_argument("--phi", type=float, default=d.phi, help="XDoG: threshold sharpness")
    p.add_argument("--styles", type=float, nargs="*", default=[],
                   help="several XDoG sigmas: one pair per sigma per image (same group), e.g. --styles 0.6 0.9 1.3")
    p.add_argument("--min-size", type=int, default=128, help="skip images whose short side is smaller")
    p.add_argument("--min-chroma", type=float, default=0.04,
                   help="skip images whose mean chroma (max-min of RGB, 0..1) is lower: greyscale")
    p.add_argument("--near-distance", type=int, default=6,
                   help="perceptual-hash bits within which two images are near duplicates (0 = exact only)")

    p = sub.add_parser("pairs", help="side-by-side pair images (colour | sketch)")
    p.add_argument("src", help="folder of pair images")
    common(p)
    p.add_argument("--layout", choices=("color-left", "color-right"), default="color-left")
    p.add_argument("--min-size", type=int, default=64, help="skip pairs whose halves are smaller")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.source == "openmoji":
            return openmoji.run(args.out, args.size, args.workers, args.overwrite, args.limit)
        if args.source == "folder":
            xdog = XDoG(args.sigma, args.k, args.tau, args.epsilon, args.phi)
            return folder.run(args.src, args.out, args.size, args.workers, args.overwrite, xdog, args.styles,
                              args.min_size, args.min_chroma, args.near_distance)
        return pairs.run(args.src, args.out, args.size, args.workers, args.overwrite, args.layout, args.min_size)
    except (PrepError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
