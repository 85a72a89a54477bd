"""Flat fills (colorizer/fills.py): one colour per closed region of the line art, gaps closed,
painted hints winning, through Colorizer.colorize(fill=True) at a non-square full resolution."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from colorizer.config import load_config
from colorizer.fills import FILL_MAX_PIXELS, flat_fill, ink_mask, region_grid, regions
from colorizer.inference import Colorizer

TINY = ["--model.depth=3", "--model.base_channels=8", "--model.max_channels=32", "--data.size=64"]


def two_shapes(width=90, height=60, gap=0) -> np.ndarray:
    """A non-square drawing: a closed box (left) and a circle (right) on paper; ``gap`` px cut out
    of the box's right side. (H, W) uint8."""
    art = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(art)
    draw.rectangle((5, 5, width // 2 - 5, height - 6), outline=0, width=2)
    draw.ellipse((width // 2 + 5, 10, width - 6, height - 11), outline=0, width=2)
    line = np.array(art)
    if gap:
        line[height // 2: height // 2 + gap, width // 2 - 7: width // 2 - 3] = 255
    return line


def test_regions_are_the_closed_areas_and_small_gaps_are_closed():
    _, count = regions(ink_mask(two_shapes(), (60, 90)), gap=0)
    assert count == 3  # the box's inside, the circle's inside, the paper around both
    broken = ink_mask(two_shapes(gap=3), (60, 90))  # a 3 px gap in the box's side
    assert regions(broken, gap=0)[1] == 2  # the gap joins the box's inside to the paper
    assert regions(broken, gap=1 / 90)[1] == 2  # a ball 3 px across passes through a 3 px gap
    labels, count = regions(broken, gap=2 / 90)  # one 5 px across does not
    assert count == 3 and labels[30, 20] != labels[30, 2]
    assert (labels[~broken] > 0).all() and (labels[broken] == 0).all()  # every paper pixel has a region


def test_each_region_gets_the_median_of_the_model_colour_and_ink_its_neighbours():
    line = two_shapes()
    labels, _ = regions(ink_mask(line, line.shape), gap=0)
    colour = torch.full((3, 60, 90), -0.2)
    colour[0, :, : 45] = 0.6  # the left half (the box) reddish
    colour[:, 20:24, 12:20] = -1.0  # a dark smear inside the box: a minority the median ignores
    out = flat_fill(colour, line, gap=0)
    assert out.shape == (3, 60, 90)
    for label in np.unique(labels[labels > 0]):
        values = out.permute(1, 2, 0).numpy()[labels == label]
        assert (values == values[0]).all(), f"region {label} has more than one colour"
    box = labels == labels[30, 20]
    assert np.allclose(out[:, 30, 20].numpy(), [0.6, -0.2, -0.2], atol=1 / 127)
    assert box.sum() > 300 and not box[30, 70]
    # the ink between the box and the paper takes a region's colour: no pixel keeps the smear
    assert out.min() > -0.25


def test_painted_hints_win_in_the_regions_they_touch():
    line = two_shapes()
    colour = torch.full((3, 60, 90), 0.5)
    hint_colour = np.zeros((30, 45, 3), np.float32)  # hints at another size (the working size)
    hint_mask = np.zeros((30, 45), bool)
    hint_colour[15, 33] = (0.1, 0.2, 0.9)  # one hinted working pixel inside the circle
    hint_mask[15, 33] = True
    out = flat_fill(colour, line, hint_colour, hint_mask, gap=0)
    labels, _ = regions(ink_mask(line, line.shape), gap=0)
    circle = labels == labels[30, 67]
    expected = np.array([0.1, 0.2, 0.9]) * 2 - 1
    assert np.allclose(out.permute(1, 2, 0).numpy()[circle], expected, atol=1 / 127)  # the whole circle
    assert np.allclose(out[:, 30, 20].numpy(), 0.5, atol=1 / 127)  # the box keeps the model's colour


def test_a_large_drawing_is_labelled_on_a_capped_grid_that_keeps_thin_lines():
    height, width = 3000, 1200  # 3.6 M pixels: labelled at 1 M
    assert region_grid(height, width)[0] * region_grid(height, width)[1] <= FILL_MAX_PIXELS
    art = Image.new("L", (width, height), 255)
    ImageDraw.Draw(art).rectangle((100, 100, 1100, 2900), outline=0, width=1)  # a 1 px line
    line = np.asarray(art)
    grid = region_grid(height, width)
    _, count = regions(ink_mask(line, grid), gap=0)
    assert count == 2  # scaled down, the 1 px line still closes the box
    out = flat_fill(torch.zeros(3, 64, 26), line)
    assert tuple(out.shape[-2:]) == grid


class SmearGenerator(torch.nn.Module):
    """Stands in for a model whose colour smears: a left-to-right ramp, whatever the drawing."""

    def forward(self, line, spatial, palette, keep):  # (B, 1, H, W) -> (B, 3, H, W) in [-1, 1]
        ramp = torch.linspace(-0.8, 0.8, line.shape[-1]).view(1, 1, 1, -1)
        return ramp.expand(line.shape[0], 3, *line.shape[-2:]).clone()


def test_colorize_with_flat_fills_gives_one_colour_per_region_and_keeps_the_lines():
    model = Colorizer(SmearGenerator(), load_config(overrides=TINY), device="cpu")
    line = two_shapes(450, 300)  # non-square, bigger than the 64 px working size
    art = Image.fromarray(line)
    plain = np.asarray(model.colorize(art)).astype(int)
    flat = np.asarray(model.colorize(art, fill=True)).astype(int)
    assert flat.shape == plain.shape == (300, 450, 3)
    assert (flat <= line[..., None].astype(int) + 2).all()  # lines as dark as drawn
    labels, _ = regions(ink_mask(line, line.shape))
    inside = labels == labels[150, 100]  # the box's inside
    assert len(np.unique(plain[inside].reshape(-1, 3), axis=0)) > 20  # the ramp
    paper = line == 255
    assert len(np.unique(flat[inside & paper].reshape(-1, 3), axis=0)) == 1  # one colour
    layers = model.colorize_layers(art, fill=True)
    assert np.array_equal(np.asarray(layers.image), flat)
    with pytest.raises(ValueError, match="flat fills need the composite"):
        model.colorize(art, composite=False, fill=True)


def test_growing_the_regions_is_a_grey_dilation_over_the_unlabelled_paper():
    from scipy import ndimage

    from colorizer.fills import grow

    rng = np.random.default_rng(0)
    paper = rng.random((37, 53)) > 0.15  # non-square, ink scattered
    labels = np.where(paper & (rng.random(paper.shape) > 0.9), rng.integers(1, 6, paper.shape), 0)
    expect, cross = labels.copy(), ndimage.generate_binary_structure(2, 1)
    for _ in range(4):  # the grey dilation with a cross, on the unlabelled paper only
        expect = np.where(paper & (expect == 0), ndimage.grey_dilation(expect, footprint=cross), expect)
    got = grow(labels, paper, 4)
    assert np.array_equal(got, expect) and (got[~paper] == 0).all() and (got != labels).any()
