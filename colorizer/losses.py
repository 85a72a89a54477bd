"""Loss terms. Each returns an unweighted scalar; the training loop weights them from the config
and logs them as a dict of named terms. Images are (B, C, H, W) in [-1, 1]."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# torchvision layer indices of relu1_2, relu2_2, relu3_3, relu4_3 (VGG16) and relu1_2 .. relu4_4 (VGG19)
VGG_LAYERS = {"vgg16": (3, 8, 15, 22), "vgg19": (3, 8, 17, 26)}
VGG_FILES = {"vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def d_adv_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Discriminator loss: real patches up, fake patches down."""
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
    """Generator loss: make D call fakes real (non-saturating for bce)."""
    fake_logits = fake_logits.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind == "lsgan":
        return ((fake_logits - 1) ** 2).mean()
    if kind == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"unknown GAN loss {kind!r}: use bce, lsgan or hinge")


def gradient_penalty(disc: nn.Module, line, real, spatial_hint, kind: str) -> torch.Tensor:
    """R1 (squared gradient norm of D at real data) or DRAGAN (unit gradient norm near real data)."""
    if kind == "none":
        return torch.zeros((), device=real.device)
    if kind == "r1":
        x = real.detach().float().requires_grad_(True)
    elif kind == "dragan":
        noise = 0.5 * real.detach().float().std() * torch.rand_like(real, dtype=torch.float32)
        x = (real.detach().float() + noise).requires_grad_(True)
    else:
        raise ValueError(f"unknown gradient penalty {kind!r}: use none, r1 or dragan")
    logits = disc(line, x, spatial_hint)
    (grad,) = torch.autograd.grad(logits.float().sum(), x, create_graph=True)
    norm2 = grad.pow(2).flatten(1).sum(1)  # (B,)
    if kind == "r1":
        return 0.5 * norm2.mean()
    return ((norm2 + 1e-12).sqrt() - 1).pow(2).mean()


def recon_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(pred.float(), target.float())
    if kind == "l1":
        return F.l1_loss(pred.float(), target.float())
    raise ValueError(f"unknown reconstruction loss {kind!r}: use mse or l1")


class PerceptualWeightsMissing(FileNotFoundError):
    """VGG weights are needed (loss.perceptual_weights=required) but cannot be had."""


def _load_vgg_state(cfg) -> tuple:
    """(state_dict, source) from the configured file, torchvision's cache, or a download."""
    import torchvision

    if cfg.perceptual_weights_path:
        path = Path(cfg.perceptual_weights_path)
        if not path.is_file():
            raise PerceptualWeightsMissing(f"loss.perceptual_weights_path={path} does not exist")
        return torch.load(path, map_location="cpu", weights_only=True), str(path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG_FILES[cfg.perceptual_net]
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True), str(cached)
    weights = {"vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
               "vgg19": torchvision.models.VGG19_Weights.IMAGENET1K_V1}[cfg.perceptual_net]
    try:  # an online workstation downloads into the cache above
        return weights.get_state_dict(progress=False), f"downloaded to {cached}"
    except Exception as err:
        raise PerceptualWeightsMissing(
            f"VGG weights for the perceptual loss not found: put {VGG_FILES[cfg.perceptual_net]} in "
            f"{cached.parent}/ (torchvision's cache), or pass --loss.perceptual_weights_path=FILE, or "
            f"--loss.perceptual_weight=0 to train without it (download failed: {str(err).splitlines()[0][:120]})"
        ) from None


class PerceptualLoss(nn.Module):
    """Mean L1 distance between VGG features (relu1_2 .. relu4_x) of prediction and target,
    averaged over the four layers. VGG is frozen and always in eval mode.

    ``enabled`` says whether the term runs; ``status`` says why, for the run's config and summary."""

    def __init__(self, cfg):
        super().__init__()
        self.enabled, self.blocks = False, nn.ModuleList()
        if cfg.perceptual_weight == 0:
            self.status = "off: weight 0"
            return
        import torchvision

        vgg = getattr(torchvision.models, cfg.perceptual_net)(weights=None)
        if cfg.perceptual_weights == "random":
            self.status = "random weights (tests only)"
        else:
            try:
                state, source = _load_vgg_state(cfg)
                vgg.load_state_dict(state)
                self.status = f"on: {source}"
            except PerceptualWeightsMissing as err:
                if cfg.perceptual_weights == "required":
                    raise
                self.status = "off: VGG weights not found"
                warnings.warn(f"PERCEPTUAL LOSS TURNED OFF (loss.perceptual_weights=auto): {err}", stacklevel=2)
                return
        cuts = (0,) + tuple(i + 1 for i in VGG_LAYERS[cfg.perceptual_net])
        self.blocks = nn.ModuleList(vgg.features[a:b] for a, b in zip(cuts, cuts[1:]))
        for p in self.blocks.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.enabled = True
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # VGG stays in eval mode whatever the caller does

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target (B, 3, H, W) in [-1, 1] -> scalar; 0 when the term is off."""
        if not self.enabled:
            return pred.sum() * 0.0
        x = ((pred.float() + 1) / 2 - self.mean) / self.std  # ImageNet-normalised
        y = ((target.float() + 1) / 2 - self.mean) / self.std
        total = pred.new_zeros((), dtype=torch.float32)
        for block in self.blocks:
            x, y = block(x), block(y)
            total = total + F.l1_loss(x, y.detach())
        return total / len(self.blocks)
