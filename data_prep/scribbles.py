"""Region scribbles for training, made by the Hint-AUC protocol's own code (``hintauc.generate_hints``,
its deterministic geodesic path, as ``colorizer.hint_auc`` evaluates with): for each colour image of
a prepared folder, the target is segmented (Felzenszwalb) and each region gets a scribble, the
longest path of its skeleton, in the region's mean colour, on a 64 x 64 map. Stored beside the pair
as ``DIR/scribbles/<colour stem>.png`` (``colorizer.data.scribble_path``), RGBA:

    RGB  the region's mean colour on its scribble's pixels (0 elsewhere)
    A    0 off the scribbles; on them ``colorizer.hints.encode_rank``: the least share of the
         image's regions, largest first, that includes this region, in 254 steps (254 for the
         smallest), so training can keep "the largest share of the regions" as the protocol does
         at its ratio alpha (``colorizer.hints.scribble_hints``)

Run once per prepared folder, after ``python -m data_prep openmoji|folder|pairs``; the same files
every run (deterministic), and files already there are kept unless ``--overwrite``.
"""
from __future__ import annotations

import json
import time
import warnings
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

from colorizer.data import SCRIBBLE_DIR, read_manifest, scribble_path
from colorizer.hints import encode_rank

from .common import PrepError, collect, one_thread

PATH_METHOD = "geodesic"  # = colorizer.hint_auc.PATH_METHOD: deterministic, and importable with numpy 2
MAP_SIZE = 64  # the protocol's hint resolution (colorizer.hint_auc.HINT_MAP_SIZE)


def scribble_map(color_path: Path) -> np.ndarray:
    """(64, 64, 4) uint8 RGBA scribble map of one colour image (see the module docstring)."""
    import hintauc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the package's backends warn about optional extras
        hints = hintauc.generate_hints(str(color_path), size=MAP_SIZE, path_method=PATH_METHOD)
    ids = hintauc.region_ids(hints.region)  # (S, S) region id per pixel
    # Area rank, largest first, ties by ascending id: the order of HintResult.at_ratio(tie_break="stable"),
    # which evaluate_colorizer uses.
    values, inverse, areas = np.unique(ids, return_inverse=True, return_counts=True)
    order = np.argsort(-areas, kind="stable")  # region indices, largest first
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    rank = rank[inverse.reshape(ids.shape)]  # (S, S)
    on = hints.scribble_mask > 0
    alpha = np.where(on, encode_rank(rank, len(values)), 0).astype(np.uint8)
    rgb = hints.scribble_color[..., ::-1] * on[..., None]  # BGR -> RGB
    return np.dstack([rgb, alpha]).astype(np.uint8)


def make_one(record: dict, root: Path, overwrite: bool):
    """-> ("written" or "kept", None) or (None, (reason, colour file)). Strings, not 0/1: ``collect``
    drops falsy results, and a kept map must still be counted."""
    out = scribble_path(root, record)
    if out.is_file() and not overwrite:
        return "kept", None
    try:
        rgba = scribble_map(root / record["color"])
    except Exception as err:  # noqa: BLE001  a bad image is reported, never stops the run
        return None, (f"no scribbles ({type(err).__name__}: {err})", record["color"])
    tmp = out.with_suffix(".tmp.png")
    Image.fromarray(rgba, "RGBA").save(tmp)
    tmp.replace(out)  # never a half-written map
    return "written", None


def run(root: Path, splits: list, workers: int, overwrite: bool) -> int:
    started = time.time()
    root = Path(root)
    if not (root / "manifest.jsonl").is_file():
        raise PrepError(f"{root} has no manifest.jsonl: prepare the pairs first (python -m data_prep openmoji|folder|"
                        f"pairs --out {root})")
    records = [r for r in read_manifest(root) if r["split"] in splits]
    unique = list({r["color"]: r for r in records}.values())  # line styles sharing a colour image: one map
    (root / SCRIBBLE_DIR).mkdir(exist_ok=True)
    report = {"skipped": {}}
    with Pool(max(1, workers), initializer=one_thread) as pool:
        outcomes = collect(pool, partial(make_one, root=root, overwrite=overwrite), unique, report, "scribbles")
    failed = {reason: sorted(files) for reason, files in report["skipped"].items()}
    import hintauc

    summary = {"splits": splits, "colour_images": len(unique), "written": outcomes.count("written"),
               "kept": outcomes.count("kept"), "failed": failed, "hintauc": hintauc.__version__,
               "path_method": PATH_METHOD, "map_size": MAP_SIZE, "elapsed_s": round(time.time() - started, 1)}
    (root / SCRIBBLE_DIR / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    lost = sum(len(v) for v in failed.values())
    print(f"{root / SCRIBBLE_DIR}: {summary['written']} written, {summary['kept']} already there, {lost} failed "
          f"({summary['elapsed_s']} s); details in {root / SCRIBBLE_DIR / 'report.json'}")
    return 1 if lost else 0


def add_parser(sub, default_workers: int) -> None:
    p = sub.add_parser("scribbles", help="region scribbles for training (hints.scribbles) beside a prepared folder",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="a prepared folder (with manifest.jsonl)")
    p.add_argument("--splits", nargs="+", default=["train"], choices=("train", "val", "test"),
                   help="splits to make scribbles for (default: train, the only one training reads)")
    p.add_argument("--workers", type=int, default=default_workers, help="worker processes (default: the CPU cores)")
    p.add_argument("--overwrite", action="store_true", help="remake maps that are already there")
