"""The evaluation protocol, one path for validation during training and for the evaluation command.

    python -m colorizer.evaluate --checkpoint runs/NAME/export --data data/openmoji256 \
        --split test --out eval.json
    python -m colorizer.evaluate ... --data data/openmoji256 data/openmoji256_xdog    # several line styles

Every metric is reported over the whole image and over the colour region (target pixels that are
neither paper white nor line black): the paper and the lines are given by the input, so
whole-image numbers flatter any model. PSNR also rewards the average colour where a model is unsure,
so every mode and baseline also reports the guess per shape (``SHAPE_METRICS``, colorizer/shapes.py):
the share of the target's flat-colour shapes given their colour, and the colourfulness ratio. Hints are clean (not denoised) and seeded per batch: the same
model gives the same numbers twice. The protocol: each hint mode with ``MODE_PATCHES`` spatial
patches placed as users paint them (``PLACEMENT``), and the hint curve over ``PATCH_COUNTS``.
Training validates with ``validate`` (the per-mode table on the val split); the command adds the
curve, the trivial baselines, LPIPS/FID and the worst samples.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from .colour_bins import TEMPERATURE, AnnealedMean, decoded
from .config import COLOUR_DECODES, image_size
from .data import PairDataset, mean_color, mix_shares, read_report, train_sizes
from .extra_metrics import ExtraMetrics
from .hints import MODES, HintMode, HintSampler, clean_hints, color_region
from .images import to_array, to_pil, to_signed
from .inference import Colorizer, ModelLoadError
from .metrics import hint_error, image_metrics, line_error
from .shapes import SUM_KEYS, batch_shape_sums, merge_sums, shape_ratios
from .visualize import save_grid

PATCH_COUNTS = (0, 1, 2, 5, 10, 20, 50)  # the hint curve: the interactive-colorization protocol
MODE_PATCHES = 10  # clean spatial hint patches per image in the per-mode table (the "10 hints" point)
PLACEMENT = "color"  # hint patches inside the colour region, as users paint them ("uniform": anywhere)
SHAPES = {"patch": 0.0, "stroke": 1.0}  # hint shape -> share of strokes (short lines of patches) among the hints
METRICS = ("psnr", "psnr_color", "ssim", "ssim_color")
SHAPE_METRICS = ("shape_accuracy", "colourfulness")  # the guess per shape (colorizer/shapes.py), over a set
# How a drawing larger than the model's working size is coloured (Colorizer.colorize arguments):
FULL_RES_PATHS = {
    "enlarge": {"resolution": "model", "composite": False},  # the network's output enlarged, its own lines
    "composite": {"resolution": "model", "composite": True},  # colour enlarged, the drawing's lines over it
    "native": {"resolution": "native", "composite": True},  # the network at the drawing's size, lines over it
    "flat": {"resolution": "model", "composite": True, "fill": True},  # composite, one colour per closed region
    "split": {"resolution": "model", "composite": True, "fill": "split"},  # flat, regions cut by the head's modes
}
FULL_RES_PATCHES = (0, MODE_PATCHES)  # hint patches the full-resolution table is reported at


class EmptySplitError(ValueError):
    """The split to evaluate has no pairs."""


class Accumulator:
    """Sums of finite per-image values, so NaN (e.g. an empty colour region) never pollutes a mean."""

    def __init__(self):
        self.sums: dict = {}

    def add(self, key: str, values: torch.Tensor) -> None:
        finite = values[torch.isfinite(values)]
        total, count = self.sums.get(key, (0.0, 0))
        self.sums[key] = (total + finite.double().sum().item(), count + finite.numel())

    def mean(self, key: str) -> float:
        total, count = self.sums.get(key, (0.0, 0))
        return total / count if count else float("nan")

    def add_shapes(self, prefix: str, pred: torch.Tensor, target: torch.Tensor) -> None:
        """The per-image shape sums (shapes.SUM_KEYS) of a batch under ``prefix/KEY``."""
        for key, values in batch_shape_sums(pred, target).items():
            self.add(f"{prefix}/{key}", values)

    def shapes(self, prefix: str) -> dict:
        """SHAPE_METRICS of the images added under ``prefix``: ratios of the sums (each image adds to
        every sum, so a ratio of the means is the ratio of the sums)."""
        return shape_ratios({key: self.mean(f"{prefix}/{key}") for key in SUM_KEYS})


@contextlib.contextmanager
def deterministic_kernels():
    """Deterministic GPU kernels while evaluating: the palette histogram's scatter_add_ uses
    atomics on CUDA, which made two evaluations of one model differ in the 7th digit."""
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]


def protocol_hints(sampler: HintSampler, color: torch.Tensor, mode: str, patches: int, seed: int,
                   placement: str = PLACEMENT, shape: str = "patch"):
    """The protocol's clean hints of one mode for a batch, drawn from a generator seeded with ``seed``:
    ``patches`` square patches (``shape`` "patch") or short strokes ("stroke") for the spatial mode."""
    generator = torch.Generator(color.device).manual_seed(seed)
    return clean_hints(sampler, color, mode, patches, generator, placement, strokes=SHAPES[shape])


def scores(pred: torch.Tensor, color: torch.Tensor, region: torch.Tensor, hints=None) -> dict:
    """Per-image metrics, (B,) each: METRICS, plus hint_error when ``hints`` carry spatial hints."""
    values = image_metrics(pred, color, region)
    if hints is not None and bool((hints.mode == HintMode.SPATIAL).any()):
        values["hint_error"] = hint_error(pred, hints.spatial)
    return values


@torch.no_grad()
def set_decode(model: Colorizer, args) -> Colorizer:
    """--colour-decode (default: the model's own model.colour_decode) and --temperature on ``model``'s
    generator when it has a colour head."""
    if args.temperature <= 0:
        raise SystemExit(f"error: --temperature={args.temperature} must be > 0")
    network = model.generator.network if isinstance(model.generator, AnnealedMean) else model.generator
    model.generator = decoded(network, model.config.model, args.colour_decode, args.temperature)
    return model


def decode_note(model: Colorizer) -> dict:
    """How ``model``'s colours were scored, for the report: {} without a colour head, else
    {"colour_decode": "annealed" (with "temperature") or "regression"}."""
    if not model.has_head:
        return {}
    if isinstance(model.generator, AnnealedMean):
        return {"colour_decode": "annealed", "temperature": model.generator.temperature}
    return {"colour_decode": "regression"}


def predict(generator, line: torch.Tensor, hints, autocast=None) -> torch.Tensor:
    """The generator's colouring of ``line`` with ``hints``: (B, 3, H, W) float32 in [-1, 1]."""
    with autocast or contextlib.nullcontext():
        return generator(line, hints.spatial, hints.palette, hints.palette_keep).float()


@torch.no_grad()
def predict_modes(generator, sampler: HintSampler, line, color, seed: int, placement: str = PLACEMENT,
                  autocast=None, shape: str = "patch") -> dict:
    """{mode: (pred, hints)} for every hint mode: the protocol's hints (``MODE_PATCHES`` spatial
    patches), seeded with ``seed``. pred (B, 3, H, W) float32 in [-1, 1]."""
    out = {}
    for mode in MODES:
        hints = protocol_hints(sampler, color, mode, MODE_PATCHES, seed, placement, shape)
        out[mode] = (predict(generator, line, hints, autocast), hints)
    return out


@torch.no_grad()
@deterministic_kernels()
def run_protocol(generator, cfg, root: Path, split: str, device, *, autocast=None, placement: str = PLACEMENT,
                 shape: str = "patch", batch_size: int = 16, max_items: int = 0, seed: int = 0, cache: bool = False,
                 curve: bool = False, baselines: bool = False, extra: ExtraMetrics | None = None,
                 progress: bool = False, spread: bool = False) -> tuple:
    """Run ``generator`` (eval mode, on ``device``; ``cfg`` its Config) over ``split`` of the prepared
    folder ``root`` at the training size. Returns (Accumulator with keys "modes/MODE/METRIC", and with
    ``curve`` "curve/N/METRIC", with ``baselines`` "baselines/NAME/METRIC"; the shape sums
    (``Accumulator.shapes``) under "modes/MODE" and "baselines/NAME"; [(hintless colour-region
    PSNR, dataset index)] per image; the dataset). ``extra`` (LPIPS, FID) sees the hintless predictions.
    ``max_items`` pairs (0 = all): the first ones, or with ``spread`` spread over the split (``data.take``).
    EmptySplitError when the split has no pairs."""
    dataset = PairDataset(root, split, size=image_size(cfg.data), cache=cache, max_items=max_items, spread=spread)
    if len(dataset) == 0:
        raise EmptySplitError(f"the {split} split of {root} is empty (see {Path(root) / 'report.json'})")
    sampler = HintSampler(cfg.hints, cfg.model.palette_size)
    mean = mean_color(root, "train", max_items).to(device) if baselines else None
    acc, per_image = Accumulator(), []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    for i, batch in enumerate(tqdm(loader, desc=f"evaluate {split}", dynamic_ncols=True, disable=not progress)):
        line, color = batch["line"].to(device), batch["color"].to(device)  # (B, 1|3, H, W) in [-1, 1]
        region = color_region(color)
        if baselines:
            trivial = {"line_art": line.expand(-1, 3, -1, -1), "mean_color": mean.view(1, 3, 1, 1).expand_as(color)}
            for name, pred in trivial.items():
                for metric, v in image_metrics(pred, color, region).items():
                    acc.add(f"baselines/{name}/{metric}", v)
                acc.add_shapes(f"baselines/{name}", pred, color)
        for mode, (pred, hints) in predict_modes(generator, sampler, line, color, seed + i, placement, autocast,
                                                 shape).items():
            values = scores(pred, color, region, hints)
            if mode == "none":
                per_image += list(zip(values["psnr_color"].tolist(), batch["index"].tolist()))
                if extra is not None:
                    extra.update(pred, color)
            for metric, v in values.items():
                acc.add(f"modes/{mode}/{metric}", v)
            acc.add_shapes(f"modes/{mode}", pred, color)
        for count in PATCH_COUNTS if curve else ():
            hints = protocol_hints(sampler, color, "spatial" if count else "none", count,
                                   seed + 1000 * (count + 1) + i, placement, shape)
            pred = predict(generator, line, hints, autocast)
            for metric, v in scores(pred, color, region, hints).items():
                acc.add(f"curve/{count}/{metric}", v)
    return acc, per_image, dataset


def validate(cfg, generator, roots: list, device, autocast) -> dict:
    """Validation during training: the per-mode table on the val split of each prepared folder in
    ``roots`` (``train.val_items`` pairs each, spread over the split: ``data.take``), as keys like
    ``val/none/psnr_color`` and ``val/spatial/hint_error``; {} when every split is empty.

    A mix (several folders) adds each folder's own table under its name, ``val/NAME/none/psnr_color``,
    and ``val/MODE/METRIC`` becomes the mean of the folders' values weighted by their training shares
    (``data.mix_shares``): the metric on the mix the model trains on, which ``train.best_metric``
    (``val/none/psnr_color``) then follows. A folder with an empty val split is left out of the mean."""
    tables = [validate_folder(cfg, generator, root, device, autocast) for root in roots]
    if len(tables) == 1:
        return tables[0]
    sizes = [] if len(cfg.data.shares) else train_sizes(cfg.data, roots)  # the default shares go by size
    shares = mix_shares(cfg.data, sizes)
    metrics = {f"val/{root.name}/{key.split('/', 1)[1]}": value
               for root, table in zip(roots, tables) for key, value in table.items()}
    for key in sorted({key for table in tables for key in table}):
        weighted = [(share, table[key]) for share, table in zip(shares, tables)
                    if share > 0 and not math.isnan(table.get(key, math.nan))]
        total = sum(share for share, _ in weighted)
        metrics[key] = sum(share * value for share, value in weighted) / total if total else math.nan
    return metrics


def validate_folder(cfg, generator, root: Path, device, autocast) -> dict:
    """``validate`` on one prepared folder: ``val/MODE/METRIC`` keys; {} when its val split is empty."""
    try:
        acc, _, _ = run_protocol(generator, cfg, root, "val", device, autocast=autocast,
                                 batch_size=cfg.train.batch_size, max_items=cfg.train.val_items or cfg.data.max_items,
                                 seed=cfg.train.seed, cache=cfg.data.cache, spread=True)
    except EmptySplitError:
        return {}
    table = {f"val/{key.split('/', 1)[1]}": acc.mean(key) for key in acc.sums
             if key.startswith("modes/") and key.rsplit("/", 1)[1] not in SUM_KEYS}
    for mode in MODES:
        table.update({f"val/{mode}/{metric}": value for metric, value in acc.shapes(f"modes/{mode}").items()})
    return table


def evaluate(model: Colorizer, root: Path, split: str = "test", placement: str = PLACEMENT, batch_size: int = 16,
             max_items: int = 0, seed: int = 0, worst: int = 8, gallery: Path | None = None,
             extra: ExtraMetrics | None = None, shape: str = "patch", spread: bool = False) -> dict:
    """Metrics of ``model`` on ``split`` of the prepared folder ``root`` (at the model's training size)
    and of the two trivial baselines; a JSON-ready dict. Hints are clean and seeded per batch, so
    the same model, data, seed and batch size give the same numbers. ``extra`` (LPIPS, FID) is reset,
    then sees the hintless predictions."""
    cfg, generator, device = model.config, model.generator, model.device
    if extra is not None:
        extra.reset()
    acc, per_image, dataset = run_protocol(generator, cfg, root, split, device, placement=placement, shape=shape,
                                           batch_size=batch_size, max_items=max_items, seed=seed, curve=True,
                                           baselines=True, extra=extra, progress=True, spread=spread)
    report = {
        "data": str(root), "lines": line_style(root),
        "split": split, "items": len(dataset), "spread": spread, "size": list(dataset.size), "placement": placement,
        "shape": shape, "seed": seed,
        "batch_size": batch_size, "step": model.step, "run_name": model.run_name, "modes": {}, "baselines": {},
        "hint_curve": [],
        "perceptual_status": model.notes.get("perceptual_status", "unknown"),
        "parent": model.notes.get("parent"),  # the model a fine-tuned one started from (train.init), else None
    }
    report.update(extra.result() if extra is not None else
                  {"lpips": "not computed: disabled", "fid": "not computed: disabled"})
    for mode in MODES:
        keys = METRICS + (("hint_error",) if mode == "spatial" else ())
        report["modes"][mode] = {**{k: acc.mean(f"modes/{mode}/{k}") for k in keys}, **acc.shapes(f"modes/{mode}")}
    for name in ("line_art", "mean_color"):
        report["baselines"][name] = {**{k: acc.mean(f"baselines/{name}/{k}") for k in METRICS},
                                     **acc.shapes(f"baselines/{name}")}
    for count in PATCH_COUNTS:
        row = {"patches": count, **{k: acc.mean(f"curve/{count}/{k}") for k in METRICS}}
        row["hint_error"] = acc.mean(f"curve/{count}/hint_error") if count else None
        report["hint_curve"].append(row)
    per_image = sorted(p for p in per_image if not math.isnan(p[0]))
    report["worst"] = [{"index": idx, "id": dataset.records[idx]["id"], "psnr_color": value}
                       for value, idx in per_image[:worst]]
    if gallery is not None and report["worst"]:
        items = [dataset[w["index"]] for w in report["worst"]]
        line = torch.stack([it["line"] for it in items]).to(device)
        color = torch.stack([it["color"] for it in items]).to(device)
        hints = protocol_hints(HintSampler(cfg.hints, cfg.model.palette_size), color, "none", 0, seed)
        pred = predict(generator, line, hints)
        report["worst_images"] = {"line": line.expand(-1, 3, -1, -1).cpu(), "pred": pred.cpu(), "target": color.cpu()}
        save_grid([line.expand(-1, 3, -1, -1), pred, color], gallery)
        report["gallery"] = str(gallery)
    return report


def prepared_size(root: Path) -> int | None:
    """The ``--size`` a data_prep folder was prepared at (its report.json), or None if unknown."""
    try:
        return int(read_report(root)["size"])
    except (KeyError, ValueError, TypeError):
        return None


def hint_layer(sampler: HintSampler, color: torch.Tensor, patches: int, seed: int, working: tuple,
               placement: str = PLACEMENT):
    """The protocol's clean spatial hints for one image as the RGBA layer a user paints, or None for
    0 patches. color (1, 3, H, W) in [-1, 1]; the patches are drawn at the ``working`` size (h, w),
    where the protocol's patch sizes mean what they mean in training, and each hinted working pixel
    covers its cell of the H x W layer (nearest), so the model sees the protocol's hints at any size."""
    if not patches:
        return None
    small = color if tuple(color.shape[-2:]) == tuple(working) else F.interpolate(color, size=working, mode="area")
    spatial = protocol_hints(sampler, small, "spatial", patches, seed, placement).spatial[0]  # (4, h, w)
    mask = spatial[3:] > 0.5
    rgb = to_array((spatial[:3] / spatial[3:].clamp_min(1e-6)).clamp(-1, 1))  # (h, w, 3) uint8
    rgba = np.concatenate([rgb, (mask[0].numpy() * 255).astype(np.uint8)[..., None]], -1)
    return Image.fromarray(rgba, "RGBA").resize((color.shape[-1], color.shape[-2]), Image.Resampling.NEAREST)


@torch.no_grad()
def full_resolution(model: Colorizer, root: Path, split: str, size: int, max_items: int = 0,
                    paths=tuple(FULL_RES_PATHS), patches=FULL_RES_PATCHES, seed: int = 0,
                    progress: bool = True, spread: bool = False) -> dict:
    """Colourings of ``split`` at ``size`` x ``size`` px through ``Colorizer.colorize``, as a user
    gets them, by each of ``paths`` (FULL_RES_PATHS), hintless and with each count of ``patches``
    (``hint_layer``, seeded per image): METRICS over the target and ``line_error`` (how much
    lighter than drawn the result is on the drawing's line pixels, in [0, 1] units), one row per
    (path, patches). The folder must have been prepared at ``size`` or more: enlarged line art is
    no test of full-resolution lines. ValueError saying how to prepare it otherwise."""
    prepared = prepared_size(root)
    if prepared is not None and prepared < size:
        raise ValueError(f"{root} was prepared at {prepared} px, smaller than --size {size}: prepare it at that size, "
                         f"e.g. `python -m data_prep openmoji --out {Path(root).parent / f'openmoji{size}'} "
                         f"--size {size}`")
    unknown = sorted(set(paths) - set(FULL_RES_PATHS))
    if unknown:
        raise ValueError(f"unknown full-resolution path(s) {', '.join(unknown)}: choose from {', '.join(FULL_RES_PATHS)}")
    dataset = PairDataset(root, split, size=(size, size), cache=False, max_items=max_items, spread=spread)
    if len(dataset) == 0:
        raise EmptySplitError(f"the {split} split of {root} is empty (see {Path(root) / 'report.json'})")
    sampler = HintSampler(model.config.hints, model.config.model.palette_size)
    working = model.working_size(size, size)
    acc = Accumulator()
    for index in tqdm(range(len(dataset)), desc=f"full resolution {size} px", dynamic_ncols=True, disable=not progress):
        item = dataset[index]
        line, color = item["line"][None], item["color"][None]  # (1, 1, H, W), (1, 3, H, W) in [-1, 1]
        region, drawing = color_region(color), to_pil(item["line"])
        for count in patches:
            hints = hint_layer(sampler, color, count, seed + index, working)
            for name in paths:
                out = np.asarray(model.colorize(drawing, hints=hints, **FULL_RES_PATHS[name]))  # (H, W, 3) uint8
                pred = to_signed(out).permute(2, 0, 1)[None]  # (1, 3, H, W) in [-1, 1]
                values = {**image_metrics(pred, color, region), "line_error": line_error(pred, line)}
                for metric, value in values.items():
                    acc.add(f"{name}/{count}/{metric}", value)
                acc.add_shapes(f"{name}/{count}", pred, color)
        if "flat" in paths:  # how much of the shape area one colour per closed region cannot get right (uncut)
            for key, value in merge_sums(np.asarray(drawing), to_array(color[0])).items():
                acc.add(f"merge/{key}", torch.tensor([value], dtype=torch.float64))
    merged = acc.mean("merge/merged_area") / acc.mean("merge/shape_area") if "flat" in paths else None
    return {"size": [size, size], "items": len(dataset), "placement": PLACEMENT, "seed": seed,
            "working_size": list(working), "flat_merged_share": merged,
            "rows": [{"path": name, "patches": count,
                      **{metric: acc.mean(f"{name}/{count}/{metric}") for metric in METRICS + ("line_error",)},
                      **acc.shapes(f"{name}/{count}")}
                     for count in patches for name in paths]}


def line_style(root: Path) -> str:
    """How the prepared folder's line art was made, from its report.json: "artist" (OpenMoji's own
    line layer), the XDoG settings (``--lines xdog`` or the folder importer), or "unknown"."""
    report = read_report(root)
    if "lines" in report:
        return report["lines"]
    if report.get("styles"):
        return "; ".join(report["styles"])
    return "artist" if report.get("source") == "openmoji" else "unknown"


def log_wandb(report: dict, mode: str, project: str, curve_png: Path) -> str:
    """The summary metrics, the hint curve and a table of the K worst samples (line | prediction |
    target) as a W&B run of job type "eval"; returns the run's folder or URL."""
    import wandb

    run = wandb.init(project=project, job_type="eval", mode=mode, name=f"eval-{report['run_name'] or 'model'}",
                     config={k: report[k] for k in ("split", "items", "size", "placement", "seed", "step")})
    flat = {f"{mode_}/{k}": v for mode_, m in report["modes"].items() for k, v in m.items()}
    flat.update({f"baseline_{name}/{k}": v for name, m in report["baselines"].items() for k, v in m.items()})
    run.summary.update(flat)
    run.log({"hint_curve": wandb.Image(str(curve_png))})
    images = report.get("worst_images")
    if images is not None:
        table = wandb.Table(columns=["id", "psnr_color", "line", "prediction", "target"])
        for k, w in enumerate(report["worst"]):
            table.add_data(w["id"], w["psnr_color"], *(wandb.Image(to_array(images[key][k]))
                                                       for key in ("line", "pred", "target")))
        run.log({"worst_samples": table})
    where = run.url or run.dir
    run.finish()
    return where


def fmt(value) -> str:
    """A metric for the markdown tables: 3 decimals, or n/a for a missing or NaN value."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def markdown(report: dict) -> str:
    lines = [f"`{report.get('data', '?')}` ({report.get('lines', 'unknown')} lines), "
             f"split `{report['split']}`: {report['items']} images at {report['size'][0]}x{report['size'][1]}, "
             f"hints placed `{report['placement']}`, shaped `{report.get('shape', 'patch')}`, "
             f"step {report['step']}", "",
             "| method | PSNR | PSNR colour | SSIM | SSIM colour | hint error | shape accuracy | colourfulness |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, m in report["modes"].items():
        extra = f" ({MODE_PATCHES} patches)" if mode == "spatial" else ""
        lines.append(f"| model, {mode}{extra} | " + " | ".join(fmt(m[k]) for k in METRICS)
                     + f" | {fmt(m.get('hint_error'))} | " + " | ".join(fmt(m.get(k)) for k in SHAPE_METRICS) + " |")
    for name, m in report["baselines"].items():
        lines.append(f"| baseline: {name.replace('_', ' ')} | " + " | ".join(fmt(m[k]) for k in METRICS) + " | n/a | "
                     + " | ".join(fmt(m.get(k)) for k in SHAPE_METRICS) + " |")
    lines += ["", "| hint patches | PSNR | PSNR colour | SSIM colour | hint error |", "|---|---|---|---|---|"]
    for row in report["hint_curve"]:
        lines.append(f"| {row['patches']} | {fmt(row['psnr'])} | {fmt(row['psnr_color'])} | "
                     f"{fmt(row['ssim_color'])} | {fmt(row['hint_error'])} |")
    lpips, fid = (v if isinstance(v, str) else f"{v:.4f}" for v in (report["lpips"], report["fid"]))
    lines += ["", f"LPIPS (hintless): {lpips}", f"FID (hintless): {fid}"]
    return "\n".join(lines)


def compare_markdown(reports: list) -> str:
    """One row per evaluated dataset (the same model): colour-region PSNR hintless and at
    ``MODE_PATCHES`` patches, the gain, and the two trivial baselines, so line styles sit side by side."""
    lines = [f"| data | lines | items | hintless | {MODE_PATCHES} patches | gain | line art | mean colour | "
             "shape accuracy hintless (mean colour) | colourfulness hintless |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        none, spatial = r["modes"]["none"]["psnr_color"], r["modes"]["spatial"]["psnr_color"]
        lines.append(f"| {r['data']} | {r['lines']} | {r['items']} | {fmt(none)} | {fmt(spatial)} | "
                     f"{fmt(spatial - none)} | {fmt(r['baselines']['line_art']['psnr_color'])} | "
                     f"{fmt(r['baselines']['mean_color']['psnr_color'])} | "
                     f"{fmt(r['modes']['none'].get('shape_accuracy'))} "
                     f"({fmt(r['baselines']['mean_color'].get('shape_accuracy'))}) | "
                     f"{fmt(r['modes']['none'].get('colourfulness'))} |")
    return "\n".join(lines)


def full_resolution_markdown(result: dict) -> str:
    """The full-resolution table: one row per path and hint count."""
    lines = [f"Full resolution, {result['items']} images at {result['size'][0]}x{result['size'][1]} "
             f"(working size {result['working_size'][0]}x{result['working_size'][1]}):", "",
             "| path | hint patches | PSNR | PSNR colour | SSIM | SSIM colour | line error | shape accuracy | "
             "colourfulness |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['path']} | {row['patches']} | "
                     + " | ".join(fmt(row[k]) for k in METRICS + ("line_error",) + SHAPE_METRICS) + " |")
    if result.get("flat_merged_share") is not None:
        lines += ["", f"Merged share: {fmt(result['flat_merged_share'])} of the shape area shares its closed region "
                      "with a larger shape of another colour (a flat fill's shape accuracy is at most 1 minus it)."]
    return "\n".join(lines)


def plot_curve(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [r["patches"] for r in report["hint_curve"]]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(counts, [r["psnr_color"] for r in report["hint_curve"]], "o-", label="model, colour region")
    ax.plot(counts, [r["psnr"] for r in report["hint_curve"]], "s--", label="model, whole image")
    for name, style in (("mean_color", ":"), ("line_art", "-.")):
        ax.axhline(report["baselines"][name]["psnr_color"], ls=style, c="grey",
                   label=f"{name.replace('_', ' ')} baseline, colour region")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("hint patches")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m colorizer.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="export folder or training checkpoint (.pt)")
    parser.add_argument("--data", required=True, nargs="+",
                        help="prepared dataset folder(s) (manifest.jsonl inside). Several (for example the artist-"
                             "line and the XDoG-line OpenMoji) are each evaluated and compared in one table; the "
                             "first one's report is the JSON's top level, the others' are under \"also\"")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", required=True, help="JSON report; NAME_curve.png and NAME_worst.png go beside it")
    parser.add_argument("--placement", default=PLACEMENT, choices=("color", "uniform"),
                        help="hint patches inside the colour region (as users paint) or anywhere")
    parser.add_argument("--hint-shape", default="patch", choices=list(SHAPES),
                        help="spatial hints as square patches (the protocol) or short strokes, like the demo's brush")
    parser.add_argument("--size", type=int, default=0,
                        help="also colour the split at N x N px through the demo's paths (the network's output "
                             "enlarged, the composite with the drawing's lines, native resolution, flat fills, "
                             "flat fills cut by a colour head's modes) and report them with a line-fidelity figure; "
                             "the folder must be prepared at N px or more")
    parser.add_argument("--size-paths", nargs="+", default=list(FULL_RES_PATHS), choices=list(FULL_RES_PATHS),
                        help="the paths --size compares (default: all)")
    parser.add_argument("--size-hints", nargs="+", type=int, default=list(FULL_RES_PATCHES),
                        help="hint patch counts --size reports each path at (default: 0 10)")
    parser.add_argument("--only-size", action="store_true",
                        help="with --size: only the full-resolution table, not the protocol at the training size")
    parser.add_argument("--protocol", default="ours", choices=("ours", "hint-auc"),
                        help="ours: the per-mode table and the patch curve; hint-auc: the field's published "
                             "protocol (Hint-AUC, through the hintauc package) with the region fill rate, for the "
                             "model and the trivial baselines")
    parser.add_argument("--hint-auc-type", default="scribble", choices=("scribble", "dot"),
                        help="with --protocol hint-auc: one scribble per region (default) or one dot")
    parser.add_argument("--no-baselines", action="store_true",
                        help="with --protocol hint-auc: the model only (the baselines do not depend on it)")
    parser.add_argument("--stroke-tolerances", nargs="+", type=float, default=[],
                        help="with --protocol hint-auc: also the default path with the painted strokes at each "
                             "of these CIE76 ΔE tolerances (strokes.STROKE_TOLERANCE), one row each")
    parser.add_argument("--colour-decode", default=None, choices=COLOUR_DECODES,
                        help="a model with a colour head (model.colour_head): its colours by the annealed mean "
                             "or its regression output alone (default: as the model shows them, its "
                             "model.colour_decode)")
    parser.add_argument("--temperature", type=float, default=TEMPERATURE,
                        help="the annealed mean's temperature (1 = the mean, towards 0 = the mode)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-items", type=int, default=0, help="only the first N pairs (0 = all)")
    parser.add_argument("--spread", action="store_true",
                        help="with --max-items: N pairs spread evenly over the split, not the first N (a "
                             "split is listed by name: OpenMoji's opens with flags); --protocol ours only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worst", type=int, default=8, help="K worst samples (hintless colour-region PSNR)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--lpips-weights", default="auto",
                        help="LPIPS backbone weights: auto (torchvision cache), a file, or off")
    parser.add_argument("--fid-weights", default="auto", help="FID Inception weights: auto, a file, or off")
    parser.add_argument("--wandb", default="disabled", choices=("disabled", "offline", "online"),
                        help="also log the metrics and a table of the worst samples to W&B")
    parser.add_argument("--project", default="colorizer", help="W&B project")
    args = parser.parse_args(argv)
    if args.only_size and not args.size:
        parser.error("--only-size needs --size N")
    if args.size < 0 or any(n < 0 for n in args.size_hints):
        parser.error("--size and --size-hints must be >= 0")
    if args.spread and args.protocol == "hint-auc":
        parser.error("--spread is for --protocol ours: Hint-AUC's published protocol scores the first "
                     "--max-items images, so its numbers compare with the field's")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    curve_png, worst_png = out.with_name(out.stem + "_curve.png"), out.with_name(out.stem + "_worst.png")
    reports = []
    if args.protocol == "hint-auc":
        return main_hint_auc(args, out)
    try:
        model = set_decode(Colorizer.load(args.checkpoint, device=args.device), args)
        extra = ExtraMetrics(model.device, args.lpips_weights, args.fid_weights)
        for i, data in enumerate(args.data):
            gallery = worst_png if i == 0 else out.with_name(f"{out.stem}_worst_{Path(data).name}.png")
            if args.only_size:
                reports.append({"data": str(data), "lines": line_style(Path(data)), "split": args.split,
                                "step": model.step, "run_name": model.run_name, "parent": model.notes.get("parent")})
            else:
                reports.append(evaluate(model, Path(data), args.split, args.placement, args.batch_size,
                                        args.max_items, args.seed, args.worst, gallery=gallery, extra=extra,
                                        shape=args.hint_shape, spread=args.spread))
            if args.size:
                reports[-1]["full_resolution"] = full_resolution(model, Path(data), args.split, args.size,
                                                                 args.max_items, args.size_paths, args.size_hints,
                                                                 args.seed, spread=args.spread)
    except (FileNotFoundError, ValueError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report = reports[0]
    report.update({"checkpoint": str(args.checkpoint), **decode_note(model)})
    if args.only_size:
        report.update({"also": reports[1:]} if len(reports) > 1 else {})
        out.write_text(json.dumps(report, indent=2))
        for r in reports:
            print(f"`{r['data']}` ({r['lines']} lines), split `{r['split']}`, step {r['step']}\n")
            print(full_resolution_markdown(r["full_resolution"]) + "\n")
        print(f"wrote {out}")
        return 0
    plot_curve(report, curve_png)
    if args.wandb != "disabled":
        report["wandb"] = log_wandb(report, args.wandb, args.project, curve_png)
    for r in reports:
        r.pop("worst_images", None)
    if len(reports) > 1:
        report["also"] = reports[1:]
    out.write_text(json.dumps(report, indent=2))
    for r in reports:
        print(markdown(r) + "\n")
        if "full_resolution" in r:
            print(full_resolution_markdown(r["full_resolution"]) + "\n")
    if len(reports) > 1:
        print(compare_markdown(reports) + "\n")
    print(f"wrote {out}, {curve_png.name}, " + ", ".join(Path(r["gallery"]).name for r in reports if "gallery" in r))
    return 0


def main_hint_auc(args, out: Path) -> int:
    """--protocol hint-auc: each --data folder under the published protocol; the first folder's
    report is the JSON's top level, the others' are under "also"."""
    from . import hint_auc

    reports = []
    try:
        model = set_decode(Colorizer.load(args.checkpoint, device=args.device), args)
        extra = ExtraMetrics(model.device, args.lpips_weights, "off")
        for data in args.data:
            reports.append(hint_auc.run(model, Path(data), args.split, args.hint_auc_type, args.max_items, extra,
                                        baselines=not args.no_baselines, tolerances=tuple(args.stroke_tolerances)))
            reports[-1]["lines"] = line_style(Path(data))
    except (FileNotFoundError, ValueError, ModelLoadError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report = {**reports[0], "checkpoint": str(args.checkpoint), **decode_note(model),
              **({"also": reports[1:]} if len(reports) > 1 else {})}
    out.write_text(json.dumps(report, indent=2))
    for r in reports:
        print(hint_auc.markdown(r["methods"], r["data"], r["split"]) + "\n")
        print(hint_auc.stroke_summary(r["stroke_fill"]) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
