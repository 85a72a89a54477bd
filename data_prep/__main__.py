"""Prepare line-art/colour pairs for colorizer, from one of four sources, in one on-disk format:
DIR/manifest.jsonl (one pair per line: id, group, split, line, color, source), DIR/line/*.png
(greyscale, black lines on white), DIR/color/*.png (RGB), DIR/report.json and DIR/preview.png.
Splits are 70/20/10 by a stable hash of each pair's group, so re-runs never move a group.

examples:
  python -m data_prep openmoji --out data/openmoji256 --size 256
  python -m data_prep folder ~/art --out data/art256 --size 256 --styles 0.6 0.9 1.3
  python -m data_prep pairs ~/anime-pairs/train --out data/anime256 --size 256
  python -m data_prep iconify fluent-emoji-flat noto emojione --out data/iconify256 --size 256   # needs npm
  python -m data_prep scribbles data/openmoji256    # region scribbles beside the pairs (hints.scribbles)
  python -m data_prep lines data/art256             # line-art coverage and precision, into its report.json
"""
from __future__ import annotations

import argparse
import sys

from . import folder, iconify, linequality, openmoji, pairs, scribbles
from .common import PrepError, default_workers

# The sources, by sub-command name: a new source is a new file declaring its SOURCE, listed here.
SOURCES = {source.name: source for source in (openmoji.SOURCE, folder.SOURCE, pairs.SOURCE, iconify.SOURCE)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", required=True, metavar="{" + ",".join([*SOURCES, "scribbles", "lines"]) + "}")
    for source in SOURCES.values():
        p = sub.add_parser(source.name, help=source.help, description=source.description)
        source.add_arguments(p)
        p.add_argument("--out", required=True, help="output folder (refused if not empty, unless --overwrite)")
        p.add_argument("--size", type=int, default=256, help="side of the square output images in px (default 256)")
        p.add_argument("--workers", type=int, default=default_workers(),
                       help="worker processes (default: the usable CPU cores)")
        p.add_argument("--overwrite", action="store_true",
                       help="replace what a previous run wrote in a non-empty --out")
    scribbles.add_parser(sub, default_workers())  # not sources: they add to a prepared folder
    linequality.add_parser(sub, default_workers())
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1 or getattr(args, "size", 1) < 1:
        print("error: --size and --workers must be positive", file=sys.stderr)
        return 2
    try:
        if args.source == "scribbles":
            return scribbles.run(args.root, args.splits, args.workers, args.overwrite)
        if args.source == "lines":
            return linequality.run(args.root, args.max_items, args.workers)
        return SOURCES[args.source].run(args)
    except (PrepError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
