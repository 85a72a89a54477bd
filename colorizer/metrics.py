"""Image-quality metrics on batches, computed on the training device.

All inputs are (B, C, H, W) in [-1, 1]; metrics are computed in [0, 1] units and returned per
image as (B,) tensors so callers can average over any subset. ``mask`` (B, 1, H, W) restricts a
metric to a region (the colour region: neither paper white nor line black), because whole-image
numbers on line art are flattered by the paper and the lines, which the input already gives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_PSNR_DB = 100.0  # pure line-art targets can be matched exactly; an infinite PSNR averages badly


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return (x.float().clamp(-1, 1) + 1) / 2


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over (C, H, W) of ``values`` (B, C, H, W), optionally restricted to ``mask``."""
    if mask is None:
        return values.flatten(1).mean(1)
    weight = mask.float().expand_as(values)
    return (values * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1.0)


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB per image, (B,). Images with an empty mask get NaN (nothing to measure)."""
    mse = _masked_mean((_to_unit(pred) - _to_unit(target)) ** 2, mask)
    value = (10 * torch.log10(1.0 / mse.clamp_min(10 ** (-MAX_PSNR_DB / 10)))).clamp(max=MAX_PSNR_DB)
    if mask is not None:
        value = torch.where(mask.flatten(1).any(1), value, torch.full_like(value, float("nan")))
    return value


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (B, C, H, W) with a Gaussian window, data range 1, population covariance.

    Matches scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`` away from the borders (reflect padding here).
    """
    x, y = _to_unit(pred), _to_unit(target)
    channels = x.shape[1]
    g = _gaussian_window(window, sigma, x.device, x.dtype)
    stacked = torch.cat([x, y, x * x, y * y, x * y], 1)  # (B, 5C, H, W): the five moments, blurred at once
    groups = stacked.shape[1]
    # The Gaussian window is separable: a column pass then a row pass (2 x 11 taps, not 121).
    stacked = F.pad(stacked, [window // 2] * 4, mode="reflect")
    stacked = F.conv2d(stacked, g.view(1, 1, window, 1).expand(groups, 1, window, 1).contiguous(), groups=groups)
    stacked = F.conv2d(stacked, g.view(1, 1, 1, window).expand(groups, 1, 1, window).contiguous(), groups=groups)
    mu_x, mu_y, xx, yy, xy = stacked.split(channels, 1)
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov = xy - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM per image, (B,); NaN where the mask is empty."""
    value = _masked_mean(ssim_map(pred, target), mask)
    if mask is not None:
        value = torch.where(mask.flatten(1).any(1), value, torch.full_like(value, float("nan")))
    return value


def hint_error(pred: torch.Tensor, spatial_hint: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Hint fidelity: mean absolute error in [0, 1] units at hinted pixels, per image (B,).

    ``spatial_hint`` is (B, 4, H, W): colour * mask in channels 0-2, mask in channel 3. The hint
    colour is recovered as colour / mask. Images without hinted pixels get NaN.
    """
    mask = spatial_hint[:, 3:4]
    hinted = mask > threshold
    colour = spatial_hint[:, :3] / mask.clamp_min(1e-6)
    err = (_to_unit(pred) - _to_unit(colour)).abs()
    value = _masked_mean(err, hinted)
    return torch.where(hinted.flatten(1).any(1), value, torch.full_like(value, float("nan")))


def line_error(pred: torch.Tensor, line: torch.Tensor, ink: float = 0.0) -> torch.Tensor:
    """Line fidelity: how much lighter than drawn the output is on the input's line pixels (line
    value below ``ink`` in [-1, 1]), as the mean of max(0, brightest channel - line) in [0, 1]
    units, per image (B,). 0 means every line is at least as dark as the artist drew it. pred
    (B, 3, H, W), line (B, 1, H, W) in [-1, 1]; NaN for an image without line pixels."""
    lines = line < ink
    lighter = (_to_unit(pred).amax(1, keepdim=True) - _to_unit(line)).clamp(min=0)
    value = _masked_mean(lighter, lines)
    return torch.where(lines.flatten(1).any(1), value, torch.full_like(value, float("nan")))


def image_metrics(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> dict:
    """Whole-image and colour-region PSNR/SSIM per image: dict of (B,) tensors (one SSIM map for both)."""
    similarity = ssim_map(pred, target)
    ssim_color = _masked_mean(similarity, region)
    return {
        "psnr": psnr(pred, target),
        "psnr_color": psnr(pred, target, region),
        "ssim": _masked_mean(similarity, None),
        "ssim_color": torch.where(region.flatten(1).any(1), ssim_color, torch.full_like(ssim_color, float("nan"))),
    }
