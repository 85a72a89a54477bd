"""The one GAN training iteration: what ``train``, ``lr_find`` and ``bench`` all run.

    parts = build_parts(cfg, device)                       # models, optimisers, AMP, EMA, hint simulation
    line, color, hints, probs = prepare_inputs(parts, batch, progress)
    result = train_step(parts, line, color, hints)         # D step, then G step, in the open

A loss term is added in one place: compute it in ``train_step`` under a name, and give its weight a
config key in ``LOSS_WEIGHTS``. The totals are the weighted sums of the named terms, so what the
benchmark times, what the LR range test records and what training optimises cannot drift apart.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .hints import HintSampler, Hints, curriculum_probs
from .linestyle import restyle
from .colour_bins import colour_class_loss, mix_weights
from .losses import PerceptualLoss, d_adv_loss, g_adv_loss, gradient_penalty, recon_loss
from .encoders import load_pretrained, parameter_groups
from .models import build_discriminator, build_generator
from .runtime import DistInfo, amp_dtype, augment

# Every loss term by name -> the LossConfig key that weights it in its network's total (None: weight 1).
LOSS_WEIGHTS = {
    "d_adv": None,  # discriminator: real patches up, fakes down
    "d_gp": "gp_weight",  # discriminator: gradient penalty on real data (loss.gp)
    "g_adv": "gan_weight",  # generator: make D call the fakes real
    "recon": "recon_weight",  # generator: pixel reconstruction (loss.recon)
    "perceptual": "perceptual_weight",  # generator: VGG feature distance
    "colour_classes": "colour_classes",  # generator: the colour head's rebalanced cross-entropy (model.colour_head)
}


@dataclass
class Parts:
    """Everything one iteration touches. ``generator`` and ``discriminator`` are the plain modules
    (what checkpoints hold); ``g_run`` / ``d_run`` are what the step calls (DDP and/or compiled);
    ``d_frozen`` is D for the G step, without DDP (its parameters are frozen there: nothing to reduce)."""

    cfg: object
    device: torch.device
    generator: nn.Module
    discriminator: nn.Module
    g_run: nn.Module
    d_run: nn.Module
    d_frozen: nn.Module
    ema: AveragedModel
    perceptual: PerceptualLoss
    hint_sampler: HintSampler
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    sched_d: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # None: fp32
    autocast: torch.autocast
    channels_last: bool
    colour_weights: torch.Tensor | None = None  # (Q,) the colour head's class weights (colour_bins.mix_weights)

    def state_dict(self) -> dict:
        """Weights, EMA, optimisers, schedules and loss scale: the training state of the networks."""
        return {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
                "generator_ema": self.ema.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "sched_g": self.sched_g.state_dict(),
                "sched_d": self.sched_d.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.ema.load_state_dict(state["generator_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        self.scaler.load_state_dict(state["scaler"])

    def load_weights(self, generator: dict, generator_ema: dict, discriminator: dict | None) -> None:
        """Start from another run's weights (``train.init``): G and EMA-G, and D when given (else D
        keeps its fresh initialisation). Optimisers, schedules and the loss scale stay fresh."""
        self.generator.load_state_dict(generator)
        self.ema.module.load_state_dict(generator_ema)
        self.ema.n_averaged.fill_(1)  # 0 would make the first EMA update copy G over the loaded EMA
        if discriminator is not None:
            self.discriminator.load_state_dict(discriminator)

    def step_schedules(self) -> None:
        self.sched_g.step()
        self.sched_d.step()


def lr_lambda(train_cfg):
    """The learning-rate factor at each step for ``train.lr_schedule`` (with ``train.warmup_steps``)."""
    steps, warmup, kind = train_cfg.steps, train_cfg.warmup_steps, train_cfg.lr_schedule

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "linear":  # pix2pix: constant for the first half, then linearly to zero
            half = steps // 2
            return 1.0 if step < half else max(0.0, 1.0 - (step - half) / max(1, steps - half))
        if kind == "cosine":
            progress = (step - warmup) / max(1, steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


def build_parts(cfg, device: torch.device, dist: DistInfo | None = None) -> Parts:
    """Models, EMA, perceptual loss, optimisers, schedules and AMP for ``cfg`` on ``device``.
    The order of construction is fixed (it draws the initial weights from the global RNG), so the
    same seed gives the same networks in train, lr_find and bench. ``dist``: DDP when it has >1 ranks."""
    dist = dist or DistInfo()
    g_raw = build_generator(cfg.model)
    load_pretrained(g_raw)  # ImageNet weights of pretrained parts, before the EMA copies G
    g_raw = g_raw.to(device)
    d_raw = build_discriminator(cfg.model).to(device)
    if dist.enabled and device.type == "cuda" and "batch" in (cfg.model.norm, cfg.model.disc_norm):
        g_raw = nn.SyncBatchNorm.convert_sync_batchnorm(g_raw)
        d_raw = nn.SyncBatchNorm.convert_sync_batchnorm(d_raw)
    channels_last = bool(cfg.train.channels_last and device.type == "cuda")
    if channels_last:
        g_raw, d_raw = g_raw.to(memory_format=torch.channels_last), d_raw.to(memory_format=torch.channels_last)
    ema = AveragedModel(g_raw, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay), use_buffers=True)
    perceptual = PerceptualLoss(cfg.loss).to(device)
    if channels_last and cfg.loss.perceptual_amp:
        perceptual = perceptual.to(memory_format=torch.channels_last)
    opt_g = make_optimizer(parameter_groups(g_raw, cfg.train.lr_g, cfg.model.encoder_lr, cfg.train.lr_features),
                           cfg.train, device)
    opt_d = make_optimizer(parameter_groups(d_raw, cfg.train.lr_d, 1.0), cfg.train, device)
    schedule = lr_lambda(cfg.train)
    dtype = amp_dtype(cfg.train.amp, device)
    g_run, d_run = g_raw, d_raw
    if dist.enabled:
        ids = [device.index] if device.type == "cuda" else None
        g_run, d_run = DDP(g_raw, device_ids=ids), DDP(d_raw, device_ids=ids)
    d_frozen = d_raw
    if cfg.train.compile_mode == "reduce-overhead" and device.type != "cuda":
        raise ValueError(f"train.compile_mode=reduce-overhead records CUDA graphs: it needs a CUDA device, "
                         f"not {device}")
    if cfg.train.compile:
        mode = None if cfg.train.compile_mode == "default" else cfg.train.compile_mode
        g_run, d_run, d_frozen = (torch.compile(m, mode=mode) for m in (g_run, d_run, d_raw))
    return Parts(
        cfg=cfg, device=device, generator=g_raw, discriminator=d_raw, g_run=g_run, d_run=d_run, d_frozen=d_frozen,
        ema=ema, perceptual=perceptual, hint_sampler=HintSampler(cfg.hints, cfg.model.palette_size),
        opt_g=opt_g, opt_d=opt_d, sched_g=torch.optim.lr_scheduler.LambdaLR(opt_g, schedule),
        sched_d=torch.optim.lr_scheduler.LambdaLR(opt_d, schedule),
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), amp_dtype=dtype,
        autocast=torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
        channels_last=channels_last,
        colour_weights=mix_weights(cfg.data).to(device) if cfg.model.colour_head else None)


def make_optimizer(groups: list, train_cfg, device: torch.device) -> torch.optim.Adam:
    """Adam for the parameter ``groups`` (``encoders.parameter_groups``: each with its lr) as
    ``train.optimizer`` asks: "fused" (one kernel for all parameters, and
    it skips a non-finite step on the device, so the guard needs no host sync), "foreach", or
    "auto" (fused on CUDA, foreach elsewhere)."""
    kind = train_cfg.optimizer
    if kind == "auto":
        kind = "fused" if device.type == "cuda" else "foreach"
    betas = (train_cfg.beta1, train_cfg.beta2)
    return torch.optim.Adam(groups, betas=betas, **{kind: True})


@torch.no_grad()
def update_ema(ema: AveragedModel, model: nn.Module, decay: float, ok: torch.Tensor, warmup: bool = False) -> None:
    """ema <- ema + (1 - decay) * ok * (model - ema) over parameters and float buffers, with
    ``foreach`` kernels and no host sync (``AveragedModel.update_parameters`` reads its step count on
    the host twice); ``ok`` (0-dim bool, on the device) False leaves the EMA as it is. Other buffers
    are copied. ``warmup`` (train.ema_warmup): the decay is min(decay, (1 + n) / (10 + n)) after the
    EMA's n updates so far."""
    pairs = [(e, m) for e, m in zip([*ema.module.parameters(), *ema.module.buffers()],
                                    [*model.parameters(), *model.buffers()])]
    floats = [(e, m) for e, m in pairs if e.is_floating_point()]
    if floats:
        ema_list, model_list = [e for e, _ in floats], [m for _, m in floats]
        if warmup:  # 0-dim, on the device: no host sync
            n = ema.n_averaged.to(ema_list[0].dtype)
            decay = torch.clamp((1 + n) / (10 + n), max=decay)
        weight = ok.to(ema_list[0].dtype) * (1.0 - decay)  # 0-dim, on the device
        delta = torch._foreach_sub(model_list, ema_list)
        torch._foreach_mul_(delta, weight)
        torch._foreach_add_(ema_list, delta)
    for e, m in pairs:
        if not e.is_floating_point():
            e.copy_(m)
    ema.n_averaged += ok.to(ema.n_averaged.dtype)


def prepare_inputs(parts: Parts, batch: dict, progress: float) -> tuple:
    """A loader batch -> (line, color, hints, probs) as the networks take them: on the device, with
    the paired crop and flip, the line styles of ``cfg.lines`` (the dataset's lines, XDoG from the
    target, or varied), the curriculum's hint mix at ``progress`` in [0, 1] simulated from the target
    (and from its region scribble maps when the batch has them: ``hints.scribbles``), and
    channels_last where configured. line (B, 1, H, W), color (B, 3, H, W) in [-1, 1]."""
    cfg, device = parts.cfg, parts.device
    line = batch["line"].to(device, non_blocking=True)
    color = batch["color"].to(device, non_blocking=True)
    scribbles = batch.get("scribbles")  # (B, 4, 64, 64) uint8 RGBA maps -> enlarged to the image's size
    if scribbles is not None:
        scribbles = F.interpolate(scribbles.to(device, non_blocking=True).float(), size=line.shape[-2:],
                                  mode="nearest")
    line, color, scribbles = augment(line, color, cfg.data.crop, cfg.data.hflip, scribbles)
    line, _ = restyle(cfg.lines, line, color)
    probs = curriculum_probs(cfg.hints, progress)
    hints = parts.hint_sampler.sample(color, probs, scribbles=scribbles)
    if parts.channels_last:
        line = line.contiguous(memory_format=torch.channels_last)
        color = color.contiguous(memory_format=torch.channels_last)
    return line, color, hints, probs


def weighted_total(terms: dict, loss_cfg) -> torch.Tensor:
    """Sum of the named ``terms``, each weighted by its LOSS_WEIGHTS key of ``loss_cfg``."""
    total = 0.0
    for name, value in terms.items():
        key = LOSS_WEIGHTS[name]
        total = total + (value if key is None else getattr(loss_cfg, key) * value)
    return total


@dataclass
class StepResult:
    """Unweighted loss terms by name, the weighted totals, D's mean logits and the non-finite
    guard's verdicts ``d_ok`` / ``g_ok`` (0-dim bool: False when that network's gradients were
    NaN/Inf and its update was skipped). All are device tensors: reading one is a host sync, so
    training reads them at log steps only (``training.NonFiniteGuard``); ``ok`` and ``culprits``
    read them."""

    d_terms: dict
    g_terms: dict
    d_total: torch.Tensor
    g_total: torch.Tensor
    real_logit: torch.Tensor
    fake_logit: torch.Tensor
    d_ok: torch.Tensor
    g_ok: torch.Tensor

    @property
    def ok(self) -> bool:
        return bool(self.d_ok & self.g_ok)  # a host sync

    def finite_terms(self) -> torch.Tensor:
        """(n_terms,) bool on the device, in ``term_names`` order: which loss terms were finite."""
        return torch.isfinite(torch.stack([v.float() for v in {**self.d_terms, **self.g_terms}.values()]))

    def term_names(self) -> list:
        return [*self.d_terms, *self.g_terms]

    def culprits(self) -> list:
        """Names of the loss terms that were not finite (none when only a gradient was); a host sync."""
        return [k for k, finite in zip(self.term_names(), self.finite_terms().tolist()) if not finite]

    def scalars(self) -> dict:
        """Tensors to log, by W&B key."""
        return {**{f"loss/{k}": v for k, v in {**self.d_terms, **self.g_terms}.items()},
                "loss/d_total": self.d_total, "loss/g_total": self.g_total,
                "d/real_logit": self.real_logit, "d/fake_logit": self.fake_logit}


def _update(loss: torch.Tensor, optimizer, module: nn.Module, scaler, grad_clip: float) -> torch.Tensor:
    """Backward, optional clipping, then the optimiser step unless a gradient is NaN/Inf; returns
    whether it stepped, as a 0-dim bool on the device. Backward always runs: under DDP every rank
    must join the gradient all-reduce, and the averaged gradients give every rank the same verdict.
    A fused optimiser skips on the device (the ``found_inf`` input GradScaler also uses): no host
    sync. A foreach one needs the verdict on the host (a sync; free on a CPU)."""
    scaler.scale(loss).backward()
    if scaler.is_enabled():
        scaler.unscale_(optimizer)
    # Clipping at infinity only measures: the total norm tells whether every gradient is finite.
    norm = torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip or math.inf)
    finite = torch.isfinite(norm)  # 0-dim bool, on the device
    if scaler.is_enabled():
        scaler.step(optimizer)  # GradScaler skips a non-finite step itself (on the device when fused)
    elif optimizer.defaults.get("fused"):
        optimizer.found_inf = (~finite).float()  # read by the fused kernel: skip the update, keep the step count
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif bool(finite):  # CPU-GPU sync point (the foreach optimiser has no device-side skip)
        optimizer.step()
    return finite


def train_step(parts: Parts, line: torch.Tensor, color: torch.Tensor, hints: Hints) -> StepResult:
    """One D step, then one G step with D frozen, then the EMA update.

    line (B, 1, H, W), color (B, 3, H, W) in [-1, 1]; hints as ``HintSampler.sample`` draws them.
    The non-finite guard: a network whose gradients are NaN/Inf (a NaN/Inf loss makes them so) is
    not updated, and neither is the EMA when G is not; decided on the device with a fused optimiser
    (``train.optimizer``). The loss scale is updated once per iteration.
    """
    cfg, autocast, scaler = parts.cfg, parts.autocast, parts.scaler
    d_hint = hints.spatial if cfg.model.disc_hints else None

    # D step: real pairs up, fakes (detached) down.
    parts.opt_d.zero_grad(set_to_none=True)
    with autocast:
        fake = parts.g_run(line, hints.spatial, hints.palette, hints.palette_keep,
                           logits=parts.colour_weights is not None)  # (B, 3, H, W) in [-1, 1]
        fake, logits = fake if isinstance(fake, tuple) else (fake, None)  # logits (B, Q, h, w): model.colour_head
        real_logits = parts.d_run(line, color, d_hint)  # (B, 1, h, w)
        fake_logits = parts.d_run(line, fake.detach(), d_hint)
        d_terms = {"d_adv": d_adv_loss(real_logits, fake_logits, cfg.loss.gan)}
    if cfg.loss.gp != "none":  # outside autocast: float32 input gradients
        d_terms["d_gp"] = gradient_penalty(parts.discriminator, line, color, d_hint, cfg.loss.gp)
    d_total = weighted_total(d_terms, cfg.loss)
    d_ok = _update(d_total, parts.opt_d, parts.discriminator, scaler, cfg.train.grad_clip)

    # G step: D frozen; adversarial + reconstruction + perceptual (+ the colour head's classes).
    parts.discriminator.requires_grad_(False)
    parts.opt_g.zero_grad(set_to_none=True)
    with autocast:
        g_terms = {"g_adv": g_adv_loss(parts.d_frozen(line, fake, d_hint), cfg.loss.gan),
                   "recon": recon_loss(fake.float(), color, cfg.loss.recon)}
    if parts.perceptual.enabled:  # float32 unless loss.perceptual_amp: VGG under the AMP dtype too
        with autocast if cfg.loss.perceptual_amp else contextlib.nullcontext():
            g_terms["perceptual"] = parts.perceptual(fake.float(), color)
    if logits is not None:
        g_terms["colour_classes"] = colour_class_loss(logits, color, parts.colour_weights)
    g_total = weighted_total(g_terms, cfg.loss)
    g_ok = _update(g_total, parts.opt_g, parts.generator, scaler, cfg.train.grad_clip)
    parts.discriminator.requires_grad_(True)
    update_ema(parts.ema, parts.generator, cfg.train.ema_decay, g_ok, cfg.train.ema_warmup)
    scaler.update()  # once per iteration, for both optimisers
    return StepResult(_detached(d_terms), _detached(g_terms), d_total.detach(), g_total.detach(),
                      real_logits.detach().float().mean(), fake_logits.detach().float().mean(), d_ok, g_ok)


def _detached(terms: dict) -> dict:
    """The loss terms without their graphs, so a kept result holds no activations alive."""
    return {name: value.detach() for name, value in terms.items()}
