"""Flat fills: one colour per closed region of the line art, the way an illustrator's flat-colour
layer is painted.

The network's colour often varies inside a shape the artist closed with a line (several colours
smear in it, or bleed across a thin line). ``flat_fill`` finds the closed regions of the line art
and gives each one colour:

1. ``regions``: ink is every pixel darker than ``FILL_INK``. Gaps where lines do not quite meet are
   closed by trapped-ball segmentation: a ball whose radius is ``gap`` (a share of the drawing's
   long side, so the tolerance is the same at any resolution) cannot pass through them. The
   connected areas (``scipy.ndimage.label``) where the ball fits grow back to the lines. (A
   morphological closing does not do this: it bridges nearby parallel strokes, not the two ends of
   a broken line.)
2. Each region's colour is the per-channel median (to 1 level in 255, from per-region histograms)
   of the model's colour over the region's own pixels: a robust average that a smear, or a line
   bleeding into a corner, does not move. Where painted hints fall in a region, the median of the
   hint colours there wins instead.
   With a colour head (model.colour_head), ``log_probs`` given: each region takes the bin of its
   pixels' highest summed log-probability (``colour_bins.region_votes``, the model's own vote) at
   the median's lightness, except paper (a median every channel of which is above
   ``composite.PAPER_SNAP``), which stays paper; painted hints still win.
   With ``split`` as well, a region is first cut where the model's per-pixel modes form clearly
   separate areas (``split_by_modes``): colours drawn side by side with no line between them
   (``shapes.merge_sums`` measures how much shape area that is) each get their own vote. Painted
   regions are not cut.
3. Every ink pixel takes the colour of the nearest region, so the layer under the lines is flat up
   to each line's middle and the multiplied lines meet one colour on each side.

Regions are found on the line art scaled down to at most ``FILL_MAX_PIXELS`` (ink kept: a cell with
any ink is ink), so a 4096 px drawing costs what a 1024 px one does.

Arrays: line (H, W) uint8 (255 paper, 0 ink); colour (3, H, W) float32 in [-1, 1]; hints as
``inference.hints_to_arrays`` gives them, colour (h, w, 3) in [0, 1] and mask (h, w) bool, at any
size (resized to the region grid, nearest).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from .colour_bins import BINS, region_votes, with_ab
from .composite import PAPER_SNAP
from .images import nearest

FILL_INK = 128  # line value (0-255) below which a pixel is ink when regions are found
FILL_GAP = 1 / 256  # trapped-ball radius, share of the long side: 1 px at 256 px (closes gaps under 3 px), 4 at 1024
FILL_MAX_PIXELS = 1024 * 1024  # regions are found at most at this many pixels (the line art scaled down)
SPLIT_DISTANCE = 30.0  # CIELAB ab: a part's per-pixel mode is at least this far from its region's vote (3 bins)
SPLIT_MIN_SHARE = 0.1  # a split-off part covers at least this share of its region...
SPLIT_MIN_FRACTION = 0.002  # ...and of the drawing (the size of shapes.MIN_SHAPE_FRACTION)


def region_grid(height: int, width: int, max_pixels: int = FILL_MAX_PIXELS) -> tuple:
    """(h, w) the regions of a ``height`` x ``width`` drawing are found at: its own size, or scaled
    down to at most ``max_pixels`` with the aspect kept."""
    scale = min(1.0, (max_pixels / (height * width)) ** 0.5)
    return max(1, int(height * scale)), max(1, int(width * scale))


def ink_mask(line: np.ndarray, size: tuple) -> np.ndarray:
    """line (H, W) uint8 -> (h, w) bool at ``size`` (h, w): True where any part of the cell is ink,
    so a 1 px line scaled down stays a closed line."""
    ink = line < FILL_INK
    if ink.shape == tuple(size):
        return ink
    coverage = Image.fromarray(ink.astype(np.float32), "F").resize((size[1], size[0]), Image.Resampling.BOX)
    return np.asarray(coverage) > 0


def regions(ink: np.ndarray, gap: float = FILL_GAP) -> tuple:
    """ink (h, w) bool -> (labels (h, w) int32: 0 on ink, 1..n the regions; n).

    Trapped-ball segmentation: a ball of radius ``gap`` x the long side (in px, rounded) cannot pass
    through a gap in a line narrower than its diameter. The areas where the ball fits (the paper
    minus the ink grown by the radius) are labelled first; the labels then grow back over the
    paper they were shrunk from, 4-connected, so two regions meet in the middle of a gap. Closed
    areas too small for the ball are regions of their own."""
    radius = int(round(gap * max(ink.shape)))
    paper = ~ink
    if radius > 0:
        # where the ball fits: the paper eroded by a disk of the radius (x^2 + y^2 <= r^2), the border
        # counted as paper; the same pixels as a distance transform's "> radius", 2 to 8 x faster here
        rows, cols = np.mgrid[-radius: radius + 1, -radius: radius + 1]
        ball = ndimage.binary_erosion(paper, structure=rows ** 2 + cols ** 2 <= radius ** 2, border_value=1)
        labels, count = ndimage.label(ball)
        labels = grow(labels, paper, 2 * radius + 1)  # Manhattan steps covering a Euclidean distance of radius + 1
    else:
        labels, count = np.zeros(ink.shape, np.int32), 0
    small, extra = ndimage.label(paper & (labels == 0))  # 4-connected: a diagonal step between ink is no passage
    labels = np.where(small > 0, small + count, labels)
    return labels.astype(np.int32), int(count + extra)


def grow(labels: np.ndarray, paper: np.ndarray, steps: int) -> np.ndarray:
    """Labels (h, w) int grown over the unlabelled ``paper`` (h, w) bool, 4-connected, one pixel a
    step for ``steps`` steps; where two labels reach a pixel in the same step, the larger wins (a
    grey dilation with a cross, on the unlabelled paper only, which is where the work is) -> (h, w)."""
    width = labels.shape[1]
    padded = np.pad(labels.astype(np.int32), 1)  # a border of 0 (nothing to grow from)
    todo = np.flatnonzero(np.pad(paper & (labels == 0), 1))  # flat indices into padded
    stride = width + 2
    for _ in range(steps):
        if not todo.size:
            break
        reach = np.maximum(np.maximum(padded.flat[todo - 1], padded.flat[todo + 1]),
                           np.maximum(padded.flat[todo - stride], padded.flat[todo + stride]))
        reached = reach > 0
        padded.flat[todo[reached]] = reach[reached]
        todo = todo[~reached]
    return padded[1:-1, 1:-1]


def label_medians(values: np.ndarray, labels: np.ndarray, count: int) -> tuple:
    """Per-label medians of ``values`` (N, 3) in [-1, 1] over ``labels`` (N,) in 0..count, to one
    level in 255 -> (medians (count + 1, 3) in [-1, 1], present (count + 1,) bool: the labels
    that had any value). One histogram per label and channel: linear in N, where sorting 1 M
    values per channel (``ndimage.median``) takes 0.4 s."""
    levels = np.rint((values.clip(-1, 1) + 1) * 127.5).astype(np.int64)  # (N, 3) in 0..255
    sizes = np.bincount(labels, minlength=count + 1)  # (count + 1,)
    medians = np.zeros((count + 1, 3), np.float32)
    for c in range(3):
        histogram = np.bincount(labels * 256 + levels[:, c], minlength=(count + 1) * 256).reshape(count + 1, 256)
        medians[:, c] = np.argmax(histogram.cumsum(1) * 2 >= sizes[:, None], axis=1)  # the lower median
    return medians / 127.5 - 1, sizes > 0


def split_by_modes(labels: np.ndarray, count: int, log_probs: torch.Tensor,
                   keep: np.ndarray | None = None) -> tuple:
    """Regions cut where the model's per-pixel modes form clearly separate areas. labels (h, w) int,
    0 on ink, 1..count the regions; log_probs (Q, p, q) over ``colour_bins.BINS``, covering the same
    drawing at any size; keep (count + 1,) bool: regions not to cut (the painted ones) -> (labels, new
    count). A part is a 4-connected area of one region whose per-pixel mode lies at least
    SPLIT_DISTANCE in ab from the region's vote, covering at least SPLIT_MIN_SHARE of the region and
    SPLIT_MIN_FRACTION of the drawing; each becomes a region of its own, numbered after ``count``."""
    ab, _ = region_votes(log_probs, labels, count)  # (count + 1, 2) each region's vote
    mode = nearest(log_probs.argmax(0).numpy(), labels.shape)  # (h, w) bin index
    far = (labels > 0) & (np.linalg.norm((BINS[mode] - ab[labels]).numpy(), axis=-1) >= SPLIT_DISTANCE)
    if keep is not None:
        far &= ~keep[labels]
    parts, _ = ndimage.label(far)
    # a part that spans two touching regions is one part in each
    keys, part_of = np.unique(parts[far].astype(np.int64) * (count + 1) + labels[far], return_inverse=True)
    sizes = np.bincount(part_of.ravel(), minlength=len(keys))
    region_sizes = np.bincount(labels.ravel(), minlength=count + 1)[keys % (count + 1)]
    big = (sizes >= SPLIT_MIN_SHARE * region_sizes) & (sizes >= SPLIT_MIN_FRACTION * labels.size)
    if not big.any():
        return labels, count
    new_label = np.where(big, count + 1 + np.cumsum(big) - 1, 0)[part_of.ravel()]  # per far pixel, 0 = stays
    out = labels.copy()
    out[far] = np.where(new_label > 0, new_label, labels[far])
    return out, count + int(big.sum())


def flat_fill(colour: torch.Tensor, line: np.ndarray, hint_colour: np.ndarray | None = None,
              hint_mask: np.ndarray | None = None, gap: float = FILL_GAP,
              max_pixels: int = FILL_MAX_PIXELS, log_probs: torch.Tensor | None = None,
              split: bool = False) -> torch.Tensor:
    """One colour per closed region of ``line``. colour (3, h, w) in [-1, 1] at any size (the flat
    colour at the working size), line (H, W) uint8 at the drawing's size; optional hints (colour
    (a, b, 3) in [0, 1], mask (a, b) bool) at any size; optional ``log_probs`` (Q, p, q) over
    ``colour_bins.BINS``, covering the same drawing at any size (the vote; with ``split``, regions are
    first cut by ``split_by_modes``, except the painted ones) -> (3, gh, gw) in [-1, 1] at
    ``region_grid(H, W)``: the region colours, and where there are no regions at all (a drawing
    that is all ink) the colour unchanged."""
    grid = region_grid(*line.shape, max_pixels)
    colour = F.interpolate(colour[None].float(), size=grid, mode="bicubic", align_corners=False)[0].clamp(-1, 1)
    labels, count = regions(ink_mask(line, grid), gap)
    if count == 0:
        return colour
    has_paint = hint_mask is not None and bool(hint_mask.any())
    if has_paint:  # the hint mask at the region grid
        mask = np.asarray(Image.fromarray(hint_mask).resize((grid[1], grid[0]), Image.Resampling.NEAREST))
    if split and log_probs is not None:
        keep = np.bincount(labels[mask], minlength=count + 1) > 0 if has_paint else None
        labels, count = split_by_modes(labels, count, log_probs.float().cpu(), keep)
    inside = labels > 0
    pixels = colour.permute(1, 2, 0).numpy()[inside]  # (N, 3)
    table, _ = label_medians(pixels, labels[inside], count)
    if log_probs is not None:  # the model's own vote per shape, at the median's lightness; paper stays paper
        ab, voted = region_votes(log_probs.float().cpu(), labels, count)
        voted &= ~((table + 1) / 2 > PAPER_SNAP).all(1)
        recoloured = with_ab(torch.from_numpy(table).T[None, :, :, None], ab.T[None, :, :, None])[0, :, :, 0].T
        table = np.where(voted[:, None], recoloured.numpy(), table).astype(np.float32)
    if has_paint:
        mask = mask & inside
        painted = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(hint_colour[..., c]), "F").resize(
            (grid[1], grid[0]), Image.Resampling.NEAREST)) for c in range(3)], -1)[mask] * 2 - 1  # (M, 3) in [-1, 1]
        hinted, present = label_medians(painted, labels[mask], count)
        table = np.where(present[:, None], hinted, table)
    # Ink takes the nearest region's label (and colour).
    nearest = ndimage.distance_transform_edt(~inside, return_distances=False, return_indices=True)
    filled = table[labels[nearest[0], nearest[1]]]  # (gh, gw, 3)
    return torch.from_numpy(np.ascontiguousarray(filled.transpose(2, 0, 1))).clamp(-1, 1)
