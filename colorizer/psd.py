"""A colouring as a layered Photoshop file (PSD) that Krita, GIMP and Photoshop open, through
``psd-tools``. Layers, bottom to top:

- **flat colour** (Normal): one colour per closed region of the line art (``fills.flat_fill`` of
  the model's colour; a shape a stroke painted keeps the stroke's colour): the flats an
  illustrator paints first, and selects regions by.
- **paint #rrggbb** (Normal), one per colour the user painted with: the shapes that colour's
  strokes filled (``strokes.propagate``), the rest transparent. They repeat what the flats hold
  there, so the picture does not change; an artist selects, hides or recolours one stroke's shapes
  with them.
- **shading** (Linear Light): what the model adds to the flats, stored as 0.5 + (colour - flat) / 2
  per channel, so that Linear Light (base + 2 x blend - 1) over the flats gives back the model's
  colour to one level in 255. Mid-grey is no change; hide it for pure flats, or lower its opacity.
- **line art** (Multiply): the drawing's own lines, white paper.

The composite a paint program shows is the flats, the shading and the lines multiplied in sRGB. Our
PNG composite multiplies the lines in linear light (``composite.multiply``), so the two agree to
one level wherever the line art is pure paper or pure ink, and differ by a few levels (7 at most
in the test) on the anti-aliased edges of the lines.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .composite import enlarge
from .fills import flat_fill
from .images import to_array, to_signed

LAYER_NAMES = ("flat colour", "shading", "line art")  # bottom to top, the paint layers between the first two
BLEND_MODES = ("NORMAL", "LINEAR_LIGHT", "MULTIPLY")  # psd_tools.constants.BlendMode names, per layer


def _psd_tools():
    try:
        import psd_tools
    except ImportError as err:
        raise RuntimeError(f"a layered PSD needs the psd-tools package ({err}): pip install -r requirements.txt") \
            from None
    return psd_tools


def psd_layers(colour: Image.Image, line: Image.Image, strokes=()) -> list:
    """The three layers' RGB images (LAYER_NAMES order) for the model's colour under the lines
    (``Layers.flat``, RGB) and the drawing's line art (L), both at the drawing's size. ``strokes``
    as for ``build_psd``: each stroke colour is the flat of the shapes it painted (the paint keeps
    the network's shading within ``strokes.STROKE_TOLERANCE``, which the shading layer holds)."""
    lines = np.asarray(line.convert("L"))
    model = to_signed(np.asarray(colour.convert("RGB"))).permute(2, 0, 1)  # (3, H, W) in [-1, 1]
    flats = enlarge(flat_fill(model, lines), lines.shape)  # (3, H, W) in [-1, 1]
    flat = to_array(flats).astype(np.int16)  # (H, W, 3) 0-255
    for rgb, mask in strokes:
        flat[np.asarray(mask) > 127] = rgb
    shading = (np.asarray(colour.convert("RGB"), np.int16) - flat) / 2 + 127.5
    return [Image.fromarray(flat.astype(np.uint8), "RGB"),
            Image.fromarray(np.floor(shading + 0.5).clip(0, 255).astype(np.uint8), "RGB"),
            line.convert("L").convert("RGB")]


def paint_name(rgb) -> str:
    return "paint #%02x%02x%02x" % tuple(rgb)


def build_psd(colour: Image.Image, line: Image.Image, strokes=()):
    """-> a psd_tools PSDImage with the layers of the module docstring. ``strokes``: [((r, g, b),
    mask "L")] as ``Layers.stroke_masks()`` gives them."""
    psd_tools = _psd_tools()
    from psd_tools.api.layers import PixelLayer
    from psd_tools.constants import BlendMode

    psd = psd_tools.PSDImage.new("RGB", colour.size, color=(255, 255, 255), depth=8)
    (flat, shading, lines), modes = psd_layers(colour, line, strokes), [getattr(BlendMode, m) for m in BLEND_MODES]
    paints = [(Image.merge("RGBA", (*Image.new("RGB", colour.size, tuple(rgb)).split(), mask)), paint_name(rgb),
               BlendMode.NORMAL) for rgb, mask in strokes]
    stack = [(flat, LAYER_NAMES[0], modes[0]), *paints, (shading, LAYER_NAMES[1], modes[1]),
             (lines, LAYER_NAMES[2], modes[2])]
    for image, name, mode in stack:
        layer = PixelLayer.frompil(image, psd, name)  # appended to psd, bottom first
        layer.blend_mode = mode
    return psd


def psd_bytes(layers) -> bytes:
    """The layered PSD of a colouring (``inference.Layers``, as ``Colorizer.colorize_layers`` gives
    it), as the bytes of a .psd file."""
    line = Image.fromarray(255 - np.asarray(layers.lines)[..., 3], "L")  # the drawing's lines, as read
    buffer = io.BytesIO()
    build_psd(layers.flat, line, layers.stroke_masks()).save(buffer)
    return buffer.getvalue()


def composite(path) -> np.ndarray:
    """(H, W, 3) uint8: the PSD at ``path`` composited from its layers by psd-tools, as a paint
    program would show it."""
    psd = _psd_tools().PSDImage.open(path)
    return np.asarray(psd.composite(force=True).convert("RGB"))
