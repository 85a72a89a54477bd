"""XDoG line extraction (Winnemoeller et al. 2012): a soft threshold of a difference of Gaussians,
giving clean dark lines on white from a colour illustration."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.filters import gaussian


@dataclass(frozen=True)
class XDoG:
    sigma: float = 0.8  # scale of the finer Gaussian, in pixels at the output size (larger = bolder lines)
    k: float = 1.6  # ratio of the coarser Gaussian's sigma to the finer one's
    tau: float = 0.98  # weight of the coarser Gaussian (closer to 1 = fewer, cleaner lines); p = tau / (1 - tau)
    epsilon: float = -0.01  # threshold on the difference of Gaussians (lower = fewer lines)
    phi: float = 200.0  # sharpness of the soft threshold (large = nearly binary lines)

    def __call__(self, rgb: Image.Image) -> Image.Image:
        """RGB image -> mode L line art, paper 255 and lines near 0."""
        grey = np.asarray(rgb.convert("L"), dtype=np.float64) / 255.0
        fine = gaussian(grey, sigma=self.sigma)
        coarse = gaussian(grey, sigma=self.sigma * self.k)
        dog = fine - self.tau * coarse
        lines = np.where(dog >= self.epsilon, 1.0, 1.0 + np.tanh(self.phi * (dog - self.epsilon)))
        return Image.fromarray((np.clip(lines, 0, 1) * 255 + 0.5).astype(np.uint8), "L")

    def describe(self) -> str:
        return f"xdog sigma={self.sigma:g} k={self.k:g} tau={self.tau:g} epsilon={self.epsilon:g} phi={self.phi:g}"
