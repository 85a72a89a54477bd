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
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from .config import CPU_RECIPE, CPU_RECIPE_MINUTES


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


def duration(seconds: float) -> str:
    """3725 -> '1 h 2 min'; 95 -> '2 min'; 20 -> '20 s'."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


class Pace:
    """The run's estimated duration, said once after its first steps. The first step of a launch
    (warm-up: allocation, cuDNN autotuning, the data cache) is not counted."""

    LONG_S = 24 * 3600  # beyond this, a smaller recipe or a GPU is suggested

    def __init__(self, start_step: int, steps: int, measure: int = 10):
        self.start, self.steps, self.measure = start_step, steps, measure
        self.t0 = None
        self.said = False

    def update(self, step: int) -> str | None:
        """Call after each step with the number of steps done; returns the line to print, once."""
        if self.said or step < self.start + 1:
            return None
        if self.t0 is None:
            self.t0 = time.perf_counter()
            return None
        counted = step - self.start - 1
        if counted < self.measure and step < self.steps:
            return None
        self.said = True
        per_step = (time.perf_counter() - self.t0) / max(counted, 1)
        left = (self.steps - step) * per_step
        text = (f"pace: {per_step:.3g} s/step here; the remaining {self.steps - step:,} steps take about "
                f"{duration(left)} (plus validation and checkpoints)")
        if left > self.LONG_S:
            text += (f". That is more than a day: on a machine without a GPU, `python train.py {CPU_RECIPE}` trains "
                     f"a small model in about {CPU_RECIPE_MINUTES} minutes on 2 cores; the full recipe is meant "
                     f"for a GPU")
        return text


class Monitor:
    def __init__(self, cfg, run_dir: Path, config_dict: dict, run_name: str, resume_id: str | None,
                 start_step: int = 0):
        self.cfg = cfg
        self.pace = Pace(start_step, cfg.train.steps)
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

    def message(self, text: str) -> None:
        """A line for the person watching the console, printed above the progress bar."""
        tqdm.write(text)

    def step_done(self, step: int) -> None:
        """Count a finished step; says the estimated duration once, after the first steps."""
        text = self.pace.update(step)
        if text:
            self.message(text)

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


def log_histograms(monitor, generator: nn.Module, discriminator: nn.Module, probe: ActivationProbe,
                   before: dict | None, step: int) -> None:
    """Weight and gradient histograms of G and D, G's update-to-weight ratio per tensor (``before``:
    G's weights before the step) and the probe's pre-activations and dead-ReLU fractions."""
    values, scalars = {}, {}
    for prefix, model in (("g", generator), ("d", discriminator)):
        for n, p in model.named_parameters():
            values[f"weights_{prefix}/{n}"] = p.detach()
            if p.grad is not None:
                values[f"grads_{prefix}/{n}"] = p.grad.detach()
    for n, p in generator.named_parameters():
        if before is not None and n in before:
            change = (p.detach() - before[n]).norm() / before[n].norm().clamp_min(1e-12)
            scalars[f"update_ratio_g/{n}"] = change.item()
    for layer, (dead, sample) in probe.stats.items():
        values[f"preact_g/{layer}"] = sample
        scalars[f"dead_relu_g/{layer}"] = dead
    monitor.histograms(values, step)
    monitor.log(scalars, step)
    probe.stats.clear()


class NullMonitor:
    """What ranks other than 0 get: every call is a no-op."""

    run_id = None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None
