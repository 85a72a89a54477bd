import pytest
import torch
import torch.nn as nn

from colorizer.config import load_config
from colorizer.hints import HintSampler
from colorizer.losses import PerceptualLoss, d_adv_loss, g_adv_loss, recon_loss
from colorizer.models import (GENERATORS, UNet, build_discriminator, build_generator, count_parameters, main,
                              make_norm)

TINY = ["--model.depth=4", "--model.base_channels=8", "--model.max_channels=32", "--model.disc_channels=8",
        "--model.palette_size=4", "--hints.palette_max=4", "--hints.palette_min=2", "--data.size=64"]


def tiny_cfg(*extra):
    return load_config(overrides=TINY + list(extra))


def inputs(batch=2, height=64, width=96, palette_size=4, seed=0):
    """Random line art and target, one 10x20 hint patch, a full palette (all keep bits on)."""
    gen = torch.Generator().manual_seed(seed)
    line = torch.rand(batch, 1, height, width, generator=gen) * 2 - 1
    color = torch.rand(batch, 3, height, width, generator=gen) * 2 - 1
    spatial = torch.zeros(batch, 4, height, width)
    spatial[:, :3, 10:20, 30:50] = 0.5
    spatial[:, 3, 10:20, 30:50] = 1.0
    palette = torch.rand(batch, palette_size, 3, generator=gen) * 2 - 1
    keep = torch.ones(batch, palette_size)
    return line, color, spatial, palette, keep


@pytest.mark.parametrize("upsample", ["resize", "transpose"])
@pytest.mark.parametrize("mode", ["none", "spatial", "palette"])
@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
def test_generator_shapes_on_non_square_inputs(upsample, mode, norm):
    g = build_generator(tiny_cfg(f"--model.upsample={upsample}", f"--model.norm={norm}").model)
    line, _, spatial, palette, keep = inputs()
    if mode != "spatial":
        spatial = torch.zeros_like(spatial)
    if mode != "palette":
        keep = torch.zeros_like(keep)
    out = g(line, spatial, palette, keep)
    assert out.shape == (2, 3, 64, 96)
    assert out.min() >= -1 and out.max() <= 1


def test_batch_of_one_with_a_1x1_bottleneck_trains():
    # depth 4 on 16x32: the bottleneck is 1x2 and, for 16x16, 1x1 (no norm there, so this works)
    g = build_generator(tiny_cfg("--model.norm=batch").model)
    line, _, spatial, palette, keep = inputs(batch=1, height=16, width=16)
    g(line, spatial, palette, keep).mean().backward()


def test_hints_change_the_output_and_hintless_ignores_palette_values():
    g = build_generator(tiny_cfg().model).eval()
    line, _, spatial, palette, keep = inputs()
    none = g(line, torch.zeros_like(spatial), palette, torch.zeros_like(keep))
    assert not torch.allclose(none, g(line, spatial, palette, torch.zeros_like(keep)))
    assert not torch.allclose(none, g(line, torch.zeros_like(spatial), palette, keep))
    # keep bits off: the palette's values must not matter (hintless is hintless)
    assert torch.allclose(none, g(line, torch.zeros_like(spatial), palette * 0.3, torch.zeros_like(keep)))
    # the global hint is a set: order of the colours does not matter, dropped colours do not count
    with_palette = g(line, torch.zeros_like(spatial), palette, keep)
    assert torch.allclose(with_palette, g(line, torch.zeros_like(spatial), palette.flip(1), keep), atol=1e-6)
    half = keep.clone()
    half[:, 2:] = 0
    other = palette.clone()
    other[:, 2:] = -palette[:, 2:]
    assert torch.allclose(g(line, torch.zeros_like(spatial), palette, half),
                          g(line, torch.zeros_like(spatial), other, half), atol=1e-6)


@pytest.mark.parametrize("height,width", [(60, 96), (64, 90)])
def test_size_not_divisible_is_a_clear_error(height, width):
    g = build_generator(tiny_cfg().model)
    line, _, spatial, palette, keep = inputs(height=height, width=width)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*model.depth = 16"):
        g(line, spatial, palette, keep)


def test_trainable_tensor_and_parameter_counts_of_a_tiny_generator():
    cfg = load_config(overrides=["--model.depth=2", "--model.base_channels=4", "--model.max_channels=8",
                                 "--model.norm=batch", "--data.size=32"])
    g = build_generator(cfg.model)
    # widths (4, 8). down0 and the innermost down1 have no norm: conv w, b each (4);
    # palette encoder: Linear(3,128), Linear(128,128), FiLM Linear(129, 2*8): w, b each (6);
    # up (resize, batch norm): conv w (no bias) + bn w, b (3); head conv w, b (2) -> 15
    assert sum(1 for p in g.parameters() if p.requires_grad) == 15
    elements = ((5 * 4 * 16 + 4) + (4 * 8 * 16 + 8)  # downs: 4x4 convs, 5 -> 4 -> 8 channels
                + (3 * 128 + 128) + (128 * 128 + 128) + (129 * 16 + 16)  # palette MLP and FiLM
                + (8 * 4 * 9 + 2 * 4)  # up: 3x3 conv 8 -> 4, batch norm 4
                + (8 * 3 * 9 + 3))  # head: 3x3 conv on the concat (4 + 4) -> 3
    assert count_parameters(g) == elements == 20463
    g.head.requires_grad_(False)
    assert count_parameters(g) == elements - 219


def test_trainable_tensor_count_of_a_tiny_discriminator():
    cfg = load_config(overrides=["--model.disc_layers=2", "--model.disc_channels=4", "--model.disc_norm=instance"])
    d = build_discriminator(cfg.model)
    # conv1 (w, b) + conv2 (w) + norm (w, b) + stride-1 conv (w) + norm (w, b) + output conv (w, b) = 10;
    # spectral norm keeps one trainable "original" per weight (u, v are buffers)
    assert sum(1 for p in d.parameters() if p.requires_grad) == 10
    # input 1 + 3 channels; widths 4 -> 8 -> 16 -> 1; 4x4 kernels; instance norm w, b per channel
    assert count_parameters(d) == ((4 * 4 * 16 + 4) + (8 * 4 * 16 + 2 * 8) + (16 * 8 * 16 + 2 * 16)
                                   + (16 * 16 + 1)) == 3125


def test_weights_are_initialised_like_pix2pix():
    g = build_generator(load_config().model)
    d = build_discriminator(load_config().model)
    conv_weights = [m.weight for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert torch.cat([w.flatten() for w in conv_weights]).std().item() == pytest.approx(0.02, rel=0.05)
    norm_weights = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert norm_weights.mean().item() == pytest.approx(1.0, abs=0.01) and norm_weights.std() > 0
    for model in (g, d):
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                assert p.abs().sum() == 0, name
            else:
                assert p.abs().sum() > 0, name


def test_spectral_norm_is_calibrated_after_init():
    # init replaces the weights after spectral norm registered them: its power iteration must follow
    torch.manual_seed(0)  # the estimate starts from a random vector: no dependence on the tests run before
    d = build_discriminator(tiny_cfg("--model.disc_channels=16").model)
    for m in d.modules():
        if isinstance(m, nn.Conv2d):
            sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
            assert sigma.item() == pytest.approx(1.0, abs=0.05)


def test_group_norm_fits_any_width():
    for channels in (1, 3, 8, 18, 48, 200, 512):
        norm = make_norm("group", channels)
        assert channels % norm.num_groups == 0 and norm.num_groups <= 32
    assert make_norm("group", 512).num_groups == 32


@pytest.mark.parametrize("spectral", [True, False])
@pytest.mark.parametrize("layers", [2, 3])
def test_discriminator_returns_patch_logits(spectral, layers):
    cfg = tiny_cfg(f"--model.disc_spectral_norm={spectral}", f"--model.disc_layers={layers}")
    d = build_discriminator(cfg.model)
    line, color, *_ = inputs(height=64, width=128)
    assert d(line, color).shape == (2, 1, 64 // 2**layers - 2, 128 // 2**layers - 2)
    # no sigmoid: the output follows the last bias anywhere on the real line
    last = d.net[-1]
    with torch.no_grad():
        last.bias.fill_(5.0)
        assert d(line, color).min() > 1
        last.bias.fill_(-5.0)
        assert d(line, color).max() < 0


def test_discriminator_conditioned_on_hints():
    d = build_discriminator(tiny_cfg("--model.disc_hints=true").model)
    line, color, spatial, *_ = inputs()
    with pytest.raises(ValueError, match="disc_hints"):
        d(line, color)
    assert not torch.allclose(d(line, color, spatial), d(line, color, torch.zeros_like(spatial)))


def test_every_generator_parameter_gets_gradient_from_each_loss_term():
    cfg = tiny_cfg("--loss.perceptual_weights=random", "--model.norm=instance")
    g, d = build_generator(cfg.model), build_discriminator(cfg.model)
    perceptual = PerceptualLoss(cfg.loss)
    line, color, spatial, palette, keep = inputs()
    d.requires_grad_(False)  # the G step
    terms = {
        "adv": lambda fake: g_adv_loss(d(line, fake), "bce"),
        "recon": lambda fake: recon_loss(fake, color, "mse"),
        "perceptual": lambda fake: perceptual(fake, color),
    }
    for name, term in terms.items():
        g.zero_grad(set_to_none=True)
        term(g(line, spatial, palette, keep)).backward()
        for pname, p in g.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient for {pname}"
    assert all(p.grad is None for p in d.parameters())  # D frozen in the G step gets nothing


def test_discriminator_step_reaches_every_discriminator_parameter():
    cfg = tiny_cfg()
    g, d = build_generator(cfg.model), build_discriminator(cfg.model)
    line, color, spatial, palette, keep = inputs()
    fake = g(line, spatial, palette, keep)
    d_adv_loss(d(line, color), d(line, fake.detach()), "hinge").backward()
    assert all(p.grad is None for p in g.parameters())  # fake was detached
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())


def test_default_generator_forward_backward_at_256x192():
    cfg = load_config()
    g = build_generator(cfg.model)
    assert isinstance(g, GENERATORS[cfg.model.generator]) and isinstance(g, UNet)
    sampler = HintSampler(cfg.hints, cfg.model.palette_size)
    color = torch.rand(2, 3, 256, 192) * 2 - 1
    hints = sampler.sample(color, {"none": 0.0, "spatial": 0.5, "palette": 0.5})
    out = g(torch.rand(2, 1, 256, 192) * 2 - 1, hints.spatial, hints.palette, hints.palette_keep)
    assert out.shape == (2, 3, 256, 192)
    out.mean().backward()
    assert all(p.grad is not None for p in g.parameters())


def test_unknown_generator_is_an_error():
    cfg = tiny_cfg("--model.generator=resnet")
    with pytest.raises(ValueError, match="unet"):
        build_generator(cfg.model)


def test_cli_prints_parameter_counts(capsys):
    main(TINY)
    out = capsys.readouterr().out
    expected_g = count_parameters(build_generator(tiny_cfg().model))
    expected_d = count_parameters(build_discriminator(tiny_cfg().model))
    assert f"{expected_g:,} parameters" in out.splitlines()[0]
    assert f"{expected_d:,} parameters" in out.splitlines()[1]
