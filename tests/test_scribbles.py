"""Region scribbles for training (issue 21, part 3): made once by ``python -m data_prep scribbles``
with the Hint-AUC package, stored beside the pairs, and mixed into the spatial hints."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from colorizer.config import load_config
from colorizer.data import PairDataset, ensure_scribbles, read_manifest, scribble_path
from colorizer.hints import SCRIBBLE_LEVELS, HintSampler, encode_rank, scribble_hints
from colorizer.runtime import augment
from colorizer.training import train
from conftest import ROOT, smoke_overrides

PROTOCOL_ALPHAS = (0.0, 0.01, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def scribbled(tmp_path_factory):
    """40 OpenMoji pairs at 48 px with the train split's scribble maps."""
    root = tmp_path_factory.mktemp("scribbled") / "om48"
    for args in (["openmoji", "--out", str(root), "--size", "48", "--limit", "40", "--workers", "1"],
                 ["scribbles", str(root), "--workers", "1"]):
        subprocess.run([sys.executable, "-m", "data_prep", *args], cwd=ROOT, check=True, capture_output=True)
    return root


def maps_tensor(arrays) -> torch.Tensor:
    """(H, W, 4) uint8 maps -> (B, 4, H, W) float in [0, 255], as training holds them."""
    return torch.stack([torch.from_numpy(np.array(a)).permute(2, 0, 1) for a in arrays]).float()


def test_rank_encoding_keeps_the_largest_share_of_the_regions():
    # 4 regions, ranks 0..3: the protocol keeps floor(4 * alpha) of them, largest first
    levels = encode_rank(np.arange(4), 4)
    assert levels.tolist() == [63, 127, 190, 254] and encode_rank(0, 1000) == 1  # never 0 (= no scribble)
    maps = torch.zeros(1, 4, 1, 4)
    maps[0, :3] = torch.tensor([255.0, 0.0, 0.0])[:, None, None]  # red scribbles
    maps[0, 3, 0] = torch.from_numpy(levels).float()
    for share, kept in ((0.0, 0), (0.24, 0), (0.25, 1), (0.5, 2), (0.74, 2), (0.75, 3), (1.0, 4)):
        hint = scribble_hints(maps, torch.tensor([share]))
        assert hint[0, 3].sum() == kept, share
        assert torch.equal(hint[0, 3, 0], torch.tensor([1.0] * kept + [0.0] * (4 - kept)))
        assert torch.allclose(hint[0, :3, 0, :kept], torch.tensor([1.0, -1.0, -1.0])[:, None])  # colour * mask
    assert SCRIBBLE_LEVELS == 254


def test_data_prep_writes_the_protocol_scribbles_deterministically(scribbled):
    import hintauc

    train_records = read_manifest(scribbled, "train")
    assert train_records and all(scribble_path(scribbled, r).is_file() for r in train_records)
    assert not any(scribble_path(scribbled, r).is_file() for r in read_manifest(scribbled, "test"))
    first = {r["id"]: scribble_path(scribbled, r).read_bytes() for r in train_records}
    subprocess.run([sys.executable, "-m", "data_prep", "scribbles", str(scribbled), "--workers", "1", "--overwrite"],
                   cwd=ROOT, check=True, capture_output=True)
    assert first == {r["id"]: scribble_path(scribbled, r).read_bytes() for r in train_records}  # bit for bit
    report = json.loads((scribbled / "scribbles" / "report.json").read_text())
    assert report["written"] == report["colour_images"] == len(train_records) and report["kept"] == 0
    scribble_path(scribbled, train_records[0]).unlink()  # a re-run makes only the missing map, and says so
    subprocess.run([sys.executable, "-m", "data_prep", "scribbles", str(scribbled), "--workers", "1"],
                   cwd=ROOT, check=True, capture_output=True)
    report = json.loads((scribbled / "scribbles" / "report.json").read_text())
    assert (report["written"], report["kept"]) == (1, len(train_records) - 1)
    assert first == {r["id"]: scribble_path(scribbled, r).read_bytes() for r in train_records}
    agree = cases = 0
    for record in train_records:
        with Image.open(scribble_path(scribbled, record)) as im:
            assert im.mode == "RGBA" and im.size == (64, 64)
            stored = maps_tensor([im])
        hints = hintauc.generate_hints(str(scribbled / record["color"]), size=64, path_method="geodesic")
        for alpha in PROTOCOL_ALPHAS:
            colour, mask = hints.at_ratio(alpha, "scribble", tie_break="stable")  # what evaluation gives
            ours = scribble_hints(stored, torch.tensor([alpha]))[0]
            on = ours[3].numpy() > 0
            cases += 1
            if np.array_equal(on, mask > 0):
                agree += 1
            if np.array_equal(on, mask > 0) and on.any():
                rgb = ((ours[:3].permute(1, 2, 0).numpy() + 1) * 127.5).round()[on]
                assert np.abs(rgb - colour[..., ::-1][on]).max() < 1e-3  # the region's mean colour, RGB
            if alpha in (0.0, 1.0):  # the ends never depend on the 1/254 steps
                assert np.array_equal(on, mask > 0)
    assert agree >= 0.95 * cases  # elsewhere a region within 1/254 of alpha may come one step early


def test_training_dataset_needs_the_maps_and_carries_them(scribbled, tmp_path):
    data = PairDataset(scribbled, "train", size=(48, 48), scribbles=True)
    item = data[0]
    assert item["scribbles"].shape == (4, 64, 64) and item["scribbles"].dtype == torch.uint8
    assert "scribbles" not in PairDataset(scribbled, "train", size=(48, 48))[0]
    victim = scribble_path(scribbled, data.records[1])
    saved = victim.read_bytes()
    victim.unlink()
    try:
        with pytest.raises(FileNotFoundError, match="data_prep scribbles"):
            PairDataset(scribbled, "train", size=(48, 48), scribbles=True)
    finally:
        victim.write_bytes(saved)


def test_sampler_gives_scribbles_instead_of_patches_at_its_rate():
    cfg = load_config(overrides=["--hints.blur_sigma=0", "--hints.scribbles=1"]).hints
    target = torch.rand(6, 3, 40, 56) * 2 - 1  # non-square
    maps = torch.zeros(6, 4, 40, 56)
    maps[:, :3, 10:12, 5:50] = 200.0
    maps[:, 3, 10:12, 5:50] = 127.0  # kept from share 0.5 on
    hint = HintSampler(cfg, 8).spatial(target, generator=torch.Generator().manual_seed(0), scribbles=maps)
    painted = hint[:, 3] > 0
    assert painted[:, 10:12, 5:50].all(1).all(1).sum() + (~painted.any(1).any(1)).sum() == 6  # all or nothing
    assert not painted[:, :10].any() and not painted[:, 12:].any()  # no patches anywhere else
    assert torch.allclose(hint[:, :3][hint[:, 3:4].expand(-1, 3, -1, -1) > 0], torch.tensor(200 / 127.5 - 1))
    # off, or with no maps in the batch: exactly the patch hints, the same random draws
    off = HintSampler(load_config(overrides=["--hints.blur_sigma=0", "--hints.scribbles=0"]).hints, 8)
    a = off.spatial(target, generator=torch.Generator().manual_seed(1), scribbles=maps)
    b = HintSampler(cfg, 8).spatial(target, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a[:, 3].sum() > 0


def test_maps_get_the_same_crop_and_flip_as_the_pair():
    line = torch.arange(2 * 20 * 36, dtype=torch.float32).view(2, 1, 20, 36)
    color, maps = line.expand(-1, 3, -1, -1).clone(), line.expand(-1, 4, -1, -1).clone()
    line2, color2, maps2 = augment(line, color, 16, True, maps)
    assert torch.equal(maps2, line2.expand(-1, 4, -1, -1)) and torch.equal(color2, line2.expand(-1, 3, -1, -1))
    assert augment(line, color, 16, True, None)[2] is None


def test_a_run_trains_with_scribbles(scribbled, tmp_path):
    cfg = load_config(str(ROOT / "experiments" / "smoke.yaml"), smoke_overrides(
        scribbled, tmp_path, "--data.size=48", "--hints.scribbles=1", "--train.steps=4", "--train.val_every=4",
        "--train.ckpt_every=4", "--train.name=scribbles"))
    summary = train(cfg)
    assert summary["step"] == 4 and summary["history"]
    assert all(np.isfinite(h["loss/g_total"]) for h in summary["history"])


def test_training_makes_the_missing_maps_first_as_they_are_on_by_default(scribbled, tmp_path):
    root = tmp_path / "om48"
    shutil.copytree(scribbled, root)
    shutil.rmtree(root / "scribbles")
    cfg = load_config(str(ROOT / "experiments" / "smoke.yaml"), smoke_overrides(
        root, tmp_path / "runs", "--data.size=48", "--train.steps=2", "--train.val_every=2", "--train.ckpt_every=2"))
    assert cfg.hints.scribbles == 0.5  # the default: patches plus scribbles won the A/B (experiments/RESULTS.md)
    assert train(cfg)["step"] == 2
    records = read_manifest(root, "train")
    assert records and all(scribble_path(root, r).is_file() for r in records)


def test_a_colour_image_without_scribbles_stops_the_run_before_it_starts(scribbled, tmp_path):
    root = tmp_path / "om48"
    shutil.copytree(scribbled, root)
    shutil.rmtree(root / "scribbles")
    broken = root / read_manifest(root, "train")[0]["color"]
    broken.write_bytes(b"not a png")
    with pytest.raises(FileNotFoundError, match=r"1 of the \d+ train pairs .*--hints.scribbles=0"):
        ensure_scribbles(root)
