"""Putting the artist's own lines back on the model's colour, at the drawing's full resolution.

The network colours a drawing at its working resolution (256 px for the bundled model), and its
output carries its own soft copy of the lines. Enlarged to a 2,000 px drawing, those lines come back
blurred and slightly displaced. So the colour is separated from the lines and the input's lines are
laid back over it:

1. ``flat_colour``: at the working resolution, the pixels that the input marks as ink, and their
   neighbours (the model's copy of a line is softer than the line), are refilled from the nearby
   paper-side colour (a normalised Gaussian average that gives those pixels no weight). What is left is the colour an illustrator puts on a layer under the line art. Colours
   the model left at paper white snap to exact white, so paper stays paper.
2. The flat colour is enlarged (bicubic) to the drawing's size.
3. ``multiply``: the lines are laid over it in linear light, the way a "multiply" line layer does
   in a paint program, with the line art's own value as the factor.

Why multiply in linear light: an output pixel can never be lighter than the input's line pixel
(the factor is at most 1 and sRGB is monotonic), so black lines stay black and every anti-aliased
edge keeps its darkness, within rounding. Where the line art is paper (factor 1) the colour is
untouched. An edge pixel that is half ink darkens the colour under it by half its light, the
physical mixture of ink and paint, so colour meets the line without a halo or a fringe. The other
option the issue names, lightness from the lines and chroma from the model, has to decide
what lightness a dark fill has under a grey edge; multiply never has to.

Tensors: colour (B, 3, H, W) and line (B, 1, H, W) in [-1, 1] at the working size; full-size
images are uint8 numpy arrays (H, W, 3) and (H, W).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .images import gaussian_blur

INK_WEIGHT_FLOOR = 0.2  # line value (in [0, 1]) at or below which a pixel is all ink: no weight as colour
FILL_SIGMA = 2.0  # px at the working size: how far colour reaches into the ink it replaces
WIDE_FILL_SIGMA = 6.0  # a second, wider pass for the middle of thick lines
PAPER_SNAP = 0.94  # in [0, 1]: a flat colour with every channel above this is paper, made exact white
MULTIPLY_ROWS = 256  # rows per band in ``multiply``: bounds its temporaries at any drawing size


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB values in [0, 1] -> linear light in [0, 1] (IEC 61966-2-1)."""
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear light in [0, 1] -> sRGB values in [0, 1] (IEC 61966-2-1)."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def flat_colour(colour: torch.Tensor, line: torch.Tensor) -> torch.Tensor:
    """The model's colour without its lines: colour (B, 3, H, W), line (B, 1, H, W), both in
    [-1, 1] at the working size -> (B, 3, H, W) in [-1, 1]. Paper pixels of the line art keep the
    model's colour; ink pixels and their 3x3 neighbours get the weighted average of the paper-side
    colour around them (a narrow pass, then a wide one for what the narrow one could not reach);
    near-white snaps to white."""
    batch = colour.shape[0]
    paper = ((line.float() + 1) / 2 - INK_WEIGHT_FLOOR).clamp(min=0) / (1 - INK_WEIGHT_FLOOR)  # (B, 1, H, W)
    # The model's copy of a line is softer than the line: a pixel next to ink is refilled too.
    paper = -F.max_pool2d(-paper, 3, stride=1, padding=1)
    filled = colour.float()
    reached = torch.zeros_like(paper)
    for sigma in (FILL_SIGMA, WIDE_FILL_SIGMA):
        sigmas = torch.full((batch,), sigma, device=colour.device)
        weight = gaussian_blur(paper, sigmas, sigma)  # (B, 1, H, W): paper mass nearby
        average = gaussian_blur(colour.float() * paper, sigmas, sigma) / weight.clamp_min(1e-6)
        fresh = (weight > 1e-3).float() * (1 - reached)  # pixels this pass reaches first
        filled = filled * (1 - fresh) + average * fresh
        reached = reached + fresh
    filled = paper * colour.float() + (1 - paper) * filled  # paper keeps the model's colour
    unit = (filled + 1) / 2
    white = (unit > PAPER_SNAP).all(1, keepdim=True)
    return torch.where(white, 1.0, filled).clamp(-1, 1)


def enlarge(flat: torch.Tensor, size: tuple) -> torch.Tensor:
    """(3, h, w) in [-1, 1] -> (3, H, W) in [-1, 1] at ``size`` = (H, W), bicubic, clamped."""
    if tuple(flat.shape[-2:]) == tuple(size):
        return flat
    return F.interpolate(flat[None], size=size, mode="bicubic", align_corners=False)[0].clamp(-1, 1)


def multiply(flat: torch.Tensor, line: np.ndarray) -> np.ndarray:
    """The line art laid over the flat colour in linear light. flat (3, H, W) in [-1, 1], line
    (H, W) uint8 (255 paper, 0 ink), the same size -> (H, W, 3) uint8. No output channel is lighter
    than the line pixel under it."""
    height, width = line.shape
    out = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, MULTIPLY_ROWS):  # in bands: a 4096 px drawing needs no full-size temporaries
        rows = slice(top, top + MULTIPLY_ROWS)
        ink = torch.from_numpy(np.require(line[rows], np.uint8, ["C", "W"])).float()  # (h, W) in 0-255
        colour = srgb_to_linear((flat[:, rows].float() + 1) / 2)  # (3, h, W) linear
        colour.mul_(srgb_to_linear(ink / 255))
        band = torch.minimum(linear_to_srgb(colour).mul_(255).round_(), ink)  # rounding could lift a channel a level
        out[rows] = band.to(torch.uint8).permute(1, 2, 0).numpy()
    return out


def line_layer(line: np.ndarray) -> np.ndarray:
    """The line art as a layer to stack over a colour layer: (H, W) uint8 -> (H, W, 4) uint8 RGBA,
    black with the ink's darkness as alpha (paper fully transparent)."""
    rgba = np.zeros(line.shape + (4,), np.uint8)
    rgba[..., 3] = 255 - line
    return rgba
