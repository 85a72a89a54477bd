"""Gradio demo and API for a trained colorizer: upload line art, optionally paint hints or pick a
palette, get it coloured.

    python serve.py                                  # the bundled model, models/demo/
    python serve.py --checkpoint latest              # the newest runs/*/export
    python serve.py --checkpoint runs/NAME/export    # or a training checkpoint .pt
    python serve.py --host 0.0.0.0 --auth user:pass  # reachable from other machines, with a login

Uploads are limited to --max-file-mb each (Gradio refuses a larger one while it arrives) and the
upload and result cache to --max-cache-mb in all (oldest files deleted first): ``colorizer.files``
decodes the uploads within their limits and keeps the cache.

Paths given without --checkpoint (runs/, models/demo/, data/openmoji256/) are relative to the
current directory: run it from the repository root. Training code is never imported here.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional

import gradio as gr
from PIL import Image
from starlette.middleware import Middleware

from colorizer.checkpoint import DEMO_MODEL, EXPORT_CONFIG, EXPORT_DIR, LATEST, RUNS_DIR, find_checkpoint
from colorizer.config import data_roots
from colorizer.files import (CACHE_ROOM, MIB, CacheLimit, cache_files, editor_images, editor_layer, kept_files,
                             open_upload)
from colorizer.hints import HintMode
from colorizer.images import png_bytes
from colorizer.inference import DEFAULT_MAX_PIXELS, Colorizer, parse_color, parse_palette
from colorizer.psd import psd_bytes

log = logging.getLogger("colorizer.serve")

# What the page and the API call each hint mode, in the order the page offers them.
MODE_LABELS = {HintMode.NONE: "automatic", HintMode.PALETTE: "palette", HintMode.SPATIAL: "painted hints"}
LABEL_MODES = {label: mode for mode, label in MODE_LABELS.items()}
EXAMPLES_ROOT = Path("data/openmoji256")  # examples when the model's own dataset folder is not here
EXAMPLES_DIR = "examples"  # line-art PNGs shipped beside an export (models/demo/examples), for a fresh clone
FLAT_FILL_DEFAULT = False  # flat fills off unless asked: see experiments/RESULTS.md, "Flat fills"
PROPAGATE_DEFAULT = True  # strokes colour their whole shape: see experiments/RESULTS.md, "Stroke propagation"
LAYER_NAMES = ("colorized", "colorized_flat", "colorized_lines")  # download names: composite, colour, lines
ATTRIBUTION = "OpenMoji, the open-source emoji and icon project, CC BY-SA 4.0"
BRUSH_COLORS = ["#e63946", "#f4a261", "#ffd166", "#2a9d8f", "#57cc99", "#4361ee", "#9b5de5", "#f7c6a3",
                "#8d5524", "#6c757d"]
NO_MODEL_HELP = ("no trained model found: looked for models/demo/ and runs/*/export/config.json under {cwd}. "
                 "Train one with `python train.py` (it exports to runs/NAME/export), or pass "
                 "`--checkpoint PATH` (an export folder or a checkpoint .pt).")
NO_RUN_HELP = ("--checkpoint latest: no trained run found (runs/*/export/config.json under {cwd}). Train one with "
               "`python train.py`, or leave --checkpoint out to serve the bundled model.")


def describe_model(path: Path) -> str:
    """A picker label from an export's config.json, without loading its weights: its name, steps
    and validation colour-region PSNR (hintless), or why it cannot be read."""
    path = Path(path)
    if path.name == EXPORT_CONFIG:
        path = path.parent
    if not path.is_dir():
        return f"{path.name}: a training checkpoint ({path})"
    try:
        meta = json.loads((path / EXPORT_CONFIG).read_text())
        step = int(meta.get("step", 0))
        psnr = (meta.get("metrics") or {}).get("val/none/psnr_color")
    except (OSError, ValueError, TypeError, AttributeError):
        return f"{path} (config.json unreadable)"
    name = "bundled model" if path.resolve() == DEMO_MODEL.resolve() else (meta.get("run_name") or path.parent.name)
    shown = f", val PSNR colour {float(psnr):.2f} dB" if isinstance(psnr, (int, float)) else ", no validation"
    return f"{name}: {step:,} steps{shown} ({path})"


def model_choices(root: Path = Path("."), served: Optional[Path] = None) -> list:
    """(label, path) pairs for the page's model picker: the served model first, then the bundled
    model and every runs/*/export, newest first. Only these paths can be chosen on the page."""
    exports = sorted((root / RUNS_DIR).glob(f"*/{EXPORT_DIR}/{EXPORT_CONFIG}"), key=lambda p: -p.stat().st_mtime)
    candidates = ([served] if served is not None else []) + [root / DEMO_MODEL] + [p.parent for p in exports]
    choices, seen = [], set()
    for path in candidates:
        key = Path(path).resolve()
        if key in seen or not (Path(path) / EXPORT_CONFIG).is_file() and path != served:
            continue
        seen.add(key)
        choices.append((describe_model(Path(path)), str(path)))
    return choices


class ModelShelf:
    """The served model and the others the page's picker offers, each loaded on first use (on the
    served model's device, with its pixel limit) and kept: a switch back costs nothing. The first
    of ``choices`` must be the served model's path."""

    def __init__(self, served: Colorizer, choices: Optional[list] = None):
        self.served = served
        self.choices = list(choices or [(served.info(), served.source)])
        self.loaded = {self.choices[0][1]: served}
        self._lock = threading.Lock()

    def get(self, path: Optional[str]) -> Colorizer:
        """The model at ``path`` (one of ``choices``; None or "" = the served model); gr.Error otherwise."""
        if not path:
            return self.served
        if path not in {offered for _, offered in self.choices}:
            raise bad_input(f"model {path!r} is not one this demo offers")
        with self._lock:
            if path not in self.loaded:
                try:
                    self.loaded[path] = Colorizer.load(path, device=self.served.device,
                                                       max_pixels=self.served.max_pixels)
                except (FileNotFoundError, ValueError) as err:
                    raise bad_input(f"cannot load {path}: {err}") from None
                log.info("loaded %s from %s", self.loaded[path].info(), path)
            return self.loaded[path]


def find_examples(data_root: Path = EXAMPLES_ROOT, limit: int = 8) -> list:
    """Line-art paths of the prepared dataset's test split (empty, with a log line, if there is none)."""
    manifest = data_root / "manifest.jsonl"
    if not manifest.is_file():
        log.info("no examples: %s not found (training prepares it, or "
                 "`python -m data_prep openmoji --out data/openmoji256`)", manifest)
        return []
    examples = []
    with open(manifest) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            path = data_root / str(record.get("line", ""))
            if record.get("split") == "test" and path.is_file():
                examples.append(str(path))
            if len(examples) >= limit:
                break
    if not examples:
        log.info("no examples: %s lists no readable test-split line art", manifest)
    return examples


def examples_for(colorizer: Colorizer, model_dir: Optional[Path] = None) -> list:
    """Example drawings: from the test split of the data the model was trained on when that folder
    (the first of a mix that is) is here (a model trained at 96 px gets 96 px examples), else the PNGs
    shipped beside the model (``model_dir/examples``, as models/demo has), else from EXAMPLES_ROOT's
    test split."""
    for own_data in data_roots(colorizer.config.data):
        if (own_data / "manifest.jsonl").is_file():
            return find_examples(own_data)
    shipped = sorted(str(p) for p in (Path(model_dir) / EXAMPLES_DIR).glob("*.png")) if model_dir else []
    return shipped or find_examples(EXAMPLES_ROOT)


def bad_input(message: str) -> gr.Error:
    """A request the app refuses: the message goes to the page or API client, one line to the log."""
    log.info("refused: %s", message)
    return gr.Error(message, print_exception=False)


def checked(read, *args):
    """``read(*args)``; its ValueError (a bad upload or value, the message naming it and saying what
    is wrong) is refused as ``bad_input``."""
    try:
        return read(*args)
    except ValueError as err:
        raise bad_input(str(err)) from None


def decode_uploads_safely(editor: gr.ImageEditor, max_pixels: int) -> gr.ImageEditor:
    """Make ``editor`` decode its uploaded layers with ``files.editor_layer``: the pixel limit is
    checked from the header before decoding (Gradio's own editor decodes first, whatever the size),
    an unreadable file gets an error naming it instead of Gradio's generic "could not preprocess",
    and the line art's EXIF orientation is applied. It replaces the instance's
    ``convert_and_format_image`` (a subclass would make Gradio write a serve.pyi stub beside this
    file at every start)."""

    def convert_and_format_image(file, flatten_on_white: bool = False):
        return checked(editor_layer, file, flatten_on_white, max_pixels)

    editor.convert_and_format_image = convert_and_format_image
    return editor


def run_colorizer(colorizer: Colorizer, line_art: Image.Image, hints, palette: str, label: str,
                  layers: bool = True, fill=False, propagate=PROPAGATE_DEFAULT):
    """Apply the mode labelled ``label`` -> ``inference.Layers``, or with ``layers=False`` the
    composite image alone (what the single-image endpoints return); ``fill``: flat fills, one colour
    per closed region; ``propagate``: each painted stroke colours its whole shape. The hints as
    ``mode_hints`` takes them."""
    if fill is None:
        fill = False
    if not isinstance(fill, bool):
        raise bad_input(f"flat_fill must be true or false, got {fill!r}")
    if propagate is None:
        propagate = PROPAGATE_DEFAULT
    if not isinstance(propagate, bool):
        raise bad_input(f"propagate must be true or false, got {propagate!r}")
    hints, palette = mode_hints(colorizer, hints, palette, label)
    try:
        colour = colorizer.colorize_layers if layers else colorizer.colorize
        return colour(line_art, hints=hints, palette=palette, fill=fill, propagate=propagate)
    except (ValueError, TypeError) as err:
        raise bad_input(str(err)) from None


def mode_hints(colorizer: Colorizer, hints, palette: str, label: str) -> tuple:
    """The hints the mode labelled ``label`` uses -> (hints or None, palette or None). Automatic uses
    painted strokes when there are any (it is painted hints then) and ignores the palette; each
    hinted mode needs its hint; palette mode with strokes says, on the page, that it left them out."""
    if not isinstance(label, str) or label not in LABEL_MODES:
        raise bad_input(f"mode {label!r} is not one of {', '.join(LABEL_MODES)}")
    mode = LABEL_MODES[label]
    if mode == HintMode.NONE and hints is not None:
        mode = HintMode.SPATIAL  # strokes are never ignored silently
    if mode == HintMode.PALETTE and hints is not None:
        gr.Warning("palette mode uses the palette only: your painted strokes were left out "
                   "(choose painted hints to use them)")
    if mode == HintMode.PALETTE:
        if not checked(parse_palette, palette or "", colorizer.palette_size):
            raise bad_input("palette mode needs at least one colour, e.g. '#e63946, #457b9d'")
    if mode == HintMode.SPATIAL and hints is None:
        raise bad_input("painted hints mode: paint some strokes on the 'hints' layer first")
    return (hints if mode == HintMode.SPATIAL else None), (palette if mode == HintMode.PALETTE else None)


def suggest_colours(colorizer: Colorizer, line_art: Image.Image, hints, palette: str, label: str, x, y,
                    count=6) -> list:
    """The likeliest colours at (``x``, ``y``) of the drawing (``Colorizer.suggest``) with the mode's
    hints -> [{"colour": "#rrggbb", "probability": p}]; a gr.Error saying why when there are none."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y, count)) or count < 1:
        raise bad_input(f"x, y and count must be numbers (count >= 1), got {x!r}, {y!r}, {count!r}")
    hints, palette = mode_hints(colorizer, hints, palette, label)
    try:
        found = colorizer.suggest(line_art, float(x), float(y), hints=hints, palette=palette, count=int(count))
    except (ValueError, TypeError) as err:
        raise bad_input(str(err)) from None
    return [{"colour": colour, "probability": round(p, 4)} for colour, p in found]


def swatches_html(found: list) -> str:
    """Suggested colours as swatches: a coloured square, the hex code and the probability each."""
    return "".join(f'<span class="swatch" title="{s["colour"]}" style="display:inline-block;margin:2px 8px 2px 0">'
                   f'<span style="display:inline-block;width:18px;height:18px;vertical-align:middle;border:1px solid '
                   f'#888;background:{s["colour"]}"></span> {s["colour"]} {100 * s["probability"]:.0f} %</span>'
                   for s in found)


def exposure_warning(host: str, auth, share: bool) -> Optional[str]:
    """What an unauthenticated demo reachable from other machines risks, or None when it is local or
    needs a login."""
    if auth:
        return None
    if share:
        return ("--share without --auth: anyone with the public gradio.live link can upload files "
                "and use this machine's CPU/GPU. Add --auth USER:PASS.")
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host == "localhost"
    if local:
        return None
    return (f"--host {host} without --auth: anyone who can reach this machine can use the demo and its "
            f"API, upload files (up to --max-file-mb each, --max-cache-mb in all) and use its CPU/GPU. "
            f"Add --auth USER:PASS, or serve on 127.0.0.1.")


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, auth=None, share: bool = False,
           max_file_mb: float = 25.0, max_cache_mb: float = 1024.0, prevent_thread_lock: bool = False) -> None:
    """Start the app with the upload limits: each file at most ``max_file_mb`` (Gradio's
    ``max_file_size``: a larger upload is refused with HTTP 413 while it arrives, never stored in
    full), the cache (``demo.GRADIO_CACHE``) at most ``max_cache_mb`` (CacheLimit)."""
    demo.cache_limit = int(max_cache_mb * MIB)  # the endpoints trim to it after writing a result
    middleware = [Middleware(CacheLimit, demo=demo, max_bytes=demo.cache_limit)]
    demo.launch(server_name=host, server_port=port, share=share, auth=auth, show_error=True,
                quiet=prevent_thread_lock, max_file_size=int(max_file_mb * MIB), app_kwargs={"middleware": middleware},
                prevent_thread_lock=prevent_thread_lock)


def model_facts(colorizer: Colorizer, examples_shown: bool = False) -> str:
    """Markdown: the model's one-line facts, the credits of its training data (the ``data_credits``
    training records, the parent's included), and the OpenMoji credit its CC BY-SA licence asks for
    wherever its drawings (as training data or as the examples) are used."""
    text = f"**Model:** {colorizer.info()}"
    credits = [str(c) for c in colorizer.notes.get("data_credits") or []]
    if colorizer.trained_on_openmoji and ATTRIBUTION not in credits:
        credits.insert(0, ATTRIBUTION)
    if credits:
        text += "  \n**Training data:** " + " · ".join(f"{c} (https://openmoji.org)" if c == ATTRIBUTION else c
                                                      for c in credits)
    if examples_shown and ATTRIBUTION not in credits:
        text += f"  \n**Examples:** {ATTRIBUTION} (https://openmoji.org)"
    return text


def build_demo(colorizer: Colorizer, examples: Optional[list] = None, queue_size: int = 16,
               concurrency: int = 1, keep_files_s: int = 24 * 3600, choices: Optional[list] = None) -> gr.Blocks:
    """The app: editor (line art + a 'hints' layer), palette, mode, flat fills, strokes filling their
    shapes, a model picker over ``choices`` ((label, path) pairs, ``model_choices``; the served
    ``colorizer`` first), Colorize and Layered PSD, suggested colours from a click on the result;
    endpoints /colorize (editor value), /colorize_file, /colorize_layers, /colorize_psd and
    /suggest_colours (image files), all on a bounded queue, the API
    on the served model. Uploads and results older than ``keep_files_s`` are
    deleted (checked hourly), so a long-running demo's disk use stays bounded too."""
    shelf = ModelShelf(colorizer, choices)

    def save_results(named: list) -> list:
        """(filename, bytes) pairs -> their paths in the cache, held to launch()'s limit after."""
        return cache_files(named, demo.GRADIO_CACHE, getattr(demo, "cache_limit", 0), kept_files(demo))

    def save_images(images) -> list:
        """PNG paths of ``images`` in the cache, named by LAYER_NAMES in order (the composite first)."""
        images = list(images)
        return save_results([(f"{name}.png", data) for name, data in zip(LAYER_NAMES, png_bytes(images))])

    def save_layers(layers) -> list:
        """The composite, the flat colour and the line layer as PNG paths, in that order."""
        return save_images((layers.image, layers.flat, layers.lines))

    def save_psd(layers) -> str:
        """The layered PSD of ``layers`` (``psd.psd_bytes``) -> its path in the cache."""
        return save_results([(f"{LAYER_NAMES[0]}.psd", psd_bytes(layers))])[0]

    def colorize_page(editor: dict, mode: str, palette: str, flat_fill: bool, model: str,
                      propagate: bool = PROPAGATE_DEFAULT) -> tuple:
        """The page's Colorize button, with the picked model -> (the composite's path, every layer's path)."""
        line_art, hints = checked(editor_images, editor)
        paths = save_layers(run_colorizer(shelf.get(model), line_art, hints, palette, mode, fill=flat_fill,
                                          propagate=propagate))
        return paths[0], paths

    def show_model(model: str) -> str:
        """The picker's choice -> the facts line of the model now live on this page."""
        return model_facts(shelf.get(model), examples_shown=bool(examples))

    def colorize(editor: dict, mode: str, palette: str, flat_fill: bool = FLAT_FILL_DEFAULT,
                 propagate: bool = PROPAGATE_DEFAULT) -> str:
        """The /colorize API: the editor's value -> the composite's path (the layers: /colorize_layers)."""
        line_art, hints = checked(editor_images, editor)
        return save_images([run_colorizer(colorizer, line_art, hints, palette, mode, layers=False,
                                          fill=flat_fill, propagate=propagate)])[0]

    def file_inputs(line_art, hints, palette, mode) -> tuple:
        """The file endpoints' inputs, checked -> (line art, hint image or None, palette, mode label)."""
        palette = "" if palette is None else palette
        mode = "" if mode is None else mode
        if not isinstance(palette, str) or not isinstance(mode, str):
            raise bad_input(f"palette and mode must be text, got {type(palette).__name__} and {type(mode).__name__}")
        image = checked(open_upload, line_art, "line art", demo.GRADIO_CACHE, colorizer.max_pixels)
        hint_image = checked(open_upload, hints, "hints image", demo.GRADIO_CACHE, colorizer.max_pixels) if hints \
            else None
        if not mode:
            mode = MODE_LABELS[HintMode.SPATIAL if hint_image is not None
                               else HintMode.PALETTE if (palette or "").strip() else HintMode.NONE]
        return image, hint_image, palette, mode

    def colorize_file(line_art: gr.FileData, hints: Optional[gr.FileData] = None, palette: str = "",
                      mode: str = "", flat_fill: bool = FLAT_FILL_DEFAULT,
                      propagate: bool = PROPAGATE_DEFAULT) -> gr.FileData:
        """Colour a line-art image file. hints: an RGBA image file of painted strokes, same size
        (transparent = no hint); palette: hex colours separated by commas; mode: automatic, palette
        or painted hints ("" = painted hints if hints are given, else palette if one is, else
        automatic); flat_fill: one colour per closed region of the line art (painted hints win in
        the regions they touch); propagate: each painted stroke colours the whole shape it lies in,
        up to the lines (default true). Returns a PNG file of the line art's size: the colour with
        the line art's own lines over it."""
        path = save_images([run_colorizer(colorizer, *file_inputs(line_art, hints, palette, mode), layers=False,
                                          fill=flat_fill, propagate=propagate)])[0]
        return gr.FileData(path=path, orig_name=f"{LAYER_NAMES[0]}.png")

    def colorize_layers(line_art: gr.FileData, hints: Optional[gr.FileData] = None, palette: str = "",
                        mode: str = "", flat_fill: bool = FLAT_FILL_DEFAULT,
                        propagate: bool = PROPAGATE_DEFAULT) -> list:
        """As colorize_file, but returns three PNG files of the line art's size, the layers an
        illustrator stacks: colorized.png (colour with the lines over it), colorized_flat.png (the
        colour alone, no lines) and colorized_lines.png (the lines only, black on transparent)."""
        paths = save_layers(run_colorizer(colorizer, *file_inputs(line_art, hints, palette, mode), fill=flat_fill,
                                          propagate=propagate))
        return [gr.FileData(path=path, orig_name=f"{name}.png") for path, name in zip(paths, LAYER_NAMES)]

    def colorize_psd(line_art: gr.FileData, hints: Optional[gr.FileData] = None, palette: str = "",
                     mode: str = "", flat_fill: bool = FLAT_FILL_DEFAULT,
                     propagate: bool = PROPAGATE_DEFAULT) -> gr.FileData:
        """As colorize_file, but returns colorized.psd, one file a paint program opens with the layers:
        the flat colour, the model's shading (Linear Light) and the line art (Multiply)."""
        layers = run_colorizer(colorizer, *file_inputs(line_art, hints, palette, mode), fill=flat_fill,
                               propagate=propagate)
        return gr.FileData(path=save_psd(layers), orig_name=f"{LAYER_NAMES[0]}.psd")

    def page_psd(editor: dict, mode: str, palette: str, flat_fill: bool, model: str,
                 propagate: bool = PROPAGATE_DEFAULT) -> str:
        """The page's PSD button: the editor's drawing coloured as Colorize does it -> the PSD's path."""
        line_art, hints = checked(editor_images, editor)
        layers = run_colorizer(shelf.get(model), line_art, hints, palette, mode, fill=flat_fill, propagate=propagate)
        return save_psd(layers)

    def suggest_page(editor: dict, mode: str, palette: str, model: str, evt: gr.SelectData) -> tuple:
        """A click on the result -> the likeliest colours there, as swatches and as choices for the picker."""
        colorizer_ = shelf.get(model)
        if not colorizer_.has_head:
            return gr.Radio(choices=[], value=None), ("this model has no colour head, so it has no suggestions "
                                                      "(train one with --model.colour_head=true)")
        line_art, hints = checked(editor_images, editor)
        found = suggest_colours(colorizer_, line_art, hints, palette, mode, *evt.index[:2])
        choices = [(f'{s["colour"]} ({100 * s["probability"]:.0f} %)', s["colour"]) for s in found]
        return gr.Radio(choices=choices, value=None), swatches_html(found)

    def suggest_file(line_art: gr.FileData, x: float, y: float, hints: Optional[gr.FileData] = None,
                     palette: str = "", mode: str = "", count: int = 6) -> list:
        """The likeliest colours at the point (x, y) of a line-art image file (its pixels, origin top
        left), from the model's colour distribution there, with the hints and palette as in
        colorize_file -> [{"colour": "#rrggbb", "probability": p}], likeliest first. Needs a model
        with a colour head (model.colour_head)."""
        return suggest_colours(colorizer, *file_inputs(line_art, hints, palette, mode), x, y, count)

    def add_color(palette: str, color: str) -> str:
        red, green, blue = checked(parse_color, color or "")
        colors = [c for c in (palette or "").replace(",", " ").split() if c]
        return ", ".join(colors + [f"#{red:02x}{green:02x}{blue:02x}"])

    with gr.Blocks(title="colorizer", delete_cache=(min(3600, keep_files_s), keep_files_s)) as demo:
        gr.Markdown("# Line-art colorizer\nUpload line art, choose a mode, press **Colorize**. "
                    "For painted hints, paint a few strokes on the *hints* layer where a colour should go.")
        facts = gr.Markdown(model_facts(colorizer, examples_shown=bool(examples)), elem_id="model-facts")
        picker_model = gr.Dropdown(shelf.choices, value=shelf.choices[0][1], label="Model", elem_id="model",
                                   interactive=len(shelf.choices) > 1,
                                   info="the bundled model and your trained runs (runs/*/export), with their "
                                        "steps and validation PSNR; the API uses the model serve.py started with")
        with gr.Row():
            with gr.Column():
                editor = gr.ImageEditor(
                    label="Line art (paint hints on the 'hints' layer)", type="numpy", image_mode="RGBA",
                    format="png", sources=["upload", "clipboard"],
                    brush=gr.Brush(colors=BRUSH_COLORS, default_size=8, color_mode="defaults"),
                    eraser=gr.Eraser(default_size=12),
                    layers=gr.LayerOptions(allow_additional_layers=False, layers=["hints"]),
                    height=480, elem_id="line-art")
                decode_uploads_safely(editor, colorizer.max_pixels)
                mode = gr.Radio(list(LABEL_MODES), value=MODE_LABELS[HintMode.NONE], label="Mode", elem_id="mode",
                                info="automatic: your strokes on the 'hints' layer if you painted any, else no "
                                     "hints; palette: the colours below, anywhere; painted hints: your strokes")
                with gr.Row():
                    palette = gr.Textbox(label=f"Palette (up to {colorizer.palette_size} hex colours)",
                                         placeholder="#e63946, #457b9d, #f1faee", elem_id="palette", scale=3)
                    picker = gr.ColorPicker(value="#e63946", label="Pick", scale=1)
                    add = gr.Button("Add colour", scale=1)
                fill = gr.Checkbox(value=FLAT_FILL_DEFAULT, label="Flat fills", elem_id="flat-fill",
                                   info="one colour per closed region of the line art, as on an illustrator's "
                                        "flat-colour layer; your strokes colour the regions they touch")
                spread = gr.Checkbox(value=PROPAGATE_DEFAULT, label="Strokes fill their shapes", elem_id="propagate",
                                     info="each painted stroke colours the whole shape it lies in, up to the lines "
                                          "(small gaps in a line hold); unpainted shapes keep the model's colours")
                button = gr.Button("Colorize", variant="primary", elem_id="colorize")
            with gr.Column():
                result = gr.Image(label="Result", type="filepath", format="png", buttons=["download"],
                                  interactive=False, height=480, elem_id="result")
                layers = gr.File(label="Layers: colorized.png (colour + lines), colorized_flat.png (colour "
                                       "only), colorized_lines.png (lines only, transparent)",
                                 file_count="multiple", interactive=False, elem_id="layers")
                suggested = gr.Radio([], label="Suggested colours: click a point of the result", elem_id="suggested",
                                     info="the model's likeliest colours there; choosing one sets Pick, for the "
                                          "palette or the brush's own colour field")
                swatches = gr.HTML(elem_id="swatches")
                psd_button = gr.Button("Layered PSD", elem_id="psd-button")
                psd_file = gr.File(label="colorized.psd: flat colour, shading and line art as layers, for Krita, "
                                         "GIMP or Photoshop", interactive=False, elem_id="psd")
        if examples:
            gr.Examples(examples=[[path] for path in examples], inputs=[editor], label="Test-split line art")
        add.click(add_color, [palette, picker], palette, api_visibility="private")
        button.click(colorize_page, [editor, mode, palette, fill, picker_model, spread], [result, layers],
                     api_visibility="private")
        picker_model.change(show_model, picker_model, facts, api_visibility="private")
        result.select(suggest_page, [editor, mode, palette, picker_model], [suggested, swatches],
                      api_visibility="private")
        suggested.change(lambda colour: colour or gr.skip(), suggested, picker, api_visibility="private")
        # /colorize keeps answering with one image: an event of its own, on a button the page does not show
        api_button, api_result = gr.Button(visible=False), gr.Image(type="filepath", format="png", visible=False)
        api_button.click(colorize, [editor, mode, palette, fill, spread], api_result, api_name="colorize")
        gr.api(colorize_file, api_name="colorize_file")
        gr.api(colorize_layers, api_name="colorize_layers")
        gr.api(colorize_psd, api_name="colorize_psd")
        gr.api(suggest_file, api_name="suggest_colours")
        psd_button.click(page_psd, [editor, mode, palette, fill, picker_model, spread], psd_file,
                         api_visibility="private")
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a trained colorizer as a Gradio app and API.")
    parser.add_argument("--checkpoint", help="export folder, its config.json, or a training checkpoint .pt; "
                        "latest: the newest runs/*/export (default: the bundled model, models/demo/)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 = all; default local only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--auth", help="USER:PASS required to open the app")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest accepted image, in pixels")
    parser.add_argument("--queue-size", type=int, default=16, help="requests waiting at most; more are refused")
    parser.add_argument("--concurrency", type=int, default=1, help="requests processed at the same time")
    parser.add_argument("--keep-files-hours", type=float, default=24.0,
                        help="uploads and results are deleted after this long (checked hourly)")
    parser.add_argument("--max-file-mb", type=float, default=25.0,
                        help="largest accepted upload in MiB; a larger one is refused while it arrives (HTTP 413)")
    parser.add_argument("--max-cache-mb", type=float, default=1024.0,
                        help="uploads and results kept on disk in all, in MiB; past it the oldest are deleted")
    parser.add_argument("--cache-dir", help="folder for uploads and results (default: $GRADIO_TEMP_DIR, "
                        "else colorizer-demo-PORT in the system's temporary folder)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    args = parser.parse_args(argv)
    if args.auth and ":" not in args.auth:
        parser.error("--auth must look like USER:PASS")
    if args.queue_size < 1 or args.concurrency < 1 or args.keep_files_hours <= 0:
        parser.error("--queue-size and --concurrency must be >= 1 and --keep-files-hours > 0")
    if args.max_file_mb <= 0 or args.max_cache_mb < CACHE_ROOM * args.max_file_mb:
        parser.error(f"need --max-file-mb > 0 and --max-cache-mb >= {CACHE_ROOM} x --max-file-mb "
                     f"(got {args.max_file_mb:g} and {args.max_cache_mb:g}): the cache must hold the uploads in flight")
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("colorizer").setLevel(logging.INFO)  # the app's lines, not every HTTP request
    args = parse_args(argv)
    path = find_checkpoint(which=args.checkpoint)
    if path is None:
        help_text = NO_RUN_HELP if args.checkpoint == LATEST else NO_MODEL_HELP
        print(f"serve.py: {help_text.format(cwd=Path.cwd())}", file=sys.stderr)
        return 2
    try:
        colorizer = Colorizer.load(path, device=args.device, max_pixels=args.max_pixels)
    except (FileNotFoundError, ValueError) as err:
        print(f"serve.py: {err}", file=sys.stderr)
        return 2
    log.info("loaded %s from %s", colorizer.info(), path)
    # Gradio reads the cache folder when the app is built; a folder of its own keeps the cache
    # limit from deleting other Gradio apps' files.
    cache_dir = (args.cache_dir or os.environ.get("GRADIO_TEMP_DIR")
                 or Path(tempfile.gettempdir()) / f"colorizer-demo-{args.port}")
    os.environ["GRADIO_TEMP_DIR"] = str(Path(cache_dir).resolve())
    model_dir = path if path.is_dir() else path.parent
    demo = build_demo(colorizer, examples_for(colorizer, model_dir), queue_size=args.queue_size,
                      concurrency=args.concurrency, keep_files_s=max(1, round(args.keep_files_hours * 3600)),
                      choices=model_choices(served=path))
    warning = exposure_warning(args.host, args.auth, args.share)
    if warning:
        log.warning("WARNING: %s", warning)
    log.info("uploads: at most %g MiB each, %g MiB in all in %s", args.max_file_mb, args.max_cache_mb,
             demo.GRADIO_CACHE)
    launch(demo, args.host, args.port, auth=tuple(args.auth.split(":", 1)) if args.auth else None, share=args.share,
           max_file_mb=args.max_file_mb, max_cache_mb=args.max_cache_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
