"""Line styles: the line art a training batch is given, varied so the model learns more than the
dataset's one style (PaintsChainer, AlacGAN and Style2Paints trained on several synthetic styles for
this reason). Batched on the batch's device, like the hint simulation, with the global torch RNG, so
a run resumes exactly.

Each sample gets one source, drawn with the shares of ``LineStyleConfig`` (``artist``, ``xdog``,
``varied``; see ``LineStyle``):
- artist: the dataset's line art unchanged;
- xdog: lines extracted from the colour target with XDoG (``xdog``, the extractor that
  ``python -m data_prep folder`` uses too), its parameters drawn per sample from the config ranges;
  with probability ``xdog_colour`` also a line wherever the colour changes (``colour_lines``, the
  folder importer's default ``--lines colour``), so light shapes on white get their contours;
- varied: the dataset's lines moved by a smooth jitter, made thicker or thinner, broken by small
  gaps, lightened, softened and given scan-like noise, each by an amount drawn per sample up to its
  config key.

Tensors: line (B, 1, H, W) and color (B, 3, H, W) in [-1, 1], paper 1, ink -1.
"""
from __future__ import annotations

from enum import IntEnum

import kornia
import torch
import torch.nn.functional as F

from .images import gaussian_blur

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights, what PIL's convert("L") uses
XDOG_TRUNCATE = 4.0  # Gaussian support in sigmas: scikit-image's default, so XDoG matches its reference form
COLOUR_DELTA_E = (4.0, 10.0)  # CIE76 Delta E between neighbours: no line below the first, full ink from the second
GAP_CELL = 4  # px: the scale of the noise whose low values become gaps in varied lines
JITTER_CELL = 16  # px: the scale of the smooth displacement field that wobbles varied lines


class LineStyle(IntEnum):
    """Where a sample's line art comes from; the value is what ``restyle`` returns per sample."""

    ARTIST = 0
    XDOG = 1
    VARIED = 2


STYLES = tuple(style.name.lower() for style in LineStyle)  # ("artist", "xdog", "varied"): the config's share keys


def xdog(grey: torch.Tensor, sigma, k: float, tau, epsilon, phi, max_sigma: float | None = None) -> torch.Tensor:
    """XDoG (Winnemoeller et al. 2012), a soft threshold of a difference of Gaussians: clean dark lines
    on white from an illustration. grey (B, 1, H, W) in [0, 1]; ``sigma`` (finer Gaussian, px), ``tau``
    (weight of the coarser one, sigma * k), ``epsilon`` (threshold) and ``phi`` (sharpness): floats
    or (B,) tensors; ``max_sigma`` bounds sigma (needed when it is a tensor). Returns (B, 1, H, W) in
    [0, 1]: paper 1, lines towards 0."""
    batch = grey.shape[0]

    def per_image(value) -> torch.Tensor:  # (B, 1, 1, 1)
        return torch.as_tensor(value, dtype=grey.dtype, device=grey.device).expand(batch).view(batch, 1, 1, 1)

    sigma = torch.as_tensor(sigma, dtype=grey.dtype, device=grey.device).expand(batch)  # (B,)
    bound = float(sigma.max()) if max_sigma is None else max_sigma
    fine = gaussian_blur(grey, sigma, bound, XDOG_TRUNCATE)  # (B, 1, H, W)
    coarse = gaussian_blur(grey, sigma * k, bound * k, XDOG_TRUNCATE)
    dog = fine - per_image(tau) * coarse
    epsilon = per_image(epsilon)
    lines = torch.where(dog >= epsilon, 1.0, 1.0 + torch.tanh(per_image(phi) * (dog - epsilon)))
    return lines.clamp(0, 1)


def colour_change(rgb: torch.Tensor, sigma, max_sigma: float) -> torch.Tensor:
    """Per pixel, the largest CIE76 Delta E to its 4 neighbours, in CIELAB (kornia's conversion, D65,
    as scikit-image's) blurred by ``sigma`` px (float or (B,) tensor, 0 = none; ``max_sigma`` bounds
    it). rgb (B, 3, H, W) in [0, 1] -> (B, 1, H, W): 0 in flat colour, about 100 at black on white.
    Both pixels of a changing pair get the value, so a sharp edge gives a 2 px line."""
    lab = kornia.color.rgb_to_lab(rgb.float())  # (B, 3, H, W): L in [0, 100], a and b in about [-128, 127]
    sigma = torch.as_tensor(sigma, dtype=lab.dtype, device=lab.device).expand(rgb.shape[0])
    if max_sigma > 0:
        lab = gaussian_blur(lab, sigma, max_sigma, XDOG_TRUNCATE)
    across = (lab[..., 1:] - lab[..., :-1]).norm(dim=1, keepdim=True)  # (B, 1, H, W-1)
    down = (lab[..., 1:, :] - lab[..., :-1, :]).norm(dim=1, keepdim=True)  # (B, 1, H-1, W)
    across = torch.maximum(F.pad(across, (1, 0)), F.pad(across, (0, 1)))  # (B, 1, H, W): left or right pair
    down = torch.maximum(F.pad(down, (0, 0, 1, 0)), F.pad(down, (0, 0, 0, 1)))
    return torch.maximum(across, down)


def colour_lines(rgb: torch.Tensor, sigma, max_sigma: float, delta_e=COLOUR_DELTA_E) -> torch.Tensor:
    """Lines where the colour changes: ``colour_change`` through a soft ramp from ``delta_e[0]`` (no
    ink) to ``delta_e[1]`` (full ink), so anti-aliased edges stay soft. rgb (B, 3, H, W) in [0, 1]
    -> (B, 1, H, W) in [0, 1]: paper 1, lines towards 0."""
    low, high = delta_e
    return 1 - ((colour_change(rgb, sigma, max_sigma) - low) / (high - low)).clamp(0, 1)


def luma(color: torch.Tensor) -> torch.Tensor:
    """color (B, 3, H, W) in [-1, 1] -> grey (B, 1, H, W) in [0, 1]."""
    weights = torch.tensor(LUMA, dtype=color.dtype, device=color.device).view(1, 3, 1, 1)
    return ((color + 1) / 2 * weights).sum(1, keepdim=True).clamp(0, 1)


def _uniform(low: float, high: float, batch: int, device) -> torch.Tensor:
    """(B,) uniform in [low, high] from the global RNG of ``device``."""
    return low + (high - low) * torch.rand(batch, device=device)


def xdog_from_color(cfg, color: torch.Tensor) -> torch.Tensor:
    """XDoG line art of each colour target, with sigma, tau, epsilon and phi drawn uniform in the
    config's ranges per sample, and with probability ``xdog_colour`` per sample the lines where its
    colour changes on top (``colour_lines`` at the same sigma). color (B, 3, H, W) in [-1, 1] ->
    (B, 1, H, W) in [-1, 1]."""
    batch, device = color.shape[0], color.device
    sigma = _uniform(*cfg.xdog_sigma, batch, device)
    lines = xdog(luma(color.float()), sigma, cfg.xdog_k, _uniform(*cfg.xdog_tau, batch, device),
                 _uniform(*cfg.xdog_epsilon, batch, device), _uniform(*cfg.xdog_phi, batch, device),
                 max_sigma=max(cfg.xdog_sigma))
    if cfg.xdog_colour > 0:
        with_colour = (torch.rand(batch, device=device) < cfg.xdog_colour).view(batch, 1, 1, 1)
        coloured = torch.minimum(lines, colour_lines((color.float() + 1) / 2, sigma, max(cfg.xdog_sigma)))
        lines = torch.where(with_colour, coloured, lines)
    return lines * 2 - 1


def vary(cfg, line: torch.Tensor) -> torch.Tensor:
    """The dataset's line art (B, 1, H, W) in [-1, 1], varied per sample (each amount uniform in
    [0, its key]): a smooth displacement of up to ``jitter`` px; width changed by up to ``thickness``
    px each side (a 3x3 min or max filter, blended for fractions; thicker or thinner with equal
    chance); up to ``gaps`` of the ink erased in small blobs; ink lightened by up to ``lightness``;
    a Gaussian blur of up to ``blur`` px; Gaussian noise of up to ``noise`` (std, in [0, 1] units).
    Returns (B, 1, H, W) in [-1, 1]."""
    batch, _, height, width = line.shape
    device = line.device
    paper = (line.float() + 1) / 2  # (B, 1, H, W) in [0, 1]: 1 paper, 0 ink

    def amount(limit: float) -> torch.Tensor:  # (B, 1, 1, 1) uniform in [0, limit]
        return _uniform(0.0, limit, batch, device).view(batch, 1, 1, 1)

    if cfg.jitter > 0:  # a smooth random displacement field, in px, bicubic from a coarse grid
        coarse = torch.randn(batch, 2, height // JITTER_CELL + 2, width // JITTER_CELL + 2, device=device)
        shift = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)  # (B, 2, H, W)
        shift = shift * amount(cfg.jitter)
        ys = torch.linspace(-1, 1, height, device=device).view(1, height, 1).expand(batch, height, width)
        xs = torch.linspace(-1, 1, width, device=device).view(1, 1, width).expand(batch, height, width)
        grid = torch.stack([xs + shift[:, 0] * 2 / max(width - 1, 1), ys + shift[:, 1] * 2 / max(height - 1, 1)], -1)
        paper = F.grid_sample(paper, grid, mode="bilinear", padding_mode="border", align_corners=True)
    if cfg.thickness > 0:
        change = (torch.rand(batch, 1, 1, 1, device=device) * 2 - 1) * cfg.thickness  # px each side, in [-t, t]
        thicker = -F.max_pool2d(-paper, 3, stride=1, padding=1)  # ink spreads one pixel
        thinner = F.max_pool2d(paper, 3, stride=1, padding=1)  # paper spreads one pixel
        paper = paper + change.clamp(min=0) * (thicker - paper) + (-change).clamp(min=0) * (thinner - paper)
    ink = 1 - paper
    if cfg.gaps > 0:  # erase the ink where a smooth noise field falls below the drawn gap share
        noise = F.interpolate(torch.rand(batch, 1, height // GAP_CELL + 1, width // GAP_CELL + 1, device=device),
                              size=(height, width), mode="bilinear", align_corners=False)
        ink = ink * (noise >= amount(cfg.gaps)).float()
    if cfg.lightness > 0:
        ink = ink * (1 - amount(cfg.lightness))
    paper = 1 - ink
    if cfg.blur > 0:
        paper = gaussian_blur(paper, amount(cfg.blur).flatten(), cfg.blur)
    if cfg.noise > 0:
        paper = paper + amount(cfg.noise) * torch.randn_like(paper)
    return paper.clamp(0, 1) * 2 - 1


def restyle(cfg, line: torch.Tensor, color: torch.Tensor) -> tuple:
    """The line art a training batch is given: per sample the dataset's (``artist``), XDoG from the
    target (``xdog``) or the dataset's varied (``varied``), by the config's shares. line (B, 1, H, W)
    and color (B, 3, H, W) in [-1, 1] -> (line (B, 1, H, W) in [-1, 1], style (B,) long LineStyle).
    With ``artist`` 1 nothing is drawn from the RNG, so runs without line styles are unchanged."""
    batch, device = line.shape[0], line.device
    if cfg.artist >= 1:
        return line, torch.zeros(batch, dtype=torch.long, device=device)
    shares = torch.tensor([float(getattr(cfg, name)) for name in STYLES], device=device)
    style = torch.multinomial(shares.expand(batch, -1), 1, replacement=True)[:, 0]  # (B,)
    styled = line.float()
    if cfg.xdog > 0:
        styled = torch.where((style == LineStyle.XDOG).view(batch, 1, 1, 1), xdog_from_color(cfg, color), styled)
    if cfg.varied > 0:
        styled = torch.where((style == LineStyle.VARIED).view(batch, 1, 1, 1), vary(cfg, line), styled)
    return styled.to(line.dtype), style
