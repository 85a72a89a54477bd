"""Side-by-side pair images (colour | sketch), the layout of the public anime sketch-colorization set.

Each image is split into its left and right halves; the sketch half becomes the greyscale line art.
"""
from __future__ import annotations

import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

from .common import (finish, image_files, list_files, new_report, open_image, pair_id, prepare_out, rel_name, skip,
                     split_for, square)

LAYOUTS = ("color-left", "color-right")


def convert_one(path: Path, root: Path, out: Path, size: int, layout: str, min_size: int):
    """-> (record, None) or (None, (reason, rel))."""
    rel = rel_name(path, root)
    try:
        image = open_image(path)
    except (ValueError, OSError) as err:
        return None, (str(err), rel)
    try:
        width, height = image.size
        half = width // 2
        if min(half, height) < min_size:
            return None, (f"halves smaller than --min-size {min_size} px", rel)
        left, right = image.crop((0, 0, half, height)), image.crop((width - half, 0, width, height))
        color, sketch = (left, right) if layout == "color-left" else (right, left)
        this_id = pair_id(rel)
        square(sketch.convert("L"), size).save(out / "line" / f"{this_id}.png")
        square(color, size).save(out / "color" / f"{this_id}.png")
    except Exception as err:  # noqa: BLE001  one bad file must not stop the run
        return None, (f"failed during conversion ({type(err).__name__})", rel)
    return {"id": this_id, "group": rel, "split": split_for(rel), "line": f"line/{this_id}.png",
            "color": f"color/{this_id}.png", "source": rel}, None


def run(src: Path, out: Path, size: int, workers: int, overwrite: bool, layout: str, min_size: int) -> int:
    started = time.time()
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    src = Path(src)
    files = list_files(src)
    out = prepare_out(out, overwrite)
    report = new_report(str(src), size, len(files), layout=layout, min_size=min_size)
    images = image_files(files, src, report)
    records = []
    with Pool(max(1, workers)) as pool:
        work = partial(convert_one, root=src, out=out, size=size, layout=layout, min_size=min_size)
        for record, failed in tqdm(pool.imap(work, images, chunksize=4), total=len(images), desc="pairs",
                                   dynamic_ncols=True):
            if record:
                records.append(record)
            else:
                skip(report, *failed)
    return finish(out, records, report, started)
