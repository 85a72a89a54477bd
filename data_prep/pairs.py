"""Side-by-side pair images (colour | sketch), the layout of the public anime sketch-colorization set.

Each image is split into its left and right halves; the sketch half becomes the greyscale line art.
"""
from __future__ import annotations

import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path


from .common import (Source, collect, image_files, list_files, new_report, one_thread, open_image, pair_id,
                     prepare_out, rel_name, split_for, square)
from .outputs import finish

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
    with Pool(max(1, workers), initializer=one_thread) as pool:
        work = partial(convert_one, root=src, out=out, size=size, layout=layout, min_size=min_size)
        records = collect(pool, work, images, report, "pairs")
    return finish(out, records, report, started)


def add_arguments(parser) -> None:
    parser.add_argument("src", help="folder of pair images (searched recursively)")
    parser.add_argument("--layout", choices=LAYOUTS, default="color-left",
                        help="which half holds the colour image (default color-left, as in the anime sketch "
                             "colorization pairs dataset)")
    parser.add_argument("--min-size", type=int, default=64, help="skip pairs whose halves are smaller (px, default 64)")


SOURCE = Source(
    name="pairs", help="side-by-side pair images (colour | sketch)",
    description="Split side-by-side pair images into halves: the colour half and the sketch half (converted to "
                "greyscale), each resized and centre-cropped to --size.",
    add_arguments=add_arguments,
    run=lambda args: run(args.src, args.out, args.size, args.workers, args.overwrite, args.layout, args.min_size))
