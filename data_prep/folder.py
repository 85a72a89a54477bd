"""A folder tree of colour illustrations -> pairs, line art extracted with XDoG (one or more styles)."""
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

from .common import finish, open_image, prepare_out, split_for, square
from .lineart import XDoG

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def chroma(rgb: Image.Image) -> float:
    """Mean of (max - min) over RGB channels in [0, 1], on a small copy: ~0 for greyscale images."""
    small = np.asarray(rgb.resize((64, 64)), dtype=np.float32) / 255.0
    return float((small.max(-1) - small.min(-1)).mean())


def inspect(path: Path, root: Path, min_size: int, min_chroma: float):
    """Decode and check one file: -> dict(rel, pixels_sha1, phash) or dict(rel, skip=reason)."""
    rel = str(path.relative_to(root))
    try:
        rgb = open_image(path)
    except (ValueError, OSError) as err:
        return {"rel": rel, "skip": str(err).split(" (")[0]}
    if min(rgb.size) < min_size:
        return {"rel": rel, "skip": f"smaller than --min-size {min_size} px"}
    if chroma(rgb) < min_chroma:
        return {"rel": rel, "skip": "essentially greyscale (nothing to learn colour from)"}
    return {"rel": rel, "sha1": hashlib.sha1(rgb.tobytes() + str(rgb.size).encode()).hexdigest(),
            "phash": str(imagehash.phash(rgb)), "pixels": rgb.size[0] * rgb.size[1]}


def dedupe(items: list, max_distance: int) -> tuple:
    """Drop exact (same pixels) then near duplicates (perceptual hash within ``max_distance`` bits),
    keeping the largest image of each set (ties: the first path). -> (kept, duplicates)."""
    kept, duplicates, by_sha = [], [], {}
    hashes = []
    for item in sorted(items, key=lambda i: (-i["pixels"], i["rel"])):
        if item["sha1"] in by_sha:
            duplicates.append({"kept": by_sha[item["sha1"]], "dropped": item["rel"], "kind": "exact"})
            continue
        h = imagehash.hex_to_hash(item["phash"])
        near = next((k for k, hk in zip(kept, hashes) if h - hk <= max_distance), None)
        if near is not None:
            duplicates.append({"kept": near["rel"], "dropped": item["rel"], "kind": "near"})
            continue
        by_sha[item["sha1"]] = item["rel"]
        kept.append(item)
        hashes.append(h)
    return kept, duplicates


def convert_one(rel: str, root: Path, out: Path, size: int, styles: tuple):
    rgb = square(open_image(root / rel), size)
    group = rel.replace("\\", "/")
    base = hashlib.sha1(group.encode()).hexdigest()[:12] + "_" + Path(rel).stem[:40].replace(" ", "_")
    rgb.save(out / "color" / f"{base}.png")
    records = []
    for i, xdog in enumerate(styles):
        pair_id = f"{base}_s{i}" if len(styles) > 1 else base
        xdog(rgb).save(out / "line" / f"{pair_id}.png")
        records.append({"id": pair_id, "group": group, "split": split_for(group), "line": f"line/{pair_id}.png",
                        "color": f"color/{base}.png", "source": rel, "style": f"xdog sigma={xdog.sigma}"})
    return records


def run(src: Path, out: Path, size: int, workers: int, overwrite: bool, xdog: XDoG, sigmas: list,
        min_size: int, min_chroma: float, near_distance: int) -> int:
    started = time.time()
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder")
    files = sorted(p for p in src.rglob("*") if p.is_file())
    out = prepare_out(out, overwrite)
    report = {"source": str(src), "size": size, "found": len(files), "skipped": {}, "duplicates": []}
    candidates = []
    for p in files:
        if p.suffix.lower() not in EXTENSIONS:
            report["skipped"].setdefault("not an image extension", []).append(str(p.relative_to(src)))
        else:
            candidates.append(p)
    with Pool(max(1, workers)) as pool:
        inspected = list(tqdm(pool.imap(partial(inspect, root=src, min_size=min_size, min_chroma=min_chroma),
                                        candidates, chunksize=8), total=len(candidates), desc="inspect",
                              dynamic_ncols=True))
        usable = []
        for item in inspected:
            if "skip" in item:
                report["skipped"].setdefault(item["skip"], []).append(item["rel"])
            else:
                usable.append(item)
        kept, report["duplicates"] = dedupe(usable, near_distance)
        styles = tuple(XDoG(sigma=s, k=xdog.k, tau=xdog.tau, epsilon=xdog.epsilon, phi=xdog.phi)
                       for s in (sigmas or [xdog.sigma]))
        records = []
        work = partial(convert_one, root=src, out=out, size=size, styles=styles)
        for recs in tqdm(pool.imap(work, [k["rel"] for k in kept], chunksize=4), total=len(kept),
                         desc="convert", dynamic_ncols=True):
            records += recs
    return finish(out, records, report, started)
