"""Evaluate a trained generator on a prepared split, next to two trivial baselines.

    python -m colorizer.evaluate --checkpoint runs/NAME/export --data data/openmoji256 \
        --split test --out eval.json

Every metric is reported over the whole image and over the colour region (target pixels that are
neither paper white nor line black): the paper and the lines are given by the input, so
whole-image numbers flatter any model. Hint sampling is seeded: the same checkpoint gives the same
numbers twice.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .config import image_size
from .data import PairDataset
from .hints import MODES, HintSampler, clean_hints, color_region
from .inference import Colorizer
from .metrics import hint_error, image_metrics
from .monitor import save_grid

PATCH_COUNTS = (0, 1, 2, 5, 10, 20, 50)  # the interactive-colorization protocol
MODE_PATCHES = 10  # spatial mode in the per-mode table uses this many patches
METRICS = ("psnr", "psnr_color", "ssim", "ssim_color")


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


def mean_train_color(root: Path, size, max_items: int = 0) -> torch.Tensor:
    """(3,) mean colour of the train split in [-1, 1]: the "fill with the mean colour" baseline."""
    dataset = PairDataset(root, "train", size=size, train=False, cache=False, max_items=max_items)
    total = torch.zeros(3, dtype=torch.float64)
    for batch in DataLoader(dataset, batch_size=64, num_workers=0):
        total += batch["color"].double().mean((2, 3)).sum(0)
    return (total / max(1, len(dataset))).float()


@torch.no_grad()
def evaluate(model: Colorizer, root: Path, split: str = "test", placement: str = "color", batch_size: int = 16,
             max_items: int = 0, seed: int = 0, worst: int = 8, gallery: Path | None = None) -> dict:
    cfg, generator, device = model.config, model.generator, model.device
    size = image_size(cfg.data)
    dataset = PairDataset(root, split, size=size, train=False, cache=False, max_items=max_items)
    if len(dataset) == 0:
        raise ValueError(f"the {split} split of {root} is empty")
    hint_cfg = cfg.hints.copy() if hasattr(cfg.hints, "copy") else cfg.hints
    hint_cfg.placement = placement
    sampler = HintSampler(hint_cfg, cfg.model.palette_size)
    mean_color = mean_train_color(root, size, max_items).to(device)
    acc = Accumulator()
    per_image: list = []  # (psnr_color in hintless mode, dataset index)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    for i, batch in enumerate(tqdm(loader, desc=f"evaluate {split}", dynamic_ncols=True)):
        line, color = batch["line"].to(device), batch["color"].to(device)
        region = color_region(color)
        baselines = {"line_art": line.expand(-1, 3, -1, -1),
                     "mean_color": mean_color.view(1, 3, 1, 1).expand_as(color)}
        for name, pred in baselines.items():
            for metric, v in image_metrics(pred, color, region).items():
                acc.add(f"baselines/{name}/{metric}", v)
        for mode in MODES:
            hints = clean_hints(sampler, color, mode, MODE_PATCHES, torch.Generator(device).manual_seed(seed + i))
            pred = generator(line, hints.spatial, hints.palette, hints.palette_keep).float()
            values = image_metrics(pred, color, region)
            if mode == "spatial":
                values["hint_error"] = hint_error(pred, hints.spatial)
            if mode == "none":
                per_image += list(zip(values["psnr_color"].tolist(), batch["index"].tolist()))
            for metric, v in values.items():
                acc.add(f"modes/{mode}/{metric}", v)
        for count in PATCH_COUNTS:
            gen = torch.Generator(device).manual_seed(seed + 1000 * (count + 1) + i)
            hints = clean_hints(sampler, color, "spatial" if count else "none", count, gen)
            pred = generator(line, hints.spatial, hints.palette, hints.palette_keep).float()
            for metric, v in image_metrics(pred, color, region).items():
                acc.add(f"curve/{count}/{metric}", v)
            if count:
                acc.add(f"curve/{count}/hint_error", hint_error(pred, hints.spatial))

    report = {
        "split": split, "items": len(dataset), "size": list(size), "placement": placement, "seed": seed,
        "step": model.step, "modes": {}, "baselines": {}, "hint_curve": [],
        "lpips": "not computed: no LPIPS implementation with local weights in this version",
        "fid": "not computed: no Inception weights on this machine (FID needs them)",
    }
    for mode in MODES:
        keys = METRICS + (("hint_error",) if mode == "spatial" else ())
        report["modes"][mode] = {k: acc.mean(f"modes/{mode}/{k}") for k in keys}
    for name in ("line_art", "mean_color"):
        report["baselines"][name] = {k: acc.mean(f"baselines/{name}/{k}") for k in METRICS}
    for count in PATCH_COUNTS:
        row = {"patches": count, **{k: acc.mean(f"curve/{count}/{k}") for k in METRICS}}
        row["hint_error"] = acc.mean(f"curve/{count}/hint_error") if count else None
        report["hint_curve"].append(row)
    per_image = [p for p in per_image if not math.isnan(p[0])]
    per_image.sort()
    report["worst"] = [{"index": idx, "id": dataset.records[idx]["id"] if hasattr(dataset, "records") else idx,
                        "psnr_color": value} for value, idx in per_image[:worst]]
    if gallery is not None and report["worst"]:
        items = [dataset[w["index"]] for w in report["worst"]]
        line = torch.stack([it["line"] for it in items]).to(device)
        color = torch.stack([it["color"] for it in items]).to(device)
        hints = clean_hints(sampler, color, "none", 0, None)
        pred = generator(line, hints.spatial, hints.palette, hints.palette_keep).float()
        save_grid([line.expand(-1, 3, -1, -1), pred, color], gallery)
        report["gallery"] = str(gallery)
    return report


def markdown(report: dict) -> str:
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"  # noqa: E731
    lines = [f"Split `{report['split']}`: {report['items']} images at {report['size'][0]}x{report['size'][1]}, "
             f"hints placed `{report['placement']}`, step {report['step']}", "",
             "| method | PSNR | PSNR colour | SSIM | SSIM colour | hint error |", "|---|---|---|---|---|---|"]
    for mode, m in report["modes"].items():
        extra = f" ({MODE_PATCHES} patches)" if mode == "spatial" else ""
        lines.append(f"| model, {mode}{extra} | " + " | ".join(fmt(m[k]) for k in METRICS)
                     + f" | {fmt(m.get('hint_error'))} |")
    for name, m in report["baselines"].items():
        lines.append(f"| baseline: {name.replace('_', ' ')} | " + " | ".join(fmt(m[k]) for k in METRICS) + " | n/a |")
    lines += ["", "| hint patches | PSNR | PSNR colour | SSIM colour | hint error |", "|---|---|---|---|---|"]
    for row in report["hint_curve"]:
        lines.append(f"| {row['patches']} | {fmt(row['psnr'])} | {fmt(row['psnr_color'])} | "
                     f"{fmt(row['ssim_color'])} | {fmt(row['hint_error'])} |")
    lines += ["", f"LPIPS: {report['lpips']}", f"FID: {report['fid']}"]
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
    parser.add_argument("--data", required=True, help="prepared dataset folder (manifest.jsonl inside)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", required=True, help="JSON report; the plot and gallery go beside it")
    parser.add_argument("--placement", default="color", choices=("color", "uniform"),
                        help="hint patches inside the colour region (as users paint) or anywhere")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-items", type=int, default=0, help="only the first N pairs (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worst", type=int, default=8, help="K worst samples in the gallery")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        model = Colorizer.load(args.checkpoint, device=args.device)
        report = evaluate(model, Path(args.data), args.split, args.placement, args.batch_size, args.max_items,
                          args.seed, args.worst, gallery=out.with_name(out.stem + "_worst.png"))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report["checkpoint"] = str(args.checkpoint)
    plot_curve(report, out.with_name(out.stem + "_curve.png"))
    out.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    print(f"\nwrote {out}, {out.stem}_curve.png, {out.stem}_worst.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
