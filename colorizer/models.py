"""Generator (U-Net with hint inputs) and conditional PatchGAN discriminator.

Print parameter counts for a config: ``python -m colorizer.models [experiment.yaml] [--model.k=v]``.
"""
from __future__ import annotations

import sys

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

from .blocks import (Down, PaletteEncoder, Up, check_divisible, colour_head, head_logits, make_norm,  # noqa: F401
                     pad_channels, padding, upsample)
from .config import ModelConfig
from .encoders import EfficientUNet, LineFeatures


class UNet(nn.Module):
    """Encoder-decoder with skip connections, taking line art plus a spatial and a global hint.

    Encoder: ``depth`` 4x4 stride-2 convs, widths base_channels * 2**i capped at max_channels,
    LeakyReLU(0.2); no norm on the first block (pix2pix) nor on the innermost one (its map can be
    1x1, where batch and instance norm are undefined). The spatial hint enters with the line art;
    the palette enters only at the bottleneck through FiLM, so it cannot say where a colour goes.
    Decoder: ReLU blocks mirroring the encoder, dropout in the ``dropout_blocks`` innermost ones.
    ``line_features``: frozen ImageNet features of the line art added at the bottleneck
    (``encoders.LineFeatures``, model.generator=unet_features).
    """

    def __init__(self, cfg, line_features: bool = False):
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
        self.line_features = LineFeatures(widths[-1]) if line_features else None
        self.ups = nn.ModuleList()
        for i in reversed(range(1, cfg.depth)):
            cin = widths[i] if i == cfg.depth - 1 else widths[i] * 2  # innermost: no skip to concat
            dropout = cfg.dropout if (cfg.depth - 1 - i) < cfg.dropout_blocks else 0.0
            self.ups.append(Up(cin, widths[i - 1], cfg.norm, cfg.upsample, dropout))
        self.head = upsample(widths[0] * 2 if cfg.depth > 1 else widths[0], 3, cfg.upsample, bias=True)
        # model.colour_head: a distribution over colour_bins.BINS per pixel, at half size (Zhang 2016 used a quarter)
        self.colour_head = colour_head(widths[0] * 2 if cfg.depth > 1 else widths[0], cfg)

    def forward(self, line, spatial_hint, palette, palette_keep, logits: bool = False):
        """line (B, 1, H, W) in [-1, 1] (paper = 1); spatial_hint (B, 4, H, W): hint colour * mask in
        [-1, 1] (channels 0-2) and mask in [0, 1] (channel 3); palette (B, K, 3) in [-1, 1];
        palette_keep (B, K) in {0, 1}. All-zero hints and keep bits mean "no hint".
        Returns the colour image (B, 3, H, W) in [-1, 1]; with ``logits`` (model.colour_head) also the
        colour head's logits (B, Q, H/2, W/2) over colour_bins.BINS. H, W divisible by 2**depth."""
        check_divisible(line, self.depth)
        x = pad_channels(torch.cat([line, spatial_hint.to(line.dtype)], 1), self.pad)  # (B, 5, H, W); 8 if padded
        skips = []
        for down in self.downs:
            x = down(x)  # (B, C_i, H / 2^(i+1), W / 2^(i+1))
            skips.append(x)
        if self.line_features is not None:  # frozen ImageNet features of the drawing, through a learnt 1x1 conv
            x = x + self.line_features(line, x.shape[-2:])  # (B, C_bottom, H / 2^depth, W / 2^depth)
        scale, shift = self.palette(palette.to(x.dtype), palette_keep.to(x.dtype))  # (B, C_bottom, 1, 1) each
        x = x * scale + shift  # (B, C_bottom, H / 2^depth, W / 2^depth): global hint, no spatial info
        skips.pop()  # the bottleneck itself
        for up in self.ups:
            x = up(x)  # (B, C_{i-1}, 2x the previous H and W), >= 0
            x = torch.cat([x, skips.pop()], 1)  # (B, 2 C_{i-1}, same H, W): skip connection
        image = torch.tanh(self.head(x))  # (B, 3, H, W) in [-1, 1]
        return (image, head_logits(self.colour_head, x)) if logits else image  # logits (B, Q, H/2, W/2)


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
        if isinstance(m, LineFeatures):  # the features join at zero: a new model starts as the plain U-Net
            m.zero_projection()


# model.generator: the U-Net learnt from scratch; the ImageNet EfficientNet-Lite0 as its encoder,
# fine-tuned; the U-Net with frozen ImageNet features of the line art at its bottleneck (encoders.py)
GENERATORS = {"unet": UNet, "efficientnet_unet": EfficientUNet,
              "unet_features": lambda cfg: UNet(cfg, line_features=True)}


# A model may grow: a parent whose generator is the first of a pair can start (train.init) or be
# blended with (colorizer.interpolate) a model of the second, whose new parts, under the prefix, join
# at zero, so the grown parent computes what the parent did. unet -> unet_features: the U-Net gains
# AlacGAN's frozen ImageNet line features at its bottleneck (issue 40).
GROWN_PARTS = {("unet", "unet_features"): "line_features."}
# Any parent may also grow a colour head (model.colour_head): its 1x1 conv starts at zero, a uniform
# distribution over the bins, while the regression image stays the parent's (issue 40: the bundled
# model's features, read as a distribution over colours). What is shown of a head model, the annealed
# mean's colours (colour_bins.decoded), starts near grey, not as the parent.
HEAD_PREFIX = "colour_head."


def grown_state(parent_state: dict, parent_model: dict, model: dict, grown: dict) -> tuple | None:
    """``parent_state``, the state dict of a model whose config's ``model`` section is ``parent_model``,
    as the state of a ``model`` one that grew from it: the parent's entries plus the new parts as they
    start (line features from ``grown``, any state of a ``model`` network: a fresh one's, or a
    fine-tune's, since no step moves the frozen parts; a colour head at zero). Returns (that state, the
    parent's ``model`` section as grown), or None if ``model`` is no growth of ``parent_model``
    (``GROWN_PARTS``, ``HEAD_PREFIX``)."""
    default = ModelConfig.generator
    ours, theirs = parent_model.get("generator", default), model.get("generator", default)
    prefix = GROWN_PARTS.get((ours, theirs))
    head = bool(model.get("colour_head")) and not parent_model.get("colour_head")
    if prefix is None and not (head and ours == theirs):
        return None
    new = LineFeatures.start_state(grown, prefix) if prefix else {}
    if head:
        new.update({k: torch.zeros_like(v) for k, v in grown.items() if k.startswith(HEAD_PREFIX)})
    return {**new, **parent_state}, {**parent_model, "generator": theirs, **({"colour_head": True} if head else {})}


def growth_note(parent_model: dict, model: dict) -> str:
    """What a ``model`` grown from ``parent_model`` adds, in words (for logs), or "" if nothing."""
    grown = grown_state({}, parent_model, model, {})
    if grown is None:
        return ""
    default = ModelConfig.generator
    ours, theirs = parent_model.get("generator", default), model.get("generator", default)
    notes = ([f"its {ours} grows into {theirs}: the new {GROWN_PARTS[ours, theirs]}* start as a new model's "
              f"(pretrained and frozen, joining at zero)"] if ours != theirs else [])
    if grown[1].get("colour_head") and not parent_model.get("colour_head"):
        notes.append(f"it grows a colour head: the new {HEAD_PREFIX}* start at zero (a uniform distribution: "
                     f"the regression image is the parent's, the shown colours start near grey)")
    return "; ".join(notes)


def build_generator(cfg) -> nn.Module:
    """cfg: ModelConfig -> initialised generator (``GENERATORS[cfg.generator]``), pretrained parts
    random too (``encoders.load_pretrained`` puts their ImageNet weights in)."""
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
