"""XDoG line extraction (Winnemoeller et al. 2012): a soft threshold of a difference of Gaussians,
giving clean dark lines on white from a colour illustration. The formula is ``colorizer.linestyle.xdog``,
which training's line-style augmentation also runs, so the two extract lines the same way."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from colorizer.linestyle import xdog


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
