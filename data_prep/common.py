"""The on-disk format every source writes, and the pieces the sources share.

    DIR/manifest.jsonl  {"id", "group", "split", "line", "color", "source", ["style"]} per pair
    DIR/line/<id>.png   8-bit greyscale (mode L), black lines on white
    DIR/color/<id>.png  RGB, same size
    DIR/report.json     found, imported, skipped (reason -> files), duplicates, splits
    DIR/preview.png     random pairs from each split, for a person to check
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

SPLITS = (("train", 0.7), ("val", 0.9), ("test", 1.0))  # cumulative bounds on the group hash


class PrepError(Exception):
    """The run cannot start or produced nothing; the message says why and what to do."""


def split_for(group: str) -> str:
    """70/20/10 by a stable hash of the group: never changes when data is added or re-run."""
    value = int.from_bytes(hashlib.sha1(group.encode("utf-8")).digest()[:8], "big") / 2**64
    return next(name for name, bound in SPLITS if value < bound)


def prepare_out(out: Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise PrepError(f"{out} is not empty: choose another --out or pass --overwrite to replace it")
        for sub in ("line", "color"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for name in ("manifest.jsonl", "report.json", "preview.png"):
            (out / name).unlink(missing_ok=True)
    (out / "line").mkdir(parents=True, exist_ok=True)
    (out / "color").mkdir(parents=True, exist_ok=True)
    return out


def open_image(path: Path) -> Image.Image:
    """Decode any supported file to RGB on white: EXIF orientation, transparency, palette, CMYK,
    greyscale+alpha and 16-bit handled. Raises ValueError with the reason for unusable files."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.seek(0)  # GIF/TIFF: first frame
                im.load()
                im = ImageOps.exif_transpose(im)
                return to_rgb(im)
    except (OSError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ValueError(f"not a readable image ({type(err).__name__}: {str(err)[:100]})") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB, transparency composited on white, 16-bit scaled (not clipped) to 8-bit."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode in ("RGB", "L") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def square(im: Image.Image, size: int, resample=Image.Resampling.LANCZOS) -> Image.Image:
    """Resize so the short side is ``size``, then centre-crop to size x size."""
    return ImageOps.fit(im, (size, size), method=resample, centering=(0.5, 0.5))


def write_outputs(out: Path, records: list, report: dict, seed: int = 0) -> dict:
    """Manifest, report (with split counts) and preview; returns the report."""
    records = sorted(records, key=lambda r: r["id"])
    with open(out / "manifest.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    report["imported"] = len(records)
    report["groups"] = len({r["group"] for r in records})
    report["splits"] = dict(Counter(r["split"] for r in records))
    group_splits = defaultdict(set)
    for r in records:
        group_splits[r["group"]].add(r["split"])
    report["groups_across_splits"] = sum(len(s) > 1 for s in group_splits.values())
    report["skipped_count"] = {reason: len(files) for reason, files in report.get("skipped", {}).items()}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    if records:
        preview(out, records, seed).save(out / "preview.png")
    return report


def preview(out: Path, records: list, seed: int = 0, per_split: int = 6, tile: int = 96) -> Image.Image:
    """Contact sheet: one row pair (line over colour) per split, labelled."""
    rng = random.Random(seed)
    rows = []
    for split, _ in SPLITS:
        pool = [r for r in records if r["split"] == split]
        rows.append((split, rng.sample(pool, min(per_split, len(pool)))))
    label_w = 60
    sheet = Image.new("RGB", (label_w + per_split * (tile + 4), len(rows) * (2 * tile + 12)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (split, chosen) in enumerate(rows):
        y = i * (2 * tile + 12)
        draw.text((4, y + tile - 6), split, fill="black")
        for j, r in enumerate(chosen):
            x = label_w + j * (tile + 4)
            sheet.paste(Image.open(out / r["line"]).convert("RGB").resize((tile, tile)), (x, y))
            sheet.paste(Image.open(out / r["color"]).convert("RGB").resize((tile, tile)), (x, y + tile + 2))
    return sheet


def finish(out: Path, records: list, report: dict, started: float) -> int:
    report["elapsed_s"] = round(time.time() - started, 2)
    report = write_outputs(out, records, report)
    skipped = sum(report["skipped_count"].values())
    print(f"{out}: {report['imported']} pairs in {report['groups']} groups {report['splits']}; "
          f"{skipped} skipped, {len(report.get('duplicates', []))} duplicates removed "
          f"({report['elapsed_s']} s). Details: {out / 'report.json'}, check {out / 'preview.png'}")
    if not records:
        print(f"error: nothing usable was found in {report.get('source')}", file=sys.stderr)
        return 1
    return 0
