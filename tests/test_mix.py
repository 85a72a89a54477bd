"""Training on a mix of prepared folders (``--data.root=[a,b] --data.shares=[0.6,0.4]``): the config
checks, the share-driven and resumable sampler, per-folder scribbles and validation, exact resume."""
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorizer import data as data_module
from colorizer.checkpoint import CheckpointError
from colorizer.config import ConfigError, data_roots, load_config
from colorizer.data import ensure_dataset, make_train_stream
from colorizer.evaluate import validate
from colorizer.runtime import DistInfo, MixSampler
from colorizer.step import build_parts
from colorizer.training import train


def make_folder(root: Path, seed: int, train: int = 10, val: int = 3, height: int = 32, width: int = 48) -> Path:
    """A prepared folder of ``train`` + ``val`` distinct pairs: a coloured rectangle, placed and
    coloured at random (``seed``), on a background of another colour; the line art is its outline."""
    rng = np.random.default_rng(seed)
    (root / "line").mkdir(parents=True)
    (root / "color").mkdir()
    with open(root / "manifest.jsonl", "w") as f:
        for i, split in enumerate(["train"] * train + ["val"] * val):
            top, left = rng.integers(2, height // 2), rng.integers(2, width // 2)
            bottom, right = top + rng.integers(6, height // 2 - 1), left + rng.integers(6, width // 2 - 1)
            color = np.empty((height, width, 3), np.uint8)
            color[:] = rng.integers(0, 256, 3)
            color[top:bottom, left:right] = rng.integers(0, 256, 3)
            line = np.full((height, width), 255, np.uint8)
            line[[top, bottom - 1], left:right] = 0
            line[top:bottom, [left, right - 1]] = 0
            Image.fromarray(line, "L").save(root / "line" / f"p{i}.png")
            Image.fromarray(color, "RGB").save(root / "color" / f"p{i}.png")
            f.write(json.dumps({"id": f"p{i}", "group": f"g{i}", "split": split, "line": f"line/p{i}.png",
                                "color": f"color/p{i}.png", "source": f"test{seed}"}) + "\n")
    return root


@pytest.fixture
def two_folders(tmp_path):
    """Folders "alpha" (10 train, 3 val pairs) and "beta" (30 train, 4 val), 32 x 48 px."""
    return make_folder(tmp_path / "alpha", seed=1), make_folder(tmp_path / "beta", seed=2, train=30, val=4)


def mix_cfg(roots, *extra: str):
    """A tiny model reading the mix ``roots`` at 32 x 48 in the main process, without region scribbles."""
    return load_config(overrides=[f"--data.root=[{','.join(map(str, roots))}]", "--data.size=32", "--data.width=48",
                                  "--data.num_workers=0", "--hints.scribbles=0", "--model.depth=3",
                                  "--model.base_channels=8", "--model.max_channels=16", "--model.disc_channels=8",
                                  "--model.disc_layers=2", "--loss.perceptual_weight=0", "--train.device=cpu",
                                  "--log.wandb=disabled", "--log.progress=false", *extra])


def sources(stream, batches: int) -> list:
    return [s for _ in range(batches) for s in next(stream)["source"].tolist()]


# ---- config ---------------------------------------------------------------------------------------

def test_a_mix_comes_from_the_cli_and_from_an_experiment_file(tmp_path):
    cfg = load_config(overrides=["--data.root=[data/openmoji256,data/iconify256]", "--data.shares=[0.6,0.4]"])
    assert data_roots(cfg.data) == [Path("data/openmoji256"), Path("data/iconify256")]
    assert list(cfg.data.shares) == [0.6, 0.4]
    exp = tmp_path / "mix.yaml"
    exp.write_text("data:\n  root:\n    - data/a\n    - data/b\n  shares: [3, 1]\n")
    assert data_roots(load_config(str(exp)).data) == [Path("data/a"), Path("data/b")]
    assert data_roots(load_config().data) == [Path("data/openmoji256")]  # one folder, as before


@pytest.mark.parametrize("overrides, match", [
    (["--data.root=[data/a,data/b]", "--data.shares=[1.0]"], r"data\.shares has 1 values for the 2 folders.*data/a"),
    (["--data.root=[data/a,data/b]", "--data.shares=[0.5,0.3,0.2]"], r"data\.shares has 3 values for the 2"),
    (["--data.root=[data/a,data/b]", "--data.shares=[1.0,-0.5]"], r"data\.shares=.*>= 0 each"),
    (["--data.root=[data/a,data/b]", "--data.shares=[0,0]"], r"data\.shares=.*positive sum"),
    (["--data.root=[data/a,data/b,./data/a]"], r"lists the folder \./data/a twice"),
    (["--data.root=[x/data,y/data]"], r"same folder name 'data'"),
    (["--data.root=[]"], r"data\.root=\[\] must name a prepared folder"),
])
def test_bad_mixes_are_config_errors_naming_the_problem(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=overrides)


def test_a_missing_folder_in_a_mix_stops_the_run_naming_it_and_the_command(two_folders, tmp_path):
    missing = tmp_path / "iconify32"
    cfg = mix_cfg([*two_folders, missing], f"--train.out_dir={tmp_path / 'runs'}")
    assert cfg.data.prepare == "openmoji"  # even so: a folder of a mix is never prepared
    with pytest.raises(FileNotFoundError, match=rf"{missing}, one of the folders of data.root.*"
                                                rf"python -m data_prep openmoji --out {missing}"):
        train(cfg)
    assert not missing.exists() and not (tmp_path / "runs").exists()  # nothing prepared, no run started
    (missing / "line").mkdir(parents=True)  # a folder without manifest.jsonl is missing too
    with pytest.raises(FileNotFoundError, match=rf"{missing}.*manifest\.jsonl missing"):
        ensure_dataset(cfg.data)


def test_each_folder_of_a_mix_gets_its_own_scribble_maps(two_folders, monkeypatch):
    made = []
    monkeypatch.setattr(data_module, "ensure_scribbles", made.append)
    assert ensure_dataset(mix_cfg(two_folders).data, scribbles=True) == list(two_folders)
    assert made == list(two_folders)


# ---- the sampler and the stream -----------------------------------------------------------------

def test_shares_are_respected_over_many_draws(two_folders):
    stream = make_train_stream(mix_cfg(two_folders, "--data.shares=[0.8,0.2]"), two_folders, DistInfo(), 4)
    drawn = sources(stream, 250)  # 1000 samples, 25 epochs of 40
    assert Counter(drawn)[0] / len(drawn) == pytest.approx(0.8, abs=0.02)
    assert set(drawn[:20]) == {0, 1}  # the folders are interleaved, not one after the other
    by_size = make_train_stream(mix_cfg(two_folders), two_folders, DistInfo(), 4)  # no shares: 10 and 30 pairs
    drawn = sources(by_size, 250)
    assert Counter(drawn)[0] / len(drawn) == pytest.approx(0.25, abs=0.02)


def test_a_stream_item_says_its_folder_and_is_that_folders_pair(two_folders):
    stream = make_train_stream(mix_cfg(two_folders), two_folders, DistInfo(), 5)
    batch = next(stream)
    datasets = stream.loader.dataset.datasets
    for index, source, color in zip(batch["index"].tolist(), batch["source"].tolist(), batch["color"]):
        local = index - (len(datasets[0]) if source else 0)
        assert 0 <= local < len(datasets[source])
        assert torch.equal(color, datasets[source][local]["color"])


def test_a_small_folder_repeats_only_after_all_of_it_was_drawn():
    sampler = MixSampler([5, 95], [0.5, 0.5], seed=3)  # 50 draws of 5 pairs per epoch: ten passes
    drawn = []
    for epoch in range(3):
        sampler.set_position(epoch, 0)
        drawn += [i for i in sampler if i < 5]
    assert len(drawn) == 150
    passes = [drawn[k : k + 5] for k in range(0, len(drawn), 5)]
    assert all(sorted(p) == [0, 1, 2, 3, 4] for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # each pass is shuffled anew
    large = [i - 5 for i in MixSampler([5, 95], [0.5, 0.5], seed=3) if i >= 5]
    assert len(large) == len(set(large)) == 50  # no pair of the large folder twice in an epoch


def test_ranks_share_out_each_epochs_draws():
    shards = [MixSampler([10, 30], [0.8, 0.2], seed=0, rank=rank, world_size=2) for rank in (0, 1)]
    drawn = [list(shard) for shard in shards]
    assert len(drawn[0]) == len(drawn[1]) == len(shards[0]) == 20
    assert drawn[0] != drawn[1]
    together = Counter(i < 10 for i in drawn[0] + drawn[1])
    assert together[True] == 32 and together[False] == 8  # 0.8 and 0.2 of the epoch's 40 draws


def test_the_mix_order_is_seeded_and_resumes_mid_epoch(two_folders):
    def order(seed, batches=14):  # 14 batches of 3: 13 per epoch of 40 draws, so across an epoch boundary
        stream = make_train_stream(mix_cfg(two_folders, f"--train.seed={seed}", "--data.shares=[0.5,0.5]"),
                                   two_folders, DistInfo(), 3)
        return stream, [next(stream)["index"].tolist() for _ in range(batches)]

    _, first = order(1)
    assert first == order(1)[1] != order(2)[1]
    for position in ({"epoch": 0, "batch": 5}, {"epoch": 1, "batch": 0}):
        resumed, _ = order(1, batches=0)
        resumed.restore(position)  # what a checkpoint holds
        done = 13 * position["epoch"] + position["batch"]
        assert [next(resumed)["index"].tolist() for _ in range(14 - done)] == first[done:]


def test_a_one_folder_list_reads_like_the_plain_folder(two_folders):
    alpha = two_folders[0]
    common = ["--data.size=32", "--data.width=48", "--model.depth=3", "--data.num_workers=0", "--hints.scribbles=0"]
    plain, listed = (load_config(overrides=[f"--data.root={root}", *common]) for root in (alpha, f"[{alpha}]"))
    streams = [make_train_stream(cfg, data_roots(cfg.data), DistInfo(), 3) for cfg in (plain, listed)]
    orders = [[next(stream)["index"].tolist() for _ in range(6)] for stream in streams]
    assert orders[0] == orders[1]
    assert "source" not in next(streams[1])  # the single-folder path: no MixDataset


# ---- validation and training --------------------------------------------------------------------

def test_validation_reports_each_folder_and_their_share_weighted_mean(two_folders):
    cfg = mix_cfg(two_folders, "--data.shares=[3,1]", "--train.batch_size=4")
    generator = build_parts(cfg, torch.device("cpu")).ema.module.eval()
    metrics = validate(cfg, generator, list(two_folders), torch.device("cpu"), None)
    for mode in ("none", "spatial", "palette"):
        for metric in ("psnr", "psnr_color", "ssim", "ssim_color", "shape_accuracy", "colourfulness"):
            alpha, beta = metrics[f"val/alpha/{mode}/{metric}"], metrics[f"val/beta/{mode}/{metric}"]
            assert not math.isnan(alpha) and not math.isnan(beta)
            assert metrics[f"val/{mode}/{metric}"] == pytest.approx(0.75 * alpha + 0.25 * beta)
    assert metrics["val/alpha/none/psnr_color"] != metrics["val/beta/none/psnr_color"]  # really two folders
    assert "val/alpha/spatial/hint_error" in metrics


def test_data_credits_list_each_folders_licences_once_and_name_a_folder_without(tmp_path):
    om, fluent, mine = tmp_path / "om", tmp_path / "fluent", tmp_path / "mine"
    for folder, report in ((om, {"licence": "OpenMoji, CC BY-SA 4.0"}),
                           (fluent, {"attribution": ["Fluent Emoji Flat by Microsoft, MIT", "Noto by Google, Apache"]}),
                           (mine, {"size": 32})):
        folder.mkdir()
        (folder / "report.json").write_text(json.dumps(report))
    credits = data_module.data_credits([om, fluent, mine, om, tmp_path / "absent"], inherited=["Parent's data"])
    assert credits == ["Parent's data", "OpenMoji, CC BY-SA 4.0", "Fluent Emoji Flat by Microsoft, MIT",
                       "Noto by Google, Apache", "mine: no licence recorded", "absent: no licence recorded"]
    assert data_module.inherited_credits({"data_credits": ["A"]}, {"run_name": "p"}) == ["A"]
    assert data_module.inherited_credits({}, {"run_name": "p"}) == ["p: training data's licences not recorded"]


def test_resume_of_a_mix_gives_the_same_losses_as_an_uninterrupted_run(two_folders, tmp_path):
    (two_folders[0] / "report.json").write_text(json.dumps({"attribution": ["Alpha icons by A, MIT"]}))
    common = ["--data.shares=[0.7,0.3]", "--train.steps=8", "--train.batch_size=4", "--train.deterministic=true",
              "--log.every=1", "--train.ckpt_every=4", "--train.val_every=4", "--train.val_items=4",
              "--log.image_every=4", "--log.hist_every=4", "--log.num_samples=3", "--train.name=mix"]
    straight = train(mix_cfg(two_folders, f"--train.out_dir={tmp_path / 'a'}", *common))
    first = train(mix_cfg(two_folders, f"--train.out_dir={tmp_path / 'b'}", "--train.stop_after=3", *common))
    assert first["step"] == 3  # mid-epoch (10 batches per epoch) and before the first checkpoint step
    second = train(mix_cfg(two_folders, f"--train.out_dir={tmp_path / 'b'}", "--train.resume=auto", *common))
    assert second["step"] == 8
    losses = lambda hist: {h["step"]: h["loss/g_total"] for h in hist}  # noqa: E731
    resumed, reference = {**losses(first["history"]), **losses(second["history"])}, losses(straight["history"])
    assert sorted(resumed) == sorted(reference) == list(range(1, 9))
    for step, value in reference.items():
        assert resumed[step] == pytest.approx(value, rel=1e-5, abs=1e-6), f"step {step}"
    metrics = straight["metrics"]
    assert {"val/alpha/none/psnr_color", "val/beta/none/psnr_color", "val/none/psnr_color"} <= set(metrics)
    assert second["metrics"]["val/beta/none/psnr"] == pytest.approx(metrics["val/beta/none/psnr"], rel=1e-5)
    run = Path(straight["run_dir"])
    assert straight["best"] is not None and (run / "checkpoints" / "best.pt").is_file()  # best_metric still found
    assert run.name == "mix" and (run / "samples" / "val_none_0000008.png").is_file()
    exported = json.loads((run / "export" / "config.json").read_text())["config"]
    assert exported["data_credits"] == ["Alpha icons by A, MIT", "beta: no licence recorded"]  # the demo shows these


def test_resuming_with_other_shares_is_refused(two_folders, tmp_path):
    common = ["--train.steps=4", "--train.batch_size=4", "--train.ckpt_every=2", "--train.val_every=100",
              f"--train.out_dir={tmp_path}", "--train.name=mix"]
    train(mix_cfg(two_folders, "--data.shares=[0.7,0.3]", "--train.stop_after=2", *common))
    with pytest.raises(CheckpointError, match=r"data\.shares: checkpoint \[0\.7, 0\.3\] vs now \[0\.5, 0\.5\]"):
        train(mix_cfg(two_folders, "--data.shares=[0.5,0.5]", "--train.resume=auto", *common))
