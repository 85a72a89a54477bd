"""Generators with pretrained parts: EfficientNet-Lite0 as the U-Net's encoder, and frozen line-art
features at the U-Net's bottleneck (colorizer/encoders.py)."""
import pytest
import torch

from colorizer.checkpoint import export_generator
from colorizer.config import ConfigError, load_config, to_dict
from colorizer.encoders import load_pretrained, parameter_groups
from colorizer.inference import Colorizer
from colorizer.models import build_generator, count_parameters
from colorizer.pretrained import load_efficientnet_lite0
from colorizer.step import build_parts, prepare_inputs, train_step

SMALL = ["--model.depth=5", "--model.base_channels=8", "--model.max_channels=32", "--model.disc_channels=8",
         "--model.palette_size=4", "--hints.palette_max=4", "--hints.palette_min=2", "--data.size=64",
         "--loss.perceptual_weight=0", "--train.batch_size=2"]


def small_cfg(generator, *extra):
    return load_config(overrides=SMALL + [f"--model.generator={generator}", *extra])


def hintless(batch=2, height=64, width=96, seed=0):
    gen = torch.Generator().manual_seed(seed)
    line = torch.rand(batch, 1, height, width, generator=gen) * 2 - 1
    return line, torch.zeros(batch, 4, height, width), torch.zeros(batch, 4, 3), torch.zeros(batch, 4)


@pytest.fixture(scope="module")
def imagenet():
    return load_efficientnet_lite0()


@pytest.mark.parametrize("generator", ["efficientnet_unet", "unet_features"])
def test_shapes_and_range_on_non_square_inputs_with_hints(generator):
    g = build_generator(small_cfg(generator).model).eval()
    line, spatial, palette, keep = hintless()
    spatial[:, :3, 10:20, 30:50], spatial[:, 3, 10:20, 30:50] = 0.5, 1.0
    palette, keep = torch.rand(2, 4, 3) * 2 - 1, torch.ones(2, 4)
    out = g(line, spatial, palette, keep)
    assert out.shape == (2, 3, 64, 96) and out.abs().max() <= 1


def test_the_pretrained_encoder_needs_depth_5_and_sizes_divisible_by_32():
    with pytest.raises(ValueError, match="model.depth=5"):
        build_generator(small_cfg("efficientnet_unet", "--model.depth=4").model)
    g = build_generator(small_cfg("efficientnet_unet").model)
    with pytest.raises(ValueError, match="not divisible"):
        g(*hintless(height=48))


def test_the_encoder_sees_a_drawing_as_imagenet_sees_its_grey_photo(imagenet):
    """The adapted stem: the line's kernel is the sum of the RGB kernels and the hint channels start at
    zero, so without hints the encoder's features are the ImageNet network's on the grey image."""
    g = build_generator(small_cfg("efficientnet_unet").model).eval()
    assert load_pretrained(g)
    assert torch.equal(g.encoder._blocks[7]._project_conv.weight, imagenet._blocks[7]._project_conv.weight)
    assert (g.encoder._conv_stem.weight[:, 1:] == 0).all()
    line = hintless()[0]
    x = torch.cat([imagenet.normalise(line), torch.zeros(2, 4, 64, 96)], 1)
    with torch.no_grad():
        ours, theirs = g.encoder.features(x), imagenet.features(imagenet.normalise(line.expand(-1, 3, -1, -1)))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_the_encoder_learns_at_its_share_of_the_rate():
    g = build_generator(small_cfg("efficientnet_unet").model)
    groups = parameter_groups(g, 1e-3, 0.1)
    assert [group["lr"] for group in groups] == [1e-3, pytest.approx(1e-4)]
    stem = g.encoder._conv_stem.weight  # new hint channels: at the full rate, with the decoder
    assert any(p is stem for p in groups[0]["params"]) and not any(p is stem for p in groups[1]["params"])
    assert any(p is g.encoder._blocks[0]._depthwise_conv.weight for p in groups[1]["params"])
    assert sum(p.numel() for group in groups for p in group["params"]) == count_parameters(g)
    assert len(parameter_groups(build_generator(small_cfg("unet").model), 1e-3, 0.1)) == 1


def test_the_line_features_projection_learns_at_train_lr_features():
    """A trained U-Net grown into unet_features (train.init) may teach the new projection faster."""
    cfg = small_cfg("unet_features", "--train.lr_features=10", "--train.lr_g=1e-4")
    parts = build_parts(cfg, torch.device("cpu"))
    g, groups = parts.generator, parts.opt_g.param_groups
    assert [group["lr"] for group in groups] == [1e-4, pytest.approx(1e-3)]
    assert {id(p) for p in groups[1]["params"]} == {id(g.line_features.project.weight), id(g.line_features.project.bias)}
    assert any(p is g.downs[0].conv.weight for p in groups[0]["params"])
    with pytest.raises(ConfigError, match="train.lr_features=0.0 must be > 0"):
        small_cfg("unet_features", "--train.lr_features=0")


def test_line_features_start_at_zero_and_stay_frozen(imagenet):
    """A new unet_features model is the plain U-Net (its 1x1 projection starts at zero); training
    moves the projection and never the ImageNet network, nor its BatchNorm statistics."""
    cfg = small_cfg("unet_features")
    parts = build_parts(cfg, torch.device("cpu"))
    g = parts.generator
    assert torch.equal(g.line_features.network._blocks[3]._depthwise_conv.weight,
                       imagenet._blocks[3]._depthwise_conv.weight)
    plain = build_generator(small_cfg("unet").model)
    plain.load_state_dict({k: v for k, v in g.state_dict().items() if not k.startswith("line_features.")})
    g.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(g(*hintless()), plain(*hintless()))
    frozen = {k: v.clone() for k, v in g.line_features.network.state_dict().items()}
    g.train()
    assert not g.line_features.network.training
    for step in range(2):
        batch = {"line": torch.rand(2, 1, 64, 64) * 2 - 1, "color": torch.rand(2, 3, 64, 64) * 2 - 1}
        line, color, hints, _ = prepare_inputs(parts, batch, 0.5)
        assert train_step(parts, line, color, hints).ok
    assert g.line_features.project.weight.abs().sum() > 0
    assert all(torch.equal(v, g.line_features.network.state_dict()[k]) for k, v in frozen.items())


def test_the_pretrained_encoder_trains_and_its_export_loads_without_the_wheel_weights(tmp_path, monkeypatch):
    cfg = small_cfg("efficientnet_unet")
    parts = build_parts(cfg, torch.device("cpu"))
    before = parts.generator.encoder._blocks[5]._expand_conv.weight.clone()
    batch = {"line": torch.rand(2, 1, 64, 64) * 2 - 1, "color": torch.rand(2, 3, 64, 64) * 2 - 1}
    for _ in range(2):
        line, color, hints, _ = prepare_inputs(parts, batch, 0.5)
        assert train_step(parts, line, color, hints).ok
    assert not torch.equal(before, parts.generator.encoder._blocks[5]._expand_conv.weight)  # fine-tuned
    export_generator(tmp_path / "export", parts.ema.module.state_dict(), to_dict(cfg), step=2, metrics={},
                     perceptual="off", run_name="lite0")
    monkeypatch.setattr("colorizer.encoders.load_efficientnet_lite0", lambda: pytest.fail("export needs no wheel"))
    model = Colorizer.load(tmp_path / "export", device="cpu")
    ema = parts.ema.module.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.generator(*hintless()), ema(*hintless()))


@pytest.mark.parametrize("decoder_hints", [False, True])
def test_decoder_hints_let_a_hint_reach_far_pixels_before_the_stem_learns_it(decoder_hints):
    """model.decoder_hints: with the stem's hint kernels at zero (as load_pretrained leaves them), a hint
    reaches the output only through the last skip, the 3x3 head's neighbourhood, unless the decoder
    also takes it at strides 2 to 16."""
    g = build_generator(small_cfg("efficientnet_unet", f"--model.decoder_hints={decoder_hints}").model).eval()
    with torch.no_grad():
        g.encoder._conv_stem.weight[:, 1:] = 0
    line, spatial, palette, keep = hintless(batch=1)
    spatial.requires_grad_(True)
    out = g(line, spatial, palette, keep)
    assert out.shape == (1, 3, 64, 96)
    out[0, :, 40, 70].sum().backward()  # one output pixel
    far = spatial.grad[0].abs().clone()
    far[:, 38:43, 68:73] = 0  # beyond the head's 3x3 window and a pixel more
    assert (far.sum() > 0) == decoder_hints


def test_decoder_hints_are_an_option_of_the_pretrained_encoder_only():
    with pytest.raises(ConfigError, match="model.decoder_hints"):
        small_cfg("unet", "--model.decoder_hints=true")
