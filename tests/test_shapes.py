"""Shape colour accuracy and colourfulness on hand-made flat drawings with known answers."""
import numpy as np
import pytest
import torch

from colorizer.images import to_signed
from colorizer.shapes import batch_shape_sums, colourfulness, merge_sums, shape_ratios, shape_sums, target_shapes

RED, BLUE, YELLOW, GREY, WHITE, BLACK = (220, 40, 40), (40, 60, 220), (250, 220, 40), (128, 128, 128), \
    (255, 255, 255), (0, 0, 0)


def drawing() -> tuple:
    """A 60 x 90 flat drawing on paper: a red box and a blue box, each with a black outline, and a
    one-pixel yellow speck too small to be a shape. Returns (image, red area, blue area)."""
    image = np.full((60, 90, 3), WHITE, np.uint8)
    image[5:35, 5:45] = BLACK
    image[7:33, 7:43] = RED  # 26 x 36
    image[30:58, 50:88] = BLACK
    image[32:56, 52:86] = BLUE  # 24 x 34
    image[1, 1] = YELLOW
    return image, 26 * 36, 24 * 34


def ratios(pred, target) -> dict:
    return shape_ratios(shape_sums(pred, target))


def test_the_shapes_are_the_flat_colours_without_paper_ink_or_specks():
    image, red_area, blue_area = drawing()
    labels, colours = target_shapes(image)
    assert labels.shape == (60, 90) and len(colours) == 2
    assert sorted(np.bincount(labels.ravel())[1:].tolist()) == sorted([red_area, blue_area])
    assert (labels[image.sum(-1) == 0] == 0).all() and labels[0, 0] == 0 and labels[1, 1] == 0
    np.testing.assert_allclose(sorted(colours.tolist()), sorted([list(RED), list(BLUE)]))


def test_a_perfect_colouring_scores_one():
    image, _, _ = drawing()
    assert ratios(image, image) == pytest.approx({"shape_accuracy": 1.0, "colourfulness": 1.0})


def test_a_grey_fill_scores_zero_and_is_colourless():
    image, _, _ = drawing()
    grey = np.where(image.sum(-1, keepdims=True) == 0, image, np.array(GREY, np.uint8))
    result = ratios(grey, image)
    assert result["shape_accuracy"] == 0.0 and result["colourfulness"] == pytest.approx(0.0, abs=1e-9)


def test_a_wrong_colouring_is_colourful_and_misses():
    image, red_area, blue_area = drawing()
    swapped = image.copy()
    swapped[(image == RED).all(-1)] = BLUE
    swapped[(image == BLUE).all(-1)] = RED
    result = ratios(swapped, image)
    assert result["shape_accuracy"] == 0.0 and result["colourfulness"] > 0.9


def test_one_shape_right_scores_its_share_of_the_area():
    image, red_area, blue_area = drawing()
    half = image.copy()
    half[(image == BLUE).all(-1)] = YELLOW
    assert ratios(half, image)["shape_accuracy"] == pytest.approx(red_area / (red_area + blue_area))


def test_the_shape_border_is_not_judged():
    """The median is taken inside the shape eroded by 1 px: a wrong 1-px rim does not turn a hit into
    a miss, a wrong colour over most of the shape does."""
    image, red_area, blue_area = drawing()
    rim = image.copy()
    rim[7:33, 7:43] = GREY
    rim[8:32, 8:42] = RED
    assert ratios(rim, image)["shape_accuracy"] == 1.0
    inside = image.copy()
    inside[9:31, 9:41] = GREY
    assert ratios(inside, image)["shape_accuracy"] == pytest.approx(blue_area / (red_area + blue_area))


def test_hits_are_judged_in_ciede2000():
    """A red a little darker is a hit (CIEDE2000 about 3); an orange-yellow is not."""
    image, red_area, blue_area = drawing()
    darker, orange = image.copy(), image.copy()
    darker[(image == RED).all(-1)] = (205, 35, 35)
    orange[(image == RED).all(-1)] = (240, 170, 40)
    assert ratios(darker, image)["shape_accuracy"] == 1.0
    assert ratios(orange, image)["shape_accuracy"] == pytest.approx(blue_area / (red_area + blue_area))


def test_a_drawing_without_shapes_adds_nothing_and_a_size_mismatch_is_refused():
    blank = np.full((20, 30, 3), 255, np.uint8)
    sums = shape_sums(blank, blank)
    assert set(sums.values()) == {0.0}
    assert all(np.isnan(v) for v in shape_ratios(sums).values())
    with pytest.raises(ValueError, match="differ in size"):
        shape_sums(blank, blank[:, :20])


def test_colourfulness_follows_hasler_and_suesstrunk():
    assert colourfulness(np.full((10, 3), 128)) == 0.0
    assert colourfulness(np.zeros((0, 3))) == 0.0
    pixels = np.array([RED, BLUE], np.float64)
    rg, yb = pixels[:, 0] - pixels[:, 1], 0.5 * (pixels[:, 0] + pixels[:, 1]) - pixels[:, 2]
    expected = np.sqrt(rg.var() + yb.var()) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    assert colourfulness(pixels) == pytest.approx(expected)


def test_batch_sums_take_signed_tensors_and_sum_to_the_set_ratio():
    image, red_area, blue_area = drawing()
    half = image.copy()
    half[(image == BLUE).all(-1)] = YELLOW
    target = to_signed(torch.from_numpy(np.stack([image, image])).permute(0, 3, 1, 2))  # (2, 3, 60, 90)
    pred = to_signed(torch.from_numpy(np.stack([image, half])).permute(0, 3, 1, 2))
    sums = batch_shape_sums(pred, target)
    assert all(v.shape == (2,) for v in sums.values())
    total = {key: value.sum().item() for key, value in sums.items()}
    assert shape_ratios(total)["shape_accuracy"] == pytest.approx((2 * red_area + blue_area) / (2 * (red_area + blue_area)))


def line_of(image: np.ndarray) -> np.ndarray:
    """The drawing's line art: (H, W) uint8, 0 on its black outline, 255 elsewhere."""
    return np.where(image.sum(-1) == 0, 0, 255).astype(np.uint8)


def test_merged_share_counts_the_smaller_colour_of_a_region_drawn_without_a_line_between():
    image, red_area, blue_area = drawing()
    assert merge_sums(line_of(image), image) == {"merged_area": 0.0, "shape_area": float(red_area + blue_area)}
    image[7:33, 7:19] = YELLOW  # a yellow strip beside the red, inside the red box's outline: 26 x 12
    result = merge_sums(line_of(image), image)
    assert result == {"merged_area": 26.0 * 12, "shape_area": float(red_area + blue_area)}
    image[7:33, 19] = BLACK  # a line between them: two regions, nothing merged
    assert merge_sums(line_of(image), image)["merged_area"] == 0.0
    image[7:33, 7:19] = (222, 42, 38)  # the same colour as its neighbour (within HIT_DELTA_E) is no merge either
    image[7:33, 19] = RED
    assert merge_sums(line_of(image), image)["merged_area"] == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        merge_sums(line_of(image)[:, :80], image)
