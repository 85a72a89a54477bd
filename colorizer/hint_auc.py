"""The field's protocol for hinted line-art colorization, Hint-AUC (Madono, Mingcheng and Simo-Serra,
IEEE TVCG 2026, DOI 10.1109/TVCG.2026.3738401), run through its own package, ``hintauc``; and the
region fill rate, the number for "one stroke colours its whole shape".

The protocol (``hintauc.evaluate_colorizer``): the target is segmented (Felzenszwalb) and each
region gets a hint in its mean colour, a *scribble* (the longest path of its skeleton) or a *dot*
(one pixel), on a 64 x 64 hint map. Only the hints of the largest ``alpha`` of the regions are
kept, for alpha in {0, .01, .03, .05, .1, .25, .5, 1}; each metric (on the whole image, resized to
256 px) is integrated over alpha (the trapezoid rule). Our model gets those hints as painted strokes
at the image's size (``Colorizer.colorize``), so it works at its working size as in the demo.

Scribble paths: ``PATH_METHOD`` "geodesic", the package's dependency-free and bit-for-bit
deterministic path. The paper's "filfinder" path needs FilFinder, whose astropy (<6) does not import
with numpy 2 (our pinned numpy), and it is not bit-exact between runs (an unseeded tie-break), so the
two numbers are not comparable to the last digit with the paper's. The protocol record in the JSON
says which was used.

Region fill rate: for each scribble given to the model, the share of its region (the package's own
segment, at the image's size) whose output colour lies within ``FILL_DELTA_E`` (CIE76 ΔE in CIELAB,
scikit-image's conversion) of the scribble's colour, averaged over all scribbles of the split at
each alpha.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from .data import mean_color, read_manifest
from .images import to_array, to_signed

HINT_TYPES = ("scribble", "dot")
PATH_METHOD = "geodesic"  # see the module docstring: deterministic, and importable with numpy 2
HINT_MAP_SIZE = 64  # the paper's hint resolution
FILL_DELTA_E = 10.0  # CIE76 ΔE within which an output pixel has "taken" the scribble's colour
METRICS = ("psnr", "ssim")  # the package's pixel metrics; LPIPS is ours (extra_metrics), where weights exist
PUBLISHED = {"model": "DetFill", "data": "Danbooru2021 test, 3,000 images", "psnr_auc": 19.72, "lpips_auc": 0.183}


def _package():
    """The hintauc package, imported on first use (its import pulls OpenCV), with a clear error
    when it is missing."""
    try:
        import hintauc
    except ImportError as err:
        raise RuntimeError(f"the Hint-AUC protocol needs the hintauc package ({err}): "
                           "pip install -r requirements.txt") from None
    return hintauc


def fill_rates(pred: np.ndarray, region: np.ndarray, colour: np.ndarray, hinted: np.ndarray) -> np.ndarray:
    """Per hinted region, the share of its pixels whose colour in ``pred`` lies within FILL_DELTA_E
    of its hint colour. pred (H, W, 3) uint8 RGB; region (H, W) int region ids; colour (H, W, 3)
    uint8 RGB, each pixel its region's hint colour; hinted: the region ids that got a hint ->
    (len(hinted),) in [0, 1]."""
    from skimage.color import deltaE_cie76, rgb2lab

    near = deltaE_cie76(rgb2lab(pred), rgb2lab(colour)) < FILL_DELTA_E  # (H, W)
    ids, flat = np.unique(region, return_inverse=True)
    flat = flat.reshape(region.shape)
    sizes = np.bincount(flat.ravel(), minlength=len(ids))
    taken = np.bincount(flat.ravel(), weights=near.ravel().astype(np.float64), minlength=len(ids))
    position = np.searchsorted(ids, hinted)
    return taken[position] / np.maximum(sizes[position], 1)


class Scorer:
    """Wraps a colouring function for ``hintauc.evaluate_colorizer`` and adds what the package does
    not measure: the region fill rate of the scribbles, and LPIPS per alpha when ``lpips`` (a
    torchmetrics LPIPS module from ``ExtraMetrics``) is given. ``colour(line, hints)`` gets the
    line art (PIL "L") and the hints (PIL RGBA at the same size, or None) and returns RGB uint8."""

    def __init__(self, colour: Callable, targets: list, hint_type: str, lpips=None, device="cpu"):
        self.colour, self.targets, self.hint_type = colour, targets, hint_type
        self.lpips, self.device = lpips, device
        self.rates: dict = {}  # alpha -> [fill rate per scribble]
        self.lpips_scores: dict = {}  # alpha -> [LPIPS per image]
        self._hints = (None, None)  # (index, HintResult) of the image being scored

    def regions(self, index: int):
        """The package's hints for target ``index``, generated exactly as evaluate_colorizer does."""
        if self._hints[0] != index:
            self._hints = (index, _package().generate_hints(str(self.targets[index]), size=HINT_MAP_SIZE,
                                                           path_method=PATH_METHOD))
        return self._hints[1]

    def __call__(self, sample: dict) -> np.ndarray:
        line = Image.fromarray(sample["line_art"], "L")
        mask = sample["hint_mask"] > 0  # (H, W)
        hints = None
        if mask.any():
            rgba = np.dstack([sample["hint_color"][..., ::-1], mask.astype(np.uint8) * 255])  # BGR -> RGB
            hints = Image.fromarray(np.ascontiguousarray(rgba), "RGBA")
        pred = np.asarray(self.colour(line, hints), dtype=np.uint8)  # (H, W, 3) RGB
        alpha = float(sample["alpha"])
        if self.hint_type == "scribble" and mask.any():
            self.rates.setdefault(alpha, []).extend(self.fill(sample["index"], pred, mask))
        if self.lpips is not None:
            target = np.asarray(Image.open(self.targets[sample["index"]]).convert("RGB"))
            a, b = (to_signed(x).permute(2, 0, 1)[None].to(self.device) for x in (pred, target))
            self.lpips_scores.setdefault(alpha, []).append(float(self.lpips(a, b)))
        return np.ascontiguousarray(pred[..., ::-1])  # the package takes BGR

    def fill(self, index: int, pred: np.ndarray, mask: np.ndarray) -> list:
        """Fill rates of the regions whose scribbles are in ``mask`` (H, W)."""
        hintauc = _package()
        hints = self.regions(index)
        height, width = mask.shape
        region = Image.fromarray(hintauc.region_ids(hints.region).astype(np.int32))
        region = np.asarray(region.resize((width, height), Image.Resampling.NEAREST))  # (H, W) ids
        colour = Image.fromarray(np.ascontiguousarray(hints.flatten[..., ::-1]))  # region means, RGB
        colour = np.asarray(colour.resize((width, height), Image.Resampling.NEAREST))
        return fill_rates(pred, region, colour, np.unique(region[mask])).tolist()


def evaluate(colour: Callable, root: Path, split: str = "test", hint_type: str = "scribble", max_items: int = 0,
             lpips=None, device="cpu", progress: bool = True) -> dict:
    """Hint-AUC of ``colour`` (see ``Scorer``) on ``split`` of the prepared folder ``root``: the
    package's per-alpha metrics and AUCs, its protocol record, and per alpha the mean region fill
    rate (scribbles) and LPIPS (when ``lpips`` is given)."""
    hintauc = _package()
    if hint_type not in HINT_TYPES:
        raise ValueError(f"hint type {hint_type!r}: choose from {', '.join(HINT_TYPES)}")
    records = read_manifest(root, split)[: max_items or None]
    if not records:
        raise ValueError(f"the {split} split of {root} is empty (see {Path(root) / 'report.json'})")
    pairs = [(Path(root) / r["line"], Path(root) / r["color"]) for r in records]
    scorer = Scorer(colour, [c for _, c in pairs], hint_type, lpips, device)
    samples = tqdm(pairs, desc=f"hint-auc {split}", dynamic_ncols=True, disable=not progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the package's backends warn about optional extras
        result = hintauc.evaluate_colorizer(scorer, ((str(a), str(b)) for a, b in samples), hint_type=hint_type,
                                            metrics=METRICS, size=HINT_MAP_SIZE, path_method=PATH_METHOD)
    alphas = [float(a) for a in result["alphas"]]
    curve = [{"alpha": a, **{k: float(v) for k, v in result["per_alpha"][a].items()},
              "fill_rate": float(np.mean(scorer.rates[a])) if scorer.rates.get(a) else None,
              "scribbles": len(scorer.rates.get(a, [])),
              **({"lpips": float(np.mean(scorer.lpips_scores[a]))} if scorer.lpips_scores.get(a) else {})}
             for a in alphas]
    auc = {k: float(v) for k, v in result["hint_auc"].items()}
    if scorer.lpips_scores:
        auc["lpips"] = float(hintauc.hint_auc({row["alpha"]: row["lpips"] for row in curve}))
    return {"items": int(result["n_images"]), "hint_type": hint_type, "auc": auc, "curve": curve,
            "fill_delta_e": FILL_DELTA_E, "protocol": result["protocol"]}


def model_colour(model, fill: bool = False) -> Callable:
    """``Colorizer.colorize`` as a Scorer colouring function: the hints as painted strokes."""
    return lambda line, hints: np.asarray(model.colorize(line, hints=hints, fill=fill))


def baseline_colours(root: Path) -> dict:
    """The trivial baselines as colouring functions: the line art unchanged, and the training
    split's mean colour everywhere (hints ignored, so their curves are flat)."""
    mean = to_array(mean_color(root, "train").view(3, 1, 1))[0, 0]  # (3,) uint8

    def line_art(line, hints):
        return np.repeat(np.asarray(line)[..., None], 3, axis=-1)

    def mean_colour(line, hints):
        return np.broadcast_to(mean, (line.size[1], line.size[0], 3)).copy()

    return {"line_art": line_art, "mean_color": mean_colour}


def markdown(reports: dict, data: str, split: str) -> str:
    """One row per method: AUCs and the fill rate at each alpha."""
    first = next(iter(reports.values()))
    alphas = [row["alpha"] for row in first["curve"]][1:]
    head = ("| method | PSNR-AUC | SSIM-AUC | LPIPS-AUC | "
            + " | ".join(f"fill {a:g}" for a in alphas) + " |")
    lines = [f"Hint-AUC ({first['hint_type']} hints, {first['items']} images of `{data}` {split}; fill: share of "
             f"each scribble's region within ΔE {FILL_DELTA_E:g} of its colour):", "", head,
             "|" + "---|" * (4 + len(alphas))]
    for name, r in reports.items():
        fills = " | ".join("n/a" if row["fill_rate"] is None else f"{row['fill_rate']:.3f}" for row in r["curve"][1:])
        lpips = f"{r['auc']['lpips']:.4f}" if "lpips" in r["auc"] else "n/a"
        lines.append(f"| {name} | {r['auc']['psnr']:.3f} | {r['auc']['ssim']:.4f} | {lpips} | {fills} |")
    return "\n".join(lines)


def run(model, root: Path, split: str = "test", hint_type: str = "scribble", max_items: int = 0,
        extra=None, baselines: bool = True, progress: bool = True) -> dict:
    """The model (and, with ``baselines``, the trivial baselines) under the protocol on one folder."""
    lpips = getattr(extra, "lpips", None)
    methods = {"model": model_colour(model)}
    if baselines:
        methods.update(baseline_colours(root))
    reports = {name: evaluate(colour, root, split, hint_type, max_items, lpips, model.device, progress)
               for name, colour in methods.items()}
    return {"protocol": "hint-auc", "data": str(root), "split": split, "step": model.step,
            "run_name": model.run_name, "path_method": PATH_METHOD, "published_context": PUBLISHED,
            "lpips": "computed" if lpips is not None else (extra.status["lpips"] if extra is not None else
                                                           "not computed: disabled"),
            "methods": reports}
