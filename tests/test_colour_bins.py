"""Colour as a distribution (colorizer/colour_bins.py, issue 41): the ab bins, the rebalancing, the
cached folder frequencies, the decodings, the generators' colour head and its loss in the step."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from colorizer import colour_bins as cb
from colorizer.config import ConfigError, load_config
from colorizer.models import build_generator
from colorizer.step import build_parts, train_step
from colorizer.hints import Hints

CPU = torch.device("cpu")


def solid(rgb, h=6, w=10):
    """(1, 3, h, w) in [-1, 1] of one 0-255 colour."""
    return (torch.tensor(rgb, dtype=torch.float32) / 127.5 - 1).reshape(1, 3, 1, 1).expand(1, 3, h, w).clone()


def test_bins_cover_the_srgb_gamut_on_a_grid():
    assert 200 < cb.bin_count() < 330  # Zhang's grid of 10 kept 313 in their gamut
    assert (cb.BINS % cb.AB_STEP == 0).all() and (cb.BINS.abs() <= cb.AB_LIMIT).all()
    assert torch.equal(cb.BINS[cb.bin_index(solid((255, 255, 255)))[0, 0, 0]], torch.tensor([0.0, 0.0]))
    for rgb in ((255, 0, 0), (0, 160, 0), (30, 60, 250), (252, 234, 43)):
        ab = cb.to_lab(solid(rgb))[0, 1:, 0, 0]
        chosen = cb.BINS[cb.bin_index(solid(rgb))[0, 0, 0]]
        assert (chosen - ab).abs().max() <= cb.AB_STEP / 2 + 1e-3  # its own cell, so the cell is in the set


def test_bin_index_is_the_nearest_bin_of_every_colour():
    levels = torch.linspace(-1, 1, 24)
    grid = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij")).reshape(1, 3, 24 * 24, 24)
    ab = cb.to_lab(grid)[:, 1:].permute(0, 2, 3, 1).reshape(-1, 2)
    distance = torch.cdist(ab, cb.BINS)  # (N, Q): the exhaustive search
    chosen = distance.gather(1, cb.bin_index(grid).reshape(-1, 1))[:, 0]
    assert torch.allclose(chosen, distance.min(1).values, atol=1e-4)  # nearest (a tie may pick either)


def test_bin_index_searches_where_the_cell_lookup_has_no_bin(monkeypatch):
    red = solid((255, 0, 0), 2, 3)
    expected = cb.bin_index(red)
    holed = cb._cell_lut().clone()
    holed[holed == int(expected[0, 0, 0])] = -1  # as if red's cell held no sRGB colour
    monkeypatch.setattr(cb, "_cell_lut", lambda: holed)
    assert torch.equal(cb.bin_index(red), expected)  # the search finds the same nearest bin


def test_bin_index_keeps_the_layout_of_a_non_square_image():
    image = torch.cat([solid((255, 0, 0), 5, 4), solid((0, 0, 255), 5, 3)], 3)  # (1, 3, 5, 7): red | blue
    index = cb.bin_index(image)
    assert index.shape == (1, 5, 7)
    assert (index[0, :, :4] == index[0, 0, 0]).all() and (index[0, :, 4:] == index[0, 0, 6]).all()
    assert index[0, 0, 0] != index[0, 0, 6]


def test_rebalancing_weighs_rare_bins_more_with_mean_one():
    counts = torch.ones(cb.bin_count())
    common = int(cb.bin_index(solid((255, 255, 255)))[0, 0, 0])
    rare = int(cb.bin_index(solid((255, 0, 0)))[0, 0, 0])
    counts[common] = 1e6
    weights = cb.class_weights(counts)
    assert weights[rare] > 10 * weights[common]
    p = counts / counts.sum()
    kernel = torch.exp(-torch.cdist(cb.BINS, cb.BINS) ** 2 / (2 * cb.SMOOTH_SIGMA ** 2))
    smooth = kernel @ p
    assert (smooth / smooth.sum() * weights).sum().item() == pytest.approx(1.0, rel=1e-4)


def test_annealed_mean_sharpens_towards_the_mode_and_with_ab_keeps_lightness():
    red, blue = (int(cb.bin_index(solid(c))[0, 0, 0]) for c in ((255, 0, 0), (0, 0, 255)))
    logits = torch.full((1, cb.bin_count(), 2, 3), -30.0)
    logits[:, red], logits[:, blue] = np.log(0.6), np.log(0.4)
    mean = cb.annealed_ab(logits, 1.0)[0, :, 0, 0]
    sharp = cb.annealed_ab(logits, 0.1)[0, :, 0, 0]
    expected = 0.6 * cb.BINS[red] + 0.4 * cb.BINS[blue]
    assert torch.allclose(mean, expected, atol=1e-3)
    assert (sharp - cb.BINS[red]).norm() < 0.05 * (cb.BINS[red] - cb.BINS[blue]).norm()
    with pytest.raises(ValueError, match="temperature"):
        cb.annealed_ab(logits, 0.0)
    grey = solid((128, 128, 128), 4, 6)
    recoloured = cb.with_ab(grey, cb.BINS[red].reshape(1, 2, 1, 1).expand(1, 2, 2, 3))  # half size: resized
    assert recoloured.shape == grey.shape
    lab = cb.to_lab(recoloured)
    assert torch.allclose(lab[:, 0], cb.to_lab(grey)[:, 0], atol=2.0)  # L kept (up to gamut clipping)
    assert lab[0, 1].mean() > 30  # reddened
    assert torch.allclose(cb.with_ab(grey, cb.to_lab(grey)[:, 1:]), grey, atol=1e-2)


def test_folder_frequencies_are_counted_once_and_cached(tmp_path):
    (tmp_path / "color").mkdir()
    records = []
    for i, rgb in enumerate([(255, 255, 255), (255, 0, 0)]):
        Image.new("RGB", (20, 12), rgb).save(tmp_path / "color" / f"{i}.png")
        records.append({"color": f"color/{i}.png"})
    counts = cb.folder_frequencies(tmp_path, records)
    assert counts.sum() == 2 * 20 * 12 and (counts > 0).sum() == 2
    assert json.loads((tmp_path / cb.FREQUENCY_FILE).read_text())["key"]["pairs"] == 2
    for record in records:  # the cache answers now; the images are not read again
        (tmp_path / record["color"]).unlink()
    assert torch.equal(cb.folder_frequencies(tmp_path, records), counts)


def tiny(*extra):
    return load_config(overrides=["--model.depth=3", "--model.base_channels=8", "--model.max_channels=16",
                                  "--model.disc_channels=8", "--model.disc_layers=2", "--train.batch_size=2",
                                  "--loss.perceptual_weight=0", "--model.colour_head=true",
                                  "--loss.colour_classes=1", "--train.lr_g=2e-3", *extra])


@pytest.mark.parametrize("generator", ["unet", "efficientnet_unet"])
def test_generators_give_logits_over_the_bins_on_non_square_input(generator):
    cfg = tiny(f"--model.generator={generator}", *(["--model.depth=5"] if generator != "unet" else []))
    model = build_generator(cfg.model)
    h, w = (32, 64)
    args = (torch.zeros(2, 1, h, w), torch.zeros(2, 4, h, w), torch.zeros(2, 8, 3), torch.zeros(2, 8))
    image, logits = model(*args, logits=True)
    assert image.shape == (2, 3, h, w) and logits.shape == (2, cb.bin_count(), h // 2, w // 2)
    assert torch.equal(model(*args), image)  # without the flag, the image alone, as before
    plain = build_generator(load_config(overrides=["--model.depth=3", "--model.base_channels=8"]).model)
    with pytest.raises(ValueError, match="colour_head"):
        plain(*args, logits=True)


def test_head_and_loss_come_together():
    with pytest.raises(ConfigError, match="colour_head"):
        load_config(overrides=["--loss.colour_classes=1"])
    with pytest.raises(ConfigError, match="colour_classes"):
        load_config(overrides=["--model.colour_head=true"])


def test_the_step_trains_the_head_on_one_batch():
    torch.manual_seed(0)
    cfg = tiny("--data.root=nowhere", "--loss.gan_weight=0", "--loss.recon_weight=1")  # no folder: uniform weights
    parts = build_parts(cfg, CPU)
    assert torch.equal(parts.colour_weights, torch.ones(cb.bin_count()))
    line = -torch.ones(2, 1, 16, 24)
    color = torch.cat([solid((255, 0, 0), 16, 12), solid((30, 60, 250), 16, 12)], 3).expand(2, -1, -1, -1)
    hints = Hints(torch.zeros(2, 4, 16, 24), torch.zeros(2, 8, 3), torch.zeros(2, 8), torch.zeros(2, dtype=torch.long))
    first = train_step(parts, line, color, hints).g_terms["colour_classes"].item()
    for _ in range(60):
        last = train_step(parts, line, color, hints).g_terms["colour_classes"].item()
    assert last < 0.5 * first


def boxes(h=40, w=60):
    """Line art (h, w) uint8: a rectangle outline split by a vertical line -> paper outside, a left
    and a right box; the regression's colour (3, h, w) in [-1, 1]: grey in the boxes, white outside."""
    line = np.full((h, w), 255, np.uint8)
    line[5, 5:55] = line[34, 5:55] = line[5:35, 5] = line[5:35, 54] = line[5:35, 30] = 0
    colour = torch.ones(3, h, w)
    colour[:, 6:34, 6:54] = 128 / 127.5 - 1
    return line, colour


def favour(bins_by_area: list, q=None, h=20, w=30) -> torch.Tensor:
    """Log-probabilities (Q, h, w): each (rows, cols, bin) area strongly favours its bin (a later
    area over an earlier one)."""
    logits = torch.zeros(q or cb.bin_count(), h, w)
    for rows, cols, index in bins_by_area:
        logits[:, rows, cols] = 0.0
        logits[index, rows, cols] = 12.0
    return torch.log_softmax(logits, 0)


def test_the_vote_fills_each_shape_with_its_bin_keeps_the_paper_and_lets_paint_win():
    from colorizer.fills import flat_fill

    red, blue, green = (int(cb.bin_index(solid(c))[0, 0, 0]) for c in ((255, 0, 0), (30, 60, 250), (0, 160, 0)))
    line, colour = boxes()
    everywhere, left, right = (slice(None), slice(None), green), (slice(3, 17), slice(3, 15), red), \
        (slice(3, 17), slice(15, 27), blue)
    log_probs = favour([everywhere, left, right])  # green on the paper too: the vote must not paint it
    filled = flat_fill(colour, line, log_probs=log_probs)
    assert filled.shape == (3, 40, 60)
    lab = cb.to_lab(filled[None])[0]
    assert (lab[1:, 20, 15] - cb.BINS[red]).abs().max() < 8  # the left box votes red ...
    assert abs(lab[0, 20, 15] - cb.to_lab(colour[None])[0, 0, 20, 15]) < 3  # ... at the grey's lightness
    assert lab[2, 20, 45] < -40  # blue-ish: its bin's hue, at the grey's lightness (clipped to sRGB)
    assert torch.equal(filled[:, 1, 1], torch.ones(3))  # paper stays paper
    without = flat_fill(colour, line)  # no log-probabilities: the median, grey
    assert torch.allclose(without[:, 20, 15], colour[:, 20, 15], atol=0.01)
    hint_colour, hint_mask = np.zeros((40, 60, 3), np.float32), np.zeros((40, 60), bool)
    hint_colour[18:22, 10:20], hint_mask[18:22, 10:20] = (1.0, 0.9, 0.2), True  # yellow painted in the left box
    painted = flat_fill(colour, line, hint_colour, hint_mask, log_probs=log_probs)
    assert torch.allclose(painted[:, 20, 15], torch.tensor([1.0, 0.8, -0.6]), atol=0.02)  # the paint wins
    assert lab[2, 20, 45] == pytest.approx(cb.to_lab(painted[None])[0, 2, 20, 45].item(), abs=0.01)  # the other box votes


def test_split_gives_colours_drawn_side_by_side_without_a_line_their_own_vote():
    from colorizer.fills import flat_fill, split_by_modes

    red, blue, green = (int(cb.bin_index(solid(c))[0, 0, 0]) for c in ((255, 0, 0), (30, 60, 250), (0, 160, 0)))
    line, colour = boxes()
    line[6:34, 30] = 255  # no line between the boxes: one region, 48 x 28
    speck = (slice(16, 17), slice(8, 9), green)  # one cell of green: too small to be a part of its own
    log_probs = favour([(slice(None), slice(None), red), (slice(3, 17), slice(17, 27), blue), speck])  # blue: 20 of 48
    labels, count = (np.where(line < 128, 0, 1) + (np.arange(60) >= 6) * (np.arange(60) < 54)
                     * (np.arange(40) >= 6)[:, None] * (np.arange(40) < 34)[:, None]), 2  # paper 1, the box 2
    split, total = split_by_modes(labels.astype(np.int32), count, log_probs)
    assert total == 3 and (split[20, 40] == 3) and (split[20, 15] == 2) and split[32, 16] != 3  # blue cut out, alone
    merged = cb.to_lab(flat_fill(colour, line, log_probs=log_probs)[None])[0]
    cut = cb.to_lab(flat_fill(colour, line, log_probs=log_probs, split=True)[None])[0]
    assert (merged[1:, 20, 15] - merged[1:, 20, 45]).abs().max() < 1  # one region, one vote
    assert (cut[1:, 20, 15] - cb.BINS[red]).abs().max() < 8 and cut[2, 20, 45] < -40  # red | blue
    assert (merged[1:, 20, 45] - cb.BINS[red]).abs().max() < 8  # without the cut, the blue side is red
    assert torch.equal(cut[:, 1, 1], merged[:, 1, 1])  # paper stays paper
    hint_colour, hint_mask = np.zeros((40, 60, 3), np.float32), np.zeros((40, 60), bool)
    hint_colour[18:22, 10:14], hint_mask[18:22, 10:14] = (1.0, 0.9, 0.2), True  # yellow painted in the red part
    painted = flat_fill(colour, line, hint_colour, hint_mask, log_probs=log_probs, split=True)
    assert torch.allclose(painted[:, 20, 45], painted[:, 20, 15], atol=1e-6)  # a painted region is not cut


def test_a_model_with_a_colour_head_is_served_and_evaluated_by_its_distribution(tmp_path):
    from colorizer.checkpoint import export_generator
    from colorizer.config import to_dict
    from colorizer.evaluate import decode_note, set_decode
    from colorizer.inference import Colorizer

    cfg = tiny("--data.size=64")
    generator = build_generator(cfg.model)
    export_generator(tmp_path, generator.state_dict(), to_dict(cfg), 1, {}, "off", "head")
    model = Colorizer.load(tmp_path, device="cpu")
    assert isinstance(model.generator, cb.AnnealedMean) and model.has_head
    line, _ = boxes(48, 80)
    art = Image.fromarray(line)
    for fill in (False, True, "split"):
        image = model.colorize(art, fill=fill)
        assert image.size == (80, 48)
    network = model.generator.network
    args = type("Args", (), {"colour_decode": None, "temperature": 0.2})()  # None: as the model shows itself
    assert set_decode(model, args).generator.temperature == 0.2 and model.generator.network is network
    assert decode_note(model) == {"colour_decode": "annealed", "temperature": 0.2}
    args.colour_decode = "regression"
    assert set_decode(model, args).generator is network and decode_note(model) == {"colour_decode": "regression"}
    assert model.colorize(art, fill=True).size == (80, 48)  # the vote still has the head's logits
    args.colour_decode = "annealed"  # and back
    assert set_decode(model, args).generator.network is network


def test_a_head_model_can_show_its_regression_as_an_auxiliary_loss(tmp_path):
    """model.colour_decode=regression: the head trains as an auxiliary loss; the demo, the CLI and
    evaluate show the regression output, while fills still take the head's vote per shape."""
    from colorizer.checkpoint import export_generator
    from colorizer.config import to_dict
    from colorizer.evaluate import decode_note, set_decode
    from colorizer.inference import Colorizer

    cfg = tiny("--data.size=64", "--model.colour_decode=regression")
    generator = build_generator(cfg.model)
    export_generator(tmp_path, generator.state_dict(), to_dict(cfg), 1, {}, "off", "aux")
    model = Colorizer.load(tmp_path, device="cpu")
    assert model.has_head and not isinstance(model.generator, cb.AnnealedMean)
    line, _ = boxes(48, 80)
    line_t = torch.from_numpy(line).float()[None, None] / 127.5 - 1
    zeros = torch.zeros(1, 4, 48, 80), torch.zeros(1, 8, 3), torch.zeros(1, 8)
    image = model.generator(line_t, *zeros)
    torch.testing.assert_close(image, generator.eval()(line_t, *zeros))  # the regression output itself
    assert model.colorize(Image.fromarray(line), fill=True).size == (80, 48)
    args = type("Args", (), {"colour_decode": None, "temperature": 0.38})()
    set_decode(model, args)
    assert decode_note(model) == {"colour_decode": "regression"} and not isinstance(model.generator, cb.AnnealedMean)
    with pytest.raises(ConfigError, match="model.colour_decode='mode' is not one of annealed, regression"):
        tiny("--model.colour_decode=mode")


def test_suggestions_are_the_likeliest_bins_at_the_point(tmp_path):
    from colorizer.checkpoint import export_generator
    from colorizer.config import to_dict
    from colorizer.inference import Colorizer

    cfg = tiny("--data.size=64")
    generator = build_generator(cfg.model)
    red, blue = (int(cb.bin_index(solid(c))[0, 0, 0]) for c in ((255, 0, 0), (30, 60, 250)))
    with torch.no_grad():  # a head that says red, then blue, everywhere
        generator.colour_head.weight.zero_()
        generator.colour_head.bias.fill_(-10.0)
        generator.colour_head.bias[red], generator.colour_head.bias[blue] = 4.0, 3.0
    export_generator(tmp_path, generator.state_dict(), to_dict(cfg), 1, {}, "off", "head")
    model = Colorizer.load(tmp_path, device="cpu")
    art = Image.fromarray(boxes(48, 80)[0])
    found = model.suggest(art, x=20, y=30, count=3)
    assert 1 <= len(found) <= 3 and all(c.startswith("#") and len(c) == 7 for c, _ in found)
    assert found[0][1] == pytest.approx(np.exp(4) / (np.exp(4) + np.exp(3)), abs=0.02)
    assert [p for _, p in found] == sorted((p for _, p in found), reverse=True)
    top = torch.tensor([int(found[0][0][i: i + 2], 16) for i in (1, 3, 5)], dtype=torch.float32)
    assert cb.to_lab(top.reshape(1, 3, 1, 1) / 127.5 - 1)[0, 1, 0, 0] > 30  # red's a*
    with pytest.raises(ValueError, match="outside"):
        model.suggest(art, x=80, y=10)
    plain = tmp_path / "plain"
    plain_cfg = load_config(overrides=["--model.depth=3", "--model.base_channels=8", "--data.size=64"])
    export_generator(plain, build_generator(plain_cfg.model).state_dict(), to_dict(plain_cfg), 1, {}, "off", "p")
    with pytest.raises(ValueError, match="no colour head"):
        Colorizer.load(plain, device="cpu").suggest(art, 1, 1)
