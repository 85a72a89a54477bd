"""Colour hints simulated from the target, batched on the target's device.

Three modes per sample (``HintMode``; ``MODES`` are their names): "none"; "spatial" (the target's
colour at chosen places, as a user paints it: square patches, short strokes, or in training a
scribble per region from the stored maps); "palette" (the target's dominant colours, no spatial
information). In training the hints are *denoised* on purpose: most of them zeroed out,
colours jittered, the map softened, so the model learns to spread a few hints instead of copying
them. ``denoise=False`` gives clean hints, as validation and evaluation use (the demo's hints are
what its user paints, ``inference.hints_to_arrays``).

Tensors: target (B, 3, H, W) in [-1, 1]; spatial hint (B, 4, H, W) = colour * mask in [-1, 1]
(channels 0-2) and mask in [0, 1] (channel 3); palette (B, K, 3) in [-1, 1]; keep (B, K) in {0, 1}.
Everything is float32 on the target's device; a ``generator`` must live on that device too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch
import torch.nn.functional as F

from .images import gaussian_blur


class HintMode(IntEnum):
    """What a sample is given besides its line art; the value is what ``Hints.mode`` holds."""

    NONE = 0  # line art only
    SPATIAL = 1  # colour at places (painted strokes; simulated as patches, strokes or region scribbles)
    PALETTE = 2  # a few colours for the whole image, no places


MODES = tuple(mode.name.lower() for mode in HintMode)  # ("none", "spatial", "palette"): config and metric names
WHITE_LEVEL = 0.92  # in [0, 1]: a pixel with every channel above this is paper
DARK_LEVEL = 0.2  # in [0, 1]: a pixel with every channel below this is line ink
PALETTE_BINS = 8  # per channel: colours are grouped on an 8x8x8 grid to find the dominant ones
MIN_COLOR_SHARE = 0.01  # a palette colour covers at least this share of the colour region (not edge fringes)
STROKE_SEGMENTS = 4  # a stroke is a short line of this many small patches
SCRIBBLE_LEVELS = 254  # steps of region share in a scribble map's alpha: 1..254 on scribbles, 0 off them


def encode_rank(rank, regions: int):
    """The alpha a scribble map stores on the scribble of the region of area rank ``rank`` (0 = the
    largest) among ``regions``: the least share of the regions that keeps it, (rank + 1) / regions,
    in steps of 1/SCRIBBLE_LEVELS rounded down (so the protocol's ratios, where alpha * regions is
    often a whole number, select exactly), at least 1, at most 254. Takes ints or integer arrays
    (``data_prep.scribbles`` writes it; ``scribble_hints`` reads it)."""
    return np.maximum(1, SCRIBBLE_LEVELS * (np.asarray(rank) + 1) // regions)


def scribble_hints(maps: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """Spatial hints (B, 4, H, W) from stored scribble maps: the scribbles of the largest ``share``
    (B,) in [0, 1] of each image's regions, as the Hint-AUC protocol keeps them at its ratio alpha
    (the largest floor(share * regions)), to 1/254 of a share. maps (B, 4, H, W) float with the
    stored RGBA values in [0, 255] (``data_prep scribbles``, enlarged to the image's size by nearest
    neighbour)."""
    level = maps[:, 3:4]
    mask = ((level > 0) & (level <= share.view(-1, 1, 1, 1) * SCRIBBLE_LEVELS + 1e-4)).float()  # (B, 1, H, W)
    return torch.cat([(maps[:, :3] / 127.5 - 1) * mask, mask], 1)


@dataclass
class Hints:
    spatial: torch.Tensor  # (B, 4, H, W): colour * mask in [-1, 1], mask in [0, 1]
    palette: torch.Tensor  # (B, K, 3) in [-1, 1], zero where not kept
    palette_keep: torch.Tensor  # (B, K) in {0, 1}
    mode: torch.Tensor  # (B,) long: a HintMode value per sample

    def to(self, device) -> "Hints":
        return Hints(self.spatial.to(device), self.palette.to(device), self.palette_keep.to(device),
                     self.mode.to(device))


def empty_hints(batch: int, height: int, width: int, palette_size: int, device, dtype=torch.float32) -> Hints:
    """Hintless inputs: all zeros, mode 0 ("none")."""
    return Hints(torch.zeros(batch, 4, height, width, device=device, dtype=dtype),
                 torch.zeros(batch, palette_size, 3, device=device, dtype=dtype),
                 torch.zeros(batch, palette_size, device=device, dtype=dtype),
                 torch.zeros(batch, dtype=torch.long, device=device))


def curriculum_probs(cfg, progress: float) -> dict:
    """Mode probabilities {none, spatial, palette} at training ``progress`` in [0, 1]: linear
    between the curriculum points (by their ``at``), constant before the first and after the last."""
    points = list(cfg.curriculum)
    if progress <= points[0].at:
        return {m: float(getattr(points[0], m)) for m in MODES}
    for a, b in zip(points, points[1:]):
        if progress <= b.at:
            t = (progress - a.at) / (b.at - a.at) if b.at > a.at else 1.0
            return {m: float((1 - t) * getattr(a, m) + t * getattr(b, m)) for m in MODES}
    return {m: float(getattr(points[-1], m)) for m in MODES}


def color_region(target: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) bool: pixels that are neither paper white (every channel > WHITE_LEVEL in
    [0, 1] units) nor line black (every channel < DARK_LEVEL). Anti-aliased line edges on paper are
    grey and count as colour: a grey fill cannot be told from them pixel by pixel."""
    unit = (target.float() + 1) / 2
    white = (unit > WHITE_LEVEL).all(1, keepdim=True)
    dark = (unit < DARK_LEVEL).all(1, keepdim=True)
    return ~(white | dark)


class HintSampler:
    """Draws hints from targets. cfg: HintConfig; palette_size: K of the model's palette input.
    ``strokes``: probability that a spatial hint of the random draw is a stroke (``cfg.strokes``);
    ``scribbles``: probability that a spatial sample of the random draw gets region scribbles
    instead of patches (``cfg.scribbles``; only where scribble maps come with the batch)."""

    def __init__(self, cfg, palette_size: int):
        self.cfg = cfg
        self.palette_size = palette_size
        self.strokes = float(cfg.strokes)
        self.scribbles = float(cfg.scribbles)

    @staticmethod
    def _rand(*shape, device, generator) -> torch.Tensor:
        return torch.rand(*shape, device=device, generator=generator)

    def _randint(self, low: int, high: int, *shape, device, generator) -> torch.Tensor:
        """Uniform integers in [low, high], long."""
        span = high - low + 1
        return low + (self._rand(*shape, device=device, generator=generator) * span).long().clamp(max=span - 1)

    def patch_counts(self, batch: int, device, generator=None) -> torch.Tensor:
        """(B,) long: patches per image ~ Geometric on {0, 1, 2, ...} with mean cfg.mean_patches
        (0 is possible: a "spatial" sample may get no hint at all), capped at cfg.max_patches."""
        cfg = self.cfg
        p = 1.0 / (cfg.mean_patches + 1.0)
        u = self._rand(batch, device=device, generator=generator).clamp_min(1e-12)
        return torch.floor(torch.log(u) / math.log1p(-p)).clamp(max=cfg.max_patches).long()

    def spatial(self, target, num_patches: int | None = None, denoise: bool = True, placement: str | None = None,
                generator=None, strokes: float = 0.0, scribbles: torch.Tensor | None = None) -> torch.Tensor:
        """Spatial hint map (B, 4, H, W) for target (B, 3, H, W) in [-1, 1].

        Patches per image: ``patch_counts`` (training, strokes with probability ``self.strokes``), or
        exactly ``num_patches`` (evaluation, strokes with probability ``strokes``).
        Each patch: side uniform in [patch_min, patch_max]; centred (clamped inside the image) on a
        uniform pixel, or with placement "color" on a random colour-region pixel of its image
        (uniform if that image has none); colour = the target's mean colour over the patch. In the
        random draw a patch is, with probability cfg.strokes, a stroke instead: STROKE_SEGMENTS
        half-size patches in a line in a random direction, one colour (the mean over the stroke).
        Overlapping patches average their colours. With ``denoise``: each image drops each patch
        with its own probability drawn uniform in [drop_min, drop_max], colours get Gaussian
        jitter (std cfg.color_jitter), and the map is blurred with a sigma drawn uniform in
        [0, blur_sigma] per image (so the sharp hints of evaluation stay in the training
        distribution), the same blur on colour * mask and on mask.
        ``scribbles``: the batch's stored region scribble maps (B, 4, H, W), see ``scribble_hints``;
        in the random draw each image gets, with probability ``self.scribbles``, the scribbles of
        the largest share, uniform in [0, 1], of its regions instead of its patches (then blurred
        like them; no drop or jitter: the share already thins them)."""
        cfg, device = self.cfg, target.device
        batch, _, height, width = target.shape
        target = target.float()
        if num_patches is None:
            counts, slots, strokes = self.patch_counts(batch, device, generator), cfg.max_patches, self.strokes
        else:
            counts = torch.full((batch,), num_patches, device=device, dtype=torch.long)
            slots = num_patches
        if slots == 0:
            return torch.zeros(batch, 4, height, width, device=device)
        sides = self._randint(cfg.patch_min, cfg.patch_max, batch, slots, device=device, generator=generator)  # (B, N)
        if (placement or cfg.placement) == "color":
            weights = color_region(target).flatten(1).float()  # (B, H*W)
            weights = torch.where(weights.any(1, keepdim=True), weights, 1.0)  # no colour region: anywhere
        else:
            weights = torch.ones(batch, height * width, device=device)
        centres = torch.multinomial(weights, slots, replacement=True, generator=generator)  # (B, N)
        cy, cx = centres // width, centres % width  # (B, N) each
        segments = STROKE_SEGMENTS if strokes > 0 else 1
        if segments > 1:
            is_stroke = self._rand(batch, slots, device=device, generator=generator) < strokes  # (B, N)
            angle = self._rand(batch, slots, 1, device=device, generator=generator) * (2 * math.pi)  # (B, N, 1)
            sides = torch.where(is_stroke, ((sides + 1) // 2).clamp(min=cfg.patch_min), sides)
            steps = torch.arange(segments, device=device) * sides[..., None]  # (B, N, L): abutting segments
            cy = cy[..., None] + (steps * torch.sin(angle)).round().long()  # (B, N, L)
            cx = cx[..., None] + (steps * torch.cos(angle)).round().long()
            seg_on = torch.cat([torch.ones_like(is_stroke[..., None]),
                                is_stroke[..., None].expand(-1, -1, segments - 1)], 2)  # (B, N, L)
            sides = sides[..., None].expand(-1, -1, segments)  # (B, N, L)
        else:
            cy, cx, sides = cy[..., None], cx[..., None], sides[..., None]  # (B, N, 1)
            seg_on = torch.ones_like(sides, dtype=torch.bool)
        # clamp patches inside the image
        top = torch.minimum((cy - sides // 2).clamp(min=0), (height - sides).clamp(min=0)).flatten(1)  # (B, N*L)
        left = torch.minimum((cx - sides // 2).clamp(min=0), (width - sides).clamp(min=0)).flatten(1)
        flat_sides = sides.flatten(1)
        ys = torch.arange(height, device=device)
        xs = torch.arange(width, device=device)
        rows = ((ys >= top[..., None]) & (ys < (top + flat_sides)[..., None])).float()  # (B, N*L, H)
        cols = ((xs >= left[..., None]) & (xs < (left + flat_sides)[..., None])).float()  # (B, N*L, W)
        rows = rows * seg_on.flatten(1)[..., None].float()  # unused stroke segments paint nothing
        seg_sums = torch.einsum("bny,bcyx,bnx->bnc", rows, target, cols)  # (B, N*L, 3): colour sums
        seg_area = rows.sum(2) * cols.sum(2)  # (B, N*L): pixels per segment (0 if unused)
        colour = (seg_sums.view(batch, slots, segments, 3).sum(2)
                  / seg_area.view(batch, slots, segments).sum(2, keepdim=True).clamp_min(1.0))  # (B, N, 3)
        active = torch.arange(slots, device=device) < counts[:, None]  # (B, N)
        if denoise:
            drop_rate = self._rand(batch, 1, device=device, generator=generator)  # (B, 1)
            drop = cfg.drop_min + (cfg.drop_max - cfg.drop_min) * drop_rate
            active &= self._rand(batch, slots, device=device, generator=generator) >= drop
            if cfg.color_jitter:
                noise = torch.randn(batch, slots, 3, device=device, generator=generator)
                colour = (colour + cfg.color_jitter * noise).clamp(-1, 1)
        rows = rows * active.repeat_interleave(segments, 1)[..., None].float()  # (B, N*L, H)
        colour = colour.repeat_interleave(segments, 1)  # (B, N*L, 3)
        coverage = torch.einsum("bny,bnx->byx", rows, cols).unsqueeze(1)  # (B, 1, H, W): patches per pixel
        painted = torch.einsum("bny,bnc,bnx->bcyx", rows, colour, cols)  # (B, 3, H, W): summed colours
        mask = (coverage > 0).float()  # (B, 1, H, W) in {0, 1}
        hint = torch.cat([painted / coverage.clamp_min(1.0), mask], 1)  # (B, 4, H, W); colour * mask as mask is 0/1
        if scribbles is not None and num_patches is None and self.scribbles > 0:
            use = self._rand(batch, device=device, generator=generator) < self.scribbles  # (B,)
            share = self._rand(batch, device=device, generator=generator)  # (B,)
            hint = torch.where(use.view(batch, 1, 1, 1), scribble_hints(scribbles.float(), share), hint)
        if denoise and cfg.blur_sigma > 0:
            sigma = cfg.blur_sigma * self._rand(batch, device=device, generator=generator)  # (B,)
            # the same blur on colour * mask and on mask: their ratio stays the hint colour
            hint = gaussian_blur(hint, sigma, cfg.blur_sigma)
        return hint

    def palette(self, target, num_colors: int | None = None, generator=None):
        """The target's dominant colours: (palette (B, K, 3) in [-1, 1], keep (B, K) in {0, 1}),
        sorted by frequency, most frequent first (the model pools them, so order does not matter).

        Colour-region pixels (all pixels if there are none) are counted on a PALETTE_BINS^3 colour
        grid; each of the K most frequent cells gives its pixels' mean colour; cells under
        MIN_COLOR_SHARE of the region (anti-aliasing fringes) are never kept. Only counts and sums
        over pixels are used, so shuffling the pixels changes nothing. Random draw: the first k
        colours, k uniform in [palette_min, palette_max], each then dropped with probability
        cfg.palette_color_drop, at least one kept. ``num_colors``: exactly the first num_colors
        (fewer if the image has fewer), no drop (validation, evaluation)."""
        cfg, device = self.cfg, target.device
        batch, size = target.shape[0], self.palette_size
        unit = ((target.float() + 1) / 2).clamp(0, 1).flatten(2)  # (B, 3, HW) in [0, 1]
        region = color_region(target).flatten(2).float()  # (B, 1, HW)
        region = torch.where(region.flatten(1).any(1)[:, None, None], region, 1.0)  # no colour region: all pixels
        q = (unit * PALETTE_BINS).long().clamp(max=PALETTE_BINS - 1)  # (B, 3, HW)
        cell = (q[:, 0] * PALETTE_BINS + q[:, 1]) * PALETTE_BINS + q[:, 2]  # (B, HW)
        n_cells = PALETTE_BINS**3
        counts = torch.zeros(batch, n_cells, device=device).scatter_add_(1, cell, region[:, 0])  # (B, cells)
        sums = torch.zeros(batch, n_cells, 3, device=device).scatter_add_(
            1, cell[..., None].expand(-1, -1, 3), (unit * region).transpose(1, 2))  # (B, cells, 3)
        top_counts, top_cells = counts.topk(size, dim=1)  # (B, K), most frequent first
        colours = sums.gather(1, top_cells[..., None].expand(-1, -1, 3)) / top_counts.clamp_min(1)[..., None]
        valid = top_counts >= MIN_COLOR_SHARE * region.sum((1, 2))[:, None]  # (B, K)
        valid[:, 0] = top_counts[:, 0] > 0  # the most frequent colour always qualifies
        ranks = torch.arange(size, device=device)
        if num_colors is None:
            k = self._randint(cfg.palette_min, cfg.palette_max, batch, device=device, generator=generator)  # (B,)
            candidate = valid & (ranks < k[:, None])  # (B, K)
            keep = candidate & (self._rand(batch, size, device=device, generator=generator) >= cfg.palette_color_drop)
            # all dropped: keep one random candidate instead
            score = torch.where(candidate, self._rand(batch, size, device=device, generator=generator), -1.0)
            rescue = F.one_hot(score.argmax(1), size).bool() & ~keep.any(1, keepdim=True)
            keep |= rescue
        else:
            keep = valid & (ranks < num_colors)
        keep = keep.float()
        return (colours * 2 - 1) * keep[..., None], keep

    def sample(self, target, probs: dict, generator=None, denoise: bool = True,
               scribbles: torch.Tensor | None = None) -> Hints:
        """Draw each sample's mode from ``probs`` ({mode: probability} over MODES) and fill that
        mode's tensors; the other modes' tensors stay zero. ``scribbles``: the batch's region
        scribble maps (see ``spatial``), or None."""
        batch, _, height, width = target.shape
        weights = torch.tensor([float(probs.get(m, 0.0)) for m in MODES], device=target.device)
        mode = torch.multinomial(weights.expand(batch, -1), 1, replacement=True, generator=generator)[:, 0]  # (B,)
        hints = empty_hints(batch, height, width, self.palette_size, target.device)
        hints.mode = mode
        if probs.get("spatial", 0) > 0:
            spatial = self.spatial(target, denoise=denoise, generator=generator, scribbles=scribbles)
            hints.spatial = spatial * (mode == HintMode.SPATIAL).view(batch, 1, 1, 1).float()
        if probs.get("palette", 0) > 0:
            palette, keep = self.palette(target, generator=generator)
            use = (mode == HintMode.PALETTE).float()
            hints.palette, hints.palette_keep = palette * use.view(batch, 1, 1), keep * use.view(batch, 1)
        return hints


def clean_hints(sampler: HintSampler, color: torch.Tensor, mode: str, num_patches: int, generator,
                placement: str | None = None, strokes: float = 0.0) -> Hints:
    """Undenoised hints of one mode for every image, as a user gives them (validation, evaluation):
    ``num_patches`` square patches (placed by ``placement``, default the sampler config's; each a
    stroke with probability ``strokes``), or the palette_max most frequent colours."""
    batch, _, height, width = color.shape
    hints = empty_hints(batch, height, width, sampler.palette_size, color.device)
    if mode == "spatial":
        hints.spatial = sampler.spatial(color, num_patches=num_patches, denoise=False, placement=placement,
                                        generator=generator, strokes=strokes)
    elif mode == "palette":
        hints.palette, hints.palette_keep = sampler.palette(color, num_colors=sampler.cfg.palette_max,
                                                            generator=generator)
    elif mode != "none":
        raise ValueError(f"unknown hint mode {mode!r}: use one of {', '.join(MODES)}")
    hints.mode = torch.full((batch,), HintMode[mode.upper()], dtype=torch.long, device=color.device)
    return hints
