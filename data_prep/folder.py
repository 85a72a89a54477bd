"""A folder tree of colour illustrations -> pairs, line art extracted from the colour (``--lines``:
colour-aware by default, or XDoG of the luminance; one pair per style).

Each file is its own group (its path relative to SRC), so adding files later never moves the
existing ones between splits. Unusable files (corrupt, tiny, greyscale, no edges) and duplicates (same pixels,
or a perceptual hash within a few bits: resized or re-encoded copies) are left out and reported.
"""
from __future__ import annotations

import hashlib
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from tqdm import tqdm

from .common import (Source, collect, image_files, list_files, new_report, one_thread, open_image, pair_id,
                     prepare_out, rel_name, skip, split_for, square)
from .lineart import DEFAULT_LINES, LINE_EXTRACTORS, XDoG, extractor, has_lines
from .outputs import finish

GREYSCALE = "essentially greyscale (mean chroma below --min-chroma)"
EMPTY_LINES = "no line art found (smooth image: the line extractor drew almost nothing)"


def chroma(rgb: Image.Image) -> float:
    """Mean of max(R, G, B) - min(R, G, B) in [0, 1] on a small copy: about 0 for greyscale images."""
    small = np.asarray(rgb.resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    return float((small.max(-1) - small.min(-1)).mean())


def inspect(path: Path, root: Path, min_size: int, min_chroma: float) -> dict:
    """Decode and check one file -> {rel, sha1, phash, pixels} or {rel, skip: reason}."""
    rel = rel_name(path, root)
    try:
        rgb = open_image(path)
    except (ValueError, OSError) as err:
        return {"rel": rel, "skip": str(err)}
    if min(rgb.size) < min_size:
        return {"rel": rel, "skip": f"smaller than --min-size {min_size} px"}
    if chroma(rgb) < min_chroma:
        return {"rel": rel, "skip": GREYSCALE}
    pixels_hash = hashlib.sha1(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()
    return {"rel": rel, "sha1": pixels_hash, "phash": int(str(imagehash.phash(rgb)), 16),
            "pixels": rgb.size[0] * rgb.size[1]}


def dedupe(items: list, max_distance: int) -> tuple:
    """Drop exact duplicates (same decoded pixels) and near duplicates (perceptual hashes within
    ``max_distance`` bits of a kept image), keeping the largest image of each set (ties: the first
    path). -> (kept items, [{"kept", "dropped", "kind"}])."""
    order = sorted(items, key=lambda i: (-i["pixels"], i["rel"]))
    kept, duplicates, by_sha1 = [], [], {}
    kept_hashes = np.zeros(len(order), dtype=np.uint64)
    for item in order:
        if item["sha1"] in by_sha1:
            duplicates.append({"kept": by_sha1[item["sha1"]], "dropped": item["rel"], "kind": "exact"})
            continue
        if max_distance > 0 and kept:
            distances = np.bitwise_count(kept_hashes[: len(kept)] ^ np.uint64(item["phash"]))
            nearest = int(distances.argmin())
            if distances[nearest] <= max_distance:
                duplicates.append({"kept": kept[nearest]["rel"], "dropped": item["rel"], "kind": "near"})
                continue
        by_sha1[item["sha1"]] = item["rel"]
        kept_hashes[len(kept)] = item["phash"]
        kept.append(item)
    return sorted(kept, key=lambda i: i["rel"]), duplicates


def convert_one(rel: str, root: Path, out: Path, size: int, styles: tuple):
    """-> (records, None) or ([], (reason, rel)). A style whose line art is (nearly) empty is left
    out; an image with no usable style is skipped."""
    try:
        rgb = square(open_image(root / rel), size)
        base = pair_id(rel)
        lines = {}
        for i, style in enumerate(styles):
            line = style(rgb)
            if has_lines(line):
                lines[i] = line
        if not lines:
            return [], (EMPTY_LINES, rel)
        rgb.save(out / "color" / f"{base}.png")
        records = []
        for i, line in lines.items():
            this_id = f"{base}_s{i}" if len(styles) > 1 else base
            line.save(out / "line" / f"{this_id}.png")
            records.append({"id": this_id, "group": rel, "split": split_for(rel), "line": f"line/{this_id}.png",
                            "color": f"color/{base}.png", "source": rel, "style": styles[i].describe()})
        return records, None
    except Exception as err:  # noqa: BLE001  one bad file must not stop the run
        return [], (f"failed during conversion ({type(err).__name__})", rel)


def run(src: Path, out: Path, size: int, workers: int, overwrite: bool, styles: list, min_size: int,
        min_chroma: float, near_distance: int) -> int:
    """Import ``src`` into ``out``; ``styles`` is a list of line extractors (``lineart.extractor``, one
    pair per style)."""
    started = time.time()
    src = Path(src)
    files = list_files(src)
    out = prepare_out(out, overwrite)
    report = new_report(str(src), size, len(files), styles=[x.describe() for x in styles],
                        min_size=min_size, min_chroma=min_chroma, near_distance=near_distance)
    candidates = image_files(files, src, report)
    with Pool(max(1, workers), initializer=one_thread) as pool:
        work = partial(inspect, root=src, min_size=min_size, min_chroma=min_chroma)
        usable = []
        for item in tqdm(pool.imap(work, candidates, chunksize=4), total=len(candidates), desc="inspect",
                         dynamic_ncols=True):
            if "skip" in item:
                skip(report, item["skip"], item["rel"])
            else:
                usable.append(item)
        kept, report["duplicates"] = dedupe(usable, near_distance)
        work = partial(convert_one, root=src, out=out, size=size, styles=tuple(styles))
        records = collect(pool, work, [i["rel"] for i in kept], report, "convert")
    return finish(out, records, report, started)


def add_arguments(parser) -> None:
    defaults = XDoG()
    parser.add_argument("src", help="folder of colour illustrations")
    parser.add_argument("--lines", choices=LINE_EXTRACTORS, default=DEFAULT_LINES,
                        help=f"line extraction: colour = XDoG's lines plus a line wherever the colour changes "
                             f"(finds the contours of light shapes on white); xdog = XDoG of the luminance only "
                             f"(default {DEFAULT_LINES})")
    xdog = parser.add_argument_group("XDoG settings, of --lines xdog and of colour's luminance lines "
                                     "(sigma in output pixels)")
    xdog.add_argument("--sigma", type=float, default=defaults.sigma,
                      help=f"finer Gaussian sigma; bolder lines when larger (default {defaults.sigma})")
    xdog.add_argument("--k", type=float, default=defaults.k, help=f"coarse/fine sigma ratio (default {defaults.k})")
    xdog.add_argument("--tau", type=float, default=defaults.tau,
                      help=f"weight of the coarse Gaussian, closer to 1 = fewer, cleaner lines "
                           f"(default {defaults.tau}; "
                           "Winnemoeller's p = tau / (1 - tau))")
    xdog.add_argument("--epsilon", type=float, default=defaults.epsilon,
                      help=f"threshold; lower = fewer lines (default {defaults.epsilon})")
    xdog.add_argument("--phi", type=float, default=defaults.phi,
                      help=f"threshold sharpness; larger = more binary (default {defaults.phi})")
    xdog.add_argument("--styles", type=float, nargs="+", metavar="SIGMA",
                      help="several line styles: one pair per sigma per image, in the image's group "
                           "(e.g. --styles 0.6 0.9 1.3; replaces --sigma)")
    parser.add_argument("--min-size", type=int, default=128,
                        help="skip images whose short side is smaller (px, default 128)")
    parser.add_argument("--min-chroma", type=float, default=0.03,
                        help="skip images whose mean chroma (max-min of RGB, 0..1) is lower: greyscale (default 0.03)")
    parser.add_argument("--near-distance", type=int, default=6,
                        help="perceptual-hash bits (of 64) within which two images are near duplicates "
                             "(default 6; 0 = remove exact duplicates only)")


def run_args(args) -> int:
    styles = [extractor(args.lines, XDoG(sigma, args.k, args.tau, args.epsilon, args.phi))
              for sigma in (args.styles or [args.sigma])]
    return run(args.src, args.out, args.size, args.workers, args.overwrite, styles, args.min_size, args.min_chroma,
               args.near_distance)


SOURCE = Source(
    name="folder", help="a folder tree of colour illustrations; line art extracted from the colour",
    description="Import colour illustrations (PNG, JPEG, WebP, BMP, TIFF, GIF first frame; searched recursively). "
                "Resized so the short side is --size, centre-cropped, line art extracted (--lines). Corrupt, tiny "
                "and greyscale files and duplicates are left out and listed in report.json.",
    add_arguments=add_arguments, run=run_args)
