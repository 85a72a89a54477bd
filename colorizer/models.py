"""Generator (U-Net with hint inputs) and conditional PatchGAN discriminator.

Print parameter counts for a config: ``python -m colorizer.models [experiment.yaml] [--model.k=v]``.
"""
from __future__ import annotations

import sys

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(32, channels // 4) or 1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}: use batch, instance, group or none")


class Down(nn.Module):
    """4x4 stride-2 conv -> norm -> LeakyReLU: halves H and W."""

    def __init__(self, cin: int, cout: int, norm: str, use_norm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=not use_norm or norm == "none")
        self.norm = make_norm(norm, cout) if use_norm else nn.Identity()
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class Up(nn.Module):
    """Doubles H and W: bilinear resize + 3x3 conv (no checkerboard), or a 4x4 transposed conv."""

    def __init__(self, cin: int, cout: int, norm: str, mode: str, dropout: float):
        super().__init__()
        if mode == "resize":
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    nn.Conv2d(cin, cout, 3, padding=1, bias=norm == "none"))
        elif mode == "transpose":
            self.up = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=norm == "none")
        else:
            raise ValueError(f"unknown upsample {mode!r}: use resize or transpose")
        self.norm = make_norm(norm, cout)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(self.norm(self.up(x))))


class PaletteEncoder(nn.Module):
    """Global hint -> FiLM (scale, shift) for the bottleneck. Each kept colour is embedded on its
    own and the embeddings are averaged, so the result has no spatial information and does not
    depend on the palette's order."""

    def __init__(self, channels: int, hidden: int = 128):
        super().__init__()
        self.colour = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.film = nn.Linear(hidden + 1, 2 * channels)

    def forward(self, palette: torch.Tensor, keep: torch.Tensor):
        """palette (B, K, 3) in [-1, 1], keep (B, K) in {0, 1} -> scale, shift (B, C, 1, 1)."""
        emb = self.colour(palette)  # (B, K, hidden)
        weight = keep.unsqueeze(-1)  # (B, K, 1)
        count = weight.sum(1)  # (B, 1)
        pooled = (emb * weight).sum(1) / count.clamp_min(1.0)  # (B, hidden)
        has_palette = (count > 0).to(emb.dtype)  # (B, 1)
        scale, shift = self.film(torch.cat([pooled, has_palette], 1)).chunk(2, dim=1)  # (B, C) each
        # No palette -> identity FiLM, so hintless inputs are untouched by this branch.
        scale = 1 + has_palette * scale  # (B, C)
        shift = has_palette * shift  # (B, C)
        return scale[..., None, None], shift[..., None, None]


class UNet(nn.Module):
    """Encoder-decoder with skip connections, taking line art plus spatial and global hints."""

    def __init__(self, cfg):
        super().__init__()
        self.depth = cfg.depth
        widths = [min(cfg.base_channels * 2**i, cfg.max_channels) for i in range(cfg.depth)]
        in_channels = 1 + 4  # line + (hint colour * mask, mask)
        self.downs = nn.ModuleList()
        for i, width in enumerate(widths):
            # pix2pix: no norm on the first layer
            self.downs.append(Down(in_channels if i == 0 else widths[i - 1], width, cfg.norm, use_norm=0 < i))
        self.palette = PaletteEncoder(widths[-1])
        self.ups = nn.ModuleList()
        for i in reversed(range(1, cfg.depth)):
            cin = widths[i] if i == cfg.depth - 1 else widths[i] * 2
            dropout = cfg.dropout if (cfg.depth - 1 - i) < cfg.dropout_blocks else 0.0
            self.ups.append(Up(cin, widths[i - 1], cfg.norm, cfg.upsample, dropout))
        final_in = widths[0] * 2 if cfg.depth > 1 else widths[0]
        if cfg.upsample == "resize":
            self.head = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                      nn.Conv2d(final_in, 3, 3, padding=1))
        else:
            self.head = nn.ConvTranspose2d(final_in, 3, 4, stride=2, padding=1)

    def forward(self, line, spatial_hint, palette, palette_keep):
        """line (B, 1, H, W) in [-1, 1] (paper = 1); spatial_hint (B, 4, H, W): colour * mask in [-1, 1]
        and mask in [0, 1]; palette (B, K, 3) in [-1, 1]; palette_keep (B, K) in {0, 1}.
        Returns the colour image (B, 3, H, W) in [-1, 1]. H and W must be divisible by 2**depth."""
        height, width = line.shape[-2:]
        if height % 2**self.depth or width % 2**self.depth:
            raise ValueError(f"input {height}x{width} is not divisible by 2**depth = {2**self.depth}")
        x = torch.cat([line, spatial_hint], 1)  # (B, 5, H, W)
        skips = []
        for down in self.downs:
            x = down(x)  # (B, C_i, H / 2^(i+1), W / 2^(i+1))
            skips.append(x)
        scale, shift = self.palette(palette.to(x.dtype), palette_keep.to(x.dtype))  # (B, C_bottom, 1, 1) each
        x = x * scale + shift  # (B, C_bottom, H / 2^depth, W / 2^depth): global hint, no spatial info
        skips.pop()
        for up in self.ups:
            x = up(x)  # (B, C, 2x the previous H and W)
            x = torch.cat([x, skips.pop()], 1)  # (B, 2C, ...): the skip connection
        return torch.tanh(self.head(x))  # (B, 3, H, W) in [-1, 1]


class PatchDiscriminator(nn.Module):
    """PatchGAN conditioned on the line art (and optionally the hint map); returns logits."""

    def __init__(self, cfg):
        super().__init__()
        self.use_hints = cfg.disc_hints
        sn = spectral_norm if cfg.disc_spectral_norm else (lambda m: m)
        cin = 1 + 3 + (4 if cfg.disc_hints else 0)
        width = cfg.disc_channels
        layers = [sn(nn.Conv2d(cin, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        for i in range(1, cfg.disc_layers):
            nxt = min(width * 2, 8 * cfg.disc_channels)
            layers += [sn(nn.Conv2d(width, nxt, 4, stride=2, padding=1, bias=cfg.disc_norm == "none")),
                       make_norm(cfg.disc_norm, nxt), nn.LeakyReLU(0.2)]
            width = nxt
        nxt = min(width * 2, 8 * cfg.disc_channels)
        layers += [sn(nn.Conv2d(width, nxt, 4, stride=1, padding=1, bias=cfg.disc_norm == "none")),
                   make_norm(cfg.disc_norm, nxt), nn.LeakyReLU(0.2),
                   sn(nn.Conv2d(nxt, 1, 4, stride=1, padding=1))]
        self.net = nn.Sequential(*layers)

    def forward(self, line, image, spatial_hint=None):
        """line (B, 1, H, W), image (B, 3, H, W), spatial_hint (B, 4, H, W), all in [-1, 1] ->
        logits (B, 1, H / 2^layers - 2, W / 2^layers - 2), one per overlapping patch; no sigmoid."""
        x = torch.cat([line, image], 1)  # (B, 4, H, W)
        if self.use_hints:
            if spatial_hint is None:
                raise ValueError("this discriminator is conditioned on hints (model.disc_hints): pass spatial_hint")
            x = torch.cat([x, spatial_hint], 1)  # (B, 8, H, W)
        return self.net(x)


def init_weights(module: nn.Module) -> None:
    """pix2pix init: convs N(0, 0.02), norm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


GENERATORS = {"unet": UNet}


def build_generator(cfg) -> nn.Module:
    if cfg.generator not in GENERATORS:
        raise ValueError(f"model.generator={cfg.generator!r}: choose one of {', '.join(GENERATORS)}")
    model = GENERATORS[cfg.generator](cfg)
    init_weights(model)
    return model


def build_discriminator(cfg) -> nn.Module:
    model = PatchDiscriminator(cfg)
    init_weights(model)
    return model


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


if __name__ == "__main__":
    from .config import parse_cli

    cfg = parse_cli(sys.argv[1:])
    print(f"generator ({cfg.model.generator}, depth {cfg.model.depth}, width {cfg.model.base_channels}): "
          f"{count_parameters(build_generator(cfg.model)):,} parameters")
    print(f"discriminator ({cfg.model.disc_layers} layers, width {cfg.model.disc_channels}): "
          f"{count_parameters(build_discriminator(cfg.model)):,} parameters")
