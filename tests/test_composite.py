"""Full-resolution colouring: the input's own lines laid over the colour (colorizer/composite.py),
the layers, thin hint strokes on big canvases, and the working resolution."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from colorizer.composite import flat_colour, line_layer, linear_to_srgb, multiply, srgb_to_linear
from colorizer.config import load_config
from colorizer.images import to_pil
from colorizer.inference import Colorizer, hints_to_arrays

TINY = ["--model.depth=3", "--model.base_channels=8", "--model.max_channels=32", "--data.size=64"]
FILL = torch.tensor([0.6, -0.2, -0.7])  # an orange in [-1, 1]


class CopyLinesGenerator(torch.nn.Module):
    """Stands in for a trained model: paints FILL inside the drawing's box and white outside, and
    copies the (working-size, so soft) line art into its output the way a real model does."""

    def forward(self, line, spatial, palette, keep):  # (B, 1, H, W) -> (B, 3, H, W), both in [-1, 1]
        batch, _, height, width = line.shape
        colour = torch.ones(batch, 3, height, width)
        colour[:, :, height // 5: 4 * height // 5, width // 5: 4 * width // 5] = FILL[:, None, None]
        ink = (1 - line) / 2  # (B, 1, H, W) in [0, 1]
        return colour * (1 - ink) - ink


def drawing(width=1000, height=700) -> Image.Image:
    """A non-square anti-aliased line drawing: the box the stub fills, and a few curves, on paper."""
    big = Image.new("L", (width * 4, height * 4), 255)  # drawn 4x and reduced: real anti-aliased edges
    draw = ImageDraw.Draw(big)
    draw.rectangle((width * 4 // 5, height * 4 // 5, width * 16 // 5, height * 16 // 5), outline=0, width=12)
    draw.ellipse((width * 1.2, height * 1.2, width * 2.6, height * 2.4), outline=0, width=6)
    draw.line((width * 1.0, height * 3.0, width * 3.0, height * 1.0), fill=0, width=4)
    return big.resize((width, height), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def model():
    return Colorizer(CopyLinesGenerator(), load_config(overrides=TINY), device="cpu")


def test_every_line_pixel_is_as_dark_as_the_input_and_paper_stays_paper(model):
    art = drawing()
    line = np.asarray(art).astype(int)
    out = np.asarray(model.colorize(art)).astype(int)
    assert out.shape == (700, 1000, 3)
    assert (out <= line[..., None] + 2).all()  # no channel lighter than the input's line pixel
    outside = np.zeros_like(line, bool)
    outside[:, :150] = True  # left of the box: paper in the input and in the model's colour
    assert (out[outside & (line == 255)] == 255).all()
    inside = np.zeros_like(line, bool)
    inside[450:530, 680:760] = True  # inside the box, away from lines: the fill, at full strength
    fill = np.asarray(to_pil(FILL[:, None, None].expand(3, 1, 1))).astype(int)[0, 0]
    assert np.abs(out[inside & (line == 255)] - fill).max() <= 4  # bicubic overshoot at most


def test_the_plain_bicubic_enlargement_fails_the_same_check(model):
    """The path before compositing: the network's output, its soft working-size lines included,
    enlarged 16x. Many line pixels come back lighter than drawn."""
    art = drawing()
    line = np.asarray(art).astype(int)
    old = np.asarray(model.colorize(art, composite=False)).astype(int)
    assert old.shape == (700, 1000, 3)
    lighter = old.max(-1) > line + 2  # line pixels that came back lighter than drawn
    assert lighter[line < 128].mean() > 0.3


def test_flat_colour_takes_the_model_lines_out():
    line = torch.ones(1, 1, 40, 72)
    line[:, :, 18:21, :] = -1  # a 3 px black line across
    colour = FILL.view(1, 3, 1, 1).expand(1, 3, 40, 72).clone()
    colour[:, :, 17:22, :] = -0.9  # the model's own, slightly wider copy of it
    flat = flat_colour(colour, line)
    assert torch.allclose(flat[:, :, 18:21], FILL.view(1, 3, 1, 1).expand(1, 3, 3, 72), atol=0.05)
    assert torch.equal(flat[:, :, :16], colour[:, :, :16])  # paper away from the line keeps its colour
    assert torch.allclose(flat[:, :, 16:23], FILL.view(1, 3, 1, 1).expand(1, 3, 7, 72), atol=0.05)  # no dark fringe


def test_thick_lines_are_filled_too():
    line = torch.ones(1, 1, 64, 48)
    line[:, :, 20:36, :] = -1  # 16 px: beyond the narrow pass
    colour = FILL.view(1, 3, 1, 1).expand(1, 3, 64, 48).clone()
    colour[:, :, 20:36] = -1
    assert torch.allclose(flat_colour(colour, line)[:, :, 28], FILL.view(1, 3, 1).expand(1, 3, 48), atol=0.05)


def test_multiply_never_lightens_and_keeps_paper():
    flat = torch.rand(3, 30, 50) * 2 - 1
    line = np.random.default_rng(0).integers(0, 256, (30, 50)).astype(np.uint8)
    out = multiply(flat, line).astype(int)
    assert (out <= line[..., None]).all()
    paper = np.full((30, 50), 255, np.uint8)
    expected = to_pil(flat).convert("RGB")
    assert np.abs(multiply(flat, paper).astype(int) - np.asarray(expected).astype(int)).max() <= 1


def test_srgb_round_trip():
    x = torch.linspace(0, 1, 256)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)
    assert srgb_to_linear(torch.tensor(0.5)).item() == pytest.approx(0.2140, abs=1e-4)  # the standard's value


def test_layers_stack_back_into_the_image(model):
    art = drawing(300, 200)
    layers = model.colorize_layers(art)
    assert layers.image.size == layers.flat.size == layers.lines.size == (300, 200)
    assert layers.lines.mode == "RGBA" and layers.flat.mode == "RGB"
    rgba = np.asarray(layers.lines)
    assert (rgba[..., :3] == 0).all() and np.array_equal(rgba[..., 3], 255 - np.asarray(art))
    flat = np.asarray(layers.flat).astype(int)
    box = np.asarray(art)[60:140, 90:210] == 255
    assert (flat[60:140, 90:210][~box] > 100).any(axis=-1).all()  # no black lines left in the flat layer
    assert np.array_equal(np.asarray(layers.image), np.asarray(model.colorize(art)))


def test_a_2px_stroke_on_a_4096px_canvas_still_counts():
    strokes = Image.new("RGBA", (4096, 2048), (0, 0, 0, 0))
    ImageDraw.Draw(strokes).line((100, 1000, 3000, 1010), fill=(30, 90, 200, 255), width=2)
    colour, mask = hints_to_arrays(strokes, (128, 256))
    assert mask.sum() >= 3000 / 16 * 0.9  # every working pixel the stroke crosses
    assert np.abs(colour[mask] - np.array([30, 90, 200]) / 255).max() < 0.01


def test_working_resolution(model):
    assert model.working_size(700, 1000) == (45, 64)  # the training box, aspect kept
    assert model.working_size(700, 1000, "native") == (700, 1000)
    model_small = Colorizer(CopyLinesGenerator(), load_config(overrides=TINY), device="cpu",
                            max_working_pixels=200 * 100)
    height, width = model_small.working_size(700, 1000, "native")
    assert height * width <= 200 * 100 and abs(width / height - 1000 / 700) < 0.05
    with pytest.raises(ValueError, match="resolution"):
        model.working_size(10, 10, "huge")
    out = model.colorize(drawing(200, 120), resolution="native")
    assert out.size == (200, 120)
