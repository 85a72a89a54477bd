"""Side-by-side pair images (colour | sketch), the layout of the public anime sketch-colorization set."""
from __future__ import annotations

import hashlib
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

from .common import finish, open_image, prepare_out, split_for, square
from .folder import EXTENSIONS


def convert_one(path: Path, root: Path, out: Path, size: int, layout: str, min_size: int):
    rel = str(path.relative_to(root))
    try:
        image = open_image(path)
    except (ValueError, OSError) as err:
        return None, (str(err).split(" (")[0], rel)
    width, height = image.size
    half = width // 2
    if half < min_size or height < min_size:
        return None, (f"halves smaller than --min-size {min_size} px", rel)
    left, right = image.crop((0, 0, half, height)), image.crop((half, 0, 2 * half, height))
    color, sketch = (left, right) if layout == "color-left" else (right, left)
    pair_id = hashlib.sha1(rel.encode()).hexdigest()[:12] + "_" + path.stem[:40].replace(" ", "_")
    square(sketch, size).convert("L").save(out / "line" / f"{pair_id}.png")
    square(color, size).save(out / "color" / f"{pair_id}.png")
    return {"id": pair_id, "group": rel, "split": split_for(rel), "line": f"line/{pair_id}.png",
            "color": f"color/{pair_id}.png", "source": rel}, None


def run(src: Path, out: Path, size: int, workers: int, overwrite: bool, layout: str, min_size: int) -> int:
    started = time.time()
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder")
    files = sorted(p for p in src.rglob("*") if p.is_file())
    out = prepare_out(out, overwrite)
    report = {"source": str(src), "size": size, "layout": layout, "found": len(files), "skipped": {}, "duplicates": []}
    images = [p for p in files if p.suffix.lower() in EXTENSIONS]
    for p in files:
        if p.suffix.lower() not in EXTENSIONS:
            report["skipped"].setdefault("not an image extension", []).append(str(p.relative_to(src)))
    records = []
    with Pool(max(1, workers)) as pool:
        work = partial(convert_one, root=src, out=out, size=size, layout=layout, min_size=min_size)
        for record, skip in tqdm(pool.imap(work, images, chunksize=8), total=len(images), desc="pairs",
                                 dynamic_ncols=True):
            if record:
                records.append(record)
            else:
                report["skipped"].setdefault(skip[0], []).append(skip[1])
    return finish(out, records, report, started)
