"""How well a prepared folder's line art follows its colour images' contours: two numbers, for any
folder in the data_prep format.

- coverage: the share of colour-boundary pixels (a CIE76 Delta E above ``BOUNDARY_DELTA_E`` to a
  4-neighbour, in the unsmoothed colour image) that lie within ``TOLERANCE_PX`` of ink;
- precision: the share of ink pixels (line art darker than ``INK_BELOW``) that lie within
  ``TOLERANCE_PX`` of a colour boundary.

A line art with low coverage leaves shapes without a contour (a yellow face on white paper), so no
colorizer can know where they end; one with low precision draws lines where the colour does not
change. Both are means over images (images with no boundary or no ink are counted apart).

    python -m data_prep lines data/art256            # writes "line_quality" into its report.json
"""
from __future__ import annotations

import json
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from colorizer.data import read_manifest, take
from colorizer.linestyle import colour_change

from .common import PrepError, collect, one_thread
from .lineart import INK_BELOW

BOUNDARY_DELTA_E = 10.0  # a colour boundary: neighbours this far apart in CIELAB (CIE76)
TOLERANCE_PX = 2.0  # "within 2 px" of the definition, as a Euclidean distance
DEFAULT_ITEMS = 300  # images measured by default: the first N pairs of the manifest (by id)


def coverage_precision(line: np.ndarray, color: np.ndarray) -> tuple:
    """line (H, W) uint8 (paper 255), color (H, W, 3) uint8 -> (coverage, precision), each in [0, 1]
    or None when the image has no colour boundary (coverage) or no ink (precision)."""
    rgb01 = torch.from_numpy(color.astype(np.float32) / 255.0).permute(2, 0, 1)[None]  # (1, 3, H, W)
    boundary = (colour_change(rgb01, 0.0, 0.0) > BOUNDARY_DELTA_E)[0, 0].numpy()  # (H, W) bool
    ink = line < INK_BELOW
    coverage = precision = None
    if boundary.any():
        near_ink = ndimage.distance_transform_edt(~ink) <= TOLERANCE_PX if ink.any() else np.zeros_like(ink)
        coverage = float(near_ink[boundary].mean())
    if ink.any():
        near_boundary = ndimage.distance_transform_edt(~boundary) <= TOLERANCE_PX if boundary.any() \
            else np.zeros_like(boundary)
        precision = float(near_boundary[ink].mean())
    return coverage, precision


def measure_one(record: dict, root: Path):
    """-> ((coverage, precision), None) or (None, (reason, id)) for one manifest record."""
    try:
        with Image.open(root / record["line"]) as line, Image.open(root / record["color"]) as color:
            line_array = np.asarray(line.convert("L"))
            color_array = np.asarray(color.convert("RGB"))
    except (OSError, ValueError) as err:
        return None, (f"unreadable pair ({type(err).__name__})", record["id"])
    if line_array.shape != color_array.shape[:2]:
        return None, ("line and colour sizes differ", record["id"])
    return coverage_precision(line_array, color_array), None


def line_quality(root, max_items: int = DEFAULT_ITEMS, workers: int = 1) -> dict:
    """Coverage and precision of the prepared folder ``root`` over its first ``max_items`` pairs
    (0 = all) -> {"coverage", "precision", "images", "lost_half" (share of images with coverage
    below 0.5), "no_boundary", "no_ink", "skipped", settings}."""
    root = Path(root)
    records = take(read_manifest(root), max_items)
    if not records:
        raise PrepError(f"{root / 'manifest.jsonl'} lists no pairs: nothing to measure")
    report = {"skipped": {}}
    with Pool(max(1, workers), initializer=one_thread) as pool:
        pairs = collect(pool, partial(measure_one, root=root), records, report, "line quality", chunksize=8)
    coverage = [c for c, _ in pairs if c is not None]
    precision = [p for _, p in pairs if p is not None]
    return {"coverage": round(float(np.mean(coverage)), 4) if coverage else None,
            "precision": round(float(np.mean(precision)), 4) if precision else None,
            "lost_half": round(float(np.mean(np.array(coverage) < 0.5)), 4) if coverage else None,
            "images": len(pairs), "no_boundary": len(pairs) - len(coverage), "no_ink": len(pairs) - len(precision),
            "skipped": {reason: len(ids) for reason, ids in report["skipped"].items()},
            "boundary_delta_e": BOUNDARY_DELTA_E, "tolerance_px": TOLERANCE_PX, "ink_below": INK_BELOW}


def run(root, max_items: int, workers: int) -> int:
    root = Path(root)
    if not (root / "manifest.jsonl").is_file():
        raise PrepError(f"{root} has no manifest.jsonl: prepare it first (python -m data_prep --help)")
    quality = line_quality(root, max_items, workers)
    report_path = root / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report["line_quality"] = quality
    report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"{root}: line-art coverage {quality['coverage']}, precision {quality['precision']} over "
          f"{quality['images']} images ({quality['lost_half']} of them lose more than half of their contours); "
          f"written to {report_path}")
    return 0


def add_parser(sub, default_workers: int) -> None:
    p = sub.add_parser("lines", help="line-art coverage and precision of a prepared folder (into its report.json)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="a prepared folder (with manifest.jsonl)")
    p.add_argument("--max-items", type=int, default=DEFAULT_ITEMS,
                   help=f"measure the first N pairs by id (default {DEFAULT_ITEMS}; 0 = all)")
    p.add_argument("--workers", type=int, default=default_workers, help="worker processes (default: the CPU cores)")
