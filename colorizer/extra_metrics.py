"""LPIPS and FID for the evaluation command, computed only when their backbone weights are on disk.

Both networks come from torchmetrics (LPIPS: its copy of the reference implementation with the
bundled linear heads; FID: torch-fidelity's TF-ported Inception). Their backbones are downloaded
at run time by default; here nothing is downloaded: a weights file is looked for first and,
when there is none, the metric reports "not computed: ..." instead of a number.

    weights="auto"  torchvision's cache, ``torch.hub.get_dir()/checkpoints`` ($TORCH_HOME/hub/...)
    weights=PATH    that file (missing or unreadable is an error: a typo must not drop a metric)
    weights="off"   not computed

LPIPS is the mean over image pairs (lower = more alike). FID compares the predictions' Inception
features with the targets' (2048-d pool features, images resized to 299x299 by the extractor);
with fewer images than feature dimensions it is biased upwards, so compare FIDs over the same
number of images only.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .images import to_uint8
from .pretrained import read_state_dict

# torchvision's IMAGENET1K_V1 file names, in the order "auto" tries them: AlexNet is the LPIPS
# authors' recommended forward metric; VGG16 is the file the perceptual loss already uses.
LPIPS_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
LPIPS_MIN_SIDE = {"alex": 31, "vgg": 16}  # smaller images pool down to nothing in the backbone
# The same TF-ported Inception (2015-12-05): torch-fidelity's download name, then pytorch-fid's.
FID_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
FID_FEATURES = 2048  # the standard pool3 features


def _cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _resolve(weights: str, names, flag: str) -> tuple:
    """(path or None, status). "auto" takes the first of ``names`` in the cache."""
    if weights == "off":
        return None, f"not computed: disabled ({flag} off)"
    if weights != "auto":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{flag} {path} does not exist")
        return path, f"on: {path}"
    cache = _cache_dir()
    for name in names:
        if (cache / name).is_file():
            return cache / name, f"on: {cache / name}"
    return None, (f"not computed: weights not found (looked in {cache} for {' or '.join(names)}; "
                  f"pass {flag} PATH)")


def _build_lpips(path: Path) -> tuple:
    """(LPIPS module, net name) with the backbone weights of ``path`` (torchvision AlexNet or VGG16)."""
    import torchvision
    # The public LearnedPerceptualImagePatchSimilarity always asks torchvision for the backbone,
    # which downloads when the cache lacks it; its inner module with pnet_rand=True builds a random
    # backbone offline (linear heads still load from the package) and gets the real one below.
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    state = read_state_dict(path, "torchvision AlexNet or VGG16")
    net = "vgg" if "features.28.weight" in state else "alex"
    backbone = torchvision.models.vgg16(weights=None) if net == "vgg" else torchvision.models.alexnet(weights=None)
    try:  # strict: the whole torchvision model must match, not just some layers
        backbone.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} is not a torchvision AlexNet or VGG16 state dict: "
                         f"{str(err).splitlines()[0]}") from None
    lpips = _NoTrainLpips(net=net, pnet_rand=True)
    features = backbone.features.state_dict()  # keys "N.weight"; LPIPS slices keep the index N
    lpips.net.load_state_dict({key: features[key.split(".", 1)[1]] for key in lpips.net.state_dict()})
    return lpips, net


def _build_fid(path: Path):
    from torchmetrics.image.fid import FrechetInceptionDistance

    read_state_dict(path, "FID Inception")  # torch-fidelity loads with weights_only=False: vet the file first
    try:
        return FrechetInceptionDistance(feature=FID_FEATURES, feature_extractor_weights_path=str(path))
    except RuntimeError as err:
        raise ValueError(f"{path} is not the FID Inception state dict: {str(err).splitlines()[0]}") from None


class ExtraMetrics:
    """Accumulates LPIPS and FID over (pred, target) batches, (B, 3, H, W) in [-1, 1], any H, W.

    ``status`` says per metric whether it runs ("on: <weights file>") or why not ("not computed:
    ..."); ``result()`` gives a float, or that reason in place of a number. Raises
    FileNotFoundError for an explicit weights path that does not exist and ValueError for a file
    that is not the expected state dict.
    """

    def __init__(self, device, lpips_weights: str = "auto", fid_weights: str = "auto"):
        self.device = torch.device(device)
        lpips_path, lpips_status = _resolve(lpips_weights, list(LPIPS_FILES.values()), "--lpips-weights")
        fid_path, fid_status = _resolve(fid_weights, FID_FILES, "--fid-weights")
        self.status = {"lpips": lpips_status, "fid": fid_status}
        self.lpips, self.lpips_net = (None, None) if lpips_path is None else _build_lpips(lpips_path)
        self.fid = None if fid_path is None else _build_fid(fid_path)
        if self.lpips is not None:
            self.lpips.to(self.device)
        if self.fid is not None:
            self.fid.to(self.device)
        self.reset()

    def reset(self) -> None:
        """Forget the images seen, so the next ``result()`` covers only what comes after (another dataset)."""
        self.lpips_sum, self.lpips_count, self.fid_count = 0.0, 0, 0
        self.lpips_skipped = ""  # why LPIPS could not run on the images seen
        if self.fid is not None:
            self.fid.reset()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: (B, 3, H, W) in [-1, 1]."""
        pred, target = pred.to(self.device).float(), target.to(self.device).float()
        if self.lpips is not None:
            height, width = pred.shape[-2:]
            if min(height, width) < LPIPS_MIN_SIDE[self.lpips_net]:
                self.lpips_skipped = (f"not computed: {height}x{width} images are smaller than the "
                                      f"{LPIPS_MIN_SIDE[self.lpips_net]} px the {self.lpips_net} backbone needs")
            else:
                scores = self.lpips(pred.clamp(-1, 1), target.clamp(-1, 1), normalize=False)  # (B, 1, 1, 1)
                self.lpips_sum += scores.sum().item()
                self.lpips_count += scores.numel()
        if self.fid is not None:
            self.fid.update(to_uint8(target), real=True)
            self.fid.update(to_uint8(pred), real=False)
            self.fid_count += pred.shape[0]

    def result(self) -> dict:
        """{"lpips": float or "not computed: <reason>", "fid": float or "not computed: <reason>"}"""
        out = dict(self.status)
        if self.lpips is not None:
            if self.lpips_skipped:
                out["lpips"] = self.lpips_skipped
            elif self.lpips_count == 0:
                out["lpips"] = "not computed: no images"
            else:
                out["lpips"] = self.lpips_sum / self.lpips_count
        if self.fid is not None:
            if self.fid_count < 2:  # a covariance needs two samples
                out["fid"] = "not computed: needs at least 2 images"
            else:
                out["fid"] = float(self.fid.compute())
        return out
