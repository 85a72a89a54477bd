"""Colour as a distribution (issue 41), after Zhang, Isola and Efros, "Colorful Image Colorization"
(ECCV 2016): the generator's colour head predicts, per pixel, a distribution over quantised CIELAB
ab bins, trained with a cross-entropy that rare colours weigh more in; decoding takes the annealed
mean per pixel, or one bin per closed shape by the model's own vote.

Why ab bins, and not a palette taken from the training data: the grid is the same for every folder
and every run, so a model's head means the same thing whatever it was fine-tuned on, the bin
frequencies of a folder can be cached once, and it is the grid the hint-curve anchors (Zhang 2016,
ideepcolor) use. Lightness is not binned: the head says which hue and saturation, the regression
output (which hints and the composite already use) keeps saying how light.

- ``AB_STEP``-wide square bins over a and b in [-110, 110], kept where some sRGB colour falls
  (Zhang's gamut rule): ``BINS`` (Q, 2), Q = 313 in the paper, ``bin_count()`` here.
- ``bin_index``: colour (B, 3, h, w) in [-1, 1] -> the nearest bin per pixel (B, h, w).
- ``class_weights``: Zhang's rebalancing, 1 / ((1 - lambda) p~ + lambda / Q) normalised to mean 1
  under p~, where p~ is the bin frequency smoothed by a Gaussian of sigma 5 in ab.
- ``folder_frequencies``: a prepared folder's train bin counts, cached as ``DIR/colour_bins.json``.
- ``annealed_ab``: the annealed mean (temperature 0.38 in the paper) of the distribution's ab.
- ``with_ab``: a colour with its a and b replaced, its L kept.
- ``AnnealedMean``: a generator with a colour head as a drop-in generator whose image takes the
  annealed mean's ab (what the demo, the CLI and evaluation show of such a model; ``decoded``).
- ``region_votes``: per closed shape, the bin of the highest summed log-probability (``fills``).
- ``suggestions``: the likeliest colours at one point, as swatches to paint with (ideepcolor's
  gamut palette; ``Colorizer.suggest``, the page and the /suggest_colours API).
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import kornia
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .images import nearest

AB_STEP = 10  # bin side in a and b (CIELAB units)
AB_LIMIT = 110  # bin centres from -110 to 110
GRID_SIDE = 2 * AB_LIMIT // AB_STEP + 1  # grid cells along a and along b
REBALANCE = 0.5  # lambda: the share of the uniform distribution mixed into the smoothed frequencies
SMOOTH_SIGMA = 5.0  # Gaussian smoothing of the frequencies in ab, CIELAB units
TEMPERATURE = 0.38  # the annealed mean's default (Zhang 2016: vivid, still spatially coherent)
FREQUENCY_FILE = "colour_bins.json"  # beside a prepared folder's report.json
FREQUENCY_MAX_SIDE = 64  # images are counted at most at this side (a frequency, not an exact count)


@lru_cache(maxsize=1)
def _bins() -> torch.Tensor:
    levels = torch.linspace(0, 1, 64)
    rgb = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij")).reshape(3, 1, -1)  # sRGB, 64 levels
    ab = kornia.color.rgb_to_lab(rgb[None])[0, 1:].reshape(2, -1)  # (2, 262144)
    cell = torch.round(ab / AB_STEP).clamp(-AB_LIMIT // AB_STEP, AB_LIMIT // AB_STEP) * AB_STEP
    return torch.unique(cell.T, dim=0).contiguous()  # the cells some sRGB colour falls in, sorted


BINS = _bins()  # (Q, 2) bin centres (a, b)


def bin_count() -> int:
    return len(BINS)


def to_lab(colour: torch.Tensor) -> torch.Tensor:
    """colour (B, 3, h, w) in [-1, 1] -> CIELAB (B, 3, h, w): L in [0, 100], a and b in about +-128."""
    return kornia.color.rgb_to_lab(((colour.float() + 1) / 2).clamp(0, 1))


@lru_cache(maxsize=1)
def _cell_lut() -> torch.Tensor:
    """(GRID_SIDE ** 2,) int64: the index in BINS of each grid cell (``cell_of``), -1 for a cell no sRGB
    colour falls in."""
    lut = torch.full((GRID_SIDE * GRID_SIDE,), -1, dtype=torch.int64)
    lut[cell_of(BINS)] = torch.arange(len(BINS))
    return lut


def cell_of(ab: torch.Tensor) -> torch.Tensor:
    """ab (N, 2) -> (N,) int64: the flat index of the grid cell each lies nearest to (clamped to the grid)."""
    limit = AB_LIMIT // AB_STEP
    cell = (ab / AB_STEP).round().clamp(-limit, limit).long() + limit  # (N, 2) in [0, GRID_SIDE)
    return cell[:, 0] * GRID_SIDE + cell[:, 1]


def bin_index(colour: torch.Tensor) -> torch.Tensor:
    """colour (B, 3, h, w) in [-1, 1] -> (B, h, w) int64: the nearest bin of each pixel's ab. The bins
    lie on a grid, so the nearest is the pixel's rounded cell, looked up; only a pixel whose cell is
    not a bin is searched for (a training step bins ~150 k pixels: a search for all took 0.4 s)."""
    ab = to_lab(colour)[:, 1:]  # (B, 2, h, w)
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)  # (N, 2)
    nearest = _cell_lut().to(colour.device)[cell_of(flat)]  # (N,), -1 off the bins
    missing = nearest < 0
    if bool(missing.any()):
        nearest[missing] = torch.cdist(flat[missing], BINS.to(colour.device)).argmin(1)
    return nearest.reshape(ab.shape[0], *ab.shape[2:])


def class_weights(counts: torch.Tensor) -> torch.Tensor:
    """counts (Q,) of pixels per bin -> (Q,) weights: Zhang's rebalancing (see the module docstring),
    so a rare vivid bin weighs more than the common paper and grey ones."""
    p = counts.double() / counts.sum().clamp(min=1)
    distance2 = torch.cdist(BINS.double(), BINS.double()) ** 2  # (Q, Q)
    kernel = torch.exp(-distance2 / (2 * SMOOTH_SIGMA ** 2))
    smooth = kernel @ p
    smooth = smooth / smooth.sum()
    weights = 1 / ((1 - REBALANCE) * smooth + REBALANCE / len(BINS))
    return (weights / (smooth * weights).sum()).float()  # mean 1 under the smoothed distribution


def colour_class_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Rebalanced cross-entropy. logits (B, Q, h, w) at any size; target colour (B, 3, H, W) in [-1, 1]
    (area-resized to the logits' size before binning); weights (Q,) -> a scalar."""
    if target.shape[-2:] != logits.shape[-2:]:
        target = F.interpolate(target.float(), size=logits.shape[-2:], mode="area")
    labels = bin_index(target)  # (B, h, w)
    per_pixel = F.cross_entropy(logits.float(), labels, reduction="none")  # (B, h, w)
    w = weights.to(logits.device)[labels]
    return (per_pixel * w).sum() / w.sum()


def folder_frequencies(root, records: list) -> torch.Tensor:
    """(Q,) bin counts of ``records``' colour images (a prepared folder's train pairs), each counted
    at most at FREQUENCY_MAX_SIDE px; read from ``root/colour_bins.json`` when it was made for the
    same bins and the same pairs, else computed and written there."""
    from PIL import Image

    path = Path(root) / FREQUENCY_FILE
    key = {"ab_step": AB_STEP, "bins": len(BINS), "pairs": len(records), "max_side": FREQUENCY_MAX_SIDE}
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return torch.tensor(cached["counts"], dtype=torch.float64)
    except (OSError, ValueError):
        pass
    counts = torch.zeros(len(BINS), dtype=torch.float64)
    for record in records:
        with Image.open(Path(root) / record["color"]) as image:
            image = image.convert("RGB")
            image.thumbnail((FREQUENCY_MAX_SIDE, FREQUENCY_MAX_SIDE), Image.Resampling.BOX)
            rgb = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
        counts += torch.bincount(bin_index(rgb).flatten(), minlength=len(BINS)).double()
    try:  # through a file of this process's own, renamed into place: DDP ranks may count at once
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "counts": counts.tolist()}))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only folder: counted again next time
    return counts


def mix_weights(data_cfg) -> torch.Tensor:
    """(Q,) class weights for the folders of ``data_cfg`` (a DataConfig): their train bin frequencies
    (``folder_frequencies``), each normalised and weighted by its share of the mix. Folders without a
    manifest (a benchmark on random data) are left out; with none, uniform weights, said on stderr."""
    import sys

    from .config import data_roots
    from .data import mix_shares, read_manifest, take

    roots = [root for root in data_roots(data_cfg) if (Path(root) / "manifest.jsonl").is_file()]
    records = [take(read_manifest(root, "train"), data_cfg.max_items) for root in roots]
    if not any(records):
        print(f"colour head: no prepared train split in {', '.join(map(str, data_roots(data_cfg)))}: uniform class "
              f"weights", file=sys.stderr)
        return torch.ones(len(BINS))
    counts = [folder_frequencies(root, r) for root, r in zip(roots, records)]
    shares = mix_shares(data_cfg, [len(r) for r in records]) if len(roots) == len(data_roots(data_cfg)) \
        else [len(r) / sum(map(len, records)) for r in records]
    mixed = sum(share * c / c.sum().clamp(min=1) for share, c in zip(shares, counts))
    return class_weights(mixed)


def annealed_ab(logits: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """logits (B, Q, h, w) -> ab (B, 2, h, w): the mean of the distribution sharpened to
    ``temperature`` (1 = the mean, towards 0 = the mode)."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 (towards 0 is the mode)")
    probs = torch.softmax(logits.float() / temperature, 1)  # (B, Q, h, w)
    return torch.einsum("bqhw,qc->bchw", probs, BINS.to(logits.device))


def with_ab(colour: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """colour (B, 3, H, W) in [-1, 1] with its CIELAB a and b replaced by ``ab`` (B, 2, h, w; resized
    bilinearly to H x W) and its L kept -> (B, 3, H, W) in [-1, 1] (out-of-gamut colours clipped)."""
    if ab.shape[-2:] != colour.shape[-2:]:
        ab = F.interpolate(ab.float(), size=colour.shape[-2:], mode="bilinear", align_corners=False)
    lab = torch.cat([to_lab(colour)[:, :1], ab.float()], 1)
    return kornia.color.lab_to_rgb(lab, clip=True) * 2 - 1


class AnnealedMean(nn.Module):
    """A generator with a colour head (model.colour_head) whose image keeps the regression's L and
    takes the annealed mean's ab. Same call as the generator: (line, spatial_hint, palette,
    palette_keep, logits=False) -> image (B, 3, H, W) in [-1, 1], and with ``logits`` also the
    head's logits (B, Q, h, w)."""

    def __init__(self, network: nn.Module, temperature: float = TEMPERATURE):
        super().__init__()
        self.network, self.temperature = network, float(temperature)

    def forward(self, line, spatial_hint, palette, palette_keep, logits: bool = False):
        image, head = self.network(line, spatial_hint, palette, palette_keep, logits=True)
        image = with_ab(image, annealed_ab(head, self.temperature)).to(image.dtype)  # (B, 3, H, W) in [-1, 1]
        return (image, head) if logits else image


def decoded(generator: nn.Module, model_cfg, decode: str | None = None, temperature: float = TEMPERATURE) -> nn.Module:
    """``generator`` (the bare network) as its colours are shown: through ``AnnealedMean`` at ``temperature``
    when it has a colour head and ``decode`` (default: its ``model.colour_decode``) is annealed; as it is
    otherwise (no head, or the regression shown)."""
    annealed = model_cfg.colour_head and (decode or model_cfg.colour_decode) == "annealed"
    return AnnealedMean(generator, temperature) if annealed else generator


def region_votes(log_probs: torch.Tensor, labels: np.ndarray, count: int) -> tuple:
    """The model's own vote per closed shape. log_probs (Q, h, w) at any size; labels (H, W) int,
    0 on ink, 1..count the regions (``fills.regions``) -> (ab (count + 1, 2): per label the bin whose
    log-probability summed over its pixels is highest; voted (count + 1,) bool: the labels that
    have a pixel at the log-probabilities' size, sampled nearest)."""
    small = torch.from_numpy(nearest(labels, log_probs.shape[-2:]).astype(np.int64)).flatten()  # (h * w,)
    sums = torch.zeros(count + 1, log_probs.shape[0], dtype=torch.float64)
    sums.index_add_(0, small, log_probs.reshape(log_probs.shape[0], -1).T.double())
    voted = torch.bincount(small, minlength=count + 1) > 0
    voted[0] = False  # ink
    return BINS[sums.argmax(1)], voted.numpy()


def suggestions(log_probs: torch.Tensor, lightness: float, count: int = 6) -> list:
    """log_probs (Q,) at one point, ``lightness`` (CIELAB L there, from the regression) -> up to
    ``count`` [("#rrggbb", probability)], likeliest first, each the bin's ab at that lightness (clipped
    to sRGB); bins that give the same 8-bit colour are merged (their probabilities summed)."""
    probs = torch.softmax(log_probs.float(), 0)
    order = torch.argsort(probs, descending=True)[: 4 * count]
    lab = torch.cat([torch.full((len(order), 1), float(lightness)), BINS[order]], 1)  # (n, 3)
    rgb = kornia.color.lab_to_rgb(lab.T[None, :, :, None], clip=True)[0, :, :, 0].T  # (n, 3) in [0, 1]
    merged: dict = {}
    for colour, p in zip((rgb * 255).round().to(torch.uint8).tolist(), probs[order].tolist()):
        key = "#{:02x}{:02x}{:02x}".format(*colour)
        merged[key] = merged.get(key, 0.0) + p
    return sorted(merged.items(), key=lambda item: -item[1])[:count]
