"""Line art extracted from a colour illustration, two ways (``--lines`` of the importers):

- ``xdog``: XDoG (Winnemoeller et al. 2012), a soft threshold of a difference of Gaussians of the
  luminance, giving clean dark lines on white. The formula is ``colorizer.linestyle.xdog``, which
  training's line-style augmentation also runs, so the two extract lines the same way. It misses
  contours between colours of similar lightness (a yellow face on white paper).
- ``colour`` (the default): XDoG's lines plus a line wherever the colour changes: the CIELAB
  difference (CIE76 Delta E) between neighbouring pixels of the image blurred by XDoG's sigma,
  through a soft ramp. Measured coverage and precision of both: experiments/RESULTS.md, "Colour-aware line art".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from colorizer.linestyle import COLOUR_DELTA_E, colour_lines, xdog


@dataclass(frozen=True)
class XDoG:
    sigma: float = 0.8  # scale of the finer Gaussian, in pixels at the output size (larger = bolder lines)
    k: float = 1.6  # ratio of the coarser Gaussian's sigma to the finer one's
    tau: float = 0.98  # weight of the coarser Gaussian (closer to 1 = fewer, cleaner lines); p = tau / (1 - tau)
    epsilon: float = -0.01  # threshold on the difference of Gaussians (lower = fewer lines)
    phi: float = 200.0  # sharpness of the soft threshold (large = nearly binary lines)

    def __call__(self, rgb: Image.Image) -> Image.Image:
        """RGB image -> mode L line art, paper 255 and lines near 0."""
        grey = torch.from_numpy(np.asarray(rgb.convert("L"), dtype=np.float64) / 255.0)[None, None]  # (1, 1, H, W)
        lines = xdog(grey, self.sigma, self.k, self.tau, self.epsilon, self.phi)[0, 0].numpy()  # (H, W) in [0, 1]
        return Image.fromarray((lines * 255 + 0.5).astype(np.uint8), "L")

    def describe(self) -> str:
        return f"xdog sigma={self.sigma:g} k={self.k:g} tau={self.tau:g} epsilon={self.epsilon:g} phi={self.phi:g}"


@dataclass(frozen=True)
class ColourLines:
    """XDoG's lines of the luminance, plus lines where the colour changes by more than about
    ``low`` to ``high`` Delta E between neighbouring pixels (a soft ramp, so anti-aliased edges stay
    soft). The colour is blurred by XDoG's sigma first, so JPEG noise and dithering draw no lines and
    one sigma sets the weight of both kinds of line (``--styles`` of the folder importer)."""

    low: float = COLOUR_DELTA_E[0]  # Delta E below which a change draws nothing
    high: float = COLOUR_DELTA_E[1]  # Delta E from which a change draws full ink
    xdog: XDoG = XDoG()

    def __call__(self, rgb: Image.Image) -> Image.Image:
        """RGB image -> mode L line art, paper 255 and lines near 0."""
        rgb01 = torch.from_numpy(np.asarray(rgb.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        paper = colour_lines(rgb01, self.xdog.sigma, self.xdog.sigma, (self.low, self.high))[0, 0].numpy()  # (H, W)
        lines = np.minimum(paper * 255, np.asarray(self.xdog(rgb), dtype=np.float32))
        return Image.fromarray((lines + 0.5).astype(np.uint8), "L")

    def describe(self) -> str:
        return f"colour delta_e={self.low:g}-{self.high:g} + {self.xdog.describe()}"


INK_BELOW = 128  # line-art pixels darker than this are ink
MIN_LINE_FRACTION = 0.002  # ink a line image needs: below this it teaches nothing


def has_lines(line: Image.Image) -> bool:
    """Whether mode L line art holds at least MIN_LINE_FRACTION of ink (pixels below INK_BELOW)."""
    return float((np.asarray(line) < INK_BELOW).mean()) >= MIN_LINE_FRACTION


LINE_EXTRACTORS = ("colour", "xdog")  # the --lines choices of the importers that extract line art from colour
DEFAULT_LINES = "colour"  # the folder importer's default: it finds the contours of light shapes too


def extractor(name: str = DEFAULT_LINES, xdog: XDoG = XDoG()):
    """The line extractor called ``name`` (one of LINE_EXTRACTORS), its luminance lines by ``xdog``:
    a callable RGB PIL image -> mode L line art (paper 255, lines near 0), with ``describe()`` for
    manifests."""
    if name == "xdog":
        return xdog
    if name == "colour":
        return ColourLines(xdog=xdog)
    raise ValueError(f"unknown line extractor {name!r}: choose one of {', '.join(LINE_EXTRACTORS)}")
