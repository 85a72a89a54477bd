import json
import subprocess
import sys
from pathlib import Path

import pytest

from colorizer.checkpoint import ARCHITECTURE_KEYS, check_compatible, without_discriminator
from colorizer.config import ConfigError, choose_experiment, from_dict, load_config, parse_cli, to_dict

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_then_experiment_then_cli(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("train:\n  lr_g: 1.0e-3\n  batch_size: 4\nmodel:\n  norm: instance\n")
    cfg = parse_cli([str(exp), "--train.batch_size=2", "--loss.gan=hinge"])
    assert cfg.train.lr_g == pytest.approx(1e-3)  # from the experiment
    assert cfg.train.batch_size == 2  # the CLI wins over the experiment
    assert cfg.model.norm == "instance"
    assert cfg.loss.gan == "hinge"
    assert cfg.train.lr_d == pytest.approx(2e-4)  # untouched default


@pytest.mark.parametrize("override, key", [
    ("--train.nope=1", "train.nope"),
    ("--nosection.x=1", "nosection"),
    ("--train.steps=abc", "train.steps"),
    ("--model.norm=layer", "model.norm"),
    ("--train.amp=fp8", "train.amp"),
])
def test_bad_keys_and_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=[override])


def test_override_must_be_dotted_assignment():
    with pytest.raises(ConfigError, match="--section.key=value"):
        load_config(overrides=["--train.steps"])


def test_unknown_key_in_experiment_file(tmp_path):
    exp = tmp_path / "bad.yaml"
    exp.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(str(exp))


@pytest.mark.parametrize("text, match", [
    ("model: [unclosed\n", r"bad\.yaml:2:1: invalid YAML: while parsing a flow sequence"),
    ("model:\n  depth: 3\n\tbase_channels: 8\n", r"bad\.yaml:3:1: invalid YAML: .*tab"),
    ("- a list\n- not sections\n", r"bad\.yaml: an experiment file must be a mapping of sections"),
])
def test_malformed_experiment_yaml_names_file_line_and_column(tmp_path, text, match):
    exp = tmp_path / "bad.yaml"
    exp.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(str(exp))


def test_train_cli_reports_malformed_yaml_without_a_traceback(tmp_path):
    exp = tmp_path / "bad.yaml"
    exp.write_text("model: [unclosed\n")
    out = subprocess.run([sys.executable, "train.py", str(exp)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"error: {exp}:2:1: invalid YAML" in out.stderr


@pytest.mark.parametrize("overrides, match", [
    (["--data.size=100"], "divisible"),
    (["--hints.strokes=1.5"], "hints.strokes"),
    (["--hints.palette_max=12"], "palette_max"),
    (["--hints.drop_min=0.9", "--hints.drop_max=0.5"], "drop_min"),
    (["--hints.curriculum=[{at: 0.0, spatial: 0.5, palette: 0.1, none: 0.1}]"], "sum to 1"),
])
def test_semantic_validation(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=overrides)


def test_round_trip_through_plain_dict():
    cfg = load_config(overrides=["--model.depth=4", "--data.size=64", "--data.width=96"])
    again = from_dict(to_dict(cfg))
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize("path", [p for p in sorted((ROOT / "experiments").glob("*.yaml")) if p.name != "sweep.yaml"],
                         ids=lambda p: p.name)
def test_every_experiment_file_loads(path):
    text = path.read_text()
    assert text.startswith("#") and "python train.py" in text  # says what it tests and how to run it
    load_config(str(path))


@pytest.mark.parametrize("path", [p for p in sorted((ROOT / "experiments").glob("*.yaml"))
                                  if "init: models/demo" in p.read_text()], ids=lambda p: p.name)
def test_every_recipe_from_the_bundled_model_has_its_architecture(path):
    """A recipe whose train.init is models/demo must build the bundled model's network, or its run stops
    at the first step (train.init refuses another architecture; a fresh D may differ)."""
    saved = json.loads((ROOT / "models" / "demo" / "config.json").read_text())["config"]
    current = to_dict(load_config(str(path)))
    check_compatible(without_discriminator(saved), without_discriminator(current), path, keys=ARCHITECTURE_KEYS)


def test_sweep_parameters_are_real_config_keys():
    import yaml

    sweep = yaml.safe_load((ROOT / "experiments" / "sweep.yaml").read_text())
    overrides = []
    for key, spec in sweep["parameters"].items():
        value = spec.get("value", spec.get("min"))
        assert isinstance(value, (int, float)), f"{key}: {value!r} (write 1.0e-4, not 1e-4)"
        overrides.append(f"--{key}={value}")
    load_config(overrides=overrides)


def test_train_cli_reports_bad_key_and_exits_2():
    out = subprocess.run([sys.executable, "train.py", "--train.bogus=3"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2
    assert "train.bogus" in out.stderr


def test_train_chooses_the_cpu_recipe_only_without_a_gpu_and_without_an_experiment():
    cpu = str(ROOT / "experiments" / "cpu.yaml")
    argv, note = choose_experiment([], has_cuda=False)
    assert argv == [cpu] and note.startswith("no GPU found: training experiments/cpu.yaml (about ")
    assert "run on a GPU or pass experiments/curriculum.yaml" in note
    assert parse_cli(argv).data.size == 96 and parse_cli(argv).hints.curriculum == load_config().hints.curriculum
    argv, note = choose_experiment(["--train.steps=5"], has_cuda=False)  # overrides still apply, on top
    assert argv == [cpu, "--train.steps=5"] and parse_cli(argv).train.steps == 5
    assert choose_experiment([], has_cuda=True) == ([], None)  # a GPU: the full default recipe
    for has_cuda in (False, True):  # an explicit experiment is obeyed as written
        assert choose_experiment(["experiments/baseline.yaml", "--train.steps=5"], has_cuda) == (
            ["experiments/baseline.yaml", "--train.steps=5"], None)
