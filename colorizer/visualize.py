"""Pictures of what the model is given and makes: hint renderings and image grids, for the sample
grids, the input check at the start of a run and the evaluation gallery."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from .images import to_array


def hint_image(hints) -> torch.Tensor:
    """Render ``hints`` as (B, 3, H, W) in [-1, 1] on white.

    Spatial hints: the hint colour where the (softened) mask is, blended over white.
    Palette hints: the kept palette colours as vertical bands of equal width.
    No hint: plain grey, so "no hint" is not mistaken for "a white hint".
    """
    spatial = hints.spatial.float()
    batch, _, height, width = spatial.shape
    mask = spatial[:, 3:4].clamp(0, 1)  # (B, 1, H, W)
    colour = spatial[:, :3] / mask.clamp_min(1e-6)  # (B, 3, H, W) in [-1, 1] where mask > 0
    image = torch.where(mask > 0, mask * colour + (1 - mask), torch.ones_like(colour))

    keep = hints.palette_keep.float() > 0.5  # (B, K)
    bands = torch.linspace(0, keep.shape[1] - 1e-6, width, device=spatial.device).long()  # (W,)
    for b in range(batch):
        kept = hints.palette[b][keep[b]].float()  # (k, 3)
        if len(kept):
            columns = kept[(bands * len(kept)) // keep.shape[1]]  # (W, 3)
            image[b] = columns.t()[:, None, :].expand(3, height, width)
    hintless = (mask.flatten(1).amax(1) == 0) & ~keep.any(1)
    image[hintless] = 0.0  # mid grey in [-1, 1]
    return image.clamp(-1, 1)


def save_grid(rows: list, path: Path) -> np.ndarray:
    """``rows``: list of (N, 3, H, W) tensors in [-1, 1], one per column kind; writes a PNG with one
    sample per row and returns it as (H, W, 3) uint8 (what W&B takes: float images come out black)."""
    tiles = torch.stack([r.float().cpu() for r in rows], dim=1).flatten(0, 1)  # (N * columns, 3, H, W), row-major
    grid = make_grid(tiles, nrow=len(rows), padding=2, pad_value=1.0)  # (3, H', W') in [-1, 1]
    image = to_array(grid)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return image
