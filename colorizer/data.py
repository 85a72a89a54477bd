"""Reads the prepared format written by ``data_prep`` (manifest.jsonl + line/ + color/ PNGs)."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .config import image_size
from .runtime import ResumableSampler, seed_worker

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def ensure_dataset(cfg) -> Path:
    """The prepared dataset folder, preparing OpenMoji at ``cfg.size`` first if it is missing."""
    root = Path(cfg.root)
    if (root / "manifest.jsonl").is_file():
        return root
    if cfg.prepare != "openmoji":
        raise FileNotFoundError(
            f"no prepared dataset at {root} (manifest.jsonl missing). Prepare one with "
            f"`python -m data_prep openmoji --out {root} --size {cfg.size}` (or `folder SRC` / `pairs SRC`), "
            f"or set --data.prepare=openmoji")
    print(f"{root} not found: preparing the OpenMoji dataset at {cfg.size} px (about a minute on 2 cores)")
    cmd = [sys.executable, "-m", "data_prep", "openmoji", "--out", str(root), "--size", str(cfg.size),
           "--overwrite"]
    if subprocess.run(cmd, cwd=PROJECT_ROOT).returncode != 0 or not (root / "manifest.jsonl").is_file():
        raise FileNotFoundError(f"preparing OpenMoji into {root} failed (see the messages above)")
    return root


def read_manifest(root: Path, split: str | None = None) -> list:
    path = Path(root) / "manifest.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: prepare the data with `python -m data_prep ...`")
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n} is not valid JSON") from None
            missing = {"id", "group", "split", "line", "color"} - set(record)
            if missing:
                raise ValueError(f"{path}:{n} lacks {', '.join(sorted(missing))}")
            if split is None or record["split"] == split:
                records.append(record)
    return records


def _decode(path: Path, mode: str, size: tuple) -> np.ndarray:
    """-> uint8 (C, H, W) resized to ``size`` (H, W) if needed."""
    with Image.open(path) as im:
        im = im.convert(mode)
        if im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC)
        arr = np.array(im, dtype=np.uint8)  # a writable copy for torch.from_numpy
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


class PairDataset(Dataset):
    """One split of a prepared folder. Items: line (1, H, W) and color (3, H, W) float32 in [-1, 1]
    (paper white = 1), plus the item's index. With ``train`` the same random crop and horizontal
    flip are applied to both. ``cache`` keeps decoded uint8 images in memory (per worker process).

    A file that fails to decode after preparation is skipped with a warning (another item is
    returned) and listed in ``failures``; past ``max_failure_fraction`` of the split it raises."""

    def __init__(self, root, split: str, size=(256, 256), train: bool = False, crop: int = 0, hflip: bool = True,
                 cache: bool = True, max_items: int = 0, max_failure_fraction: float = 0.01):
        self.root, self.split, self.size = Path(root), split, tuple(size)
        self.train, self.crop, self.hflip, self.cache = train, crop, hflip, cache
        self.records = read_manifest(self.root, split)
        if max_items:
            self.records = self.records[:max_items]
        for r in self.records[:1] + self.records[-1:]:  # cheap sanity check; every file is checked on read
            for key in ("line", "color"):
                if not (self.root / r[key]).is_file():
                    raise FileNotFoundError(f"{self.root / r[key]} listed in the manifest is missing")
        self.max_failure_fraction = max_failure_fraction
        self.failures: list = []
        self._cache: dict = {}

    def __len__(self) -> int:
        return len(self.records)

    def load_uint8(self, index: int):
        if index in self._cache:
            return self._cache[index]
        r = self.records[index]
        pair = (_decode(self.root / r["line"], "L", self.size), _decode(self.root / r["color"], "RGB", self.size))
        if self.cache:
            self._cache[index] = pair
        return pair

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self.records)):
            i = (index + attempt) % len(self.records)
            try:
                line, color = self.load_uint8(i)
                break
            except (OSError, ValueError) as err:
                self._record_failure(self.records[i], err)
        else:
            raise RuntimeError(f"no readable pair in the {self.split} split of {self.root}")
        line = torch.from_numpy(line).float() / 127.5 - 1  # (1, H, W) in [-1, 1]
        color = torch.from_numpy(color).float() / 127.5 - 1  # (3, H, W) in [-1, 1]
        if self.train:
            if self.crop and self.crop < min(self.size):
                top = int(torch.randint(0, self.size[0] - self.crop + 1, ()))
                left = int(torch.randint(0, self.size[1] - self.crop + 1, ()))
                line = line[:, top : top + self.crop, left : left + self.crop]
                color = color[:, top : top + self.crop, left : left + self.crop]
            if self.hflip and torch.rand(()) < 0.5:
                line, color = line.flip(-1), color.flip(-1)
        return {"line": line, "color": color, "index": i}

    def _record_failure(self, record: dict, err: Exception) -> None:
        name = str(self.root / record["color"])
        if name not in self.failures:
            self.failures.append(name)
            warnings.warn(f"skipping unreadable pair {record['id']} ({type(err).__name__}: {err})")
        if len(self.failures) > max(1, self.max_failure_fraction * len(self.records)):
            raise RuntimeError(f"{len(self.failures)} unreadable pairs in {self.root} ({self.split}), more than "
                               f"{self.max_failure_fraction:.0%}: re-run data_prep. Files: {self.failures}")


def build_loader(cfg, split: str, batch_size: int, train: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> DataLoader:
    """A DataLoader over one split: shuffled and rank-sharded in training, in order otherwise."""
    dataset = PairDataset(cfg.root, split, size=image_size(cfg), train=train, crop=cfg.crop, hflip=cfg.hflip,
                          cache=cfg.cache, max_items=cfg.max_items)
    if len(dataset) == 0:
        raise ValueError(f"the {split} split of {cfg.root} is empty")
    sampler = ResumableSampler(len(dataset), seed, rank, world_size, shuffle=train)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=train,
                      num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available(),
                      persistent_workers=cfg.num_workers > 0, worker_init_fn=seed_worker,
                      generator=torch.Generator().manual_seed(seed))

