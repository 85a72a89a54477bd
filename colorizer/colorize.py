"""Colour files and folders of line art from the command line, with the model loaded once.

    python -m colorizer.colorize drawings/ page3.png --out coloured/
    python -m colorizer.colorize drawings/ --out coloured/ --layers --palette "#e63946, #457b9d"

Inputs are image files, or folders searched recursively for them (the folder's layout is kept
under ``--out``). A drawing ``NAME.png`` may have painted hints beside it in ``NAME.hints.png``: an
RGBA image of the same size, transparent where there is no hint (as the page's hint layer), and
each stroke colours its whole shape unless ``--no-propagate``. Each drawing gives ``OUT/NAME.png``
(the colour with the drawing's own lines over it); ``--layers`` adds ``NAME.flat.png`` (the colour
alone) and ``NAME.lines.png`` (the lines alone, black on transparent); ``--psd`` writes
``NAME.psd``, the layers a paint program opens (``colorizer.psd``).

The model loads once, and colours drawings whose working sizes match in batches (``--batch-size``).
A file that cannot be coloured is reported and skipped, and the batch goes on; the exit code is 1
when any failed. Outputs are written atomically (never half a file: ``files.write_file``, as the demo
writes its results), and a drawing whose outputs are all there already is skipped unless
``--overwrite``, so an interrupted batch resumes where it stopped.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .checkpoint import LATEST, ModelLoadError, find_checkpoint
from .files import write_file
from .images import png_bytes
from .inference import DEFAULT_MAX_PIXELS, RESOLUTIONS, Colorizer, parse_palette
from .psd import psd_bytes

HINTS_SUFFIX = ".hints.png"  # NAME.hints.png beside NAME.png: that drawing's painted hints
LAYER_SUFFIXES = ("", ".flat", ".lines")  # OUT/NAME.png, NAME.flat.png, NAME.lines.png
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


@dataclass
class Drawing:
    """One input: its file, its hint file (or None) and its output path without the extension."""

    path: Path
    hints: Path | None
    out_stem: Path


@dataclass
class Summary:
    coloured: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # outputs already there
    failed: list = field(default_factory=list)  # (path, reason)


def hints_file(path: Path) -> Path:
    """Where the painted hints of drawing ``path`` live: NAME.hints.png beside NAME.ext."""
    return path.with_name(path.stem + HINTS_SUFFIX)


def find_drawings(inputs: list, out: Path) -> tuple:
    """The drawings named by ``inputs`` (files, or folders searched recursively, hint files left
    out) -> (drawings, missing: the inputs that do not exist). A folder's drawings keep its layout
    under ``out``; files given one by one go to ``out`` itself."""
    drawings, missing = [], []
    for given in map(Path, inputs):
        if given.is_dir():
            files = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and not p.name.endswith(HINTS_SUFFIX))
            pairs = [(p, p.relative_to(given).with_suffix("")) for p in files]
        elif given.is_file():
            pairs = [(given, Path(given.stem))]
        else:
            missing.append(given)
            continue
        for path, relative in pairs:
            hints = hints_file(path)
            drawings.append(Drawing(path, hints if hints.is_file() else None, out / relative))
    return drawings, missing


def outputs(drawing: Drawing, layers: bool, psd: bool = False) -> list:
    """The files a drawing gives: the composite, with ``layers`` the flat colour and the lines, with
    ``psd`` the layered PSD (``colorizer.psd``)."""
    suffixes = LAYER_SUFFIXES if layers else LAYER_SUFFIXES[:1]
    files = [drawing.out_stem.with_name(drawing.out_stem.name + suffix + ".png") for suffix in suffixes]
    return files + ([drawing.out_stem.with_name(drawing.out_stem.name + ".psd")] if psd else [])


def write_outputs(drawing: Drawing, layers, args) -> None:
    """Write a drawing's outputs (``outputs``) from its ``inference.Layers``, each atomically, the
    PNGs encoded as the demo encodes them (``images.png_bytes``); OSError when it cannot."""
    images = [layers.image, layers.flat, layers.lines] if args.layers else [layers.image]
    contents = png_bytes(images) + ([psd_bytes(layers)] if args.psd else [])
    for target, data in zip(outputs(drawing, args.layers, args.psd), contents):
        write_file(target, data)


def run(args) -> int:
    out = Path(args.out)
    drawings, missing = find_drawings(args.inputs, out)
    summary = Summary(failed=[(path, "no such file or folder") for path in missing])
    if not drawings and not missing:
        print(f"error: no drawings ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {', '.join(args.inputs)}",
              file=sys.stderr)
        return 2
    path = find_checkpoint(which=args.checkpoint)
    if path is None:
        print("error: no model found: pass --checkpoint PATH (an export folder or a checkpoint .pt), or train one "
              "with `python train.py`", file=sys.stderr)
        return 2
    try:
        model = Colorizer.load(path, device=args.device, max_pixels=args.max_pixels)  # once, for every drawing
    except (FileNotFoundError, ValueError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print(f"error: --batch-size must be at least 1, got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        parse_palette(args.palette or None, model.palette_size)  # once, not as a failure of every drawing
    except ValueError as err:
        print(f"error: --palette: {err}", file=sys.stderr)
        return 2
    todo = []
    for drawing in drawings:
        if not args.overwrite and all(target.is_file() for target in outputs(drawing, args.layers, args.psd)):
            summary.skipped.append(drawing.path)
        else:
            todo.append(drawing)
    options = dict(palette=args.palette or None, resolution=args.resolution, fill=args.fill,
                   propagate=not args.no_propagate, batch_size=args.batch_size)
    with tqdm(total=len(todo), desc="colorize", unit="drawing", dynamic_ncols=True, disable=args.quiet) as bar:
        for start in range(0, len(todo), args.batch_size):  # a batch in memory at a time
            chunk = todo[start: start + args.batch_size]
            results = model.colorize_layers_many([(d.path, d.hints) for d in chunk], **options)
            for drawing, layers in zip(chunk, results):
                try:
                    if isinstance(layers, Exception):
                        raise layers
                    write_outputs(drawing, layers, args)
                    summary.coloured.append(drawing.path)
                except (ValueError, TypeError, OSError) as err:  # one bad file never stops the batch
                    summary.failed.append((drawing.path, str(err)))
                bar.update(1)
    print(report(summary, out, model))
    return 1 if summary.failed else 0


def report(summary: Summary, out: Path, model: Colorizer) -> str:
    lines = [f"{len(summary.coloured)} coloured, {len(summary.skipped)} skipped (already in {out}; --overwrite "
             f"remakes them), {len(summary.failed)} failed; model: {model.info()}"]
    lines += [f"  failed: {path}: {reason}" for path, reason in summary.failed]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m colorizer.colorize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="line-art files, or folders of them (searched recursively)")
    parser.add_argument("--out", required=True, help="folder for the coloured images")
    parser.add_argument("--checkpoint", help=f"export folder or checkpoint .pt; {LATEST}: the newest runs/*/export "
                                             "(default: the bundled model, models/demo/)")
    parser.add_argument("--palette", default="", help='colours for every drawing, e.g. "#e63946, #457b9d"')
    parser.add_argument("--fill", action="store_true", help="flat fills: one colour per closed region")
    parser.add_argument("--no-propagate", action="store_true",
                        help="leave the hints to the network: strokes do not fill their shapes")
    parser.add_argument("--resolution", choices=RESOLUTIONS, default="model",
                        help="where the network runs: its training size (default) or the drawing's own")
    parser.add_argument("--layers", action="store_true", help="also write NAME.flat.png and NAME.lines.png")
    parser.add_argument("--psd", action="store_true", help="also write NAME.psd: flat colour, shading and line art "
                                                           "(Multiply) as layers a paint program opens")
    parser.add_argument("--overwrite", action="store_true", help="remake outputs that are already there")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="drawings the network colours at once when their working sizes match (default 8)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest accepted drawing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
