"""Colour line art with a trained generator: load an export or a checkpoint once, then ``colorize``.

    from PIL import Image
    from colorizer.inference import Colorizer

    model = Colorizer.load("runs/NAME/export")  # or a checkpoint: runs/NAME/checkpoints/best.pt
    image = model.colorize(Image.open("line.png"), hints=Image.open("strokes.png"), palette=["#e63946"])

Images of any PIL mode go in (or a file path or bytes, decoded by ``open_image``), up to
``max_pixels`` (4096 x 4096 by default). The network works at a working resolution with the aspect
ratio kept, padded with white paper to a multiple of ``2**model.depth``: its training size (long
side scaled to ``data.size``; the default), or the drawing's own size (``resolution="native"``, the
U-Net is fully convolutional) capped at ``max_working_pixels``. The result comes back at the input's
size with the input's own lines laid over the colour (``composite``), so a 4,000 px drawing keeps
its crisp lines. ``colorize_layers`` also gives the flat colour layer and the line layer, and
``fill=True`` gives one colour to each closed region of the line art (``fills``). Painted strokes
colour their whole shape, up to the lines, by default (``strokes.propagate``; ``propagate=False``
leaves the network's answer to the strokes as it is). Nothing here imports training code.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import threading
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .checkpoint import CONFIG_NOTES, GeneratorFile, ModelLoadError, read_generator
from .colour_bins import decoded, suggestions, to_lab
from .composite import enlarge, flat_colour, line_layer, multiply
from .config import Config, ConfigError, data_roots, from_dict, image_size
from .fills import flat_fill, region_grid
from .images import flatten_image, to_array, to_signed
from .models import build_generator
from .strokes import STROKE_TOLERANCE, Paint
from .strokes import paint as paint_strokes

DEFAULT_MAX_PIXELS = 4096 * 4096  # larger inputs are refused: decoding and resizing them costs memory
DEFAULT_MAX_WORKING_PIXELS = 1024 * 1024  # native-resolution inference above this is scaled down to it (memory)
RESOLUTIONS = ("model", "native")  # where the network runs: its training size, or the drawing's own
HINT_ALPHA_THRESHOLD = 128  # stroke alpha (0-255) above which a pixel is a hint: ignores anti-aliased edges

PaletteEntry = Union[str, Sequence[int]]
ImageSource = Union[Image.Image, str, os.PathLike, bytes]
# What PIL raises for a file it cannot decode: unknown format, truncated or corrupt data, a header
# claiming more pixels than Image.MAX_IMAGE_PIXELS allows (a decompression bomb).
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def parse_color(entry: PaletteEntry) -> tuple:
    """``"#rrggbb"``, ``"#rgb"`` (``#`` optional), ``"rgb(r, g, b)"`` / ``"rgba(r, g, b, a)"`` (what
    colour pickers return) or an ``(r, g, b)`` of ints in 0-255 -> (r, g, b)."""
    if isinstance(entry, str):
        css = re.fullmatch(r"\s*rgba?\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*(,\s*[\d.]+\s*)?\)\s*", entry)
        if css and all(int(c) <= 255 for c in css.groups()[:3]):
            return tuple(int(c) for c in css.groups()[:3])
        text = entry.strip().lstrip("#")
        if re.fullmatch(r"[0-9a-fA-F]{3}", text):
            text = "".join(c * 2 for c in text)
        if re.fullmatch(r"[0-9a-fA-F]{6}", text):
            return tuple(int(text[i : i + 2], 16) for i in (0, 2, 4))
    elif (isinstance(entry, (tuple, list)) and len(entry) == 3
          and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 255 for c in entry)):
        return tuple(int(c) for c in entry)
    raise ValueError(f"palette entry {entry!r} is not a colour: use '#rrggbb' or an (r, g, b) tuple of 0-255 ints")


def parse_palette(palette, max_colors: int) -> list:
    """None, a list of colours, or one string of colours separated by commas/spaces -> [(r, g, b), ...]."""
    if palette is None:
        return []
    if isinstance(palette, str):
        palette = [p for p in re.split(r"[,\s;]+", palette) if p]
    colors = [parse_color(entry) for entry in palette]
    if len(colors) > max_colors:
        raise ValueError(f"the palette has {len(colors)} colours; this model takes at most {max_colors}")
    return colors


def open_image(source: ImageSource, what: str = "the image", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A file path, the file's bytes or an opened PIL image -> the decoded image (first frame of an
    animation), or ValueError naming the file and what is wrong with it.

    This is the one way untrusted image files are opened (``Colorizer.colorize`` and every demo
    endpoint): the pixel count is read from the header and checked against ``max_pixels`` before
    anything is decoded, so a small file claiming 50,000 x 50,000 pixels costs no memory."""
    if isinstance(source, Image.Image):
        image, name = source, Path(getattr(source, "filename", "") or "image").name
    elif isinstance(source, (str, os.PathLike, bytes, bytearray)):
        name = "bytes" if isinstance(source, (bytes, bytearray)) else Path(source).name
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        except FileNotFoundError:
            raise ValueError(f"{what}: no file at {source}") from None
        except DECODE_ERRORS as err:
            raise ValueError(f"{what} ({name}) is not a readable image: {_reason(err)}") from None
    else:
        raise TypeError(f"{what} must be a PIL.Image.Image, a file path or bytes, got {type(source).__name__}")
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"{what} ({name}) is empty ({width}x{height})")
    if width * height > max_pixels:
        raise ValueError(f"{what} is {width}x{height} = {width * height:,} pixels, more than the limit of "
                         f"{max_pixels:,} pixels (max_pixels)")
    try:
        image.load()  # decode now: truncated or corrupt data fails here, with the file named
    except DECODE_ERRORS as err:
        raise ValueError(f"{what} ({name}) is not a readable image: {_reason(err)}") from None
    return image


def _reason(err: Exception) -> str:
    """Why PIL could not read a file, without the file's path on this machine (a demo's client must
    not learn the server's folders)."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image format PIL can read (PNG, JPEG, WebP, GIF, BMP, TIFF ...), or corrupt"
    text = " ".join(str(err).split())
    text = re.sub(r"(?<![\w<])/\S+", "<file>", re.sub(r"'[^']*[/\\][^']*'", "<file>", text))[:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def fit_size(height: int, width: int, box: tuple, multiple: int) -> tuple:
    """Scale (height, width) to fit inside ``box`` (H, W) with the aspect ratio kept ->
    (scaled_h, scaled_w, padded_h, padded_w), the padded sizes the next multiples of ``multiple``."""
    scale = min(box[0] / height, box[1] / width)
    scaled_h = min(box[0], max(1, round(height * scale)))
    scaled_w = min(box[1], max(1, round(width * scale)))
    padded_h = -(-scaled_h // multiple) * multiple
    padded_w = -(-scaled_w // multiple) * multiple
    return scaled_h, scaled_w, padded_h, padded_w


def _resize_plane(plane: np.ndarray, size: tuple) -> np.ndarray:
    """float32 (H, W) -> area-averaged (h, w) (size is (h, w))."""
    return np.asarray(Image.fromarray(plane, "F").resize((size[1], size[0]), Image.Resampling.BOX))


def hints_to_arrays(hints: Image.Image, size: tuple) -> tuple:
    """Painted RGBA strokes -> (colour (h, w, 3) in [0, 1], mask (h, w) bool) at ``size`` (h, w).

    A pixel is a hint where alpha > HINT_ALPHA_THRESHOLD (anti-aliased edges are not). A working-size
    pixel is hinted when any hinted pixel falls in it, and gets their mean colour: a 2 px stroke on
    a 4096 px canvas covers an eighth of each 256 px working pixel it crosses, and still counts."""
    if not (hints.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in hints.info):
        raise ValueError(f"hints must have an alpha channel (transparent = no hint), got a {hints.mode} image")
    rgba = np.asarray(hints.convert("RGBA"), dtype=np.float32) / 255.0  # (H, W, 4)
    painted = (rgba[..., 3] > HINT_ALPHA_THRESHOLD / 255.0).astype(np.float32)  # (H, W)
    if painted.shape == tuple(size):  # at its own size (the region grid of a drawing up to a megapixel)
        mask = painted > 0
        return np.where(mask[..., None], rgba[..., :3], 0.0).astype(np.float32), mask
    coverage = _resize_plane(painted, size)  # (h, w) in [0, 1]
    sums = np.stack([_resize_plane(np.ascontiguousarray(rgba[..., c] * painted), size) for c in range(3)], -1)
    mask = coverage > 0
    colour = np.where(mask[..., None], sums / np.maximum(coverage, 1e-6)[..., None], 0.0).clip(0, 1)
    return colour.astype(np.float32), mask


@dataclasses.dataclass
class Layers:
    """One colouring as the layers an illustrator stacks, all at the input's (oriented) size."""

    image: Image.Image  # RGB: the flat colour with the input's lines multiplied over it
    flat: Image.Image  # RGB: the colour alone, no lines (the layer under the line art)
    lines: Image.Image  # RGBA: the input's lines in black, their darkness as alpha, paper transparent
    working_size: tuple  # (h, w) the network ran at, before padding
    paint: Optional[Paint] = None  # what the stroke propagation painted, at its region grid (or None)

    def stroke_masks(self) -> list:
        """[((r, g, b), mask "L" at the drawing's size)]: where each stroke colour painted. Made on
        request (the PSD asks), not for every colouring: a 4-megapixel resize and a mask per colour."""
        if self.paint is None or not len(self.paint.colours):
            return []
        owner = np.asarray(Image.fromarray(self.paint.owner.astype(np.int32)).resize(
            self.image.size, Image.Resampling.NEAREST))  # (H, W), -1 unpainted
        return [(tuple(int(v) for v in rgb), Image.fromarray(((owner == k) * 255).astype(np.uint8), "L"))
                for k, rgb in enumerate(self.paint.colours)]


@dataclasses.dataclass
class _Request:
    """One drawing made ready for the network (``Colorizer._prepare``)."""

    full: Image.Image  # "L": the line art at its own (oriented) size
    hints: Optional[Image.Image]  # the painted strokes at that size, or None
    hint_colour: Optional[np.ndarray]  # (h, w, 3) in [0, 1] at the working size, or None
    hint_mask: Optional[np.ndarray]  # (h, w) bool at the working size, or None
    line: torch.Tensor  # (Hp, Wp) in [-1, 1], padded with white paper
    spatial: torch.Tensor  # (4, Hp, Wp): hint colour * mask, mask
    palette: torch.Tensor  # (K, 3) in [-1, 1]
    keep: torch.Tensor  # (K,) 1 for a palette colour given
    working: tuple  # (h, w) before padding


class Colorizer:
    """A generator in eval mode on one device, ready to colour images; safe to share between threads."""

    def __init__(self, generator: torch.nn.Module, config, step: int = 0, metrics: Optional[dict] = None,
                 run_name: str = "", source: str = "", max_pixels: int = DEFAULT_MAX_PIXELS, device=None,
                 max_working_pixels: int = DEFAULT_MAX_WORKING_PIXELS):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.generator = generator.to(self.device).eval()
        for param in self.generator.parameters():
            param.requires_grad_(False)
        self.config = config
        self.step = int(step)
        self.metrics = dict(metrics or {})
        self.run_name = run_name
        self.notes: dict = {}  # plain values training stored beside the config, e.g. perceptual_status
        self.source = source
        self.max_pixels = int(max_pixels)
        self.max_working_pixels = int(max_working_pixels)
        # Plain ints read once: every call then avoids OmegaConf lookups.
        self.box = tuple(int(v) for v in image_size(config.data))  # (H, W) the model was trained at
        self.multiple = 2 ** int(config.model.depth)
        self.palette_size = int(config.model.palette_size)
        self.has_head = bool(config.model.colour_head)  # the vote per shape, suggestions; shown: model.colour_decode
        self._lock = threading.Lock()  # one forward at a time: BatchNorm/cuDNN state is shared

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, path, device=None, max_pixels: int = DEFAULT_MAX_PIXELS) -> "Colorizer":
        """From an export folder (``runs/NAME/export``, its config.json or generator.safetensors, or
        the run folder holding it) or a training checkpoint ``.pt`` (weights-only: no pickled code runs)."""
        return cls.from_file(read_generator(path), device, max_pixels)

    @classmethod
    def from_file(cls, stored: GeneratorFile, device=None, max_pixels: int = DEFAULT_MAX_PIXELS) -> "Colorizer":
        """Rebuild the generator that ``checkpoint.read_generator`` read; ModelLoadError if it does not fit."""
        # Training stores notes beside the config sections (e.g. perceptual_status): plain values
        # that are not sections are not configuration. Unknown sections and keys stay errors.
        sections = {f.name for f in dataclasses.fields(Config)}
        notes = {k: v for k, v in stored.config.items()
                 if k not in sections and (k in CONFIG_NOTES or not isinstance(v, dict))}
        try:
            config = from_dict({k: v for k, v in stored.config.items() if k not in notes})
        except ConfigError as err:
            raise ModelLoadError(f"the config stored in {stored.where}: {err}") from None
        try:
            generator = build_generator(config.model)
        except ValueError as err:
            raise ModelLoadError(f"cannot build the generator described in {stored.where}: {err}") from None
        try:
            generator.load_state_dict(stored.weights, strict=True)
        except RuntimeError as err:
            details = " ".join(str(err).split())[:500]
            raise ModelLoadError(f"the generator weights in {stored.source} do not match its config "
                                 f"({config.model.generator}, depth {config.model.depth}): {details}") from None
        metrics = {str(k): float(v) for k, v in stored.metrics.items() if isinstance(v, (int, float, torch.Tensor))}
        model = cls(decoded(generator.float(), config.model), config, step=stored.step, metrics=metrics,
                    run_name=stored.run_name, source=stored.source, max_pixels=max_pixels, device=device)
        model.notes = {str(k): v for k, v in notes.items()}
        return model

    # ---------------------------------------------------------------- facts
    @property
    def trained_on_openmoji(self) -> bool:
        """Whether the training data was or included OpenMoji (its CC BY-SA licence asks for
        attribution): by a dataset folder's name, or by its manifest when that folder is at hand."""
        return any(self._openmoji_folder(root) for root in data_roots(self.config.data))

    @staticmethod
    def _openmoji_folder(root: Path) -> bool:
        if "openmoji" in root.name.lower():
            return True
        try:
            with open(root / "manifest.jsonl") as manifest:
                return str(json.loads(manifest.readline()).get("source", "")).startswith("openmoji")
        except (OSError, ValueError, AttributeError):
            return False

    def info(self) -> str:
        """One line for people: what was loaded, how long it trained, its latest validation metrics."""
        name = f"run '{self.run_name}'" if self.run_name else Path(self.source).name
        text = f"{name}: {self.step:,} training steps at {self.box[0]}x{self.box[1]} px"
        if self.metrics:
            # The headline numbers (colour-region PSNR per hint mode, the metric that picks best.pt);
            # all of them stay in .metrics.
            headline = [k for k in sorted(self.metrics)
                        if k.endswith("psnr_color") or k == self.config.train.best_metric] or sorted(self.metrics)
            shown = ", ".join(f"{k} {self.metrics[k]:.3g}" for k in headline)
            return f"{text}; validation: {shown}"
        return f"{text}; no validation metrics recorded"

    # ---------------------------------------------------------------- colouring
    def colorize(self, line_art: ImageSource, hints: Optional[ImageSource] = None, palette=None,
                 resolution: str = "model", composite: bool = True, fill: bool | str = False,
                 propagate: bool = True, tolerance: float = STROKE_TOLERANCE) -> Image.Image:
        """Colour ``line_art``: the RGB image of ``colorize_layers`` (colour with the input's lines
        over it), at the line art's (oriented) size. ``composite=False``: the network's own output,
        its copy of the lines included, enlarged bicubic (the path before compositing existed; the
        full-resolution evaluation compares the two). ``fill``: flat fills, one colour per closed
        region of the line art (``fills.flat_fill``); ``fill="split"``: a model with a colour head also
        cuts a region where its per-pixel modes form separate areas (``fills.split_by_modes``).
        ``propagate``: each painted stroke colours the shape it lies in, up to the lines
        (``strokes.propagate``; the network still sees the strokes and guesses the other shapes with them);
        only with the composite. ``tolerance``: CIE76 ΔE
        from its paint within which a painted pixel keeps the network's colour (``strokes.paint``)."""
        if fill and not composite:
            raise ValueError("flat fills need the composite: the network's own lines would cut across the regions")
        colour, line, _, _ = self._colour(line_art, hints, palette, resolution, flat=composite, fill=fill,
                                          propagate=propagate and composite, tolerance=tolerance)
        return Image.fromarray(multiply(colour, line) if composite else to_array(colour), "RGB")

    def colorize_layers(self, line_art: ImageSource, hints: Optional[ImageSource] = None, palette=None,
                        resolution: str = "model", fill: bool = False, propagate: bool = True,
                        tolerance: float = STROKE_TOLERANCE) -> Layers:
        """Colour ``line_art`` and return the composite, the flat colour layer and the line layer;
        ``fill``, ``propagate`` and ``tolerance`` as in ``colorize``."""
        return self._layers(*self._colour(line_art, hints, palette, resolution, fill=fill, propagate=propagate,
                                          tolerance=tolerance))

    def suggest(self, line_art: ImageSource, x: float, y: float, hints: Optional[ImageSource] = None, palette=None,
                count: int = 6) -> list:
        """The likeliest colours at the point (``x``, ``y``) of ``line_art`` (its pixels, origin top
        left), given ``hints`` and ``palette``: up to ``count`` [("#rrggbb", probability)] from the
        colour head's distribution there (``colour_bins.suggestions``). ValueError for a model without
        a colour head or a point outside the drawing."""
        if not self.has_head:
            raise ValueError("this model has no colour head, so it has one colour per pixel and no suggestions; "
                             "train one with --model.colour_head=true --loss.colour_classes=1")
        request = self._prepare(line_art, hints, palette, "model")
        width, height = request.full.size
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"the point ({x}, {y}) is outside the {width} x {height} drawing")
        colour, log_probs = self._run([request], flat=True)[0]  # the colour without the lines: its lightness
        h, w = request.working
        lightness = to_lab(colour[None, :, int(y * h / height), int(x * w / width)][..., None, None])[0, 0, 0, 0]
        rows, cols = log_probs.shape[-2:]  # they cover the working area (at the head's stride)
        row, col = min(rows - 1, int(y / height * rows)), min(cols - 1, int(x / width * cols))
        return suggestions(log_probs[:, row, col], float(lightness), count)

    def working_size(self, height: int, width: int, resolution: str = "model") -> tuple:
        """(h, w) the network colours a ``height`` x ``width`` drawing at, before padding: the
        training box with the aspect kept ("model"), or the drawing's own size scaled down to at
        most ``max_working_pixels`` ("native")."""
        if resolution == "model":
            return fit_size(height, width, self.box, self.multiple)[:2]
        if resolution != "native":
            raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
        scale = min(1.0, (self.max_working_pixels / (height * width)) ** 0.5)
        return max(1, int(height * scale)), max(1, int(width * scale))

    def colorize_layers_many(self, drawings: list, palette=None, resolution: str = "model", fill: bool = False,
                             propagate: bool = True, batch_size: int = 8) -> list:
        """``colorize_layers`` for many ``(line_art, hints or None)`` pairs, the network run once per
        batch of up to ``batch_size`` drawings whose working sizes match -> per drawing, in order,
        its ``Layers``, or the ValueError/TypeError/OSError that says why it could not be coloured
        (one bad drawing never fails the others)."""
        results: list = [None] * len(drawings)
        requests = {}
        for i, (line_art, hints) in enumerate(drawings):
            try:
                requests[i] = self._prepare(line_art, hints, palette, resolution)
            except (ValueError, TypeError, OSError) as err:
                results[i] = err
        groups: dict = {}
        for i, request in requests.items():
            groups.setdefault(tuple(request.line.shape), []).append(i)
        for members in groups.values():
            for start in range(0, len(members), max(1, batch_size)):
                chunk = members[start: start + max(1, batch_size)]
                colours = self._run([requests[i] for i in chunk], flat=True)
                for i, (colour, log_probs) in zip(chunk, colours):
                    try:
                        results[i] = self._layers(*self._finish(requests[i], colour, fill, propagate,
                                                                log_probs=log_probs))
                    except (ValueError, TypeError, OSError) as err:
                        results[i] = err
        return results

    def _layers(self, flat: torch.Tensor, line: np.ndarray, working: tuple, paint) -> Layers:
        return Layers(image=Image.fromarray(multiply(flat, line), "RGB"), flat=Image.fromarray(to_array(flat), "RGB"),
                      lines=Image.fromarray(line_layer(line), "RGBA"), working_size=working, paint=paint)

    def _colour(self, line_art: ImageSource, hints: Optional[ImageSource], palette, resolution: str,
                flat: bool = True, fill: bool = False, propagate: bool = False,
                tolerance: float = STROKE_TOLERANCE) -> tuple:
        """Colour ``line_art`` (a PIL image of any mode, or a file path or bytes; EXIF orientation
        honoured; at most ``max_pixels``) at the working resolution of ``resolution``.

        hints: optional RGBA strokes aligned with the (orientation-corrected) line art; transparent
        pixels are not hints, painted ones give their colour there. palette: optional colours for the
        whole image ("#rrggbb" strings or (r, g, b) tuples, at most ``model.palette_size``).
        Returns (flat colour (3, H, W) in [-1, 1] at the line art's size, the line art (H, W) uint8,
        the working size (h, w), the strokes' ``strokes.Paint`` or None); with ``flat=False`` the
        network's output as it is, lines and all, instead of the flat colour; with ``fill`` one
        colour per closed region; with ``propagate`` each painted stroke's colour in its whole
        shape. ValueError or TypeError, saying what is wrong, for an input it cannot use."""
        request = self._prepare(line_art, hints, palette, resolution)
        colour, log_probs = self._run([request], flat)[0]
        return self._finish(request, colour, fill, propagate, tolerance, log_probs)

    def _prepare(self, line_art: ImageSource, hints: Optional[ImageSource], palette, resolution: str) -> "_Request":
        """The network's inputs for one drawing (see ``_colour``), checked."""
        colors = parse_palette(palette, self.palette_size)
        line_art = open_image(line_art, "the line art", self.max_pixels)
        if hints is not None:
            hints = open_image(hints, "the hints", self.max_pixels)

        line_art = ImageOps.exif_transpose(line_art)
        full = flatten_image(line_art, "L")
        width, height = full.size
        scaled_h, scaled_w = self.working_size(height, width, resolution)
        padded_h = -(-scaled_h // self.multiple) * self.multiple
        padded_w = -(-scaled_w // self.multiple) * self.multiple

        grey = full if (scaled_h, scaled_w) == (height, width) else \
            full.resize((scaled_w, scaled_h), Image.Resampling.BICUBIC)
        line = torch.ones(padded_h, padded_w)  # white paper in the padding
        line[:scaled_h, :scaled_w] = to_signed(np.asarray(grey))
        spatial = np.zeros((4, padded_h, padded_w), np.float32)  # zeros = no hint, also in the padding
        hint_colour = hint_mask = None
        if hints is not None:
            hints = ImageOps.exif_transpose(hints)
            if hints.size != (width, height):
                raise ValueError(f"hints are {hints.size[0]}x{hints.size[1]} but the line art is {width}x{height}: "
                                 f"paint them on a layer of the same size")
            hint_colour, hint_mask = hints_to_arrays(hints, (scaled_h, scaled_w))
            spatial[:3, :scaled_h, :scaled_w] = (hint_colour * 2 - 1).transpose(2, 0, 1) * hint_mask
            spatial[3, :scaled_h, :scaled_w] = hint_mask
        palette_t = torch.zeros(self.palette_size, 3)
        keep = torch.zeros(self.palette_size)
        if colors:
            palette_t[: len(colors)] = to_signed(torch.tensor(colors, dtype=torch.uint8))
            keep[: len(colors)] = 1
        return _Request(full, hints, hint_colour, hint_mask, line, torch.from_numpy(spatial), palette_t, keep,
                        (scaled_h, scaled_w))

    def _run(self, requests: list, flat: bool) -> list:
        """One generator call on the stacked ``requests`` (one padded size) -> each one's (colour
        (3, h, w) in [-1, 1] on the CPU at its working size: the flat colour, or with ``flat=False``
        the network's output, its own lines and all; log-probabilities (Q, p, q) over
        ``colour_bins.BINS`` covering the same area, for the vote per shape, or None without a
        colour head)."""
        with self._lock, torch.inference_mode():
            out = self.generator(torch.stack([r.line for r in requests])[:, None].to(self.device),  # (B, 1, H, W)
                                 torch.stack([r.spatial for r in requests]).to(self.device),  # (B, 4, H, W)
                                 torch.stack([r.palette for r in requests]).to(self.device),  # (B, K, 3)
                                 torch.stack([r.keep for r in requests]).to(self.device),
                                 **({"logits": True} if self.has_head else {}))  # (B, 3, H, W) in [-1, 1]
            out, logits = out if isinstance(out, tuple) else (out, None)  # logits (B, Q, H / s, W / s)
            colours = []
            for i, request in enumerate(requests):
                h, w = request.working
                colour = out[i: i + 1, :, :h, :w].float()  # (1, 3, h, w)
                if flat:  # the colour without the model's own copy of the lines
                    colour = flat_colour(colour, request.line[None, None, :h, :w].to(self.device))
                log_probs = None
                if logits is not None:  # the rows and columns that cover the working area
                    scale = out.shape[-1] / logits.shape[-1]
                    log_probs = torch.log_softmax(logits[i, :, : math.ceil(h / scale), : math.ceil(w / scale)].float(),
                                                  0).cpu()
                colours.append((colour[0].cpu(), log_probs))
        return colours

    def _finish(self, request: "_Request", colour: torch.Tensor, fill: bool, propagate: bool,
                tolerance: float = STROKE_TOLERANCE, log_probs: torch.Tensor | None = None) -> tuple:
        """The network's ``colour`` of ``request`` -> ``_colour``'s result: flat fills (by the colour
        head's vote when ``log_probs`` are given), the strokes propagated (``tolerance``:
        ``strokes.paint``'s), at the drawing's size."""
        lines = np.asarray(request.full)
        height, width = lines.shape
        hint_mask = request.hint_mask
        propagate = propagate and hint_mask is not None and bool(hint_mask.any())
        if fill:  # one colour per closed region, at the region grid (at most fills.FILL_MAX_PIXELS)
            colour = flat_fill(colour, lines, *((None, None) if propagate else (request.hint_colour, hint_mask)),
                               log_probs=log_probs, split=fill == "split")
        paint = None
        if propagate:  # the strokes at the region grid, where they colour their shapes
            paint = paint_strokes(colour, lines, *hints_to_arrays(request.hints, region_grid(height, width)),
                                  tolerance=tolerance)
            colour = paint.colour
        return enlarge(colour, (height, width)), lines, request.working, paint
