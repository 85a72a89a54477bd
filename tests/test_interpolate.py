"""colorizer.interpolate: a fine-tune blended with its parent in weight space (WiSE-FT)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from colorizer.checkpoint import ModelLoadError, export_generator, read_generator, read_parent
from colorizer.config import load_config, to_dict
from colorizer.inference import Colorizer
from colorizer.interpolate import blend, interpolate, main
from test_inference import TINY, tiny_generator


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides=TINY)


@pytest.fixture(scope="module")
def models(cfg, tmp_path_factory):
    """A parent export and a 'fine-tune' of it (other weights, same architecture, parent recorded)."""
    root = tmp_path_factory.mktemp("models")
    parent_state, child_state = tiny_generator(cfg, seed=0).state_dict(), tiny_generator(cfg, seed=1).state_dict()
    child_state = {k: v + 0.5 if torch.is_floating_point(v) else v + 7 for k, v in child_state.items()}
    export_generator(root / "parent", parent_state, to_dict(cfg), step=100, metrics={}, perceptual="off",
                     run_name="base")
    record = read_parent(root / "parent").record
    export_generator(root / "child", child_state, {**to_dict(cfg), "perceptual_status": "off", "parent": record,
                                                   "data_credits": ["Fluent Emoji Flat by Microsoft, MIT"]},
                     step=40, metrics={"val/none/psnr_color": 11.0}, perceptual="off", run_name="mix")
    return root, parent_state, child_state


def test_blend_is_the_parent_at_0_the_child_at_1_and_the_line_between():
    parent = {"w": torch.zeros(2, 3), "n": torch.tensor(3)}
    child = {"w": torch.full((2, 3), 4.0), "n": torch.tensor(9)}
    assert torch.equal(blend(parent, child, 0.0)["w"], parent["w"])
    assert torch.equal(blend(parent, child, 1.0)["w"], child["w"])
    half = blend(parent, child, 0.25)
    assert torch.allclose(half["w"], torch.full((2, 3), 1.0)) and half["n"].item() == 9  # counters: the child's


def test_blend_refuses_other_architectures_and_alpha_outside_0_1():
    parent = {"a.weight": torch.zeros(2), "b.weight": torch.zeros(3)}
    with pytest.raises(ModelLoadError, match=r"only in the parent: b\.weight.*only in the child: c\.weight"):
        blend(parent, {"a.weight": torch.zeros(2), "c.weight": torch.zeros(3)}, 0.5)
    with pytest.raises(ModelLoadError, match=r"different shapes: a\.weight"):
        blend(parent, {"a.weight": torch.zeros(4), "b.weight": torch.zeros(3)}, 0.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        blend(parent, parent, 1.5)


def test_cli_writes_an_export_with_both_models_lineage_that_colours_non_square_art(models, tmp_path):
    root, parent_state, child_state = models
    out = tmp_path / "blend"
    assert main(["--parent", str(root / "parent"), "--child", str(root / "child"), "--alpha", "0.7",
                 "--out", str(out)]) == 0
    stored = read_generator(out)
    for name, value in stored.weights.items():
        if torch.is_floating_point(value):
            assert torch.allclose(value, 0.3 * parent_state[name] + 0.7 * child_state[name], atol=1e-6), name
        else:
            assert torch.equal(value, child_state[name]), name
    meta = json.loads((out / "config.json").read_text())
    lineage = meta["config"]["interpolation"]
    assert lineage["alpha"] == 0.7
    assert lineage["parent"]["run_name"] == "base" and lineage["child"]["run_name"] == "mix"
    assert len(lineage["parent"]["sha256"]) == len(lineage["child"]["sha256"]) == 64
    assert meta["config"]["parent"] == lineage["parent"]  # the child's own lineage is kept
    assert meta["step"] == 40 and meta["run_name"] == "mix-alpha0.7"
    # the blend learnt from both models' data: the parent, exported before credits were recorded, says so
    assert meta["config"]["data_credits"] == ["base: training data's licences not recorded",
                                              "Fluent Emoji Flat by Microsoft, MIT"]
    art = Image.new("L", (56, 40), 255)
    ImageDraw.Draw(art).ellipse((8, 6, 40, 34), outline=0, width=2)
    result = np.asarray(Colorizer.load(out, device="cpu").colorize(art))
    assert result.shape == (40, 56, 3)


def test_cli_refuses_a_child_of_another_architecture_and_a_missing_model(models, tmp_path, capsys):
    root, _, _ = models
    wide = load_config(overrides=TINY + ["--model.base_channels=16"])
    export_generator(tmp_path / "wide", tiny_generator(wide).state_dict(), to_dict(wide), step=1, metrics={},
                     perceptual="off", run_name="wide")
    args = ["--parent", str(root / "parent"), "--alpha", "0.5", "--out", str(tmp_path / "x")]
    assert main(args + ["--child", str(tmp_path / "wide")]) == 2
    assert "model.base_channels" in capsys.readouterr().err
    assert main(args + ["--child", str(tmp_path / "nowhere")]) == 2
    assert "no model at" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_parent_older_than_a_model_setting_blends_when_the_child_holds_its_default(models, tmp_path):
    """models/demo predates model.decoder_hints and model.encoder_lr: its config lacks them, which
    means their defaults, not another architecture."""
    root, _, _ = models
    old = tmp_path / "old"
    old.mkdir()
    meta = json.loads((root / "parent" / "config.json").read_text())
    for key in ("decoder_hints", "encoder_lr"):
        del meta["config"]["model"][key]
    (old / "config.json").write_text(json.dumps(meta))
    (old / "generator.safetensors").write_bytes((root / "parent" / "generator.safetensors").read_bytes())
    assert main(["--parent", str(old), "--child", str(root / "child"), "--alpha", "0.5",
                 "--out", str(tmp_path / "blend")]) == 0
    meta["config"]["model"]["encoder_lr"] = 0.5  # a key the older model holds, at another value, still differs
    (old / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=r"model\.encoder_lr: checkpoint 0\.5 vs now 0\.1"):
        interpolate(read_parent(old), read_parent(root / "child"), 0.5, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_a_child_grown_from_its_parent_blends_with_the_parent_as_it_grew(models, tmp_path):
    """A unet_features fine-tune of a plain U-Net: the U-Net's weights blend, the frozen features stay the
    child's, and their projection, zero in the grown parent, becomes alpha x the child's."""
    root, parent_state, _ = models
    grown_cfg = load_config(overrides=TINY + ["--model.generator=unet_features"])
    child_state = tiny_generator(grown_cfg, seed=2).state_dict()
    child_state["line_features.project.weight"] += 1.0  # a projection that learnt something
    export_generator(tmp_path / "grown", child_state, to_dict(grown_cfg), step=5, metrics={}, perceptual="off",
                     run_name="grown")
    assert main(["--parent", str(root / "parent"), "--child", str(tmp_path / "grown"), "--alpha", "0.25",
                 "--out", str(tmp_path / "blend")]) == 0
    stored = read_generator(tmp_path / "blend").weights
    assert set(stored) == set(child_state)
    for name, value in stored.items():
        if name.startswith("line_features.project."):
            expected = 0.25 * child_state[name]
        elif name.startswith("line_features.") or not torch.is_floating_point(value):
            expected = child_state[name]
        else:
            expected = 0.75 * parent_state[name] + 0.25 * child_state[name]
        assert torch.allclose(value.float(), expected.float(), atol=1e-6), name
    assert stored["line_features.project.weight"].abs().sum() > 0


def test_a_child_that_grew_a_colour_head_blends_it_from_zero(models, tmp_path):
    """A fine-tune that grew a colour head: the rest blends, and the head, zero in the grown parent,
    becomes alpha x the child's. The child shows its regression (model.colour_decode, no architecture:
    the parent's default differs), and so does the blend."""
    root, parent_state, _ = models
    head_cfg = load_config(overrides=TINY + ["--model.colour_head=true", "--loss.colour_classes=1",
                                             "--model.colour_decode=regression"])
    child_state = tiny_generator(head_cfg, seed=3).state_dict()
    export_generator(tmp_path / "head", child_state, to_dict(head_cfg), step=5, metrics={}, perceptual="off",
                     run_name="head")
    assert main(["--parent", str(root / "parent"), "--child", str(tmp_path / "head"), "--alpha", "0.5",
                 "--out", str(tmp_path / "blend")]) == 0
    stored = read_generator(tmp_path / "blend").weights
    assert set(stored) == set(child_state) and stored["colour_head.weight"].abs().sum() > 0
    assert Colorizer.load(tmp_path / "blend").config.model.colour_decode == "regression"
    for name, value in stored.items():
        parent_value = torch.zeros_like(child_state[name]) if name.startswith("colour_head.") else parent_state[name]
        expected = 0.5 * parent_value + 0.5 * child_state[name] if torch.is_floating_point(value) else child_state[name]
        assert torch.allclose(value.float(), expected.float(), atol=1e-6), name


def test_colour_decode_sets_how_the_blend_shows_its_colours_and_keeps_the_weights(models, tmp_path):
    """A head child that shows its head (annealed, the default): --colour-decode regression makes the
    blend show its network's own colours; the weights are the same blend either way."""
    root, _, _ = models
    head_cfg = load_config(overrides=TINY + ["--model.colour_head=true", "--loss.colour_classes=1"])
    export_generator(tmp_path / "head", tiny_generator(head_cfg, seed=3).state_dict(), to_dict(head_cfg), step=5,
                     metrics={}, perceptual="off", run_name="head")
    common = ["--parent", str(root / "parent"), "--child", str(tmp_path / "head"), "--alpha", "0.5"]
    assert main(common + ["--out", str(tmp_path / "kept")]) == 0
    assert main(common + ["--out", str(tmp_path / "shown"), "--colour-decode", "regression"]) == 0
    assert Colorizer.load(tmp_path / "kept").config.model.colour_decode == "annealed"
    assert Colorizer.load(tmp_path / "shown").config.model.colour_decode == "regression"
    assert (tmp_path / "kept" / "generator.safetensors").read_bytes() == \
        (tmp_path / "shown" / "generator.safetensors").read_bytes()
    with pytest.raises(ValueError, match="colour_decode='mode'"):
        interpolate(read_parent(root / "parent"), read_parent(tmp_path / "head"), 0.5, tmp_path / "x", "mode")


def test_a_fine_tune_of_a_fine_tune_blends_with_its_grandparent_and_names_the_whole_chain(models, tmp_path):
    """A grandchild whose config names its parent in the older, flat form (hash, step and run; no ancestors
    of its own, as recorded before records carried them) blended with its grandparent: the blend's parent
    is its child's, completed from the file while the file holds the recorded hash, so the chain of parents
    reaches the blended parent, whole. Once the file at that path is another model, the record stays as
    written: an ancestor is never guessed."""
    root, _, child_state = models
    flat = {k: v for k, v in read_parent(root / "child").record.items() if k != "parent"}
    cfg = json.loads((root / "child" / "config.json").read_text())["config"]
    export_generator(tmp_path / "grandchild", {k: v + 0.25 if torch.is_floating_point(v) else v
                                               for k, v in child_state.items()},
                     {**cfg, "parent": flat}, step=60, metrics={}, perceptual="off", run_name="again")
    assert main(["--parent", str(root / "parent"), "--child", str(tmp_path / "grandchild"), "--alpha", "0.5",
                 "--out", str(tmp_path / "blend")]) == 0
    config = json.loads((tmp_path / "blend" / "config.json").read_text())["config"]
    assert config["parent"]["run_name"] == "mix" and config["parent"]["sha256"] == flat["sha256"]
    assert config["parent"]["parent"] == config["interpolation"]["parent"]  # the grandparent, whole
    assert config["interpolation"]["parent"] == read_parent(root / "parent").record

    moved = tmp_path / "moved"  # the same config, but its parent's path now holds other weights
    moved.mkdir()
    (moved / "child").mkdir()
    for name in ("config.json", "generator.safetensors"):
        (moved / "child" / name).write_bytes((root / "child" / name).read_bytes())
    export_generator(moved / "grandchild", child_state, {**cfg, "parent": {**flat, "path": str(moved / "child")}},
                     step=60, metrics={}, perceptual="off", run_name="again")
    assert read_parent(moved / "grandchild").record["parent"]["parent"]["run_name"] == "base"  # same hash: completed
    export_generator(moved / "child", {k: v * 2 if torch.is_floating_point(v) else v for k, v in child_state.items()},
                     cfg, step=40, metrics={}, perceptual="off", run_name="mix")
    assert read_parent(moved / "grandchild").record["parent"] == {**flat, "path": str(moved / "child")}
