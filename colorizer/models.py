"""Generator (U-Net with hint inputs) and conditional PatchGAN discriminator.

Print parameter counts for a config: ``python -m colorizer.models [experiment.yaml] [--model.k=v]``.
"""
from __future__ import annotations

import sys

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

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


class UNet(nn.Module):
    """Encoder-decoder with skip connections, taking line art plus a spatial and a global hint.

    Encoder: ``depth`` 4x4 stride-2 convs, widths base_channels * 2**i capped at max_channels,
    LeakyReLU(0.2); no norm on the first block (pix2pix) nor on the innermost one (its map can be
    1x1, where batch and instance norm are undefined). The spatial hint enters with the line art;
    the palette enters only at the bottleneck through FiLM, so it cannot say where a colour goes.
    Decoder: ReLU blocks mirroring the encoder, dropout in the ``dropout_blocks`` innermost ones.
    """

    def __init__(self, cfg):
        super().__init__()
        if cfg.depth < 1:
            raise ValueError(f"model.depth={cfg.depth} must be >= 1")
        self.depth = cfg.depth
        widths = [min(cfg.base_channels * 2**i, cfg.max_channels) for i in range(cfg.depth)]
        in_channels = 1 + 4  # line + (hint colour * mask, mask)
        self.pad = padding(in_channels, cfg.pad_inputs)
        self.downs = nn.ModuleList(
            Down(in_channels + self.pad if i == 0 else widths[i - 1], width,
                 "none" if i in (0, cfg.depth - 1) else cfg.norm)
            for i, width in enumerate(widths))
        self.palette = PaletteEncoder(widths[-1])
        self.ups = nn.ModuleList()
        for i in reversed(range(1, cfg.depth)):
            cin = widths[i] if i == cfg.depth - 1 else widths[i] * 2  # innermost: no skip to concat
            dropout = cfg.dropout if (cfg.depth - 1 - i) < cfg.dropout_blocks else 0.0
            self.ups.append(Up(cin, widths[i - 1], cfg.norm, cfg.upsample, dropout))
        self.head = upsample(widths[0] * 2 if cfg.depth > 1 else widths[0], 3, cfg.upsample, bias=True)

    def forward(self, line, spatial_hint, palette, palette_keep):
        """line (B, 1, H, W) in [-1, 1] (paper = 1); spatial_hint (B, 4, H, W): hint colour * mask in
        [-1, 1] (channels 0-2) and mask in [0, 1] (channel 3); palette (B, K, 3) in [-1, 1];
        palette_keep (B, K) in {0, 1}. All-zero hints and keep bits mean "no hint".
        Returns the colour image (B, 3, H, W) in [-1, 1]. H and W must be divisible by 2**depth."""
        height, width = line.shape[-2:]
        multiple = 2**self.depth
        if height % multiple or width % multiple:
            raise ValueError(f"input {height}x{width} is not divisible by 2**model.depth = {multiple}: "
                             f"pad or resize it to a multiple of {multiple}")
        x = pad_channels(torch.cat([line, spatial_hint.to(line.dtype)], 1), self.pad)  # (B, 5, H, W); 8 if padded
        skips = []
        for down in self.downs:
            x = down(x)  # (B, C_i, H / 2^(i+1), W / 2^(i+1))
            skips.append(x)
        scale, shift = self.palette(palette.to(x.dtype), palette_keep.to(x.dtype))  # (B, C_bottom, 1, 1) each
        x = x * scale + shift  # (B, C_bottom, H / 2^depth, W / 2^depth): global hint, no spatial info
        skips.pop()  # the bottleneck itself
        for up in self.ups:
            x = up(x)  # (B, C_{i-1}, 2x the previous H and W), >= 0
            x = torch.cat([x, skips.pop()], 1)  # (B, 2 C_{i-1}, same H, W): skip connection
        return torch.tanh(self.head(x))  # (B, 3, H, W) in [-1, 1]


class PatchDiscriminator(nn.Module):
    """PatchGAN conditioned on the line art (and the hint map when ``disc_hints``); returns logits.

    ``disc_layers`` 4x4 stride-2 convs (width doubling from disc_channels, capped at 8x), then a
    stride-1 conv and a 1-channel stride-1 conv (pix2pix: 3 layers -> 70x70 receptive field)."""

    def __init__(self, cfg):
        super().__init__()
        self.use_hints = cfg.disc_hints
        sn = spectral_norm if cfg.disc_spectral_norm else (lambda m: m)
        norm_bias = cfg.disc_norm == "none"
        cin = 1 + 3 + (4 if cfg.disc_hints else 0)
        self.pad = padding(cin, cfg.pad_inputs)
        cin += self.pad
        width = cfg.disc_channels
        layers = [sn(nn.Conv2d(cin, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]  # no norm on layer 1
        for _ in range(1, cfg.disc_layers):
            nxt = min(width * 2, 8 * cfg.disc_channels)
            layers += [sn(nn.Conv2d(width, nxt, 4, stride=2, padding=1, bias=norm_bias)),
                       make_norm(cfg.disc_norm, nxt), nn.LeakyReLU(0.2)]
            width = nxt
        nxt = min(width * 2, 8 * cfg.disc_channels)
        layers += [sn(nn.Conv2d(width, nxt, 4, stride=1, padding=1, bias=norm_bias)),
                   make_norm(cfg.disc_norm, nxt), nn.LeakyReLU(0.2),
                   sn(nn.Conv2d(nxt, 1, 4, stride=1, padding=1))]
        self.net = nn.Sequential(*layers)

    def forward(self, line, image, spatial_hint=None):
        """line (B, 1, H, W) in [-1, 1], image (B, 3, H, W) in [-1, 1], spatial_hint (B, 4, H, W) as
        for the generator (required when model.disc_hints, ignored otherwise) ->
        logits (B, 1, H / 2^layers - 2, W / 2^layers - 2), one per overlapping patch; no sigmoid."""
        x = torch.cat([line, image.to(line.dtype)], 1)  # (B, 4, H, W) in [-1, 1]
        if self.use_hints:
            if spatial_hint is None:
                raise ValueError("this discriminator is conditioned on hints (model.disc_hints): pass spatial_hint")
            x = torch.cat([x, spatial_hint.to(x.dtype)], 1)  # (B, 8, H, W)
        return self.net(pad_channels(x, self.pad))  # (B, 1, h, w) real-valued logits


def init_weights(module: nn.Module) -> None:
    """pix2pix init: convs N(0, 0.02), norm weights N(1, 0.02), biases 0. The palette MLP gets
    Kaiming init (a N(0, 0.02) chain of linears would shrink the colours to almost nothing); its
    FiLM output layer keeps N(0, 0.02), so a palette starts as a small change of the bottleneck."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            spectral = hasattr(m, "parametrizations") and hasattr(m.parametrizations, "weight")
            weight = m.parametrizations.weight.original if spectral else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            if spectral:
                with torch.no_grad():  # redo the power iterations for the new weight (15, as at registration)
                    for _ in range(15):
                        m.weight  # noqa: B018  (reading it runs one power iteration in training mode)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, PaletteEncoder):
            for layer in m.colour:
                if isinstance(layer, nn.Linear):
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")


GENERATORS = {"unet": UNet}


def build_generator(cfg) -> nn.Module:
    """cfg: ModelConfig -> initialised generator (``GENERATORS[cfg.generator]``)."""
    if cfg.generator not in GENERATORS:
        raise ValueError(f"model.generator={cfg.generator!r}: choose one of {', '.join(GENERATORS)}")
    model = GENERATORS[cfg.generator](cfg)
    init_weights(model)
    return model


def build_discriminator(cfg) -> nn.Module:
    """cfg: ModelConfig -> initialised PatchDiscriminator."""
    model = PatchDiscriminator(cfg)
    init_weights(model)
    return model


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (elements, not tensors)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def main(argv=None) -> None:
    """Print the parameter counts of the generator and discriminator of a resolved config."""
    from .config import parse_cli

    m = parse_cli(sys.argv[1:] if argv is None else argv).model
    print(f"generator ({m.generator}, depth {m.depth}, width {m.base_channels}-{m.max_channels}, norm {m.norm}, "
          f"upsample {m.upsample}): {count_parameters(build_generator(m)):,} parameters")
    print(f"discriminator ({m.disc_layers} layers, width {m.disc_channels}, norm {m.disc_norm}, "
          f"spectral norm {m.disc_spectral_norm}): {count_parameters(build_discriminator(m)):,} parameters")


if __name__ == "__main__":
    main()
