"""A fine-tune blended back toward the model it started from, in weight space (WiSE-FT):
``python -m colorizer.interpolate --parent models/demo --child runs/NAME/export --alpha 0.5 --out DIR``.

Fine-tuning on new data forgets some of the old: the mix fine-tune of issue 32 gained 3 dB on the
new sets and lost 0.5 dB hintless and 1.6 dB with hints on OpenMoji. Averaging the weights of a
fine-tune with its parent, ``(1 - alpha) * parent + alpha * child``, keeps much of both (Wortsman et
al., "Robust fine-tuning of zero-shot models", CVPR 2022; it works because a fine-tune stays in its
parent's basin). ``alpha`` is a model-selection knob: choose it on the val split, never on test.

Every floating-point tensor is blended, batch-norm running statistics included (an approximation:
the statistics of the blended network are not the blend of the two networks' statistics, which is
why the result must be evaluated like any other model). Integer tensors (batch norm's step counter)
are the child's. The child must be a fine-tune of the parent: same architecture (``model``
section), same tensor names and shapes, or a ModelLoadError names what differs. A child grown from
its parent (``models.grown_state``: a ``unet_features`` fine-tune of a plain U-Net, or a fine-tune that
grew a colour head) blends with the parent as it grew: the frozen ImageNet features unchanged, their
projection and a grown colour head from zero (alpha x the child's). A grown head's colours, the annealed
mean of its logits, flatten toward grey as alpha falls: the parent had no head to blend toward
(``--colour-decode regression`` shows the blend's regression output instead).

Writes an export folder (``generator.safetensors`` + ``config.json``) that the demo, ``evaluate``
and ``train.init`` read like any other. Its config is the child's, with its lineage: ``parent`` as
the child's (the model it was fine-tuned from, with that model's own ancestors: ``read_parent``) and
``interpolation``: alpha and the hash, step and run of both models blended. The parent blended with
may be the child's parent or an older ancestor (a fine-tune of a fine-tune stays in the basin).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .checkpoint import (ARCHITECTURE_KEYS, CheckpointError, ModelLoadError, ParentModel, check_compatible,
                         export_generator, read_parent)
from .config import COLOUR_DECODES
from .data import data_credits, inherited_credits
from .models import grown_state


def blend(parent: dict, child: dict, alpha: float) -> dict:
    """``(1 - alpha) * parent + alpha * child`` for each floating-point tensor of two state dicts with
    the same names and shapes; integer tensors are the child's. ValueError if alpha is outside [0, 1],
    ModelLoadError naming the tensors that do not match."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0: the parent, 1: the fine-tune), got {alpha}")
    only_parent, only_child = sorted(set(parent) - set(child)), sorted(set(child) - set(parent))
    shapes = sorted(k for k in set(parent) & set(child) if parent[k].shape != child[k].shape)
    if only_parent or only_child or shapes:
        raise ModelLoadError("the two models are not one architecture, so their weights cannot be blended: "
                             + "; ".join(f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                                         for what, keys in (("only in the parent", only_parent),
                                                            ("only in the child", only_child),
                                                            ("different shapes", shapes)) if keys))
    return {k: torch.lerp(parent[k].float(), v.float(), alpha) if torch.is_floating_point(v) else v.clone()
            for k, v in child.items()}


def interpolate(parent: ParentModel, child: ParentModel, alpha: float, out_dir: Path,
                colour_decode: str | None = None) -> Path:
    """Blend ``child``'s EMA generator toward ``parent``'s (``blend``) and export it to ``out_dir``, showing
    its colours by ``colour_decode`` (``model.colour_decode``; default: the child's)."""
    if colour_decode is not None and colour_decode not in COLOUR_DECODES:
        raise ValueError(f"colour_decode={colour_decode!r}: choose one of {', '.join(COLOUR_DECODES)}")
    ours, theirs = parent.config.get("model", {}), child.config.get("model", {})
    grown = grown_state(parent.generator_ema, ours, theirs, child.generator_ema)
    parent_weights = parent.generator_ema
    if grown is not None:  # a grown child: the parent as the child's architecture, new parts at zero
        parent_weights, ours = grown
    try:  # a key the older model's config lacks holds its default; DISPLAY_KEYS may differ
        check_compatible({"model": ours}, {"model": theirs}, Path(parent.record["path"]), keys=ARCHITECTURE_KEYS,
                         advice=f"(the parent's value vs the child's) {child.record['path']} is no fine-tune of it: "
                                f"blend a fine-tune with the model it started from (its train.init).")
    except CheckpointError as err:
        raise ModelLoadError(f"the parent and the child have different architectures: {err}") from None
    weights = blend(parent_weights, child.generator_ema, alpha)
    model = {**theirs, **({"colour_decode": colour_decode} if colour_decode else {})}
    lineage = {"parent": child.record["parent"]} if "parent" in child.record else {}  # with its ancestors
    config = {**child.config, "model": model, **lineage,
              "interpolation": {"alpha": alpha, "parent": parent.record, "child": child.record},
              "data_credits": data_credits((), inherited_credits(parent.config, parent.record)
                                           + inherited_credits(child.config, child.record))}
    name = f"{child.record['run_name']}-alpha{alpha:g}"
    return export_generator(out_dir, weights, config, child.record["step"], {},
                            str(child.config.get("perceptual_status", "unknown")), name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m colorizer.interpolate",
                                     description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("--parent", required=True, help="the model the fine-tune started from (export folder or .pt)")
    parser.add_argument("--child", required=True, help="the fine-tune (export folder or .pt)")
    parser.add_argument("--alpha", type=float, required=True,
                        help="the child's weight in [0, 1]: 0 is the parent, 1 the fine-tune; choose it on val")
    parser.add_argument("--out", required=True, help="the export folder to write")
    parser.add_argument("--colour-decode", choices=COLOUR_DECODES, default=None,
                        help="model.colour_decode of the blend (default: the child's); a head grown in the "
                             "child blends from zero, so its annealed colours flatten as alpha falls: "
                             "regression shows the blended network's own colours")
    args = parser.parse_args(argv)
    try:
        out = interpolate(read_parent(args.parent), read_parent(args.child), args.alpha, Path(args.out),
                          args.colour_decode)
    except (FileNotFoundError, ModelLoadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({args.alpha:g} x {args.child} + {1 - args.alpha:g} x {args.parent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
