"""colorizer.images: the one mode normaliser (data_prep and inference) and the one [-1, 1] <-> uint8
conversion (data, inference, evaluation, monitoring)."""
import numpy as np
import pytest
import torch
from PIL import Image

from colorizer.images import flatten_image, to_pil, to_signed, to_uint8


def odd_images() -> dict:
    """The same dark square on white paper (or on transparency) in many PIL modes, 10 x 6 (non-square)."""
    grey = np.full((6, 10), 255, np.uint8)
    grey[1:4, 2:5] = 40
    rgba = np.zeros((6, 10, 4), np.uint8)
    rgba[1:4, 2:5] = (40, 40, 40, 255)  # the rest is transparent: paper
    palette = Image.fromarray(grey, "L").convert("P")
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])
    return {
        "L": Image.fromarray(grey, "L"),
        "RGB": Image.fromarray(grey, "L").convert("RGB"),
        "RGBA": Image.fromarray(rgba, "RGBA"),
        "LA": Image.fromarray(rgba, "RGBA").convert("LA"),
        "P+transparency": palette,
        "CMYK": Image.fromarray(grey, "L").convert("CMYK"),
        "I;16": Image.fromarray(grey.astype(np.uint16) * 257, "I;16"),
        "I": Image.fromarray(grey.astype(np.int32), "I"),
        "F": Image.fromarray(grey.astype(np.float32) / 255, "F"),
    }


@pytest.mark.parametrize("name", list(odd_images()))
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_every_mode_becomes_the_same_8_bit_picture_on_white(name, mode):
    out = flatten_image(odd_images()[name], mode)
    assert out.mode == mode and out.size == (10, 6)
    values = np.asarray(out.convert("L"), dtype=int)
    assert values[0, 0] == 255 and abs(values[2, 3] - 40) <= 1, (name, values[0, 0], values[2, 3])


def test_unknown_target_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be"):
        flatten_image(Image.new("L", (2, 2)), "RGBA")


def test_uint8_round_trip_and_clamping():
    levels = torch.arange(256, dtype=torch.uint8).view(1, 16, 16)
    signed = to_signed(levels)
    assert signed.dtype == torch.float32 and signed.min() == -1 and signed.max() == 1
    assert torch.equal(to_uint8(signed), levels)
    assert to_uint8(torch.tensor([-3.0, 2.0])).tolist() == [0, 255]
    assert torch.equal(to_signed(levels.numpy()), signed)  # numpy arrays too
    assert np.array_equal(np.asarray(to_pil(signed)), levels[0].numpy())
    assert to_pil(signed.expand(3, -1, -1)).mode == "RGB"
