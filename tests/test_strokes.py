"""Stroke propagation (colorizer/strokes.py): a painted stroke colours the shape it lies in, up to
the lines, and nothing else; through Colorizer.colorize on non-square drawings."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from colorizer.config import load_config
from colorizer.fills import region_grid
from colorizer.inference import Colorizer, hints_to_arrays
from colorizer.hint_auc import delta_e
from colorizer.strokes import OPEN_GAP_SCALE, STROKE_GAP, STROKE_TOLERANCE, held_gap, propagate

TINY = ["--model.depth=3", "--model.base_channels=8", "--model.max_channels=32", "--data.size=64"]
W, H = 512, 300  # non-square; long side 512: the ball's radius is 2 px, gaps up to 4 px are held
RED, BLUE = (230, 57, 70), (40, 90, 220)
LEFT, RIGHT = (40, 60, 230, 240), (280, 60, 470, 240)  # two boxes side by side, 50 px apart


def drawing(gap: int = 0) -> np.ndarray:
    """Two closed boxes on paper, 3 px lines; ``gap`` px cut out of the left box's right side."""
    art = Image.new("L", (W, H), 255)
    draw = ImageDraw.Draw(art)
    for box in (LEFT, RIGHT):
        draw.rectangle(box, outline=0, width=3)
    line = np.array(art)
    if gap:
        line[150 - gap // 2: 150 - gap // 2 + gap, LEFT[2] - 4: LEFT[2] + 1] = 255
    return line


def strokes(*segments) -> Image.Image:
    """An RGBA stroke layer: each segment ((x0, y0, x1, y1), rgb) a 6 px line."""
    layer = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    for xy, rgb in segments:
        ImageDraw.Draw(layer).line(xy, fill=(*rgb, 255), width=6)
    return layer


def grey() -> torch.Tensor:
    """The 'network' colour: a grey ramp at a 64 px working size, (3, 38, 64) in [-1, 1]."""
    return torch.linspace(-0.2, 0.4, 64).view(1, 1, 64).expand(3, 38, 64).clone()


def run(line, layer, colour=None, tolerance=0.0) -> np.ndarray:
    """propagate at the region grid -> (H, W, 3) uint8."""
    out = propagate(grey() if colour is None else colour, line, *hints_to_arrays(layer, region_grid(H, W)),
                    tolerance=tolerance)
    assert out.shape == (3, H, W)
    return ((out.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)


def inside(box, margin=4):
    x0, y0, x1, y1 = box
    return slice(y0 + margin, y1 - margin), slice(x0 + margin, x1 - margin)


def unpainted(line) -> np.ndarray:
    return run(line, Image.new("RGBA", (W, H), (0, 0, 0, 0)))


def test_the_held_gap_is_stated_in_pixels():
    assert held_gap(H, W) == 4 and held_gap(1024, 1024) == 8 == 2 * round(STROKE_GAP * 1024)
    assert region_grid(4096, 2048) == (1448, 724) and held_gap(4096, 2048) == int(12 * 4096 / 1448)  # 12 px there


def test_a_stroke_fills_its_closed_shape_and_stops_at_the_lines():
    line = drawing()
    out = run(line, strokes(((100, 150, 170, 150), RED)))
    assert (out[inside(LEFT)] == RED).all()  # the whole shape, not a blob round the stroke
    base = unpainted(line)
    assert np.array_equal(out[inside(RIGHT)], base[inside(RIGHT)])  # the other shape keeps the network's colour
    paper = line == 255
    paper[LEFT[1] - 2: LEFT[3] + 3, LEFT[0] - 2: LEFT[2] + 3] = False  # outside the left box
    assert np.array_equal(out[paper], base[paper])  # the paper is not flooded


@pytest.mark.parametrize("gap, held", [(3, True), (12, True), (60, False)])
def test_gaps_in_the_outline(gap, held):
    # 3 px: under the held width (4 px). 12 px: closed by the second, 4x larger ball, which carves the
    # open shape out of the paper. 60 px: the shape is the paper, and the stroke is on the paper.
    assert 3 < held_gap(H, W) * OPEN_GAP_SCALE < 60
    line = drawing(gap)
    out = run(line, strokes(((100, 150, 170, 150), RED)))
    assert (out[inside(LEFT)] == RED).mean() > 0.97
    corner = out[5:30, 5:30]  # paper far from the drawing
    assert (corner == RED).all(-1).all() != held


def test_a_stroke_across_a_line_stays_in_the_shape_holding_most_of_it():
    line = drawing()
    out = run(line, strokes(((150, 150, 255, 150), BLUE)))  # 80 px in the left box, 25 across into the paper
    assert (out[inside(LEFT)] == BLUE).all()
    assert not (out[5:30, 5:30] == BLUE).all(-1).any() and not (out[inside(RIGHT)] == BLUE).all(-1).any()
    both = run(line, strokes(((150, 150, 380, 150), BLUE)))  # through both boxes: each holds a quarter or more
    assert (both[inside(LEFT)] == BLUE).all() and (both[inside(RIGHT)] == BLUE).all()
    assert not (both[5:30, 5:30] == BLUE).all(-1).any()  # the paper between them holds under a quarter


def test_a_stroke_on_the_paper_colours_the_paper_and_not_the_shapes():
    line = drawing()
    out = run(line, strokes(((20, 20, 480, 20), BLUE)))
    assert (out[5:30, 5:30] == BLUE).all() and (out[280:295, 250:260] == BLUE).all()
    base = unpainted(line)
    for box in (LEFT, RIGHT):
        assert np.array_equal(out[inside(box)], base[inside(box)])


def test_a_black_stroke_along_a_line_colours_no_shape():
    line = drawing()
    layer = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    ImageDraw.Draw(layer).line((LEFT[0] + 1, 100, LEFT[0] + 1, 200), fill=(0, 0, 0, 255), width=3)  # on the outline
    assert np.array_equal(run(line, layer), unpainted(line))


def test_two_colours_in_one_shape_split_it_by_the_nearest_stroke():
    line = drawing()
    out = run(line, strokes(((60, 100, 210, 100), RED), ((60, 200, 210, 200), BLUE)))  # no line between them
    assert (out[LEFT[1] + 5: 140, LEFT[0] + 5: LEFT[2] - 5] == RED).all()
    assert (out[160: LEFT[3] - 5, LEFT[0] + 5: LEFT[2] - 5] == BLUE).all()


def shaded(rgb, spread: float) -> torch.Tensor:
    """A 'network' colour (3, H, W) in [-1, 1]: ``rgb`` with a shading across, a lightness wave of
    +-``spread`` (of 255) and a 40 px period."""
    ramp = spread * torch.sin(torch.arange(W) * (2 * torch.pi / 40)).view(1, 1, W) / 127.5
    return (torch.tensor(rgb).view(3, 1, 1) / 127.5 - 1 + ramp).expand(3, H, W).clamp(-1, 1)


@pytest.mark.parametrize("tolerance", [4.0, 9.0])
def test_the_tolerance_keeps_the_networks_shading_within_it_of_the_paint(tolerance):
    line = drawing()
    layer = strokes(((100, 150, 170, 150), RED))
    near = shaded(RED, 3)  # the network agrees with the stroke, with a shading within 4 ΔE of it
    out = run(line, layer, near, tolerance)
    expect = ((near.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    distance = delta_e(expect, np.broadcast_to(np.array(RED, np.uint8), expect.shape))[inside(LEFT)]
    assert distance.max() < 4 and len(np.unique(expect[inside(LEFT)].reshape(-1, 3), axis=0)) > 3
    assert np.abs(out[inside(LEFT)].astype(int) - expect[inside(LEFT)]).max() <= 1
    far = run(line, layer, shaded((60, 170, 80), 12), tolerance)  # the network painted it green
    distance = delta_e(far, np.broadcast_to(np.array(RED, np.uint8), far.shape))[inside(LEFT)]
    assert distance.max() < tolerance + 1 and distance.min() > tolerance - 1  # moved to the edge of the ball
    assert (run(line, layer, shaded((60, 170, 80), 12))[inside(LEFT)] == RED).all()  # 0: flat paint
    assert np.array_equal(far[inside(RIGHT)], run(line, strokes(), shaded((60, 170, 80), 12))[inside(RIGHT)])


def test_in_a_shape_of_two_colours_the_network_draws_the_boundary_where_it_agrees_with_one():
    line = drawing()
    layer = strokes(((60, 100, 210, 100), RED), ((60, 200, 210, 200), BLUE))
    network = shaded(BLUE, 0)
    network[:, :125] = torch.tensor(RED).view(3, 1, 1) / 127.5 - 1  # red down to row 125, blue below
    out = run(line, layer, network, 9.0)
    assert (delta_e(out, np.broadcast_to(np.array(RED, np.uint8), out.shape))[LEFT[1] + 5: 123, 50:220] < 1).all()
    assert (delta_e(out, np.broadcast_to(np.array(BLUE, np.uint8), out.shape))[127: LEFT[3] - 5, 50:220] < 1).all()
    flat = run(line, layer, network)  # without the tolerance, the nearest stroke splits it at row 150
    assert (flat[130:145, 50:220] == RED).all()


def test_a_negative_tolerance_is_refused():
    with pytest.raises(ValueError, match="tolerance"):
        run(drawing(), strokes(((100, 150, 170, 150), RED)), tolerance=-1)


def test_the_lines_take_the_paint_next_to_them():
    line = drawing()
    out = run(line, strokes(((100, 150, 170, 150), RED)))
    assert (out[150, LEFT[0] + 2] == RED).all()  # the 3 px outline's inner pixel
    assert not (out[150, LEFT[0]] == RED).all() and not (out[150, LEFT[0] - 1] == RED).all()  # its outer, the paper


def test_colorize_propagates_by_default_and_the_network_still_sees_the_strokes():
    network = SeesHints()
    model = Colorizer(network, load_config(overrides=TINY), device="cpu")
    art = Image.fromarray(drawing())
    layer = strokes(((100, 150, 170, 150), RED))
    out = np.asarray(model.colorize(art, hints=layer))
    assert out.shape == (H, W, 3)  # the shape within the default tolerance of the paint (and 1 ΔE of rounding)
    red = np.broadcast_to(np.array(RED, np.uint8), out.shape)
    assert (delta_e(out, red)[inside(LEFT)] < STROKE_TOLERANCE + 1).all()
    assert np.array_equal(np.asarray(model.colorize(art, hints=layer, tolerance=0))[inside(LEFT)],
                          red[inside(LEFT)])  # 0: flat paint
    assert (out <= drawing()[..., None].astype(int) + 1).all()  # the drawing's lines on top, as dark as drawn
    plain = np.asarray(model.colorize(art, hints=layer, propagate=False))
    assert not (plain[inside(LEFT)] == RED).all(-1).all()  # the network alone: a blob at most
    assert network.saw_hints  # the strokes reached the network as hints
    unpainted_right = np.asarray(model.colorize(art))[inside(RIGHT)]
    assert np.abs(out[inside(RIGHT)].astype(int) - unpainted_right).max() > 0  # its guess used the hints
    layers = model.colorize_layers(art, hints=layer)
    assert np.array_equal(np.asarray(layers.image), out)


class SeesHints(torch.nn.Module):
    """A stand-in network: grey, shifted everywhere by the mean hint colour (so its guess for the
    other shapes depends on the strokes), and it records that it saw hints."""

    def __init__(self):
        super().__init__()
        self.saw_hints = False

    def forward(self, line, spatial, palette, keep):  # (B, 1, H, W) -> (B, 3, H, W) in [-1, 1]
        mask = spatial[:, 3:4]
        if mask.sum() > 0:
            self.saw_hints = True
        shift = (spatial[:, :3] * mask).sum((2, 3), keepdim=True) / mask.sum((2, 3), keepdim=True).clamp_min(1)
        return (torch.zeros_like(line).expand(-1, 3, -1, -1) + 0.2 * shift).clamp(-1, 1)


def test_a_drawing_that_is_all_ink_has_no_shape_to_paint():
    line = np.zeros((1, 2), np.uint8)  # two pixels of ink: no shape at all
    layer = np.ones((1, 2, 3), np.float32) * 0.5, np.ones((1, 2), bool)
    colour = torch.zeros(3, 1, 2)
    assert torch.equal(propagate(colour, line, *layer), colour)
