import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from colorizer.metrics import MAX_PSNR_DB, hint_error, line_error, psnr, ssim, ssim_map


def test_psnr_known_value_and_cap():
    target = torch.zeros(2, 3, 8, 12)
    pred = target.clone()
    pred[0] += 0.2  # 0.1 in [0, 1] units -> MSE 0.01 -> 20 dB
    values = psnr(pred, target)
    assert values[0].item() == pytest.approx(20.0, abs=1e-4)
    assert values[1].item() == MAX_PSNR_DB  # identical image: capped, not inf


def test_psnr_mask_restricts_the_region_and_empty_mask_is_nan():
    target = torch.zeros(2, 3, 6, 10)
    pred = target.clone()
    pred[:, :, :, :5] = 1.0  # wrong only on the left half
    mask = torch.zeros(2, 1, 6, 10, dtype=torch.bool)
    mask[0, :, :, 5:] = True  # right half only
    values = psnr(pred, target, mask)
    assert values[0].item() == MAX_PSNR_DB
    assert torch.isnan(values[1])


def test_ssim_matches_scikit_image_in_the_interior():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, 40, 56, generator=gen) * 2 - 1
    pred = (target + 0.3 * torch.randn(1, 3, 40, 56, generator=gen)).clamp(-1, 1)
    ours = ssim_map(pred, target)[0].mean(0)[10:-10, 10:-10].mean().item()
    x = ((pred[0] + 1) / 2).permute(1, 2, 0).numpy().astype(np.float64)
    y = ((target[0] + 1) / 2).permute(1, 2, 0).numpy().astype(np.float64)
    _, full = structural_similarity(x, y, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    theirs = full.mean(-1)[10:-10, 10:-10].mean()
    assert ours == pytest.approx(theirs, abs=1e-4)
    assert ssim(target, target).item() == pytest.approx(1.0, abs=1e-5)


def test_hint_error_reads_colour_at_hinted_pixels_only():
    pred = torch.full((2, 3, 8, 8), -1.0)  # black everywhere
    hint = torch.zeros(2, 4, 8, 8)
    hint[0, :3, 2:4, 2:4] = 1.0  # white hint (colour * mask with mask 1)
    hint[0, 3, 2:4, 2:4] = 1.0
    values = hint_error(pred, hint)
    assert values[0].item() == pytest.approx(1.0)  # black vs white: the largest error
    assert torch.isnan(values[1])  # no hint in the second image


def test_line_error_measures_lines_lighter_than_drawn():
    line = torch.ones(2, 1, 6, 10)
    line[:, :, 2:4, :] = -1  # 20 ink pixels per image
    pred = torch.ones(2, 3, 6, 10)  # image 0: all paper, every line lost
    pred[1] = -1  # image 1: black everywhere, every line kept
    pred[1, 0, 2, :5] = 0.0  # ... but 5 ink pixels are half grey in one channel
    error = line_error(pred, line)
    assert error[0].item() == pytest.approx(1.0) and error[1].item() == pytest.approx(5 * 0.5 / 20)
    assert torch.isnan(line_error(pred, torch.ones(2, 1, 6, 10))).all()  # no line pixels: nothing to measure
