"""Learning-rate range test: ``python -m colorizer.lr_find [experiments/NAME.yaml] [--section.key=value ...]
[--start 1e-6] [--end 1e-1] [--steps 100] [--out lr_find.png]``.

Trains the configured generator and discriminator from scratch on real batches of the train split
(the training iteration itself, ``step.train_step``: D step, then G step) while the generator's learning rate rises
geometrically from --start to --end; the discriminator's follows at the config's lr_d / lr_g ratio.
Each step records G's total loss (gan_weight * adversarial + recon_weight * recon + perceptual_weight
* perceptual). The test stops early when the loss diverges: not finite, or its running average above
4x its best. Writes the plot (--out) and the values beside it (same name, .json) and prints the
suggested lr_g: where the smoothed loss falls fastest against log(lr), before its lowest point.
Hints follow the curriculum's first point (the mix training starts with).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .config import ConfigError, data_roots, parse_cli, to_dict
from .data import ensure_dataset, make_train_stream
from .runtime import DistInfo, TrainingError, pick_device, seed_everything
from .step import build_parts, prepare_inputs, train_step

DIVERGENCE = 4.0  # stop when the running loss exceeds this multiple of its best (the fastai rule)
RUNNING_BETA = 0.9  # EMA factor of that running loss: about 10 steps of memory, so one bad batch is no divergence
SMOOTHING_STEPS = 4.0  # std, in steps, of the Gaussian window that smooths the recorded curve


def lr_schedule(start: float, end: float, steps: int) -> list:
    """``steps`` learning rates from ``start`` to ``end``, evenly spaced in log(lr)."""
    return np.geomspace(start, end, steps).tolist()


def smooth(losses, sigma: float = SMOOTHING_STEPS) -> np.ndarray:
    """Gaussian-weighted average over neighbouring steps (std ``sigma`` steps), renormalised at the
    ends. Centred, so the curve is not shifted toward higher lr as a running average's lag would;
    short-tailed, so the blow-up at the end does not leak back into the descent."""
    values = np.asarray(losses, dtype=float)
    index = np.arange(values.size)
    weights = np.exp(-((index[:, None] - index[None, :]) ** 2) / (2 * sigma**2))  # (N, N)
    return weights @ values / weights.sum(1)


def suggest_lr(lrs, smoothed) -> float:
    """The lr where ``smoothed`` falls fastest against log(lr), among the points up to its lowest one
    (so never in the divergence); the first lr when the loss never falls."""
    lrs, smoothed = np.asarray(lrs, dtype=float), np.asarray(smoothed, dtype=float)
    lowest = int(np.argmin(smoothed))
    if lowest == 0:
        return float(lrs[0])
    slopes = np.gradient(smoothed[: lowest + 1], np.log(lrs[: lowest + 1]))
    return float(lrs[int(np.argmin(slopes))])


def range_test(cfg, lrs: list) -> dict:
    """Train from scratch with lr_g = lrs[i] at step i (``step.train_step``, as training runs it);
    returns the lrs reached, G's total loss at each, why the test stopped early (None if it did not)
    and the perceptual loss status."""
    device = pick_device(cfg.train.device, DistInfo())
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    roots = ensure_dataset(cfg.data, scribbles=cfg.hints.scribbles > 0)
    stream = make_train_stream(cfg, roots, DistInfo(), cfg.train.batch_size)
    parts = build_parts(cfg, device)
    d_ratio = cfg.train.lr_d / cfg.train.lr_g
    print(f"lr_find on {' + '.join(map(str, roots))} | device {device} | amp {parts.amp_dtype or 'fp32'} | "
          f"lr_d = {d_ratio:g} x lr_g | perceptual {parts.perceptual.status}", flush=True)

    seen, losses, stopped, running, best = [], [], None, 0.0, math.inf
    with tqdm(lrs, desc="lr_find", disable=not cfg.log.progress, dynamic_ncols=True) as bar:
        for step, lr in enumerate(bar):
            for optimizer, base, scale in ((parts.opt_g, cfg.train.lr_g, lr), (parts.opt_d, cfg.train.lr_d, lr * d_ratio)):
                for group in optimizer.param_groups:  # a pretrained encoder's group keeps its share of the rate
                    group["lr"] = scale * group["initial_lr"] / base
            line, color, hints, _ = prepare_inputs(parts, next(stream), 0.0)  # the hint mix training starts with
            result = train_step(parts, line, color, hints)
            loss = result.g_total.item()  # CPU-GPU sync point
            if not (result.ok and math.isfinite(loss)):
                failed = ", ".join(result.culprits()) or ("D" if not result.d_ok else "G") + " gradients"
                stopped = f"{failed} not finite at lr_g {lr:.3g}"
                break
            seen.append(lr)
            losses.append(loss)
            running = RUNNING_BETA * running + (1 - RUNNING_BETA) * loss
            running_loss = running / (1 - RUNNING_BETA ** (step + 1))  # bias-corrected: no pull toward 0 early on
            best = min(best, running_loss)
            bar.set_postfix(lr=f"{lr:.2e}", loss=f"{loss:.3f}", refresh=False)
            if running_loss > DIVERGENCE * best:
                stopped = (f"diverged at lr_g {lr:.3g}: running loss {running_loss:.3g} > {DIVERGENCE:g} x "
                           f"its best {best:.3g}")
                break
    if not losses:
        raise TrainingError(f"{stopped} on the very first step: lower --start, or check the config "
                            f"(train.amp=fp32, loss weights)")
    return {"lr": seen, "loss": losses, "stopped": stopped, "lr_d_ratio": d_ratio,
            "perceptual_status": parts.perceptual.status, "device": str(device)}


def plot(points: list, suggested: float, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs = [p["lr"] for p in points]
    raw, smoothed = np.array([p["loss"] for p in points]), np.array([p["smoothed"] for p in points])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(lrs, raw, c="0.7", lw=1, label="G total loss, per batch")
    ax.plot(lrs, smoothed, c="C0", lw=2, label="smoothed")
    ax.axvline(suggested, c="C3", ls="--", label=f"suggested lr_g {suggested:.2g}")
    # Show the whole descent, but not the divergence's tail, which would flatten everything else.
    lowest = int(np.argmin(smoothed))
    top = min(raw.max(), max(raw[: lowest + 1].max(), 2 * smoothed.min()))
    margin = 0.05 * max(top - raw.min(), 1e-12)
    ax.set_ylim(raw.min() - margin, top + margin)
    ax.set_xscale("log")
    ax.set_xlabel("generator learning rate (lr_d at the config's ratio)")
    ax.set_ylabel("G total loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m colorizer.lr_find", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Other arguments: [experiments/NAME.yaml] [--section.key=value ...], "
                                            "as for train.py.")
    parser.add_argument("--start", type=float, default=1e-6, help="first generator learning rate")
    parser.add_argument("--end", type=float, default=1e-1, help="last generator learning rate")
    parser.add_argument("--steps", type=int, default=100, help="training steps (one batch each)")
    parser.add_argument("--out", default="lr_find.png", help="plot; the values go beside it as .json")
    args, rest = parser.parse_known_args(argv)
    if not 0 < args.start < args.end or args.steps < 2:
        print("error: need 0 < --start < --end and --steps >= 2", file=sys.stderr)
        return 2
    try:
        cfg = parse_cli(rest)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        result = range_test(cfg, lr_schedule(args.start, args.end, args.steps))
    except (TrainingError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    smoothed = smooth(result["loss"])
    suggested = suggest_lr(result["lr"], smoothed)
    lowest_lr = result["lr"][int(np.argmin(smoothed))]
    points = [{"lr": lr, "loss": loss, "smoothed": float(value)}
              for lr, loss, value in zip(result["lr"], result["loss"], smoothed)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    values = out.with_suffix(".json")
    dataset = "+".join(root.name for root in data_roots(cfg.data))
    title = (f"{dataset}, {cfg.model.generator}{cfg.model.base_channels}, batch {cfg.train.batch_size}, "
             f"{cfg.loss.gan}: {result['stopped'] or 'no divergence'}")
    plot(points, suggested, title, out)
    values.write_text(json.dumps({
        "suggested_lr_g": suggested, "suggested_lr_d": suggested * result["lr_d_ratio"],
        "lowest_loss_lr_g": lowest_lr,
        "start": args.start, "end": args.end, "steps": args.steps, "stopped": result["stopped"],
        "lr_d_ratio": result["lr_d_ratio"], "device": result["device"],
        "perceptual_status": result["perceptual_status"], "points": points, "config": to_dict(cfg),
    }, indent=2))
    print(f"{len(points)} of {args.steps} steps, lr_g {points[0]['lr']:.3g} .. {points[-1]['lr']:.3g}; "
          f"{result['stopped'] or 'no divergence'}")
    print(f"smoothed loss lowest at lr_g {lowest_lr:.3g}; steepest fall at lr_g {suggested:.3g}")
    print(f"suggested: --train.lr_g={suggested:.2g} --train.lr_d={suggested * result['lr_d_ratio']:.2g}")
    print(f"wrote {out} and {values}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
