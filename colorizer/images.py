"""Image conversions, one owner each: any PIL mode to 8-bit on white paper, and uint8 <-> the
networks' [-1, 1] range. ``data_prep`` (writing the dataset), ``data`` (reading it), inference,
evaluation and monitoring all use these, so a pixel means the same thing everywhere. Also the
batched Gaussian blur that the hint simulation and the line styles share, and ``nearest``, the
resampling of label maps (regions, shapes, bins) from one grid to another."""
from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ALPHA_MODES = ("P", "PA", "RGBA", "LA", "RGBa", "La")  # modes that can carry transparency


def flatten_image(image: Image.Image, mode: str) -> Image.Image:
    """Any PIL mode -> 8-bit ``mode`` ("L" or "RGB"): transparency composited on white paper,
    16-bit and 32-bit integer images scaled (not clipped) to 8 bits, float images in [0, 1] (or
    already in 0-255) scaled, palette and CMYK images converted through RGB. ValueError for a mode
    PIL cannot convert."""
    if mode not in ("L", "RGB"):
        raise ValueError(f"flatten_image: mode must be 'L' or 'RGB', got {mode!r}")
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        # Mode I holds 16-bit PNG/TIFF data (0..65535) in old Pillows and 8-bit data after convert("I").
        peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray((np.clip(values / peak, 0, 1) * 255 + 0.5).astype(np.uint8), "L")
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.max() <= 1.0 else 1.0
        image = Image.fromarray(np.clip(values * scale + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")  # a transparent palette entry becomes alpha here
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if image.mode == mode:
        return image
    try:
        return (image if image.mode == "RGB" else image.convert("RGB")).convert(mode)
    except ValueError as err:
        raise ValueError(f"cannot read an image of mode {image.mode}: {err}") from None


def nearest(array: np.ndarray, size: tuple) -> np.ndarray:
    """array (h, w, ...) -> (H, W, ...) at ``size`` (H, W), each pixel the array's cell it falls in:
    labels and indices stay labels and indices (no blending)."""
    rows = (np.arange(size[0]) * array.shape[0] // size[0])[:, None]
    cols = (np.arange(size[1]) * array.shape[1] // size[1])[None, :]
    return array[rows, cols]


def to_signed(pixels) -> torch.Tensor:
    """Pixel values in 0-255 (uint8, or float means of them; numpy array or tensor, any shape) ->
    float32 tensor in [-1, 1] (255 -> 1)."""
    if isinstance(pixels, np.ndarray):
        pixels = torch.from_numpy(np.require(pixels, requirements=["C", "W"]))  # PIL's arrays are read-only
    return pixels.float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float tensor in [-1, 1] (any shape, values outside clamped) -> uint8 tensor of the same shape,
    on the same device. Exact inverse of ``to_signed`` on its outputs."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_array(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) uint8 numpy array, the layout of PIL and W&B images."""
    return to_uint8(x).cpu().permute(1, 2, 0).numpy()


def to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) or (1, H, W) in [-1, 1] -> RGB or L PIL image."""
    pixels = to_array(x)
    return Image.fromarray(pixels[..., 0], "L") if pixels.shape[2] == 1 else Image.fromarray(pixels, "RGB")


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float, truncate: float = 2.5) -> torch.Tensor:
    """Separable Gaussian blur of x (B, C, H, W) with a per-image sigma (B,) <= max_sigma, in pixels
    (0 = none). The kernel reaches ``truncate`` x max_sigma pixels (fixed by the caller's bound, not
    by sigma.max(): no GPU sync); borders replicate, as scikit-image's mode "nearest" does."""
    batch, channels, height, width = x.shape
    radius = max(1, math.ceil(truncate * max_sigma))
    coords = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)  # (2r+1,)
    kernel = torch.exp(-coords**2 / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))  # (B, 2r+1); sigma 0 -> delta
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, 0)  # (B*C, 2r+1)
    x = x.reshape(1, batch * channels, height, width)  # one group per image and channel
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=batch * channels)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=batch * channels)
    return x.reshape(batch, channels, height, width)


PNG_COMPRESS_LEVEL = 1  # zlib level of result PNGs (lossless at any level): about twice as fast as PIL's 6, ~25 % larger


def png_bytes(images: list, level: int = PNG_COMPRESS_LEVEL) -> list:
    """Each of ``images`` (PIL) encoded as PNG bytes, in order; several at once in threads (zlib
    compresses outside Python's lock), so the page's three layers encode side by side."""
    def encode(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="png", compress_level=level)
        return buffer.getvalue()

    if len(images) < 2:
        return [encode(image) for image in images]
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        return list(pool.map(encode, images))
