import pytest
import torch

from colorizer.config import load_config
from colorizer.hints import (MIN_COLOR_SHARE, MODES, HintSampler, clean_hints, color_region, curriculum_probs,
                             empty_hints)

COLOURS = torch.tensor([[0.8, -0.6, -0.6], [-0.5, 0.7, -0.4], [-0.3, -0.3, 0.9], [0.9, 0.6, -0.8]])


def blocks_target(batch=4, height=48, width=80, seed=0):
    """White paper with one coloured rectangle (random colour per image) under a black line."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.ones(batch, 3, height, width)
    for b in range(batch):
        colour = torch.rand(3, generator=gen) * 1.2 - 0.8
        target[b, :, 8:40, 10:70] = colour[:, None, None]
        target[b, :, 8, 10:70] = -1
    return target


def four_colour_target(batch=2):
    """48x80 paper with four flat colours of decreasing area (1200, 600, 300, 100 px), black outlines."""
    target = torch.ones(batch, 3, 48, 80)
    target[:, :, 0:30, 0:40] = COLOURS[0, :, None, None]
    target[:, :, 0:20, 40:70] = COLOURS[1, :, None, None]
    target[:, :, 30:45, 0:20] = COLOURS[2, :, None, None]
    target[:, :, 35:45, 60:70] = COLOURS[3, :, None, None]
    target[:, :, 30, :] = -1
    return target


def hint_cfg(*overrides):
    return load_config(overrides=list(overrides)).hints


def test_color_region_excludes_paper_and_ink():
    target = blocks_target(batch=1)
    region = color_region(target)[0, 0]
    assert region[20, 20] and not region[0, 0] and not region[8, 20]
    assert region.sum() == 31 * 60  # the rectangle minus its black top row


def test_patch_count_is_geometric_with_the_configured_mean():
    cfg = hint_cfg("--hints.mean_patches=6", "--hints.max_patches=1000")
    counts = HintSampler(cfg, 8).patch_counts(40000, "cpu", torch.Generator().manual_seed(0)).float()
    assert counts.mean().item() == pytest.approx(6.0, rel=0.03)
    assert counts.min() == 0  # support starts at 0
    assert (counts == 0).float().mean().item() == pytest.approx(1 / 7, abs=0.01)  # P(0) = p = 1 / (mean + 1)
    capped = HintSampler(hint_cfg("--hints.mean_patches=16", "--hints.max_patches=20"), 8)
    counts = capped.patch_counts(40000, "cpu", torch.Generator().manual_seed(0)).float()
    assert counts.max() == 20
    q = 16 / 17  # E[min(K, m)] = sum_{k=1..m} q^k for K geometric on {0, 1, ...}
    assert counts.mean().item() == pytest.approx(q * (1 - q**20) / (1 - q), rel=0.03)


def test_patches_and_drop_rate_in_the_hint_map():
    # 1x1 patches placed uniformly on a 48x48 canvas rarely overlap, so mask pixels ~ patches
    cfg = hint_cfg("--hints.mean_patches=6", "--hints.max_patches=60", "--hints.drop_min=0.5", "--hints.drop_max=0.9",
                   "--hints.blur_sigma=0", "--hints.patch_min=1", "--hints.patch_max=1", "--hints.placement=uniform")
    sampler = HintSampler(cfg, 8)
    target = torch.zeros(2000, 3, 48, 48)
    clean = sampler.spatial(target, denoise=False, generator=torch.Generator().manual_seed(0))[:, 3].sum((1, 2))
    noisy = sampler.spatial(target, denoise=True, generator=torch.Generator().manual_seed(0))[:, 3].sum((1, 2))
    assert clean.mean().item() == pytest.approx(6.0, rel=0.06)  # before the drop
    assert torch.all(noisy <= clean)  # same seed: same patches, some dropped
    assert (1 - noisy.sum() / clean.sum()).item() == pytest.approx((0.5 + 0.9) / 2, abs=0.03)


def test_exact_patch_count_and_colour_is_the_patch_mean():
    sampler = HintSampler(hint_cfg("--hints.patch_min=3", "--hints.patch_max=3"), 8)
    target = torch.rand(6, 3, 48, 80, generator=torch.Generator().manual_seed(0)) * 2 - 1
    hint = sampler.spatial(target, num_patches=1, denoise=False, placement="uniform",
                           generator=torch.Generator().manual_seed(1))
    assert hint.dtype == torch.float32 and hint.shape == (6, 4, 48, 80)
    mask = hint[:, 3:4]
    assert torch.all(mask.flatten(1).sum(1) == 9)  # one 3x3 patch per image, mask exactly 1 on it
    region = mask.bool().expand_as(target)
    patch_mean = torch.stack([target[b][region[b]].view(3, 9).mean(1) for b in range(len(target))])
    assert torch.allclose(hint[:, :3][region].view(6, 3, 9), patch_mean[..., None].expand(-1, -1, 9), atol=1e-5)
    assert sampler.spatial(target, num_patches=0, denoise=False).abs().sum() == 0


def test_colour_placement_lands_inside_the_colour_region():
    sampler = HintSampler(hint_cfg("--hints.patch_min=1", "--hints.patch_max=1"), 8)
    target = blocks_target()
    hint = sampler.spatial(target, num_patches=50, denoise=False, placement="color")
    region = color_region(target)
    assert torch.all(region[hint[:, 3:4] > 0])
    uniform = sampler.spatial(target, num_patches=50, denoise=False, placement="uniform")
    assert not torch.all(region[uniform[:, 3:4] > 0])  # uniform placement also hits the paper
    paper = torch.ones(2, 3, 16, 24)  # no colour region at all: falls back to uniform
    assert sampler.spatial(paper, num_patches=5, denoise=False, placement="color")[:, 3].sum() > 0


def test_blur_keeps_colour_over_mask_equal_to_the_hint_colour():
    cfg = hint_cfg("--hints.blur_sigma=2", "--hints.drop_min=0", "--hints.drop_max=0", "--hints.color_jitter=0",
                   "--hints.mean_patches=3", "--hints.patch_min=3", "--hints.patch_max=5")
    sampler = HintSampler(cfg, 8)
    target = torch.ones(64, 3, 32, 48) * torch.rand(64, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    hint = sampler.spatial(target, denoise=True, generator=torch.Generator().manual_seed(2))
    mask = hint[:, 3:4]
    assert mask.max() <= 1 + 1e-6 and mask.min() >= 0
    soft = (mask > 0) & (mask < 0.99)
    assert soft.any()  # some images were blurred (sigma is drawn in [0, blur_sigma])
    colour = hint[:, :3] / mask.clamp_min(1e-8)
    hinted = (mask > 1e-4).expand_as(colour)
    assert torch.allclose(colour[hinted], target.expand_as(colour)[hinted], atol=1e-4)


def test_strokes_are_lines_of_one_colour():
    sampler = HintSampler(hint_cfg("--hints.patch_min=2", "--hints.patch_max=4", "--hints.mean_patches=1",
                                   "--hints.max_patches=1", "--hints.placement=uniform"), 8)
    sampler.strokes = 1.0  # loss-free stand-in for the hints.strokes config value
    target = torch.rand(200, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    hint = sampler.spatial(target, denoise=False, generator=torch.Generator().manual_seed(3))
    mask = hint[:, 3]
    drawn = mask.flatten(1).sum(1) > 0
    area = mask.flatten(1).sum(1)[drawn]
    # 4 segments of 2x2 (half of 2..4, at least patch_min); one alone is 4 px. Strokes that run
    # into the border are clamped onto themselves, hence not all.
    assert (area > 4).float().mean() > 0.8 and torch.all(area <= 16)
    for b in torch.nonzero(drawn)[:20, 0]:
        pixels = hint[b, :3][:, mask[b] > 0]  # (3, n)
        assert torch.allclose(pixels, pixels[:, :1].expand_as(pixels))  # one colour per stroke


def test_palette_has_no_spatial_information():
    sampler = HintSampler(hint_cfg(), 8)
    target = four_colour_target(batch=3)
    target = (target + 0.02 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    perm = torch.randperm(target.shape[2] * target.shape[3], generator=torch.Generator().manual_seed(1))
    shuffled = target.flatten(2)[:, :, perm].view_as(target)
    a = sampler.palette(target, generator=torch.Generator().manual_seed(3))
    b = sampler.palette(shuffled, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[1], b[1]) and torch.allclose(a[0], b[0], atol=1e-5)
    assert a[1].sum(1).min() >= 1


def test_palette_is_the_dominant_colours_by_frequency():
    sampler = HintSampler(hint_cfg(), 8)
    target = four_colour_target(batch=1)
    target[:, :, 46, 0:3] = 0.1  # a 3-pixel fringe: under MIN_COLOR_SHARE of the region, never kept
    assert 3 < MIN_COLOR_SHARE * 2200
    palette, keep = sampler.palette(target, num_colors=8)
    assert keep[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert torch.allclose(palette[0, :4], COLOURS, atol=1e-4)  # most frequent first
    assert palette[0, 4:].abs().sum() == 0  # not kept -> zero
    palette, keep = sampler.palette(target, num_colors=2)
    assert keep[0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]


def test_palette_random_keep_counts():
    cfg = hint_cfg("--hints.palette_min=3", "--hints.palette_max=8", "--hints.palette_color_drop=0.2")
    sampler = HintSampler(cfg, 8)
    # 1000 images of 8 equal-area colour bands in 8 different palette cells: every colour qualifies
    i = torch.arange(8.0)
    bands = torch.stack([(i + 0.5) / 8, (7.5 - i) / 8, torch.full((8,), 0.5)]) * 2 - 1  # (3, 8) in [-1, 1]
    target = bands[None, :, None, :].repeat_interleave(4, 3).expand(1000, -1, 8, -1).contiguous()
    _, keep = sampler.palette(target, generator=torch.Generator().manual_seed(0))
    kept = keep.sum(1)
    assert kept.min() >= 1 and kept.max() <= 8
    assert kept.mean().item() == pytest.approx(5.5 * 0.8, abs=0.15)  # E[k] * (1 - drop)
    heavy = HintSampler(hint_cfg("--hints.palette_color_drop=0.99"), 8)
    assert heavy.palette(target, generator=torch.Generator().manual_seed(0))[1].sum(1).min() == 1  # at least one


def test_sample_mixes_modes_as_asked():
    sampler = HintSampler(hint_cfg(), 8)
    target = blocks_target(batch=600, height=16, width=16)
    hints = sampler.sample(target, {"none": 0.2, "spatial": 0.5, "palette": 0.3},
                           generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(hints.mode, minlength=3).float() / 600
    assert freq.tolist() == pytest.approx([0.2, 0.5, 0.3], abs=0.06)
    assert hints.spatial[hints.mode != 1].abs().sum() == 0
    assert hints.palette_keep[hints.mode != 2].sum() == 0 and hints.palette[hints.mode != 2].abs().sum() == 0
    assert hints.palette_keep[hints.mode == 2].sum(1).min() >= 1
    assert hints.spatial[hints.mode == 1, 3].sum() > 0
    assert hints.palette.shape == (600, 8, 3) and hints.palette_keep.shape == (600, 8)


def test_empty_hints_are_hintless():
    hints = empty_hints(2, 16, 24, 8, "cpu")
    assert hints.spatial.shape == (2, 4, 16, 24) and hints.palette.shape == (2, 8, 3)
    assert hints.spatial.abs().sum() == 0 and hints.palette_keep.sum() == 0
    assert hints.mode.tolist() == [0, 0] and hints.to("cpu").mode.dtype == torch.long


def test_curriculum_probabilities_interpolate_between_points():
    cfg = hint_cfg()  # points at 0, .35, .55, .75, 1
    assert curriculum_probs(cfg, 0.0) == pytest.approx({"none": 0.1, "spatial": 0.8, "palette": 0.1})
    assert curriculum_probs(cfg, 0.2) == pytest.approx({"none": 0.1, "spatial": 0.8, "palette": 0.1})
    assert curriculum_probs(cfg, 0.45) == pytest.approx({"none": 0.15, "spatial": 0.55, "palette": 0.3})
    assert curriculum_probs(cfg, 0.65) == pytest.approx({"none": 0.3, "spatial": 0.3, "palette": 0.4})
    assert curriculum_probs(cfg, 1.0) == pytest.approx({"none": 0.4, "spatial": 0.3, "palette": 0.3})
    assert curriculum_probs(cfg, 2.0) == curriculum_probs(cfg, 1.0)
    assert curriculum_probs(cfg, -1.0) == curriculum_probs(cfg, 0.0)
    single = load_config(overrides=["--hints.curriculum=[{at: 0.5, spatial: 0.0, palette: 0.0, none: 1.0}]"]).hints
    assert curriculum_probs(single, 0.9) == {"none": 1.0, "spatial": 0.0, "palette": 0.0}


@pytest.mark.parametrize("mode", MODES)
def test_clean_hints_are_deterministic_with_a_seeded_generator(mode):
    sampler = HintSampler(hint_cfg(), 8)
    target = blocks_target()
    a = clean_hints(sampler, target, mode, 10, torch.Generator().manual_seed(5))
    b = clean_hints(sampler, target, mode, 10, torch.Generator().manual_seed(5))
    assert torch.equal(a.spatial, b.spatial) and torch.equal(a.palette, b.palette)
    assert (a.mode == MODES.index(mode)).all()
