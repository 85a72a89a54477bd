"""Building blocks the generators share: normalisation by name, input-channel padding, the U-Net's
down and up blocks, the palette encoder that turns the global hint into FiLM at a bottleneck, and the colour head
(model.colour_head)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .colour_bins import bin_count

PALETTE_HIDDEN = 128  # width of the per-colour embedding of the global hint


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name. Group norm uses up to 32 groups of at least 4 channels each,
    taking the largest group count that divides ``channels``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        groups = max(g for g in range(1, max(1, min(32, channels // 4)) + 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}: use batch, instance, group or none")


def padding(channels: int, pad: bool, multiple: int = 8) -> int:
    """Zero channels that bring ``channels`` to a multiple of ``multiple`` when ``pad`` (model.pad_inputs)."""
    return -channels % multiple if pad else 0


def pad_channels(x: torch.Tensor, extra: int) -> torch.Tensor:
    """x (B, C, H, W) -> (B, C + extra, H, W), the new channels zero."""
    if not extra:
        return x
    return torch.cat([x, x.new_zeros(x.shape[0], extra, *x.shape[2:])], 1)


def check_divisible(x: torch.Tensor, depth: int) -> None:
    """ValueError unless x (B, C, H, W) has H and W divisible by 2**depth (a generator's downsamplings)."""
    height, width = x.shape[-2:]
    multiple = 2**depth
    if height % multiple or width % multiple:
        raise ValueError(f"input {height}x{width} is not divisible by 2**model.depth = {multiple}: "
                         f"pad or resize it to a multiple of {multiple}")


class Down(nn.Module):
    """4x4 stride-2 conv -> norm -> LeakyReLU(0.2): halves H and W."""

    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=norm == "none")
        self.norm = make_norm(norm, cout)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class Up(nn.Module):
    """Doubles H and W: bilinear resize + 3x3 conv (no checkerboard), or a 4x4 transposed conv;
    then norm -> dropout -> ReLU."""

    def __init__(self, cin: int, cout: int, norm: str, mode: str, dropout: float):
        super().__init__()
        self.up = upsample(cin, cout, mode, bias=norm == "none")
        self.norm = make_norm(norm, cout)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(self.norm(self.up(x))))


def upsample(cin: int, cout: int, mode: str, bias: bool) -> nn.Module:
    if mode == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                             nn.Conv2d(cin, cout, 3, padding=1, bias=bias))
    if mode == "transpose":
        return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias)
    raise ValueError(f"unknown upsample {mode!r}: use resize or transpose")


class PaletteEncoder(nn.Module):
    """Global hint -> FiLM (scale, shift) for the bottleneck. Each kept colour is embedded on its
    own and the embeddings are averaged, so the result carries no spatial information and does not
    depend on the palette's order or on the values of colours whose keep bit is 0."""

    def __init__(self, channels: int, hidden: int = PALETTE_HIDDEN):
        super().__init__()
        self.colour = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.film = nn.Linear(hidden + 1, 2 * channels)

    def forward(self, palette: torch.Tensor, keep: torch.Tensor):
        """palette (B, K, 3) in [-1, 1], keep (B, K) in {0, 1} -> scale, shift (B, C, 1, 1) each."""
        weight = keep.unsqueeze(-1)  # (B, K, 1) in {0, 1}
        emb = self.colour(palette)  # (B, K, hidden) >= 0
        count = weight.sum(1)  # (B, 1): number of kept colours
        pooled = (emb * weight).sum(1) / count.clamp_min(1.0)  # (B, hidden): mean over kept colours
        has_palette = (count > 0).to(emb.dtype)  # (B, 1) in {0, 1}
        scale, shift = self.film(torch.cat([pooled, has_palette], 1)).chunk(2, dim=1)  # (B, C) each
        # No palette -> identity FiLM, so hintless inputs are untouched by this branch.
        scale = 1 + has_palette * scale  # (B, C), about 1
        shift = has_palette * shift  # (B, C), about 0
        return scale[..., None, None], shift[..., None, None]


def colour_head(channels: int, cfg) -> nn.Module | None:
    """model.colour_head: a 1x1 conv from the decoder's last features to logits over
    ``colour_bins.BINS`` (None when off)."""
    return nn.Conv2d(channels, bin_count(), 1) if cfg.colour_head else None


def head_logits(head: nn.Module | None, features: torch.Tensor) -> torch.Tensor:
    if head is None:
        raise ValueError("logits=True needs model.colour_head=true: this generator has no colour head")
    return head(features)
