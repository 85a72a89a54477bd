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
import torch
from PIL import Image
from tqdm import tqdm

from .data import mean_color, read_manifest, take
from .images import to_array, to_signed
from .strokes import STROKE_TOLERANCE

HINT_TYPES = ("scribble", "dot")
PATH_METHOD = "geodesic"  # see the module docstring: deterministic, and importable with numpy 2
HINT_MAP_SIZE = 64  # the paper's hint resolution
FILL_DELTA_E = 10.0  # CIE76 ΔE within which an output pixel has "taken" the scribble's colour
METRICS = ("psnr", "ssim", "mse")  # the package's pixel metrics; LPIPS is ours (extra_metrics), where weights exist
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


def delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE76 ΔE between two (H, W, 3) uint8 RGB images, per pixel (H, W): scikit-image's CIELAB."""
    from skimage.color import deltaE_cie76, rgb2lab

    return deltaE_cie76(rgb2lab(a), rgb2lab(b))


def fill_rates(pred: np.ndarray, region: np.ndarray, colour: np.ndarray, hinted: np.ndarray) -> np.ndarray:
    """Per hinted region, the share of its pixels whose colour in ``pred`` lies within FILL_DELTA_E
    of its hint colour. pred (H, W, 3) uint8 RGB; region (H, W) int region ids; colour (H, W, 3)
    uint8 RGB, each pixel its region's hint colour; hinted: the region ids that got a hint ->
    (len(hinted),) in [0, 1]."""
    near = delta_e(pred, colour) < FILL_DELTA_E  # (H, W)
    ids, flat = np.unique(region, return_inverse=True)
    flat = flat.reshape(region.shape)
    sizes = np.bincount(flat.ravel(), minlength=len(ids))
    taken = np.bincount(flat.ravel(), weights=near.ravel().astype(np.float64), minlength=len(ids))
    position = np.searchsorted(ids, hinted)
    return taken[position] / np.maximum(sizes[position], 1)


TARGET = "target"  # as a colouring method: the target itself, the ceiling of the fill rate (its metrics are not scored)
ORACLE = "oracle"  # as a colouring method: the package's oracle region fill (reads the target's regions; a reference)


class Scorer:
    """Wraps colouring methods for ``hintauc.evaluate_colorizer`` and adds what the package does not
    measure: the region fill rate of the scribbles, and LPIPS per alpha when ``lpips`` (a
    torchmetrics LPIPS module from ``ExtraMetrics``) is given. ``colours``: {name: colour(line,
    hints)}, which gets the line art (PIL "L") and the hints (PIL RGBA at the same size, or None)
    and returns RGB uint8; or TARGET. The package scores the first one; the others are scored here
    on the same hints, with the package's own evaluator (``evaluator``), so the hints of each image
    are generated once for all the methods."""

    def __init__(self, colours: dict, targets: list, hint_type: str, evaluator, lpips=None, device="cpu"):
        self.colours, self.targets, self.hint_type = colours, targets, hint_type
        self.evaluator, self.lpips, self.device = evaluator, lpips, device
        self.primary = next(iter(colours))
        self.rates: dict = {name: {} for name in colours}  # name -> alpha -> [fill rate per scribble]
        self.lpips_scores: dict = {name: {} for name in colours}  # name -> alpha -> [LPIPS per image]
        self.sums: dict = {name: {} for name in colours}  # name -> alpha -> metric -> sum (all but the first)
        self._hints = (None, None)  # (index, HintResult) of the image being scored
        self._target = (None, None)  # (index, RGB uint8 array)

    def regions(self, index: int):
        """The package's hints for target ``index``, generated exactly as evaluate_colorizer does."""
        if self._hints[0] != index:
            self._hints = (index, _package().generate_hints(str(self.targets[index]), size=HINT_MAP_SIZE,
                                                           path_method=PATH_METHOD))
        return self._hints[1]

    def target(self, index: int) -> np.ndarray:
        """Target ``index`` as (H, W, 3) uint8 RGB, read once per image."""
        if self._target[0] != index:
            with Image.open(self.targets[index]) as im:
                self._target = (index, np.asarray(im.convert("RGB")))
        return self._target[1]

    def __call__(self, sample: dict) -> np.ndarray:
        line = Image.fromarray(sample["line_art"], "L")
        mask = sample["hint_mask"] > 0  # (H, W)
        hints = None
        if mask.any():
            rgba = np.dstack([sample["hint_color"][..., ::-1], mask.astype(np.uint8) * 255])  # BGR -> RGB
            hints = Image.fromarray(np.ascontiguousarray(rgba), "RGBA")
        alpha, index = float(sample["alpha"]), sample["index"]
        first = None
        for name, colour in self.colours.items():
            if colour == TARGET:
                pred = self.target(index)
            elif colour == ORACLE:  # each hinted region of the target in its hint colour, the lines multiplied
                oracle = {"hints": self.regions(index), "hint_mask": sample["hint_mask"],
                          "line_art": sample["line_art"],
                          "ground_truth": np.ascontiguousarray(self.target(index)[..., ::-1])}
                pred = np.ascontiguousarray(_package().hint_fill_colorizer(oracle)[..., ::-1])  # BGR -> RGB
            else:
                pred = np.asarray(colour(line, hints), dtype=np.uint8)  # (H, W, 3) RGB
            if self.hint_type == "scribble" and mask.any():
                self.rates[name].setdefault(alpha, []).extend(self.fill(index, pred, mask))
            if colour == TARGET:
                continue
            if self.lpips is not None:
                a, b = (to_signed(x).permute(2, 0, 1)[None].to(self.device) for x in (pred, self.target(index)))
                self.lpips_scores[name].setdefault(alpha, []).append(float(self.lpips(a, b)))
            if name == self.primary:
                first = pred
                continue
            sums = self.sums[name].setdefault(alpha, {})
            for key, value in self.evaluator(pred, self.target(index)).items():  # RGB, as the package passes it
                sums[key] = sums.get(key, 0.0) + float(value)
        return np.ascontiguousarray(first[..., ::-1])  # the package takes BGR

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


STROKE_COLOURS = ((40, 90, 220), (230, 57, 70), (60, 170, 80))  # blue, the demo brush's red, green
STROKE_WIDTH = 1 / 85  # of the drawing's width: 12 px at 1024 px, 3 px at 256 px, like the demo's brush


def stroke_across_shape(line: np.ndarray) -> tuple | None:
    """A painted stroke as a demo user draws one: the largest closed shape of the line art (H, W)
    uint8 that is not the paper (``fills.regions``; regions touching the border are paper), and a
    horizontal stroke across its middle row, from 1/5 to 4/5 of the shape's extent on that row.
    Returns (labels (H, W) int, shape id, (x0, y, x1)), or None when the drawing has no closed shape."""
    from .fills import ink_mask, regions
    from .strokes import border_labels

    labels, count = regions(ink_mask(line, line.shape))
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    areas[border_labels(labels)] = 0  # paper
    areas[0] = 0  # ink
    if not areas.any():
        return None
    shape = int(areas.argmax())
    ys, xs = np.nonzero(labels == shape)
    y = int(np.median(ys))
    row = xs[ys == y]
    margin = (row.max() - row.min()) // 5
    return labels, shape, (int(row.min() + margin), y, int(row.max() - margin))


def stroke_fill(colour: Callable, root: Path, split: str = "test", max_items: int = 0, progress: bool = True) -> dict:
    """"One stroke colours its whole shape", measured on the drawings of ``split``: for each, a
    stroke across its largest closed shape (``stroke_across_shape``) in each of STROKE_COLOURS, and
    the share of the shape whose output lies within FILL_DELTA_E of the stroke's colour (the fill
    rate), with the shape's median ΔE to it (how near a shape that is not "taken" came).
    ``colour`` as for ``Scorer``. Drawings without a closed shape are counted, not scored."""
    from PIL import ImageDraw

    rates, medians, skipped = {c: [] for c in STROKE_COLOURS}, {c: [] for c in STROKE_COLOURS}, 0
    for record in tqdm(take(read_manifest(root, split), max_items), desc=f"stroke fill {split}",
                       dynamic_ncols=True, disable=not progress):
        with Image.open(Path(root) / record["line"]) as im:
            line = im.convert("L")
        probe = stroke_across_shape(np.asarray(line))
        if probe is None:
            skipped += 1
            continue
        labels, shape, (x0, y, x1) = probe
        for rgb in STROKE_COLOURS:
            hints = Image.new("RGBA", line.size, (0, 0, 0, 0))
            ImageDraw.Draw(hints).line((x0, y, x1, y), fill=(*rgb, 255), width=max(2, round(line.width * STROKE_WIDTH)))
            pred = np.asarray(colour(line, hints), dtype=np.uint8)
            distance = delta_e(pred, np.broadcast_to(np.array(rgb, np.uint8), pred.shape))[labels == shape]
            rates[rgb].append(float(np.mean(distance < FILL_DELTA_E)))  # as fill_rates, for one region
            medians[rgb].append(float(np.median(distance)))
    everything = [r for values in rates.values() for r in values]
    mean = lambda values: float(np.mean(values)) if values else None  # noqa: E731
    return {"items": len(everything) // len(STROKE_COLOURS), "skipped_no_closed_shape": skipped,
            "mean": mean(everything), "share_over_half": mean([rate > 0.5 for rate in everything]),
            "median_delta_e": mean([m for values in medians.values() for m in values]),
            "per_colour": {"#%02x%02x%02x" % rgb: {"fill": mean(rates[rgb]), "median_delta_e": mean(medians[rgb])}
                           for rgb in STROKE_COLOURS},
            "stroke_width": STROKE_WIDTH, "fill_delta_e": FILL_DELTA_E}


def stroke_summary(stroke: dict) -> str:
    """One line for ``stroke_fill``'s result."""
    head = (f"Stroke across the largest closed shape ({stroke['items']} drawings, "
            f"{stroke['skipped_no_closed_shape']} without one)")
    if stroke["mean"] is None:
        return f"{head}: nothing to score."
    return (f"{head}: mean fill {stroke['mean']:.3f} (ΔE < {stroke['fill_delta_e']:g}), more than half filled in "
            f"{stroke['share_over_half']:.1%}, median ΔE {stroke['median_delta_e']:.1f}.")


def evaluate(colours: dict, root: Path, split: str = "test", hint_type: str = "scribble", max_items: int = 0,
             lpips=None, device="cpu", progress: bool = True) -> dict:
    """Hint-AUC of each colouring method of ``colours`` (see ``Scorer``) on ``split`` of the
    prepared folder ``root`` -> {name: report}: the per-alpha metrics and AUCs (none for TARGET),
    the protocol record, and per alpha the mean region fill rate (scribbles) and LPIPS (when
    ``lpips`` is given)."""
    hintauc = _package()
    if hint_type not in HINT_TYPES:
        raise ValueError(f"hint type {hint_type!r}: choose from {', '.join(HINT_TYPES)}")
    if next(iter(colours.values())) == TARGET:
        raise ValueError("the first method is the one the package scores: it cannot be the target itself")
    records = take(read_manifest(root, split), max_items)
    if not records:
        raise ValueError(f"the {split} split of {root} is empty (see {Path(root) / 'report.json'})")
    pairs = [(Path(root) / r["line"], Path(root) / r["color"]) for r in records]
    evaluator = hintauc.Evaluator(metrics=METRICS)
    scorer = Scorer(colours, [c for _, c in pairs], hint_type, evaluator, lpips, device)
    samples = tqdm(pairs, desc=f"hint-auc {split}", dynamic_ncols=True, disable=not progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the package's backends warn about optional extras
        result = hintauc.evaluate_colorizer(scorer, ((str(a), str(b)) for a, b in samples), hint_type=hint_type,
                                            metrics=METRICS, evaluator=evaluator, size=HINT_MAP_SIZE,
                                            path_method=PATH_METHOD)
    alphas, items = [float(a) for a in result["alphas"]], int(result["n_images"])
    reports = {}
    for name, colour in colours.items():
        if name == scorer.primary:
            per_alpha = {a: {k: float(v) for k, v in result["per_alpha"][a].items()} for a in alphas}
        elif colour == TARGET:
            per_alpha = {a: {} for a in alphas}
        else:  # the package's mean over the images, of the sums scored here
            per_alpha = {a: {k: v / items for k, v in scorer.sums[name][a].items()} for a in alphas}
        rates, lpips_scores = scorer.rates[name], scorer.lpips_scores[name]
        curve = [{"alpha": a, **per_alpha[a],
                  **({"pooled_psnr": pooled_psnr(per_alpha[a]["mse"])} if "mse" in per_alpha[a] else {}),
                  "fill_rate": float(np.mean(rates[a])) if rates.get(a) else None,
                  "scribbles": len(rates.get(a, [])),
                  **({"lpips": float(np.mean(lpips_scores[a]))} if lpips_scores.get(a) else {})}
                 for a in alphas]
        auc = {} if colour == TARGET else {k: float(v) for k, v in hintauc.hint_auc_table(per_alpha).items()}
        if auc:
            auc["pooled_psnr"] = float(hintauc.hint_auc({row["alpha"]: row["pooled_psnr"] for row in curve}))
        if lpips_scores:
            auc["lpips"] = float(hintauc.hint_auc({row["alpha"]: row["lpips"] for row in curve}))
        reports[name] = {"items": items, "hint_type": hint_type, "auc": auc, "curve": curve,
                         "fill_delta_e": FILL_DELTA_E, "protocol": result["protocol"]}
    return reports


def pooled_psnr(mse: float) -> float:
    """PSNR (dB) of a mean squared error over the images (the package's "mse", images in [0, 1]):
    the pooled PSNR, which the images with the largest errors dominate, where the protocol's mean
    of per-image PSNRs rewards near-exact images without bound. Capped at 100 dB (mse 0)."""
    return float(10 * np.log10(1 / max(mse, 1e-10)))


def model_colour(model, fill: bool = False, propagate: bool = True, tolerance: float = STROKE_TOLERANCE) -> Callable:
    """``Colorizer.colorize`` as a Scorer colouring function: the hints as painted strokes
    (``tolerance``: the strokes' ΔE tolerance, ``strokes.paint``'s)."""
    return lambda line, hints: np.asarray(model.colorize(line, hints=hints, fill=fill, propagate=propagate,
                                                         tolerance=tolerance))


def peer_colour(line, hints) -> np.ndarray:
    """The classical peer (LazyBrush's family): the stroke propagation alone, no network, on white
    paper, with the lines multiplied back (``strokes.propagate``), painting flat (tolerance 0: the
    tolerance keeps a network's colour near the paint, and white paper is no network's)."""
    from .composite import enlarge, multiply
    from .fills import region_grid
    from .inference import hints_to_arrays
    from .strokes import propagate

    art = np.asarray(line)
    paper = torch.ones(3, *art.shape)
    if hints is not None:
        paper = propagate(paper, art, *hints_to_arrays(hints, region_grid(*art.shape)), tolerance=0.0)
    return multiply(enlarge(paper, art.shape), art)


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
    """One row per method: AUCs and PSNR at each alpha; then the fill rate at each alpha, as it is
    and as a share of the ceiling's (the target itself, when it was scored)."""
    first = next(iter(reports.values()))
    alphas = [row["alpha"] for row in first["curve"]]
    ceiling = reports.get("ceiling")
    head = ("| method | PSNR-AUC | SSIM-AUC | LPIPS-AUC | pooled PSNR-AUC | "
            + " | ".join(f"PSNR {a:g}" for a in alphas) + " |")
    lines = [f"Hint-AUC ({first['hint_type']} hints, {first['items']} images of `{data}` {split}):", "", head,
             "|" + "---|" * (5 + len(alphas))]
    for name, r in reports.items():
        if not r["auc"]:
            continue  # the ceiling: scored for its fill rate only
        lpips = f"{r['auc']['lpips']:.4f}" if "lpips" in r["auc"] else "n/a"
        psnrs = " | ".join(f"{row['psnr']:.2f}" for row in r["curve"])
        pooled = f"{r['auc']['pooled_psnr']:.3f}" if "pooled_psnr" in r["auc"] else "n/a"
        lines.append(f"| {name} | {r['auc']['psnr']:.3f} | {r['auc']['ssim']:.4f} | {lpips} | {pooled} | {psnrs} |")
    if first["hint_type"] != "scribble":
        return "\n".join(lines)
    lines += ["", f"Region fill rate (share of each scribble's region within ΔE {FILL_DELTA_E:g} of its colour)"
              + ("; in brackets, divided by the ceiling's (the target itself)" if ceiling else "") + ":", "",
              "| method | " + " | ".join(f"fill {a:g}" for a in alphas[1:]) + " |", "|" + "---|" * len(alphas)]
    for name, r in reports.items():
        cells = []
        for i, row in enumerate(r["curve"][1:], 1):
            rate = row["fill_rate"]
            top = ceiling["curve"][i]["fill_rate"] if ceiling else None
            cells.append("n/a" if rate is None else f"{rate:.3f}" + (f" ({rate / top:.2f})" if top else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(model, root: Path, split: str = "test", hint_type: str = "scribble", max_items: int = 0,
        extra=None, baselines: bool = True, progress: bool = True, tolerances: tuple = ()) -> dict:
    """The protocol on one folder: the model as ``Colorizer.colorize`` runs it by default (the network
    with the stroke propagation), the network alone, the network with flat fills, the classical
    peer, and, with ``baselines``, the trivial baselines, the package's oracle region fill (each
    hinted region of the target in its hint colour: a reference that reads the answer) and the
    ceiling (the target itself). ``tolerances``: more rows, the default path with the strokes at
    each of these ΔE tolerances (``strokes.paint``), named "model_tolerance_<t>"."""
    lpips = getattr(extra, "lpips", None)
    methods = {"model": model_colour(model), "network": model_colour(model, propagate=False),
               "network_flat_fills": model_colour(model, fill=True, propagate=False), "peer": peer_colour,
               **{f"model_tolerance_{t:g}": model_colour(model, tolerance=t) for t in tolerances}}
    if baselines:
        methods.update({**baseline_colours(root), "oracle_fill": ORACLE, "ceiling": TARGET})
    reports = evaluate(methods, root, split, hint_type, max_items, lpips, model.device, progress)
    return {"protocol": "hint-auc", "data": str(root), "split": split, "step": model.step,
            "stroke_fill": stroke_fill(methods["model"], root, split, max_items, progress),
            "run_name": model.run_name, "path_method": PATH_METHOD, "published_context": PUBLISHED,
            "lpips": "computed" if lpips is not None else (extra.status["lpips"] if extra is not None else
                                                           "not computed: disabled"),
            "methods": reports}
