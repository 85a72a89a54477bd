"""Line-style augmentation: XDoG against scikit-image's reference form, each variation on its own,
the shares, determinism, and that training's one input path applies it."""
import numpy as np
import pytest
import torch
from skimage.color import rgb2lab
from skimage.filters import gaussian

from colorizer.config import ConfigError, load_config
from colorizer.linestyle import LineStyle, colour_change, luma, restyle, vary, xdog, xdog_from_color
from colorizer.step import build_parts, prepare_inputs
from data_prep.lineart import ColourLines, XDoG

NO_VARIATION = {"jitter": 0.0, "thickness": 0.0, "gaps": 0.0, "lightness": 0.0, "blur": 0.0, "noise": 0.0}


def drawing(batch=4, height=40, width=72):
    """Non-square line art and its colour target, in [-1, 1]: a black-outlined rectangle filled
    with one colour per image, on white paper."""
    line = torch.ones(batch, 1, height, width)
    color = torch.ones(batch, 3, height, width)
    fills = torch.linspace(-0.6, 0.6, batch)
    for b in range(batch):
        color[b, :, 8:32, 12:60] = torch.tensor([fills[b], -fills[b], 0.2])[:, None, None]
    for t in (line, color):
        t[:, :, 8:10, 12:60] = -1
        t[:, :, 30:32, 12:60] = -1
        t[:, :, 8:32, 12:14] = -1
        t[:, :, 8:32, 58:60] = -1
    return line, color


def lines_cfg(**keys):
    return load_config(overrides=[f"--lines.{k}={v}" for k, v in keys.items()]).lines


def reference_xdog(grey: np.ndarray, sigma, k, tau, epsilon, phi) -> np.ndarray:
    """Winnemoeller's XDoG with scikit-image's Gaussian, the form data_prep used before torch."""
    dog = gaussian(grey, sigma=sigma) - tau * gaussian(grey, sigma=sigma * k)
    return np.clip(np.where(dog >= epsilon, 1.0, 1.0 + np.tanh(phi * (dog - epsilon))), 0, 1)


@pytest.mark.parametrize("sigma,tau,epsilon,phi", [(0.8, 0.98, -0.01, 200.0), (1.3, 0.95, -0.02, 50.0)])
def test_xdog_matches_the_scikit_image_form(sigma, tau, epsilon, phi):
    grey = np.random.default_rng(0).random((37, 53)) * 0.3 + 0.6
    grey[10:20, 5:45] = 0.1  # a dark bar: edges to find
    ours = xdog(torch.from_numpy(grey)[None, None], sigma, 1.6, tau, epsilon, phi)[0, 0].numpy()
    np.testing.assert_allclose(ours, reference_xdog(grey, sigma, 1.6, tau, epsilon, phi), atol=2e-3)
    assert (ours < 0.5).any() and (ours > 0.99).any()  # it drew lines, and left paper


def test_folder_importer_and_training_share_the_extractor():
    """data_prep's XDoG and ColourLines and xdog_from_color at the same settings give the same lines."""
    _, color = drawing(batch=1)
    from colorizer.images import to_pil
    image = to_pil(color[0])
    for extractor, share in ((XDoG(), 0), (ColourLines(), 1)):
        ours = np.asarray(extractor(image), dtype=np.float64) / 255
        cfg = lines_cfg(xdog_sigma="[0.8,0.8]", xdog_tau="[0.98,0.98]", xdog_epsilon="[-0.01,-0.01]",
                        xdog_phi="[200,200]", xdog_colour=share)
        training = (xdog_from_color(cfg, color)[0, 0].numpy() + 1) / 2
        assert np.abs(ours - training).max() < 0.02  # uint8 rounding and PIL's integer luma


def test_line_styles_are_on_by_default():
    cfg = load_config().lines
    assert cfg.artist < 1 and cfg.xdog > 0 and cfg.varied > 0  # the A/B in experiments/RESULTS.md chose this


def test_all_artist_is_the_identity_and_draws_nothing():
    line, color = drawing()
    state = torch.get_rng_state()
    out, style = restyle(lines_cfg(artist=1, xdog=0, varied=0), line, color)
    assert torch.equal(out, line) and (style == LineStyle.ARTIST).all()
    assert torch.equal(torch.get_rng_state(), state)  # runs without line styles are bit-for-bit as before


def test_shares_pick_each_source_and_keep_shapes_and_range():
    line, color = drawing(batch=600, height=24, width=40)
    torch.manual_seed(0)
    out, style = restyle(lines_cfg(artist=0.5, xdog=0.3, varied=0.2), line, color)
    assert out.shape == line.shape and out.dtype == line.dtype and -1 <= out.min() and out.max() <= 1
    shares = torch.bincount(style, minlength=3).float() / len(style)
    assert shares.tolist() == pytest.approx([0.5, 0.3, 0.2], abs=0.06)
    artist = style == LineStyle.ARTIST
    assert torch.equal(out[artist], line[artist])
    varied = style == LineStyle.VARIED
    assert (out[varied] != line[varied]).flatten(1).any(1).all()  # every varied sample changed
    xdog_ink = (out[style == LineStyle.XDOG] < 0).flatten(1).sum(1)
    assert (xdog_ink > 0).all()  # XDoG found the outline in every target


def test_xdog_lines_come_from_the_colour_target():
    line, color = drawing()
    torch.manual_seed(1)
    out, style = restyle(lines_cfg(artist=0, xdog=1, varied=0), line, color)
    assert (style == LineStyle.XDOG).all()
    ink = out < 0  # the rectangle's outline and the fill's edge, nothing far from them
    assert ink[:, :, 4:36, 8:64].sum() == ink.sum() > 0
    torch.manual_seed(1)
    torch.multinomial(torch.tensor([0.0, 1.0, 0.0]).expand(4, -1), 1, replacement=True)  # restyle's draw
    assert torch.equal(out, xdog_from_color(lines_cfg(artist=0, xdog=1, varied=0), color))


def test_xdog_colour_adds_the_contours_of_light_shapes():
    """A light-yellow box on white, no outline: luminance XDoG draws almost nothing of it; with
    xdog_colour 1 every sample gets the box's contour, and nothing inside it or on the paper."""
    color = torch.ones(3, 3, 40, 72)
    color[:, 2, 10:30, 16:56] = 0.2  # (1, 1, 0.2) in [-1, 1]: yellow
    plain = xdog_from_color(lines_cfg(xdog_colour=0), color)
    coloured = xdog_from_color(lines_cfg(xdog_colour=1), color)
    contour = torch.zeros(40, 72, dtype=torch.bool)
    contour[9:31, 15:57], contour[11:29, 17:55] = True, False  # 1 px either side of the box's edge
    for y, x in ((9, 15), (9, 54), (28, 15), (28, 54)):
        contour[y:y + 3, x:x + 3] = False  # the blur rounds the corners
    assert (plain[:, 0][:, contour] < 0).float().mean() < 0.5
    assert (coloured[:, 0][:, contour] < 0).all()
    assert (coloured[:, 0][:, 14:26, 22:50] > 0.99).all() and (coloured[:, 0][:, :5] > 0.99).all()
    torch.manual_seed(3)
    half = xdog_from_color(lines_cfg(xdog_colour=0.5), color[:1].expand(64, -1, -1, -1))
    with_contour = (half[:, 0][:, contour] < 0).all(1).float().mean()
    assert 0.25 < with_contour < 0.75  # about half of the samples


def test_colour_change_is_cie76_delta_e_of_scikit_images_lab():
    rgb = torch.rand(2, 3, 9, 14, generator=torch.Generator().manual_seed(0))
    lab = rgb2lab(rgb[0].permute(1, 2, 0).numpy())
    expected = np.zeros((9, 14))
    across = np.linalg.norm(lab[:, 1:] - lab[:, :-1], axis=-1)
    down = np.linalg.norm(lab[1:] - lab[:-1], axis=-1)
    for target, source in ((expected[:, 1:], across), (expected[:, :-1], across), (expected[1:], down),
                           (expected[:-1], down)):
        np.maximum(target, source, out=target)
    assert np.allclose(colour_change(rgb, 0.0, 0.0)[0, 0].numpy(), expected, atol=1e-2)


@pytest.mark.parametrize("key,value", [("jitter", 2.0), ("thickness", 1.0), ("gaps", 0.5), ("lightness", 0.8),
                                       ("blur", 1.5), ("noise", 0.1)])
def test_each_variation_alone_changes_the_lines_its_own_way(key, value):
    line, _ = drawing(batch=16)
    torch.manual_seed(2)
    out = vary(lines_cfg(**{**NO_VARIATION, key: value}), line)
    assert out.shape == line.shape and -1 <= out.min() and out.max() <= 1
    ink_before, ink_after = (1 - line) / 2, (1 - out) / 2  # in [0, 1]
    changed = (out - line).abs().flatten(1).amax(1)  # per image
    assert (changed > 1e-3).float().mean() > 0.8  # amounts are drawn per image in [0, value]
    if key == "lightness":
        assert (ink_after.flatten(1).amax(1) <= 1 + 1e-6).all() and ink_after.sum() < ink_before.sum()
        assert ((ink_after > 0) == (ink_before > 0)).all()  # the same strokes, lighter
    if key == "gaps":
        assert ink_after.sum() < ink_before.sum() and (ink_after <= ink_before + 1e-6).all()
    if key == "thickness":
        widths = ink_after.flatten(1).sum(1) / ink_before.flatten(1).sum(1)
        assert (widths > 1.05).any() and (widths < 0.95).any()  # thicker and thinner both happen
    if key in ("jitter", "blur"):
        assert ink_after.sum() == pytest.approx(ink_before.sum(), rel=0.1)  # moved or spread, not erased
    if key == "noise":
        paper = line == 1
        assert (out[paper] < 1).any()  # the paper is no longer clean


def test_no_variation_keeps_the_lines():
    line, _ = drawing()
    assert torch.allclose(vary(lines_cfg(**NO_VARIATION), line), line, atol=1e-6)


def test_same_seed_same_lines():
    line, color = drawing()
    cfg = lines_cfg(artist=0.2, xdog=0.4, varied=0.4)
    torch.manual_seed(3)
    first = restyle(cfg, line, color)
    torch.manual_seed(3)
    second = restyle(cfg, line, color)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_luma_is_pil_greyscale():
    _, color = drawing(batch=1)
    from colorizer.images import to_pil
    pil = np.asarray(to_pil(color[0]).convert("L"), dtype=np.float64) / 255
    assert np.abs(luma(color)[0, 0].numpy() - pil).max() < 1 / 255 + 1e-6


def test_training_inputs_get_the_line_styles():
    """prepare_inputs (what train, lr_find and bench run) gives G the restyled lines."""
    cfg = load_config(overrides=["--model.depth=3", "--model.base_channels=4", "--model.max_channels=8",
                                 "--model.disc_channels=4", "--loss.perceptual_weight=0", "--data.hflip=false",
                                 "--lines.artist=0", "--lines.xdog=1", "--lines.varied=0"])
    parts = build_parts(cfg, torch.device("cpu"))
    line, color = drawing(batch=2)
    torch.manual_seed(4)
    got, got_color, _, _ = prepare_inputs(parts, {"line": line, "color": color}, 0.0)
    torch.manual_seed(4)
    expected, _ = restyle(cfg.lines, line, color)
    assert torch.equal(got, expected) and not torch.equal(got, line) and torch.equal(got_color, color)


@pytest.mark.parametrize("override,named", [
    (["--lines.artist=0.5"], "sum to 1"),
    (["--lines.artist=0.5", "--lines.xdog=0.7", "--lines.varied=-0.2"], "sum to 1"),
    (["--lines.xdog_sigma=[1.5,0.5]"], "lines.xdog_sigma"),
    (["--lines.xdog_phi=[100]"], "lines.xdog_phi"),
    (["--lines.thickness=2"], "lines.thickness"),
    (["--lines.gaps=1.5"], "lines.gaps"),
    (["--lines.noise=-0.1"], "lines.noise"),
    (["--lines.colour=1"], "colour"),
    (["--lines.xdog_colour=1.5"], "lines.xdog_colour"),
])
def test_bad_line_style_settings_are_named(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(overrides=override)
