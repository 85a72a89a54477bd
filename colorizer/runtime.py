"""Where and how training runs: device, precision, DDP from the torchrun environment, stopping
together, seeds, resumable data order and batched on-device augmentation."""
from __future__ import annotations

import math
import os
import random
import signal
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as torch_dist
from torch.utils.data import Sampler


class TrainingError(RuntimeError):
    """The run cannot go on; the message says why and what to do."""


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
        backend = "nccl" if use_cuda else "gloo"
        store = store_after_restart(info)
        if store is None:
            torch_dist.init_process_group(backend=backend)
        else:
            torch_dist.init_process_group(backend=backend, store=store, rank=info.rank, world_size=info.world_size)
    hazard = restart_hazard()
    if hazard and info.is_main:
        warnings.warn(hazard, stacklevel=2)
    return info


def close_distributed() -> None:
    """Leave the process group (if any) before the interpreter exits, on success and on errors alike:
    a gloo or NCCL group torn down at exit while a peer is gone can abort the process."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def elastic_restart_count() -> int:
    """How many times torchrun has restarted this worker group (0 on the first start or without torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def store_after_restart(info: DistInfo):
    """The key-value store for a worker group that torchrun restarted on one node; None otherwise.

    torchrun's c10d rendezvous lends its own TCPStore to the workers and keeps it across restarts,
    so a restarted group finds the dead group's addresses there and hangs while connecting
    (PyTorch issue 135712). On one node a single agent counts the restarts, so every worker agrees on
    TORCHELASTIC_RESTART_COUNT, and it can name a fresh key space. Across nodes the counts can
    differ: there torchrun must run with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (see README)."""
    restarts = elastic_restart_count()
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if not (restarts and shared and os.environ.get("GROUP_WORLD_SIZE", "1") == "1"):
        return None
    agent_store = torch_dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), info.world_size,
                                      is_master=False)
    return torch_dist.PrefixStore(f"colorizer/restart{restarts}", agent_store)


def restart_hazard() -> str | None:
    """Why torchrun's restarts would hang this multi-node run (see ``store_after_restart``), or None."""
    if (int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0
            and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
            and os.environ.get("GROUP_WORLD_SIZE", "1") != "1"):
        return ("torchrun shares its rendezvous store with the workers: after a restart on several nodes the new "
                "worker group would hang while connecting (PyTorch issue 135712). Launch torchrun with "
                "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment so that --max-restarts works.")
    return None


class StopControl:
    """Why the training loop must stop, agreed between ranks at one point per iteration (``check``).

    - SIGINT/SIGTERM on any rank: ``check`` returns True on every rank, which then save and stop.
    - A condition after which one rank must not go on (the unreadable-file limit, a failed save):
      ``fail(message)`` raises TrainingError at once in a single process; under DDP the rank keeps
      going to the next ``check``, where every rank raises TrainingError with that rank's message. So
      no rank is left waiting at a collective that a stopped rank will never reach.

    Use as a context manager: it installs the signal handlers and restores the previous ones.
    Under DDP ``check`` is one all_reduce of two numbers; an all_gather of the messages follows only
    when a rank failed."""

    def __init__(self, dist: DistInfo, device: torch.device):
        self.dist, self.device = dist, device
        self.signal: str | None = None  # the name of the signal that stopped the run
        self.failure: str | None = None  # this rank's reason to stop, not yet agreed
        self._previous: dict = {}

    def __enter__(self) -> "StopControl":
        def request_stop(signum, frame):
            self.signal = signal.Signals(signum).name

        self._previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def fail(self, message: str) -> None:
        """This rank must stop: TrainingError now (one process) or at the next ``check`` on every rank."""
        if not self.dist.enabled:
            raise TrainingError(message)
        self.failure = self.failure or message

    def check(self) -> bool:
        """True when a signal asks every rank to stop; TrainingError on every rank when one failed."""
        stop, failed = self.signal is not None, self.failure is not None
        if self.dist.enabled:  # CPU-GPU sync point, once per iteration
            flags = torch.tensor([float(stop), float(failed)], device=self.device)
            torch_dist.all_reduce(flags, op=torch_dist.ReduceOp.MAX)
            stop, failed = (bool(v) for v in flags.tolist())
            self.signal = self.signal or ("SIGTERM" if stop else None)
        if failed:
            messages = [None] * self.dist.world_size
            torch_dist.all_gather_object(messages, self.failure)
            rank, message = next((r, m) for r, m in enumerate(messages) if m)
            raise TrainingError(self.failure or f"rank {rank} stopped the run: {message}")
        return stop


def ddp_weight_spread(model: torch.nn.Module, dist: DistInfo) -> float:
    """Largest absolute difference of any weight of ``model`` between ranks (0 when in sync)."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    lo, hi = flat.clone(), flat.clone()
    torch_dist.all_reduce(lo, op=torch_dist.ReduceOp.MIN)
    torch_dist.all_reduce(hi, op=torch_dist.ReduceOp.MAX)
    return float((hi - lo).max().item())


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


def largest_remainder(shares, total: int) -> list:
    """Integer counts summing to ``total``, proportional to ``shares`` (which sum to 1): each gets
    floor(share * total), and the draws left over go to the largest fractional parts (ties: first)."""
    exact = [share * total for share in shares]
    counts = [int(math.floor(x)) for x in exact]
    by_fraction = sorted(range(len(shares)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_fraction[: total - sum(counts)]:
        counts[i] += 1
    return counts


class MixSampler(Sampler):
    """Indices into the end-to-end train splits of a mix's folders (``data.MixDataset``; folder i
    holds ``sizes[i]`` pairs), each drawn from folder i with probability ``shares[i]``; resumable
    and rank-sharded like ``ResumableSampler``.

    An epoch is as long as the folders together (ceil(N / world_size) draws per rank). Folder i
    gets round(shares[i] * length) of its draws (largest remainder), at places shuffled per epoch,
    so shares hold in every epoch, not only on average. Each folder is read in shuffled passes that
    carry on across epochs: every pair of a folder comes once before any comes twice, however small
    its share. All of it follows from (seed, epoch), so a position (epoch, start) restores the exact
    sequence; rank r takes every world_size-th draw from r."""

    def __init__(self, sizes, shares, seed: int, rank: int = 0, world_size: int = 1):
        self.sizes, self.rank, self.world_size = [int(n) for n in sizes], rank, world_size
        self.entropy = seed % 2**64  # numpy's SeedSequence takes non-negative integers
        self.per_rank = -(-sum(self.sizes) // world_size)
        self.counts = largest_remainder(shares, self.per_rank * world_size)  # draws per folder, every epoch
        empty = [i for i, (n, c) in enumerate(zip(self.sizes, self.counts)) if c and not n]
        if empty:
            raise ValueError(f"folders {empty} of the mix have no pairs but a share > 0")
        self.offsets = np.cumsum([0, *self.sizes[:-1]]).tolist()
        self.epoch = 0
        self.start = 0  # samples of this rank's shard already consumed in this epoch

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def _draws(self, folder: int, first: int, stop: int) -> np.ndarray:
        """Draws ``first`` to ``stop`` - 1 of ``folder`` since training began: its pass p is a
        permutation seeded by (seed, folder, p)."""
        size = self.sizes[folder]
        passes = range(first // size, (stop - 1) // size + 1)
        items = np.concatenate([np.random.default_rng([self.entropy, 1, folder, p]).permutation(size)
                                for p in passes])
        begin = first - passes[0] * size
        return items[begin : begin + stop - first]

    def _shard(self) -> list:
        sources = np.repeat(np.arange(len(self.sizes)), self.counts)
        sources = np.random.default_rng([self.entropy, 0, self.epoch]).permutation(sources)
        order = np.empty(len(sources), dtype=np.int64)
        for folder, count in enumerate(self.counts):
            if count:  # the same count every epoch: this epoch's draws of the folder start at epoch * count
                order[sources == folder] = self.offsets[folder] + self._draws(folder, self.epoch * count,
                                                                              (self.epoch + 1) * count)
        return order[self.rank :: self.world_size].tolist()

    def __iter__(self):
        return iter(self._shard()[self.start :])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)


class BatchStream:
    """Endless batches over epochs; ``position()``/``restore()`` go into the checkpoint."""

    def __init__(self, loader, sampler: ResumableSampler | MixSampler, batch_size: int):
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


def augment(line: torch.Tensor, color: torch.Tensor, crop: int, hflip: bool, *more: torch.Tensor | None):
    """Paired, batched augmentation on the training device (global torch RNG, so it resumes exactly).

    line (B, 1, H, W), color (B, 3, H, W) and any ``more`` tensors (B, C, H, W) (None passes through)
    get the same random crop and flip per sample. Returns (line, color, *more).
    """
    tensors = [line, color, *more]
    batch, _, height, width = line.shape
    if crop and (crop < height or crop < width):
        top = torch.randint(0, height - crop + 1, (batch,)).to(line.device)
        left = torch.randint(0, width - crop + 1, (batch,)).to(line.device)
        offsets = torch.arange(crop, device=line.device)
        rows = (top[:, None] + offsets)[:, :, None]  # (B, crop, 1)
        cols = (left[:, None] + offsets)[:, None, :]  # (B, 1, crop)
        index = torch.arange(batch, device=line.device).view(batch, 1, 1)
        # one gather per tensor, no per-sample loop: (B, H, W, C)[b, rows[b], cols[b]] -> (B, crop, crop, C)
        tensors = [t if t is None else t.permute(0, 2, 3, 1)[index, rows, cols].permute(0, 3, 1, 2).contiguous()
                   for t in tensors]
    if hflip:
        flip = (torch.rand(batch) < 0.5).to(line.device).view(batch, 1, 1, 1)
        tensors = [t if t is None else torch.where(flip, t.flip(-1), t) for t in tensors]
    return tuple(tensors)


def all_reduce_mean(values: dict, dist: DistInfo, device: torch.device) -> dict:
    """Average scalar tensors across ranks (one collective) and return python floats."""
    keys = list(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys]).to(device)
    if dist.enabled:
        torch_dist.all_reduce(stacked)
        stacked /= dist.world_size
    return dict(zip(keys, stacked.cpu().tolist()))
