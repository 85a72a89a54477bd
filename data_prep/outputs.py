"""What every source writes last, from its records: the manifest, the report (with its counts and
the line quality of the line art against the colour contours, ``linequality.line_quality``) and
the preview; then the summary it prints. The format: ``common``'s docstring."""
from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image, ImageDraw

from .common import SPLITS
from .linequality import DEFAULT_ITEMS, line_quality


def write_outputs(out: Path, records: list, report: dict, seed: int = 0) -> dict:
    """Manifest, report (with counts) and preview; returns the report."""
    records = sorted(records, key=lambda r: r["id"])
    with open(out / "manifest.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    group_splits = defaultdict(set)
    for r in records:
        group_splits[r["group"]].add(r["split"])
    leaking = sorted(g for g, s in group_splits.items() if len(s) > 1)
    if leaking:  # impossible while the split is a function of the group; kept as a guard on the format
        raise RuntimeError(f"groups span several splits: {leaking[:5]}")
    report["imported"] = len(records)
    report["groups"] = len(group_splits)
    counts = Counter(r["split"] for r in records)
    report["splits"] = {name: counts.get(name, 0) for name, _ in SPLITS}
    report["skipped"] = {reason: sorted(files) for reason, files in sorted(report["skipped"].items())}
    report["skipped_count"] = {reason: len(files) for reason, files in report["skipped"].items()}
    if records:  # measured on the manifest and images just written
        report["line_quality"] = line_quality(out, DEFAULT_ITEMS, workers=1)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if records:
        preview(out, records, seed).save(out / "preview.png")
    return report


def preview(out: Path, records: list, seed: int = 0, per_split: int = 8, tile: int = 96) -> Image.Image:
    """Contact sheet: per split a labelled row of line art above a row of the matching colour images."""
    rng = random.Random(seed)
    label_w, gap = 48, 4
    sheet = Image.new("RGB", (label_w + per_split * (tile + gap), len(SPLITS) * (2 * tile + 3 * gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (split, _) in enumerate(SPLITS):
        pool = [r for r in records if r["split"] == split]
        y = row * (2 * tile + 3 * gap)
        draw.text((4, y + tile - 6), split, fill="black")
        for col, r in enumerate(rng.sample(pool, min(per_split, len(pool)))):
            x = label_w + col * (tile + gap)
            with Image.open(out / r["line"]) as line, Image.open(out / r["color"]) as color:
                sheet.paste(line.convert("RGB").resize((tile, tile)), (x, y))
                sheet.paste(color.convert("RGB").resize((tile, tile)), (x, y + tile + gap))
    return sheet


def finish(out: Path, records: list, report: dict, started: float) -> int:
    """Write everything, print a summary; exit status 1 when nothing usable was found."""
    report["elapsed_s"] = round(time.time() - started, 2)
    report = write_outputs(out, records, report)
    skipped = sum(report["skipped_count"].values())
    print(f"{out}: {report['imported']} pairs in {report['groups']} groups {report['splits']}; "
          f"{skipped} files skipped, {len(report['duplicates'])} duplicates removed "
          f"({report['elapsed_s']} s). Details in {out / 'report.json'}; check {out / 'preview.png'}")
    if records:
        quality = report["line_quality"]
        print(f"line art against the colour contours (first {quality['images']} pairs): coverage "
              f"{quality['coverage']}, precision {quality['precision']}")
    if not records:
        reasons = ", ".join(f"{k}: {v}" for k, v in report["skipped_count"].items()) or "no files"
        print(f"error: nothing usable was found in {report['source']} ({reasons})", file=sys.stderr)
        return 1
    return 0
