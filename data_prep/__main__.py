"""Prepare line-art/colour pairs for colorizer, from one of three sources, in one on-disk format:
DIR/manifest.jsonl (one pair per line: id, group, split, line, color, source), DIR/line/*.png
(greyscale, black lines on white), DIR/color/*.png (RGB), DIR/report.json and DIR/preview.png.
Splits are 70/20/10 by a stable hash of each pair's group, so re-runs never move a group.

examples:
  python -m data_prep openmoji --out data/openmoji256 --size 256
  python -m data_prep folder ~/art --out data/art256 --size 256 --styles 0.6 0.9 1.3
  python -m data_prep pairs ~/anime-pairs/train --out data/anime256 --size 256
"""
from __future__ import annotations

import argparse
import sys

from . import folder, openmoji, pairs
from .common import PrepError, default_workers
from .lineart import XDoG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", required=True, metavar="{openmoji,folder,pairs}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, help="output folder (refused if not empty, unless --overwrite)")
        p.add_argument("--size", type=int, default=256, help="side of the square output images in px (default 256)")
        p.add_argument("--workers", type=int, default=default_workers(),
                       help="worker processes (default: the usable CPU cores)")
        p.add_argument("--overwrite", action="store_true",
                       help="replace what a previous run wrote in a non-empty --out")

    p = sub.add_parser("openmoji", help="the embedded OpenMoji set: artist's line layer + colour render",
                       description="Render every OpenMoji SVG whole (colour) and with only its line group "
                                   f"(line art). {openmoji.LICENCE}.")
    common(p)
    p.add_argument("--limit", type=int, default=0, help="only the first N SVGs sorted by name (0 = all; for tests)")

    x = XDoG()
    p = sub.add_parser("folder", help="a folder tree of colour illustrations; line art extracted with XDoG",
                       description="Import colour illustrations (PNG, JPEG, WebP, BMP, TIFF, GIF first frame; "
                                   "searched recursively). Resized so the short side is --size, centre-cropped, "
                                   "line art extracted with XDoG. Corrupt, tiny and greyscale files and "
                                   "duplicates are left out and listed in report.json.")
    p.add_argument("src", help="folder of colour illustrations")
    common(p)
    g = p.add_argument_group("XDoG line extraction (sigma in output pixels)")
    g.add_argument("--sigma", type=float, default=x.sigma, help=f"finer Gaussian sigma; bolder lines when larger (default {x.sigma})")
    g.add_argument("--k", type=float, default=x.k, help=f"coarse/fine sigma ratio (default {x.k})")
    g.add_argument("--tau", type=float, default=x.tau,
                   help=f"weight of the coarse Gaussian, closer to 1 = fewer, cleaner lines (default {x.tau}; "
                        "Winnemoeller's p = tau / (1 - tau))")
    g.add_argument("--epsilon", type=float, default=x.epsilon, help=f"threshold; lower = fewer lines (default {x.epsilon})")
    g.add_argument("--phi", type=float, default=x.phi, help=f"threshold sharpness; larger = more binary (default {x.phi})")
    g.add_argument("--styles", type=float, nargs="+", metavar="SIGMA",
                   help="several line styles: one pair per sigma per image, in the image's group "
                        "(e.g. --styles 0.6 0.9 1.3; replaces --sigma)")
    p.add_argument("--min-size", type=int, default=128, help="skip images whose short side is smaller (px, default 128)")
    p.add_argument("--min-chroma", type=float, default=0.03,
                   help="skip images whose mean chroma (max-min of RGB, 0..1) is lower: greyscale (default 0.03)")
    p.add_argument("--near-distance", type=int, default=6,
                   help="perceptual-hash bits (of 64) within which two images are near duplicates "
                        "(default 6; 0 = remove exact duplicates only)")

    p = sub.add_parser("pairs", help="side-by-side pair images (colour | sketch)",
                       description="Split side-by-side pair images into halves: the colour half and the sketch "
                                   "half (converted to greyscale), each resized and centre-cropped to --size.")
    p.add_argument("src", help="folder of pair images (searched recursively)")
    common(p)
    p.add_argument("--layout", choices=pairs.LAYOUTS, default="color-left",
                   help="which half holds the colour image (default color-left, as in the anime sketch "
                        "colorization pairs dataset)")
    p.add_argument("--min-size", type=int, default=64, help="skip pairs whose halves are smaller (px, default 64)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.size < 1 or args.workers < 1:
        print("error: --size and --workers must be positive", file=sys.stderr)
        return 2
    try:
        if args.source == "openmoji":
            return openmoji.run(args.out, args.size, args.workers, args.overwrite, args.limit)
        if args.source == "folder":
            styles = [XDoG(sigma, args.k, args.tau, args.epsilon, args.phi) for sigma in (args.styles or [args.sigma])]
            return folder.run(args.src, args.out, args.size, args.workers, args.overwrite, styles,
                              args.min_size, args.min_chroma, args.near_distance)
        return pairs.run(args.src, args.out, args.size, args.workers, args.overwrite, args.layout, args.min_size)
    except (PrepError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
