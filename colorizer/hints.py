"""Colour hints simulated from the target, batched on the target's device.

Three modes per sample: "none"; "spatial" (patches of the target's colour at chosen places, as a
user paints them); "palette" (the target's dominant colours, no spatial information). In training
the hints are *denoised* on purpose: softened (blur, colour jitter) and mostly zeroed out, so the
model learns to generalise from a few hints instead of copying them.

Tensors: target (B, 3, H, W) in [-1, 1]; spatial hint (B, 4, H, W) = colour * mask in [-1, 1]
(channels 0-2) and mask in [0, 1] (channel 3); palette (B, K, 3) in [-1, 1]; keep (B, K) in {0, 1}.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MODES = ("none", "spatial", "palette")
WHITE_LEVEL = 0.92  # in [0, 1]: every channel above this is paper
DARK_LEVEL = 0.2  # in [0, 1]: every channel below this is line ink
PALETTE_BINS = 8  # per channel: colours are grouped on an 8x8x8 grid to find the dominant ones


@dataclass
class Hints:
    spatial: torch.Tensor  # (B, 4, H, W)
    palette: torch.Tensor  # (B, K, 3)
    palette_keep: torch.Tensor  # (B, K)
    mode: torch.Tensor  # (B,) long: index into MODES


def empty_hints(batch: int, height: int, width: int, palette_size: int, device, dtype=torch.float32) -> Hints:
    return Hints(torch.zeros(batch, 4, height, width, device=device, dtype=dtype),
                 torch.zeros(batch, palette_size, 3, device=device, dtype=dtype),
                 torch.zeros(batch, palette_size, device=device, dtype=dtype),
                 torch.zeros(batch, dtype=torch.long, device=device))


def curriculum_probs(cfg, progress: float) -> dict:
    """Mode probabilities at ``progress`` in [0, 1]: linear between the curriculum's points."""
    points = list(cfg.curriculum)
    if progress <= points[0].at or len(points) == 1:
        chosen = points[0]
        return {m: float(getattr(chosen, m)) for m in MODES}
    for a, b in zip(points, points[1:]):
        if progress <= b.at:
            t = (progress - a.at) / (b.at - a.at) if b.at > a.at else 1.0
            return {m: float((1 - t) * getattr(a, m) + t * getattr(b, m)) for m in MODES}
    return {m: float(getattr(points[-1], m)) for m in MODES}


def color_region(target: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) bool: pixels that are neither paper white nor line black."""
    unit = (target.float() + 1) / 2
    white = (unit > WHITE_LEVEL).all(1, keepdim=True)
    dark = (unit < DARK_LEVEL).all(1, keepdim=True)
    return ~(white | dark)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(2.5 * sigma))
    coords = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1),
                 groups=channels)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1),
                    groups=channels)


class HintSampler:
    def __init__(self, cfg, palette_size: int):
        self.cfg = cfg
        self.palette_size = palette_size

    def _rand(self, *shape, device, generator):
        return torch.rand(*shape, device=device, generator=generator)

    def spatial(self, target, num_patches: int | None = None, denoise: bool = True, placement: str | None = None,
                generator=None) -> torch.Tensor:
        """Spatial hint map (B, 4, H, W). Patch count ~ Geometric(mean cfg.mean_patches) on {0, 1, ...},
        capped at cfg.max_patches, or exactly ``num_patches``. Each patch: side uniform in
        [patch_min, patch_max], colour = the target's mean colour over the patch."""
        cfg, device = self.cfg, target.device
        batch, _, height, width = target.shape
        target = target.float()
        if num_patches is None:
            p = 1.0 / (cfg.mean_patches + 1.0)
            u = self._rand(batch, device=device, generator=generator).clamp_min(1e-12)
            counts = torch.floor(torch.log(u) / math.log(1 - p)).clamp(max=cfg.max_patches).long()  # (B,)
            slots = cfg.max_patches
        else:
            counts = torch.full((batch,), num_patches, device=device, dtype=torch.long)
            slots = num_patches
        if slots == 0:
            return torch.zeros(batch, 4, height, width, device=device)
        sizes = cfg.patch_min + (self._rand(batch, slots, device=device, generator=generator)
                                 * (cfg.patch_max - cfg.patch_min + 1)).long().clamp(max=cfg.patch_max - cfg.patch_min)
        if (placement or cfg.placement) == "color":
            weights = color_region(target).flatten(1).float()  # (B, H*W)
            weights[weights.sum(1) == 0] = 1.0  # no colour region: anywhere
        else:
            weights = torch.ones(batch, height * width, device=device)
        centres = torch.multinomial(weights, slots, replacement=True, generator=generator)  # (B, N)
        top = (centres // width - sizes // 2).clamp(min=0)
        top = torch.minimum(top, height - sizes)
        left = (centres % width - sizes // 2).clamp(min=0)
        left = torch.minimum(left, width - sizes)
        ys = torch.arange(height, device=device)
        xs = torch.arange(width, device=device)
        rows = ((ys >= top[..., None]) & (ys < (top + sizes)[..., None])).float()  # (B, N, H)
        cols = ((xs >= left[..., None]) & (xs < (left + sizes)[..., None])).float()  # (B, N, W)
        area = (sizes.float() ** 2)[..., None]  # (B, N, 1)
        colour = torch.einsum("bny,bcyx,bnx->bnc", rows, target, cols) / area  # (B, N, 3): patch means
        active = torch.arange(slots, device=device) < counts[:, None]  # (B, N)
        if denoise:
            drop = cfg.drop_min + (cfg.drop_max - cfg.drop_min) * self._rand(batch, 1, device=device, generator=generator)
            active &= self._rand(batch, slots, device=device, generator=generator) >= drop
            if cfg.color_jitter:
                noise = torch.randn(batch, slots, 3, device=device, generator=generator)
                colour = (colour + cfg.color_jitter * noise).clamp(-1, 1)
        rows = rows * active[..., None].float()
        coverage = torch.einsum("bny,bnx->byx", rows, cols).unsqueeze(1)  # (B, 1, H, W): patches per pixel
        painted = torch.einsum("bny,bnc,bnx->bcyx", rows, colour, cols)  # (B, 3, H, W): summed colours
        mask = (coverage > 0).float()
        colour_map = painted / coverage.clamp_min(1.0)  # overlapping patches average
        hint = torch.cat([colour_map * mask, mask], 1)  # (B, 4, H, W)
        if denoise and cfg.blur_sigma > 0:
            hint = _gaussian_blur(hint, cfg.blur_sigma)  # same blur for colour*mask and mask: their ratio stays the colour
        return hint

    def palette(self, target, num_colors: int | None = None, generator=None):
        """The target's dominant colours: (palette (B, K, 3), keep (B, K)), most frequent first.

        Colour-region pixels (all pixels if there are none) are counted on an 8x8x8 colour grid;
        each of the K most frequent cells gives its pixels' mean colour. Only counts and sums over
        pixels are used, so the result does not change when the pixels are shuffled. Keeps a random
        number of colours in [palette_min, palette_max] (or exactly ``num_colors``, no drop)."""
        cfg, device = self.cfg, target.device
        batch = target.shape[0]
        unit = ((target.float() + 1) / 2).clamp(0, 1).flatten(2)  # (B, 3, HW)
        region = color_region(target).flatten(2).float()  # (B, 1, HW)
        region[region.sum((1, 2)) == 0] = 1.0
        q = (unit * PALETTE_BINS).long().clamp(max=PALETTE_BINS - 1)  # (B, 3, HW)
        cell = (q[:, 0] * PALETTE_BINS + q[:, 1]) * PALETTE_BINS + q[:, 2]  # (B, HW)
        n_cells = PALETTE_BINS**3
        counts = torch.zeros(batch, n_cells, device=device).scatter_add_(1, cell, region[:, 0])  # (B, cells)
        sums = torch.zeros(batch, n_cells, 3, device=device).scatter_add_(
            1, cell[..., None].expand(-1, -1, 3), (unit * region).transpose(1, 2))  # (B, cells, 3)
        top_counts, top_cells = counts.topk(self.palette_size, dim=1)  # (B, K)
        colours = sums.gather(1, top_cells[..., None].expand(-1, -1, 3)) / top_counts.clamp_min(1)[..., None]
        palette = colours * 2 - 1  # (B, K, 3) in [-1, 1]
        ranks = torch.arange(self.palette_size, device=device)
        if num_colors is None:
            span = cfg.palette_max - cfg.palette_min + 1
            k = cfg.palette_min + (self._rand(batch, device=device, generator=generator) * span).long().clamp(max=span - 1)
            keep = ranks < k[:, None]
            dropped = self._rand(batch, self.palette_size, device=device, generator=generator) < cfg.palette_color_drop
            dropped[:, 0] = False  # at least one colour stays
            keep &= ~dropped
        else:
            keep = (ranks < num_colors).expand(batch, -1)
        keep = keep & (top_counts > 0)
        return palette * keep[..., None], keep.float()

    def sample(self, target, probs: dict, generator=None, denoise: bool = True) -> Hints:
        """Draw each sample's mode from ``probs`` ({mode: probability}) and fill that mode's hints."""
        batch, _, height, width = target.shape
        weights = torch.tensor([probs[m] for m in MODES], device=target.device, dtype=torch.float32)
        mode = torch.multinomial(weights.expand(batch, -1), 1, replacement=True, generator=generator)[:, 0]  # (B,)
        hints = empty_hints(batch, height, width, self.palette_size, target.device)
        hints.mode = mode
        if probs.get("spatial", 0) > 0:
            spatial = self.spatial(target, denoise=denoise, generator=generator)
            hints.spatial = spatial * (mode == 1).view(batch, 1, 1, 1).float()
        if probs.get("palette", 0) > 0:
            palette, keep = self.palette(target, generator=generator)
            use = (mode == 2).float()
            hints.palette, hints.palette_keep = palette * use.view(batch, 1, 1), keep * use.view(batch, 1)
        return hints


def clean_hints(sampler: HintSampler, color: torch.Tensor, mode: str, num_patches: int, generator) -> Hints:
    """Undenoised hints of one mode for every image, as a user gives them (validation, evaluation)."""
    batch, _, height, width = color.shape
    hints = empty_hints(batch, height, width, sampler.palette_size, color.device)
    if mode == "spatial":
        hints.spatial = sampler.spatial(color, num_patches=num_patches, denoise=False, generator=generator)
    elif mode == "palette":
        hints.palette, hints.palette_keep = sampler.palette(color, num_colors=sampler.cfg.palette_max,
                                                            generator=generator)
    hints.mode = torch.full((batch,), MODES.index(mode), dtype=torch.long, device=color.device)
    return hints
