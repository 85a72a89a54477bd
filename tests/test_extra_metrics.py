"""LPIPS and FID: reported as "not computed" without weights, computed from a local weights file.

No real weights exist here, so "available" weights are randomly initialised backbones of the right
architecture saved under the file names the metrics look for: the plumbing (file lookup, loading,
input conversion, accumulation) is tested, not the published numbers.
"""
import socket
import urllib.request

import pytest
import torch
import torchvision
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

from colorizer.extra_metrics import FID_FILES, LPIPS_FILES, ExtraMetrics

SIZE = (40, 56)  # non-square: a swapped axis would change the numbers or fail


@pytest.fixture(autouse=True)
def network_calls(monkeypatch):
    """Every download raises, and is recorded so a caught error still fails. Loading from the cache
    (torch.hub.load_state_dict_from_url with the file present) stays allowed."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args[:1])
        raise OSError("network access in an offline test")

    for owner, name in ((torch.hub, "download_url_to_file"), (urllib.request, "urlopen"), (socket.socket, "connect")):
        monkeypatch.setattr(owner, name, refuse)
    return calls


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


@pytest.fixture(scope="module")
def weights_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds a random AlexNet and a random FID Inception."""
    home = tmp_path_factory.mktemp("torch_home")
    cache = home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), cache / LPIPS_FILES["alex"])
    # torchvision's Inception with the FID head has torch-fidelity's parameter names (both follow
    # pytorch-fid). Kaiming init keeps activations at unit scale through ~90 layers; the default
    # init shrinks the pool features to ~1e-7 and every FID to ~0.
    inception = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    for module in inception.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(inception.state_dict(), cache / FID_FILES[0])
    return home


def images(count: int, seed: int, size=SIZE) -> torch.Tensor:
    """(count, 3, H, W) in [-1, 1]."""
    return torch.rand(count, 3, *size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_without_weights_nothing_is_computed_and_nothing_downloaded(empty_torch_home, network_calls):
    extra = ExtraMetrics("cpu")
    extra.update(images(3, 0), images(3, 1))
    result = extra.result()
    cache = empty_torch_home / "hub" / "checkpoints"
    for metric, flag, name in (("lpips", "--lpips-weights", LPIPS_FILES["alex"]),
                               ("fid", "--fid-weights", FID_FILES[0])):
        assert result[metric] == extra.status[metric]
        assert result[metric].startswith(f"not computed: weights not found (looked in {cache} for ")
        assert name in result[metric] and f"pass {flag} PATH" in result[metric]
    assert network_calls == []


def test_the_network_guard_sees_a_library_download(empty_torch_home, network_calls):
    """Why the public torchmetrics LPIPS class is not used: without cached weights it downloads."""
    with pytest.raises(OSError, match="offline test"):
        LearnedPerceptualImagePatchSimilarity(net_type="alex")
    assert network_calls


def test_off_disables_both(weights_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    extra = ExtraMetrics("cpu", lpips_weights="off", fid_weights="off")
    extra.update(images(2, 0), images(2, 1))
    assert extra.result() == {"lpips": "not computed: disabled (--lpips-weights off)",
                              "fid": "not computed: disabled (--fid-weights off)"}


def test_lpips_from_the_cache_on_non_square_images(weights_home, monkeypatch, network_calls):
    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    extra = ExtraMetrics("cpu", fid_weights="off")
    assert extra.status["lpips"] == f"on: {weights_home / 'hub' / 'checkpoints' / LPIPS_FILES['alex']}"
    target = images(3, 0)
    extra.update(target, target)
    extra.update(target[:2], target[:2])  # the mean runs over images, across batches
    assert extra.result()["lpips"] == pytest.approx(0.0, abs=1e-6)

    different = ExtraMetrics("cpu", fid_weights="off")
    different.update(images(3, 1), target)
    near = ExtraMetrics("cpu", fid_weights="off")
    near.update((target + 0.05 * images(3, 2)).clamp(-1, 1), target)
    assert different.result()["lpips"] > near.result()["lpips"] > 0.0
    # torchmetrics' public class loads the same cached file offline: same backbone, same [-1, 1] input
    reference = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=False)
    reference.update(images(3, 1), target)
    assert different.result()["lpips"] == pytest.approx(float(reference.compute()), rel=1e-5)
    assert network_calls == []


def test_lpips_from_an_explicit_file(weights_home, empty_torch_home, tmp_path):
    path = tmp_path / "my_alexnet.pth"
    path.write_bytes((weights_home / "hub" / "checkpoints" / LPIPS_FILES["alex"]).read_bytes())
    extra = ExtraMetrics("cpu", lpips_weights=str(path), fid_weights="off")
    assert extra.status["lpips"] == f"on: {path}"
    extra.update(images(2, 1), images(2, 0))
    assert extra.result()["lpips"] > 0.0


def test_lpips_on_images_too_small_for_the_backbone(weights_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    extra = ExtraMetrics("cpu", fid_weights="off")
    extra.update(images(2, 0, (24, 32)), images(2, 1, (24, 32)))
    assert extra.result()["lpips"] == "not computed: 24x32 images are smaller than the 31 px the alex backbone needs"


def test_fid_from_the_cache_on_non_square_images(weights_home, monkeypatch, network_calls):
    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    extra = ExtraMetrics("cpu", lpips_weights="off")
    assert extra.status["fid"] == f"on: {weights_home / 'hub' / 'checkpoints' / FID_FILES[0]}"
    target = images(4, 0)
    extra.update(target, target)
    same = extra.result()["fid"]

    extra.fid.reset()
    extra.update((target + 0.5).clamp(-1, 1), target)  # a colour cast: the distributions differ
    shifted = extra.result()["fid"]
    assert abs(same) < 1e-3
    assert shifted > 1.0
    assert network_calls == []


def test_fid_matches_torchmetrics_on_uint8_levels(weights_home, monkeypatch, network_calls):
    """The [-1, 1] -> uint8 conversion: levels k / 127.5 - 1 must reach the extractor as k."""
    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    extra = ExtraMetrics("cpu", lpips_weights="off")
    levels = torch.randint(0, 256, (2, 3, 3, *SIZE), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    extra.update(levels[0] / 127.5 - 1, levels[1] / 127.5 - 1)
    cached = weights_home / "hub" / "checkpoints" / FID_FILES[0]
    reference = FrechetInceptionDistance(feature_extractor_weights_path=str(cached))
    reference.update(levels[1], real=True)
    reference.update(levels[0], real=False)
    assert extra.result()["fid"] == pytest.approx(float(reference.compute()), rel=1e-6)
    assert network_calls == []


def test_fid_needs_two_images(weights_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    extra = ExtraMetrics("cpu", lpips_weights="off")
    extra.update(images(1, 0), images(1, 1))
    assert extra.result()["fid"] == "not computed: needs at least 2 images"


def test_an_explicit_path_that_is_missing_or_wrong_is_an_error(weights_home, empty_torch_home, tmp_path):
    with pytest.raises(FileNotFoundError, match="--lpips-weights"):
        ExtraMetrics("cpu", lpips_weights=str(tmp_path / "typo.pth"), fid_weights="off")
    with pytest.raises(FileNotFoundError, match="--fid-weights"):
        ExtraMetrics("cpu", lpips_weights="off", fid_weights=str(tmp_path / "typo.pth"))
    alexnet = weights_home / "hub" / "checkpoints" / LPIPS_FILES["alex"]
    with pytest.raises(ValueError, match="not the FID Inception state dict"):
        ExtraMetrics("cpu", lpips_weights="off", fid_weights=str(alexnet))
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        ExtraMetrics("cpu", lpips_weights=str(tmp_path / "garbage.pth"), fid_weights="off")
