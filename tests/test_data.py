"""colorizer.data: reading the prepared format, cache, failures; and the training stream built on it
(rank shards, seeded order, resumable position, paired on-device augmentation)."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorizer.config import DataConfig, load_config
from colorizer import data as data_module
from colorizer.data import PairDataset, ensure_dataset, make_train_stream, mean_color, take
from colorizer.runtime import DistInfo
from colorizer.step import build_parts, prepare_inputs

MARK = (8, 4)  # (row, column) of the asymmetric mark, in pixels of the 32 x 48 stored images


def make_dataset(root: Path, splits=("train",) * 10 + ("val",) * 3, height=32, width=48) -> Path:
    """A prepared folder whose pairs share a mark near the left edge: a black dot in the line art,
    a red dot in the colour image, on a blue-to-green gradient so every column differs."""
    (root / "line").mkdir(parents=True)
    (root / "color").mkdir()
    with open(root / "manifest.jsonl", "w") as f:
        for i, split in enumerate(splits):
            line = np.full((height, width), 255, np.uint8)
            color = np.zeros((height, width, 3), np.uint8)
            color[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
            color[..., 2] = 200
            row, col = MARK
            line[row : row + 2, col : col + 2] = 0
            color[row : row + 2, col : col + 2] = (255, 0, 0)
            Image.fromarray(line, "L").save(root / "line" / f"p{i}.png")
            Image.fromarray(color, "RGB").save(root / "color" / f"p{i}.png")
            f.write(json.dumps({"id": f"p{i}", "group": f"g{i}", "split": split, "line": f"line/p{i}.png",
                                "color": f"color/p{i}.png", "source": f"test{i}"}) + "\n")
    return root


def marks(item: dict) -> tuple:
    """Column of the darkest line pixel and of the reddest colour pixel (on the mark's row)."""
    line, color = item["line"][0], item["color"]
    line_rc = divmod(int(line.argmin()), line.shape[1])
    redness = color[0] - color[1] - color[2]
    color_rc = divmod(int(redness.argmax()), redness.shape[1])
    return line_rc, color_rc


def test_items_have_the_requested_non_square_shape_and_range(tmp_path):
    root = make_dataset(tmp_path / "d", height=64, width=64)  # stored square, loaded at 32 x 48
    item = PairDataset(root, "train", size=(32, 48))[3]
    assert item["line"].shape == (1, 32, 48) and item["color"].shape == (3, 32, 48)
    assert item["line"].dtype == item["color"].dtype == torch.float32
    for key in ("line", "color"):
        assert item[key].min() >= -1 and item[key].max() <= 1
    assert item["line"].max() == 1 and item["line"].min() < 0  # white paper, a dark mark
    assert item["index"] == 3


def test_a_subsample_is_the_first_items_or_spread_over_the_split(tmp_path):
    records = list(range(10))
    assert take(records, 0) == take(records, 12, spread=True) == records
    assert take(records, 4) == [0, 1, 2, 3]
    assert take(records, 4, spread=True) == [0, 2, 5, 7]
    assert take(records, 10, spread=True) == records
    root = make_dataset(tmp_path / "d", splits=("val",) * 9)
    ids = [r["id"] for r in PairDataset(root, "val", size=(32, 48), max_items=3, spread=True).records]
    assert ids == ["p0", "p3", "p6"]


def stream_cfg(root: Path, *extra: str):
    """A tiny model reading ``root`` at 32 x 48 in the main process, without region scribbles (the
    synthetic pairs have no maps; tests/test_scribbles.py reads them)."""
    return load_config(overrides=[f"--data.root={root}", "--data.prepare=none", "--data.size=32", "--data.width=48",
                                  "--hints.scribbles=0",
                                  "--data.num_workers=0", "--model.depth=3", "--model.base_channels=8",
                                  "--model.max_channels=16", "--model.disc_channels=8", "--loss.perceptual_weight=0",
                                  *extra])


def test_training_batches_have_the_config_size_and_the_device_crop(tmp_path):
    root = make_dataset(tmp_path / "d")
    cfg = stream_cfg(root)
    batch = next(make_train_stream(cfg, root, DistInfo(), 4))
    assert batch["line"].shape == (4, 1, 32, 48) and batch["color"].shape == (4, 3, 32, 48)
    cropped = stream_cfg(root, "--data.crop=16")
    line, color, hints, _ = prepare_inputs(build_parts(cropped, torch.device("cpu")), batch, 0.0)
    assert line.shape == (4, 1, 16, 16) and color.shape == (4, 3, 16, 16) and hints.spatial.shape == (4, 4, 16, 16)


def test_flip_is_applied_to_line_and_colour_together(tmp_path):
    root = make_dataset(tmp_path / "d")
    cfg = stream_cfg(root, "--lines.artist=1", "--lines.xdog=0", "--lines.varied=0")  # the marks must not move
    parts, stream = build_parts(cfg, torch.device("cpu")), make_train_stream(cfg, root, DistInfo(), 5)
    torch.manual_seed(0)
    flipped = plain = 0
    for _ in range(8):
        line, color, _, _ = prepare_inputs(parts, next(stream), 0.0)
        for item in ({"line": l, "color": c} for l, c in zip(line, color)):
            line_rc, color_rc = marks(item)
            assert line_rc == color_rc
            flipped, plain = flipped + (line_rc[1] > 24), plain + (line_rc[1] <= 24)
    assert flipped > 5 and plain > 5  # both outcomes occur, so the check above saw real flips


def test_cache_decodes_each_file_once(tmp_path):
    root = make_dataset(tmp_path / "d")
    dataset = PairDataset(root, "train", size=(32, 48), cache=True)
    first = dataset[2]
    (root / "line" / "p2.png").unlink()
    (root / "color" / "p2.png").write_bytes(b"gone")
    again = dataset[2]  # served from memory: the files are no longer readable
    assert again["index"] == 2 and torch.equal(first["color"], again["color"]) and not dataset.failures


def test_cache_is_turned_off_with_a_warning_when_it_would_not_fit(tmp_path, monkeypatch, caplog):
    root = make_dataset(tmp_path / "d")
    ten_pairs = 10 * 4 * 32 * 48  # bytes of the decoded train split: 1 + 3 uint8 channels per pair
    monkeypatch.setattr(data_module, "available_memory", lambda: 2 * ten_pairs * 4)  # half fits 4 copies
    assert PairDataset(root, "train", size=(32, 48), cache=True, cache_copies=4).cache
    with caplog.at_level(logging.WARNING, logger="colorizer.data"):
        dataset = PairDataset(root, "train", size=(32, 48), cache=True, cache_copies=5)
    assert not dataset.cache and "not caching the train split" in caplog.text
    dataset[0]
    assert not dataset._cache


def test_an_unreadable_file_is_skipped_with_a_warning(tmp_path, caplog):
    root = make_dataset(tmp_path / "d")
    dataset = PairDataset(root, "train", size=(32, 48), cache=False)
    (root / "color" / "p4.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    with caplog.at_level(logging.WARNING, logger="colorizer.data"):
        item = dataset[4]
    assert item["index"] == 5 and item["color"].shape == (3, 32, 48)
    assert len(dataset.failures) == 1 and "p4.png" in dataset.failures[0]
    assert "p4.png" in caplog.text


def test_missing_manifest_or_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_prep"):
        PairDataset(tmp_path, "train")
    root = make_dataset(tmp_path / "d")
    (root / "color" / "p5.png").unlink()
    with pytest.raises(FileNotFoundError, match="p5.png"):
        PairDataset(root, "train")
    assert len(PairDataset(root, "val")) == 3  # the missing file is not in this split


def test_distributed_ranks_get_disjoint_shards(tmp_path):
    root = make_dataset(tmp_path / "d")
    cfg = stream_cfg(root)
    shards = []
    for rank in (0, 1):
        stream = make_train_stream(cfg, root, DistInfo(rank=rank, world_size=2), 2)
        shards.append([i for _ in range(len(stream.loader)) for i in next(stream)["index"].tolist()])
    assert len(shards[0]) == len(shards[1]) == 4  # 10 pairs: 5 per rank, then whole batches of 2
    assert not set(shards[0]) & set(shards[1])
    assert len(set(shards[0]) | set(shards[1])) == 8


def test_order_is_seeded_and_resumes_mid_epoch(tmp_path):
    root = make_dataset(tmp_path / "d")

    def order(seed, batches=6):  # 6 batches of 3 from 10 pairs: across an epoch boundary
        stream = make_train_stream(stream_cfg(root, f"--train.seed={seed}"), root, DistInfo(), 3)
        return stream, [next(stream)["index"].tolist() for _ in range(batches)]

    stream, first = order(1)
    assert first == order(1)[1] != order(2)[1]
    epoch = [i for batch in first[:3] for i in batch]  # 10 // 3 whole batches per epoch
    assert len(epoch) == len(set(epoch)) == 9  # no pair twice within an epoch
    resumed, _ = order(1, batches=0)
    resumed.restore({"epoch": 0, "batch": 2})  # what a checkpoint after 2 batches holds
    assert [next(resumed)["index"].tolist() for _ in range(4)] == first[2:]


def test_unprepared_root_is_a_clear_error(tmp_path):
    root = make_dataset(tmp_path / "d", splits=("train",) * 4)
    cfg = DataConfig(root=str(root), prepare="none", size=32, width=48, num_workers=0)
    assert ensure_dataset(cfg) == [root]
    missing = DataConfig(root=str(tmp_path / "nothing"), prepare="none")
    with pytest.raises(FileNotFoundError, match="python -m data_prep openmoji"):
        ensure_dataset(missing)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "photo.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="other files"):
        ensure_dataset(DataConfig(root=str(tmp_path / "busy"), prepare="openmoji"))


def test_mean_color_matches_the_images(tmp_path):
    root = make_dataset(tmp_path / "d")
    color = np.asarray(Image.open(root / "color" / "p0.png"), dtype=np.float64)
    expected = torch.tensor(color.mean((0, 1)) / 127.5 - 1, dtype=torch.float32)
    assert torch.allclose(mean_color(root, "train"), expected, atol=1e-5)
