"""Where and how training runs: device, precision, DDP from the torchrun environment, seeds,
resumable data order and batched on-device augmentation."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as torch_dist
from torch.utils.data import Sampler


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str) -> DistInfo:
    """DDP when ``torchrun`` set WORLD_SIZE > 1: NCCL on GPUs, gloo on CPU; otherwise one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), world_size)
    use_cuda = device_pref.startswith("cuda") or (device_pref == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info


def pick_device(preference: str, dist: DistInfo) -> torch.device:
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={preference} but CUDA is not available; use --train.device=cpu or auto")
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    return device


def amp_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    """None means fp32. auto: bf16 on GPUs that support it, fp16 (with a scaler) otherwise, fp32 on CPU."""
    if choice == "fp32" or (choice == "auto" and device.type != "cuda"):
        return None
    if choice == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if choice == "fp16" and device.type != "cuda":
        raise ValueError(f"train.amp=fp16 needs a CUDA device (got {device}); use bf16 or fp32")
    return torch.bfloat16 if choice == "bf16" else torch.float16


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels


def seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # set per worker by the DataLoader from its generator
    np.random.seed(seed)
    random.seed(seed)


class ResumableSampler(Sampler):
    """Shuffled, rank-sharded indices that can restart mid-epoch: the data order is part of a
    checkpoint (epoch, batches consumed), so a resumed run sees exactly the batches it would have."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.size, self.seed, self.rank, self.world_size, self.shuffle = size, seed, rank, world_size, shuffle
        self.epoch = 0
        self.start = 0  # samples of this rank's shard already consumed in this epoch

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def _shard(self) -> list:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        per_rank = -(-self.size // self.world_size)
        order = order.repeat(-(-per_rank * self.world_size // self.size))[: per_rank * self.world_size]
        return order[self.rank :: self.world_size].tolist()

    def __iter__(self):
        return iter(self._shard()[self.start :])

    def __len__(self) -> int:
        return max(0, -(-self.size // self.world_size) - self.start)


class BatchStream:
    """Endless batches over epochs; ``position()``/``restore()`` go into the checkpoint."""

    def __init__(self, loader, sampler: ResumableSampler, batch_size: int):
        self.loader, self.sampler, self.batch_size = loader, sampler, batch_size
        self.epoch, self.batch = 0, 0
        self._it = None

    def position(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def restore(self, position: dict) -> None:
        self.epoch, self.batch = int(position["epoch"]), int(position["batch"])
        self._it = None

    def __next__(self):
        while True:
            if self._it is None:
                self.sampler.set_position(self.epoch, self.batch * self.batch_size)
                self._it = iter(self.loader)
            try:
                batch = next(self._it)
            except StopIteration:
                self.epoch, self.batch, self._it = self.epoch + 1, 0, None
                continue
            self.batch += 1
            return batch


def augment(line: torch.Tensor, color: torch.Tensor, crop: int, hflip: bool):
    """Paired, batched augmentation on the training device (global torch RNG, so it resumes exactly).

    line (B, 1, H, W) and color (B, 3, H, W) get the same random crop and flip per sample.
    """
    batch, _, height, width = line.shape
    if crop and (crop < height or crop < width):
        top = torch.randint(0, height - crop + 1, (batch,)).to(line.device)
        left = torch.randint(0, width - crop + 1, (batch,)).to(line.device)
        offsets = torch.arange(crop, device=line.device)
        rows = (top[:, None] + offsets)[:, :, None]  # (B, crop, 1)
        cols = (left[:, None] + offsets)[:, None, :]  # (B, 1, crop)
        index = torch.arange(batch, device=line.device).view(batch, 1, 1)
        # one gather per tensor, no per-sample loop: (B, H, W, C)[b, rows[b], cols[b]] -> (B, crop, crop, C)
        line = line.permute(0, 2, 3, 1)[index, rows, cols].permute(0, 3, 1, 2).contiguous()
        color = color.permute(0, 2, 3, 1)[index, rows, cols].permute(0, 3, 1, 2).contiguous()
    if hflip:
        flip = (torch.rand(batch) < 0.5).to(line.device).view(batch, 1, 1, 1)
        line = torch.where(flip, line.flip(-1), line)
        color = torch.where(flip, color.flip(-1), color)
    return line, color


def all_reduce_mean(values: dict, dist: DistInfo, device: torch.device) -> dict:
    """Average scalar tensors across ranks (one collective) and return python floats."""
    keys = list(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys]).to(device)
    if dist.enabled:
        torch_dist.all_reduce(stacked)
        stacked /= dist.world_size
    return dict(zip(keys, stacked.cpu().tolist()))
