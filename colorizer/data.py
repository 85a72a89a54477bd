"""Reads the prepared format written by ``data_prep`` (manifest.jsonl + line/ + color/ PNGs); never
writes it, except that ``ensure_dataset`` runs ``python -m data_prep openmoji`` when asked to, and
``python -m data_prep scribbles`` when training needs region scribble maps that are missing.
``make_train_stream`` is the training data path up to the device (then ``step.prepare_inputs``), from
one prepared folder or a mix of them (``config.data_roots``, drawn by ``mix_shares``)."""
from __future__ import annotations

import bisect
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from .config import PROJECT_ROOT, data_roots, image_size
from .images import to_signed
from .runtime import BatchStream, DistInfo, MixSampler, ResumableSampler, TrainingError, seed_worker

log = logging.getLogger(__name__)
PREP_REPORT = "report.json"  # data_prep's summary of a prepared folder: size, line style, licences
PREP_OUTPUTS = {"line", "color", PREP_REPORT, "preview.png"}  # what an interrupted data_prep run leaves
SCRIBBLE_DIR = "scribbles"  # region scribble maps beside the pairs (python -m data_prep scribbles)


def scribble_path(root, record: dict) -> Path:
    """Where ``python -m data_prep scribbles`` puts the scribble map of ``record``'s colour image:
    DIR/scribbles/<colour stem>.png (line styles sharing a colour image share it)."""
    return Path(root) / SCRIBBLE_DIR / f"{Path(record['color']).stem}.png"


def ensure_dataset(cfg, scribbles: bool = False) -> list:
    """The prepared dataset folders of ``cfg.root`` (a DataConfig), as ``data_roots`` lists them, each
    checked by ``ensure_pairs`` (one folder alone may be prepared there first); with ``scribbles``
    (``hints.scribbles > 0``), also each folder's train region scribble maps when any is missing
    (``ensure_scribbles``)."""
    roots = data_roots(cfg)
    for root in roots:
        ensure_pairs(cfg, root, mix=len(roots) > 1)
    if scribbles:
        for root in roots:
            ensure_scribbles(root)
    return roots


def missing_scribbles(root) -> tuple:
    """(missing, total): the train pairs of ``root`` without a region scribble map, and all of them."""
    records = read_manifest(root, "train")
    return sum(not scribble_path(root, r).is_file() for r in records), len(records)


def ensure_scribbles(root) -> None:
    """Runs ``python -m data_prep scribbles ROOT`` (deterministic maps derived from the colour
    images, written beside them) when a train pair of the prepared folder ``root`` has none."""
    missing, total = missing_scribbles(root)
    if not missing:
        return
    command = f"python -m data_prep scribbles {root}"
    print(f"{missing} of the {total} train pairs of {root} have no region scribble map (hints.scribbles > 0): "
          f"running `{command}` (about 0.1 s per colour image on one core; once per folder)", flush=True)
    subprocess.run([sys.executable, "-m", "data_prep", "scribbles", str(Path(root).resolve())], cwd=PROJECT_ROOT)
    missing, total = missing_scribbles(root)
    if missing:
        raise FileNotFoundError(f"{missing} of the {total} train pairs of {root} still have no region scribble "
                                f"map after `{command}` (see its messages and {root / SCRIBBLE_DIR / 'report.json'}): "
                                f"fix or remove those pairs, or train without them with --hints.scribbles=0")


def ensure_pairs(cfg, root: Path, mix: bool = False) -> None:
    """The prepared pairs of the folder ``root`` of ``ensure_dataset``, without the scribble maps:
    FileNotFoundError naming the folder and the data_prep command when it has no manifest.jsonl,
    unless it is the only folder (not ``mix``) and ``cfg.prepare == "openmoji"``: then OpenMoji is
    prepared there. A folder of a mix is never prepared: which source it should hold is not known."""
    root = Path(root)
    if (root / "manifest.jsonl").is_file():
        return
    size = max(cfg.size, cfg.width or cfg.size)  # never upsample at load time
    command = f"python -m data_prep openmoji --out {root} --size {size}"
    if mix:
        raise FileNotFoundError(
            f"{root}, one of the folders of data.root, holds no prepared dataset (manifest.jsonl missing); the "
            f"folders of a mix are never prepared automatically. Prepare it with `{command}` (or "
            f"`python -m data_prep folder SRC --out {root}` / `pairs SRC --out {root}`; see "
            f"`python -m data_prep --help`), or remove it from data.root")
    if cfg.prepare != "openmoji":
        raise FileNotFoundError(
            f"no prepared dataset at {root} (manifest.jsonl missing). Prepare one with `{command}` "
            f"(or `python -m data_prep folder SRC --out {root}` / `pairs SRC`; see `python -m data_prep --help`), "
            f"or set --data.prepare=openmoji to do it automatically")
    leftovers = {p.name for p in root.iterdir()} if root.is_dir() else set()
    if leftovers - PREP_OUTPUTS:
        raise FileNotFoundError(f"{root} has no manifest.jsonl but holds other files ({sorted(leftovers)[:5]}): "
                                f"point --data.root at an empty or new folder, or prepare it with `{command}`")
    print(f"{root} has no prepared data: running `{command}` (20 s at 96 px, about a minute at 256 px, "
          f"on 2 cores)", flush=True)
    args = [sys.executable, "-m", "data_prep", "openmoji", "--out", str(root), "--size", str(size)]
    if leftovers:  # an interrupted earlier preparation: only data_prep's own outputs are there
        args.append("--overwrite")
    if subprocess.run(args, cwd=PROJECT_ROOT).returncode != 0 or not (root / "manifest.jsonl").is_file():
        raise FileNotFoundError(f"preparing OpenMoji into {root} failed (see the messages above)")


def read_manifest(root, split: str | None = None) -> list:
    """The manifest's records (dicts), in file order; only ``split``'s if given."""
    path = Path(root) / "manifest.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: prepare the data with `python -m data_prep ...` "
                                f"(see `python -m data_prep --help`)")
    records = []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{number} is not valid JSON") from None
            missing = {"id", "group", "split", "line", "color"} - set(record)
            if missing:
                raise ValueError(f"{path}:{number} lacks {', '.join(sorted(missing))}")
            if split is None or record["split"] == split:
                records.append(record)
    return records


def decode(path: Path, mode: str, size: tuple) -> np.ndarray:
    """PNG -> uint8 (C, H, W) in ``mode`` ("L" or "RGB"), resized to ``size`` = (H, W) if it differs."""
    with Image.open(path) as im:
        im = im.convert(mode)
        if im.size != (size[1], size[0]):
            # PIL's bilinear filter widens its support when shrinking: antialiased, no aliasing of thin lines.
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.array(im, dtype=np.uint8)  # a writable copy for torch.from_numpy
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (MemAvailable on Linux), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cache_fits(pairs: int, size: tuple, copies: int = 1) -> bool:
    """Whether ``pairs`` decoded uint8 pairs (1 + 3 channels at ``size``) take at most half the
    available memory, ``copies`` times over (one cache per DataLoader worker); True if unknown."""
    available = available_memory()
    return available is None or pairs * 4 * size[0] * size[1] * copies <= available // 2


def take(records: list, max_items: int = 0, spread: bool = False) -> list:
    """The first ``max_items`` of ``records`` (0 or more than there are: all of them), or with ``spread``
    that many spread evenly over them (the i-th of n is record floor(i * len / n)). A manifest lists a
    split by name, so its first items are one kind of drawing (OpenMoji's val split opens with some 60
    flags, its test split with some 40): a subsample that stands for the split is a spread one."""
    if not max_items or max_items >= len(records):
        return list(records)
    if not spread:
        return records[:max_items]
    return [records[i * len(records) // max_items] for i in range(max_items)]


class PairDataset(Dataset):
    """One split of a prepared folder.

    Items: ``line`` (1, H, W) and ``color`` (3, H, W) float32 in [-1, 1] (paper white = 1),
    ``index``, the item actually returned, and ``skipped``, the unreadable pairs passed over to
    return it ("line / color" paths, one per line; "" when none). Images are resized to ``size``
    = (H, W) when they differ. No augmentation here: training crops and flips whole batches on its
    device (``runtime.augment``). ``cache`` keeps decoded uint8 images in memory (one copy per worker process:
    ``cache_copies`` says how many), keyed by file so a colour image shared by several line styles
    is decoded once; it is turned off, with a warning, when the copies would not fit in half the
    available memory. ``scribbles``: items also carry ``scribbles``, the colour image's region
    scribble map (4, 64, 64) uint8 RGBA (``python -m data_prep scribbles``; every one must exist).

    A file that fails to decode is not fatal: a warning names it, the next item is returned instead,
    and the file is added to ``failures`` (in the process that read it; the ``skipped`` field carries
    it to the process that iterates the DataLoader).
    """

    def __init__(self, root, split: str, size=(256, 256), cache: bool = True, max_items: int = 0,
                 cache_copies: int = 1, scribbles: bool = False, spread: bool = False):
        self.root, self.split = Path(root), split
        self.size = (int(size[0]), int(size[1]))
        self.cache = cache
        self.records = take(read_manifest(self.root, split), max_items, spread)
        for record in self.records:
            for key in ("line", "color"):
                if not (self.root / record[key]).is_file():
                    raise FileNotFoundError(f"{self.root / record[key]} (pair {record['id']!r} in "
                                            f"{self.root / 'manifest.jsonl'}) is missing: re-run data_prep")
        self.scribbles = scribbles
        if scribbles:
            missing = [str(scribble_path(self.root, r)) for r in self.records
                       if not scribble_path(self.root, r).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} of the {len(self.records)} {split} pairs of {self.root} have no region scribble "
                    f"map (hints.scribbles > 0 needs them), e.g. {missing[0]}: run `python -m data_prep scribbles "
                    f"{self.root}`, or set --hints.scribbles=0")
        self.failures: list = []
        self._cache: dict = {}
        if self.cache and not cache_fits(len(self.records), self.size, cache_copies):
            self.cache = False
            log.warning("not caching the %s split of %s in memory: %d pairs at %dx%d would take more than half "
                        "of the available memory (set data.cache=false to silence this)", split, self.root,
                        len(self.records), *self.size)

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, relative: str, mode: str) -> np.ndarray:
        array = self._cache.get(relative)
        if array is None:
            array = decode(self.root / relative, mode, self.size)
            if self.cache:
                self._cache[relative] = array
        return array

    def load_scribbles(self, index: int) -> np.ndarray:
        """(4, 64, 64) uint8 RGBA region scribble map of item ``index`` (see ``data_prep.scribbles``)."""
        record = self.records[index]
        relative = scribble_path(Path(), record).as_posix()
        array = self._cache.get(relative)
        if array is None:
            with Image.open(self.root / relative) as im:
                if im.mode != "RGBA":
                    raise ValueError(f"{self.root / relative} is {im.mode}, not RGBA: re-run python -m data_prep "
                                     f"scribbles {self.root} --overwrite")
                array = np.array(im, dtype=np.uint8).transpose(2, 0, 1)
            self._cache[relative] = array  # 16 KB each: always cached
        return array

    def load_uint8(self, index: int) -> tuple:
        """(line (1, H, W), color (3, H, W)) uint8 arrays of item ``index``, without augmentation."""
        record = self.records[index]
        return self._load(record["line"], "L"), self._load(record["color"], "RGB")

    def __getitem__(self, index: int) -> dict:
        skipped = []
        for attempt in range(len(self.records)):
            i = (index + attempt) % len(self.records)
            record = self.records[i]
            try:
                line, color = self.load_uint8(i)
                extra = {"scribbles": torch.from_numpy(self.load_scribbles(i))} if self.scribbles else {}
                break
            except (OSError, ValueError, SyntaxError) as err:
                skipped.append(self._record_failure(record, err))
        else:
            raise RuntimeError(f"no readable pair in the {self.split} split of {self.root}: {self.failures[:5]}")
        # A string survives default_collate (a list of them per batch) and the trip back from a worker.
        return {"line": to_signed(line), "color": to_signed(color),  # (1|3, H, W) in [-1, 1]
                "index": i, "skipped": "\n".join(skipped), **extra}

    def _record_failure(self, record: dict, err: Exception) -> str:
        names = [str(self.root / record[key]) for key in ("line", "color")]
        name = " / ".join(names)
        if name not in self.failures:
            self.failures.append(name)
            log.warning("skipping unreadable pair %s (%s): %s: %s", record["id"], name, type(err).__name__, err)
        return name


class MixDataset(ConcatDataset):
    """The train splits of a mix's folders end to end (a ``PairDataset`` each, in data.root's order).
    Items are PairDataset's, with ``index`` counted across the folders (what ``MixSampler`` draws)
    and ``source``, the position of the item's folder in data.root."""

    def __getitem__(self, index: int) -> dict:
        source = bisect.bisect_right(self.cumulative_sizes, index)
        offset = self.cumulative_sizes[source - 1] if source else 0
        item = self.datasets[source][index - offset]
        return {**item, "index": offset + item["index"], "source": source}


def train_sizes(data, roots) -> list:
    """The train pairs of each prepared folder in ``roots`` that training reads (``data.max_items``)."""
    return [len(take(read_manifest(root, "train"), data.max_items)) for root in roots]


def mix_shares(data, sizes) -> list:
    """The chance that a training sample comes from each folder of data.root, summing to 1:
    ``data.shares`` normalised, or, when it is empty, proportional to ``sizes`` (the folders' train
    pairs, ``train_sizes``)."""
    weights = [float(w) for w in (list(data.shares) or sizes)]
    if sum(weights) <= 0:
        raise TrainingError(f"the train splits of {', '.join(map(str, data_roots(data)))} are all empty: "
                            f"nothing to train on")
    return [w / sum(weights) for w in weights]


def make_train_stream(cfg, roots, dist: DistInfo, batch_size: int) -> BatchStream:
    """Endless, resumable, rank-sharded batches of the train split of the prepared folders ``roots``
    (``ensure_dataset``'s list; one Path is one folder) (uint8 cache in the workers; the crop, flip
    and hints happen batched on the device in ``step.prepare_inputs``). One folder: its pairs
    shuffled per epoch (``ResumableSampler``). A mix: ``MixDataset`` drawn by ``mix_shares``
    (``MixSampler``), each folder with its own region scribble maps. ``train.overfit_batches`` takes
    the first pairs, in order (of the first folder of a mix)."""
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    datasets = [PairDataset(root, "train", size=image_size(cfg.data), cache=cfg.data.cache,
                            max_items=cfg.data.max_items, cache_copies=max(1, cfg.data.num_workers),
                            scribbles=cfg.hints.scribbles > 0) for root in roots]
    dataset = datasets[0] if len(datasets) == 1 else MixDataset(datasets)
    if cfg.train.overfit_batches:
        dataset = Subset(dataset, range(min(len(dataset), cfg.train.overfit_batches * batch_size)))
    if len(dataset) < batch_size * dist.world_size:
        raise TrainingError(f"the train split of {' + '.join(map(str, roots))} has {len(dataset)} pairs, fewer than "
                            f"one batch ({batch_size} x {dist.world_size} ranks): lower train.batch_size")
    if len(datasets) > 1 and not cfg.train.overfit_batches:
        shares = mix_shares(cfg.data, [len(d) for d in datasets])
        for root, folder, share in zip(roots, datasets, shares):
            if share > 0 and not len(folder):
                raise TrainingError(f"the train split of {root} is empty, but data.shares gives it {share:.3g} of the "
                                    f"training samples: give it a share of 0 (validation only), or prepare its data")
        sampler = MixSampler([len(d) for d in datasets], shares, cfg.train.seed, dist.rank, dist.world_size)
    else:
        sampler = ResumableSampler(len(dataset), cfg.train.seed, dist.rank, dist.world_size,
                                   shuffle=not cfg.train.overfit_batches)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
        num_workers=cfg.data.num_workers, pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.data.num_workers > 0, worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(cfg.train.seed),  # keeps the global RNG untouched
    )
    return BatchStream(loader, sampler, batch_size)


def read_report(root) -> dict:
    """A prepared folder's report.json as a dict; {} when it is missing or unreadable."""
    try:
        report = json.loads((Path(root) / PREP_REPORT).read_text())
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def data_credits(roots, inherited=()) -> list:
    """The licence and attribution lines of the prepared folders ``roots``, after ``inherited`` (a
    parent model's, ``inherited_credits``), in order and without repeats, from their report.json:
    ``licence`` (OpenMoji) or ``attribution`` (one per Iconify set). A folder that records neither
    gives "NAME: no licence recorded", so a model never looks cleared for data nobody checked."""
    credits = list(dict.fromkeys(str(x) for x in inherited))
    for root in roots:
        report = read_report(root)
        lines = report.get("attribution") or ([report["licence"]] if report.get("licence") else [])
        for line in [str(x) for x in lines] or [f"{Path(root).name}: no licence recorded"]:
            if line not in credits:
                credits.append(line)
    return credits


def inherited_credits(config: dict, record: dict) -> list:
    """The ``data_credits`` a model's stored ``config`` carries (``record``: its lineage record), or,
    for a model exported before they were recorded, one line saying so."""
    credits = config.get("data_credits")
    if isinstance(credits, list):
        return [str(x) for x in credits]
    return [f"{record.get('run_name') or 'the parent model'}: training data's licences not recorded"]


def mean_color(root, split: str = "train", max_items: int = 0) -> torch.Tensor:
    """(3,) mean RGB of the split's colour images in [-1, 1]: the "fill with the mean colour" baseline."""
    records = take(read_manifest(root, split), max_items)
    if not records:
        raise ValueError(f"the {split!r} split of {root} is empty")
    total = np.zeros(3, dtype=np.float64)
    for record in records:
        with Image.open(Path(root) / record["color"]) as im:
            total += np.asarray(im.convert("RGB"), dtype=np.float64).mean((0, 1))
    return to_signed(total / len(records))
