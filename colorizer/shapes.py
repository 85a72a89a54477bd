"""The guess, per shape: does each flat-colour shape of the target get its colour?

Colour-region PSNR rewards the average colour: a grey-brown guess is what minimises the squared
error where a model is unsure, so PSNR ranks it above vivid colours that are sometimes wrong. These
two numbers cannot be passed by a grey fill:

- **Shape colour accuracy.** The target's shapes are the 8-connected components of one target colour
  quantised to 5 bits a channel, kept when they cover at least ``MIN_SHAPE_FRACTION`` of the image and
  are neither paper (every channel above ``hints.WHITE_LEVEL``) nor ink (L* below ``INK_LIGHTNESS``).
  A shape is a hit when the per-channel median of the prediction inside it, eroded by 1 px, lies
  within CIEDE2000 ``HIT_DELTA_E`` of the shape's mean target colour. The number is the hit area
  over the shape area, summed over a set of images.
- **Colourfulness ratio.** Hasler and Suesstrunk's colourfulness (2003) of the prediction over the
  kept shapes' pixels, over the same of the target, each summed over the set.

Both are summed per image (``shape_sums``) so that a set's number is a ratio of sums, which the
protocol's ``Accumulator`` gives as a ratio of means (every image adds to both).

- **Merged share** (``merge_sums``), a property of the drawings, not of a model: the share of the
  shape area that one colour per closed region of the line art (``fills.flat_fill``, the per-shape
  vote) cannot get right, because the shape shares its region with a larger shape of another colour
  (colours drawn side by side with no line between them). A flat fill's shape accuracy is at most
  one minus it.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.measure import label

from .fills import ink_mask, region_grid, regions
from .hints import WHITE_LEVEL
from .images import nearest, to_array

QUANT_BITS = 5  # target colours are grouped at this many bits a channel
MIN_SHAPE_FRACTION = 0.002  # a shape covers at least this share of the image (0.2 %)
INK_LIGHTNESS = 25.0  # CIELAB L* below which a shape is line ink, not colour
HIT_DELTA_E = 15.0  # CIEDE2000 within which a shape's predicted colour is a hit
# The per-image sums; a set's shape accuracy is hit_area / shape_area, its colourfulness ratio
# colourfulness_pred / colourfulness_target (shape_ratios).
SUM_KEYS = ("shape_hit_area", "shape_area", "colourfulness_pred", "colourfulness_target")
MERGE_KEYS = ("merged_area", "shape_area")  # merge_sums; a set's merged share is their ratio


def target_shapes(target: np.ndarray) -> tuple:
    """The kept shapes of one target. target (H, W, 3) uint8 -> (labels (H, W) int, 0 = no kept
    shape and 1..N the shapes; colours (N, 3) float64, each shape's mean target colour in [0, 255])."""
    quantised = target.astype(np.int32) >> (8 - QUANT_BITS)  # (H, W, 3) in [0, 31]
    key = (quantised[..., 0] << (2 * QUANT_BITS)) | (quantised[..., 1] << QUANT_BITS) | quantised[..., 2]
    components = label(key + 1, background=0, connectivity=2)  # (H, W): one label per same-key 8-component
    count = components.max()
    if count == 0:
        return np.zeros(target.shape[:2], np.int64), np.zeros((0, 3))
    index = np.arange(1, count + 1)
    areas = np.bincount(components.ravel(), minlength=count + 1)[1:]  # (count,)
    means = np.stack([ndimage.mean(target[..., c].astype(np.float64), components, index) for c in range(3)], 1)
    lightness = rgb2lab(means.reshape(-1, 1, 3) / 255.0)[:, 0, 0]  # (count,) L* in [0, 100]
    paper = (means > WHITE_LEVEL * 255).all(1)
    keep = (areas >= MIN_SHAPE_FRACTION * key.size) & ~paper & (lightness >= INK_LIGHTNESS)
    relabel = np.zeros(count + 1, np.int64)
    relabel[1:][keep] = np.arange(1, keep.sum() + 1)
    return relabel[components], means[keep]


def colourfulness(pixels: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness of (N, 3) RGB pixels in [0, 255]; 0 for no pixels."""
    if len(pixels) == 0:
        return 0.0
    red, green, blue = pixels.astype(np.float64).T
    rg, yb = red - green, 0.5 * (red + green) - blue
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def shape_sums(pred: np.ndarray, target: np.ndarray) -> dict:
    """One image's sums (SUM_KEYS): pred and target (H, W, 3) uint8 of the same size. Areas are in
    pixels; an image without kept shapes adds 0 to every sum."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in size")
    labels, colours = target_shapes(target)
    if len(colours) == 0:
        return dict.fromkeys(SUM_KEYS, 0.0)
    index = np.arange(1, len(colours) + 1)
    # A pixel is inside its shape's 1-px erosion when its whole 3x3 neighbourhood has its label.
    inner = (ndimage.minimum_filter(labels, 3, mode="nearest") == labels) \
        & (ndimage.maximum_filter(labels, 3, mode="nearest") == labels)
    eroded = np.where(inner, labels, 0)
    inner_area = np.bincount(eroded.ravel(), minlength=len(colours) + 1)[1:]
    # A shape too thin to survive the erosion is judged on all its pixels.
    judged = np.where(np.isin(labels, index[inner_area == 0]), labels, eroded)
    medians = np.stack([np.asarray(ndimage.median(pred[..., c], judged, index), np.float64) for c in range(3)], 1)
    distance = deltaE_ciede2000(rgb2lab(medians.reshape(-1, 1, 3) / 255.0)[:, 0],
                                rgb2lab(colours.reshape(-1, 1, 3) / 255.0)[:, 0])  # (N,)
    areas = np.bincount(labels.ravel(), minlength=len(colours) + 1)[1:].astype(np.float64)
    shaped = labels > 0
    return {"shape_hit_area": float(areas[distance <= HIT_DELTA_E].sum()), "shape_area": float(areas.sum()),
            "colourfulness_pred": colourfulness(pred[shaped]), "colourfulness_target": colourfulness(target[shaped])}


def merge_sums(line: np.ndarray, target: np.ndarray) -> dict:
    """One drawing's MERGE_KEYS: line (H, W) uint8 (255 paper, 0 ink), target (H, W, 3) uint8. Each kept
    shape belongs to the fill region (``fills.regions``) most of its pixels fall in; it is merged when
    a larger shape of the same region differs from its colour by more than CIEDE2000 HIT_DELTA_E.
    Areas in pixels; a shape entirely under ink belongs to no region and is never merged."""
    if line.shape != target.shape[:2]:
        raise ValueError(f"line art {line.shape} and target {target.shape} differ in size")
    labels, colours = target_shapes(target)
    if len(colours) == 0:
        return dict.fromkeys(MERGE_KEYS, 0.0)
    grid = region_grid(*line.shape)
    fill, count = regions(ink_mask(line, grid))
    fill = nearest(fill, line.shape)  # (H, W): the fill regions at the target's size
    shapes = len(colours) + 1
    both = (labels > 0) & (fill > 0)
    overlap = np.bincount(labels[both] * (count + 1) + fill[both], minlength=shapes * (count + 1))
    overlap = overlap.reshape(shapes, count + 1)[1:]  # (N, regions + 1): a shape's pixels in each region
    region = np.where(overlap.max(1) > 0, overlap.argmax(1), 0)  # (N,), 0 = under ink
    areas = np.bincount(labels.ravel(), minlength=shapes)[1:].astype(np.float64)  # (N,)
    lab = rgb2lab(colours.reshape(-1, 1, 3) / 255.0)[:, 0]  # (N, 3)
    merged = np.zeros(len(colours), bool)
    for r in np.unique(region[region > 0]):
        members = np.flatnonzero(region == r)
        largest = members[np.argmax(areas[members])]
        merged[members] = deltaE_ciede2000(lab[members], lab[largest][None]) > HIT_DELTA_E
    return {"merged_area": float(areas[merged].sum()), "shape_area": float(areas.sum())}


def batch_shape_sums(pred: torch.Tensor, target: torch.Tensor) -> dict:
    """``shape_sums`` per image of a batch: pred, target (B, 3, H, W) in [-1, 1] -> {key: (B,) float64}."""
    rows = [shape_sums(to_array(p), to_array(t)) for p, t in zip(pred, target)]  # (H, W, 3) uint8 each
    return {key: torch.tensor([row[key] for row in rows], dtype=torch.float64) for key in SUM_KEYS}


def shape_ratios(sums: dict) -> dict:
    """A set's numbers from its summed (or mean) SUM_KEYS: shape_accuracy in [0, 1] and
    colourfulness ratio (prediction over target, 1 = as colourful); NaN where the set has no shape."""
    accuracy = sums["shape_hit_area"] / sums["shape_area"] if sums["shape_area"] > 0 else float("nan")
    ratio = sums["colourfulness_pred"] / sums["colourfulness_target"] if sums["colourfulness_target"] > 0 \
        else float("nan")
    return {"shape_accuracy": accuracy, "colourfulness": ratio}
