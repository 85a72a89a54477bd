"""The on-disk format every source writes, and the pieces the sources share.

    DIR/manifest.jsonl  {"id", "group", "split", "line", "color", "source", ["style"]} per pair
    DIR/line/<id>.png   8-bit greyscale (mode L), black lines on white paper (255)
    DIR/color/<...>.png RGB, same size as the line image (several styles may share one)
    DIR/report.json     source, size, found, imported, groups, splits, skipped (reason -> files),
                        duplicates (kept, dropped, kind), elapsed_s, line_quality (coverage and
                        precision of the line art against the colour contours: linequality.py)
    DIR/preview.png     a few random pairs from each split, for a person to check

A source writes the pairs itself, then ``outputs.finish`` writes the manifest, the report and the
preview. ``colorizer/data.py`` reads this and nothing else.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, ImageOps
from tqdm import tqdm

from colorizer.images import flatten_image

SPLITS = (("train", 0.7), ("val", 0.9), ("test", 1.0))  # cumulative upper bounds on the group hash
OUTPUTS = ("line", "color", "manifest.jsonl", "report.json", "preview.png")  # what a run writes


class PrepError(Exception):
    """The run cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class Source:
    """One kind of input, declared by its own file (openmoji.py, folder.py, pairs.py, iconify.py) as ``SOURCE``:
    its sub-command name, help, its own options (besides --out, --size, --workers, --overwrite) and
    what runs it. ``__main__.SOURCES`` lists them."""

    name: str  # the sub-command: python -m data_prep NAME
    help: str  # one line in `python -m data_prep --help`
    description: str  # the paragraph of `python -m data_prep NAME --help`
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]  # exit status: 0, or 1 when nothing usable was found


def one_thread() -> None:
    """Pool initializer: one torch thread per worker process. The workers already use every core;
    torch's own threads on top of them spin for cores and made XDoG extraction 25x slower."""
    import torch

    torch.set_num_threads(1)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def split_for(group: str) -> str:
    """70/20/10 by a stable hash of the group: re-runs and added data never move a group."""
    value = int.from_bytes(hashlib.sha1(group.encode("utf-8")).digest()[:8], "big") / 2**64  # [0, 1)
    return next(name for name, bound in SPLITS if value < bound)


def pair_id(rel: str) -> str:
    """A file-name-safe id that stays unique for any relative path: short path hash + readable stem."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(rel).stem)[:40].strip("_") or "img"
    return f"{hashlib.sha1(rel.encode('utf-8')).hexdigest()[:12]}_{stem}"


def prepare_out(out: Path, overwrite: bool) -> Path:
    """Create ``out``; a non-empty folder is refused unless ``overwrite``, which replaces only what a
    previous run wrote (other files there are left alone)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PrepError(f"--out {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise PrepError(f"--out {out} is not empty: choose another folder or pass --overwrite to replace it")
        for name in OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    (out / "line").mkdir(parents=True, exist_ok=True)
    (out / "color").mkdir(parents=True, exist_ok=True)
    return out


def list_files(src: Path) -> list:
    """Every file under ``src`` (recursively, hidden files too: they are reported, not silently lost)."""
    src = Path(src)
    if not src.is_dir():
        raise PrepError(f"{src} is not a folder")
    return sorted(p for p in src.rglob("*") if p.is_file())


def rel_name(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def open_image(path: Path) -> Image.Image:
    """Decode a file to RGB on white: first frame, EXIF orientation, transparency, palette, CMYK,
    greyscale+alpha and 16-bit handled. Raises ValueError("reason") for files that cannot be used."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.seek(0)  # GIF, multi-page TIFF: the first frame
                im.load()
                return flatten_image(ImageOps.exif_transpose(im), "RGB")
    except Image.UnidentifiedImageError:
        raise ValueError("not an image") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ValueError("too many pixels (decompression bomb guard)") from None
    except Exception as err:  # noqa: BLE001  decoders raise many types on bad data; none may stop a run
        raise ValueError("corrupt or truncated image") from None


def square(im: Image.Image, size: int) -> Image.Image:
    """Resize so the short side is ``size`` (antialiased), then centre-crop to size x size."""
    return ImageOps.fit(im, (size, size), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def new_report(source: str, size: int, found: int, **extra) -> dict:
    return {"source": source, "size": size, "found": found, "imported": 0, "groups": 0, "splits": {},
            "skipped": {}, "duplicates": [], "elapsed_s": 0.0, **extra}


def skip(report: dict, reason: str, name: str) -> None:
    report["skipped"].setdefault(reason, []).append(name)


IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def image_files(files: list, src: Path, report: dict) -> list:
    """The ``files`` with an image extension; every other file is recorded in ``report`` as skipped."""
    images = []
    for p in files:
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(p)
        else:
            skip(report, "not an image file extension", rel_name(p, src))
    return images


def collect(pool, work, items: list, report: dict, desc: str, chunksize: int = 4) -> list:
    """Run ``work`` over ``items`` in the process ``pool`` with a progress bar. ``work`` returns
    (records, failure): a record dict, a list of them or None, and (reason, name) or None. Returns
    the records in the order of ``items``; each failure is recorded in ``report`` as skipped."""
    records = []
    for found, failed in tqdm(pool.imap(work, items, chunksize=chunksize), total=len(items), desc=desc,
                              dynamic_ncols=True):
        records += found if isinstance(found, list) else [found] if found else []
        if failed:
            skip(report, *failed)
    return records
