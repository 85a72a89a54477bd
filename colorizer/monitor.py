"""Run monitoring: W&B (online when logged in, offline otherwise), a JSONL log, GAN debug statistics.

Only rank 0 creates a Monitor; other ranks get ``NullMonitor``. Everything that needs W&B goes
through here, so the training loop never imports wandb directly.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torchvision.utils import make_grid


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _wandb_mode(requested: str) -> str:
    """auto -> online when an API key is configured, offline otherwise (never a crash)."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        if netrc.is_file() and "api.wandb.ai" in netrc.read_text():
            return "online"
    except OSError:
        pass
    return "offline"


def to_uint8_image(grid: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8 (wandb.Image of floats would come out black)."""
    return ((grid.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def save_grid(rows: list, path: Path) -> np.ndarray:
    """``rows``: list of (N, 3, H, W) tensors in [-1, 1], each a column kind; writes a PNG."""
    tiles = torch.stack(rows, dim=1).flatten(0, 1)  # (N * columns, 3, H, W), row-major
    grid = make_grid(tiles.float().cpu(), nrow=len(rows), padding=2, pad_value=1.0)
    image = to_uint8_image(grid)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return image


class ActivationProbe:
    """Forward hooks on the generator's ReLU/LeakyReLU modules, armed only on histogram steps.

    Records each layer's pre-activation values (a sample, for histograms) and its fraction of
    dead units: channels whose pre-activation is <= 0 for every pixel of every image in the batch.
    """

    def __init__(self, model: nn.Module, max_values: int = 4096):
        self.stats: dict = {}
        self.armed = False
        self.max_values = max_values
        for name, module in model.named_modules():
            if isinstance(module, (nn.ReLU, nn.LeakyReLU)):
                module.register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if not self.armed:
                return
            pre = inputs[0].detach().float()
            dead = (pre <= 0).transpose(0, 1).flatten(1).all(1).float().mean().item()
            flat = pre.flatten()
            sample = flat[torch.randperm(flat.numel(), device=flat.device)[: self.max_values]] \
                if flat.numel() > self.max_values else flat
            self.stats[name] = (dead, sample.cpu())
        return hook


def grad_norms(model: nn.Module) -> dict:
    """Per-parameter gradient L2 norms and the total, as floats (one sync)."""
    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    if not named:
        return {"total": 0.0}
    norms = torch.stack([g.detach().float().norm() for _, g in named])
    values = norms.cpu().tolist()
    out = {n: v for (n, _), v in zip(named, values)}
    out["total"] = float(torch.linalg.vector_norm(norms).item())
    return out


class Monitor:
    def __init__(self, cfg, run_dir: Path, config_dict: dict, run_name: str, resume_id: str | None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.log_path = self.run_dir / "log.jsonl"
        self.wandb = None
        self.run_id = resume_id
        mode = _wandb_mode(cfg.log.wandb)
        if mode != "disabled":
            try:
                import wandb

                self.wandb = wandb
                self.run = wandb.init(
                    project=cfg.log.project, name=run_name, config=config_dict, dir=str(self.run_dir),
                    mode=mode, id=resume_id, resume="allow" if resume_id else None,
                    notes=f"commit {git_commit()} on {socket.gethostname()}",
                )
                self.run.config.update({"git_commit": git_commit(), "host": socket.gethostname()},
                                       allow_val_change=True)
                self.run_id = self.run.id
            except Exception as err:  # monitoring must never kill a training run
                warnings.warn(f"W&B could not start ({err}); logging to {self.log_path} only")
                self.wandb = None

    def log(self, values: dict, step: int) -> None:
        record = {"step": step, **{k: (float(v) if isinstance(v, (int, float)) else v)
                                   for k, v in values.items() if isinstance(v, (int, float, str))}}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
        if self.wandb:
            self.wandb.log({k: v for k, v in values.items()
                            if not (isinstance(v, float) and math.isnan(v))}, step=step)

    def image(self, key: str, image: np.ndarray, step: int, caption: str = "") -> None:
        if self.wandb:
            self.wandb.log({key: self.wandb.Image(image, caption=caption)}, step=step)

    def histograms(self, values: dict, step: int) -> None:
        """``values``: name -> tensor; logged as W&B histograms (skipped without W&B)."""
        if not self.wandb:
            return
        out = {}
        for k, v in values.items():
            data = v.detach().double().cpu().numpy().ravel()
            data = data[np.isfinite(data)]
            if data.size:  # float64 bins: W&B's own binning fails on near-constant float32 tensors
                out[k] = self.wandb.Histogram(np_histogram=np.histogram(data, bins=64))
        self.wandb.log(out, step=step)

    def summary(self, values: dict) -> None:
        if self.wandb:
            for k, v in values.items():
                self.run.summary[k] = v

    def finish(self) -> None:
        if self.wandb:
            self.wandb.finish()


class NullMonitor:
    """What ranks other than 0 get: every call is a no-op."""

    run_id = None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None
