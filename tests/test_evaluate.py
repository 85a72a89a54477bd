"""colorizer.evaluate: per-mode metrics, the hint curve, baselines, worst samples, determinism."""
import json
import math
import os
from pathlib import Path

import pytest
import torch

from colorizer import evaluate as ev
from colorizer.checkpoint import export_generator
from colorizer.config import load_config, to_dict
from colorizer.data import PairDataset
from colorizer.inference import Colorizer
from colorizer.models import build_generator

TINY = ["--model.depth=3", "--model.base_channels=8", "--model.max_channels=32", "--data.size=32"]


class LineArtGenerator(torch.nn.Module):
    """Returns the line art unchanged: its scores must equal the "line art" baseline's exactly."""

    def forward(self, line, spatial, palette, keep):  # (B, 1, H, W) -> (B, 3, H, W), both in [-1, 1]
        return line.expand(-1, 3, -1, -1)


def tiny_model(seed: int = 0) -> Colorizer:
    cfg = load_config(overrides=TINY)
    torch.manual_seed(seed)
    generator = build_generator(cfg.model)
    for module in generator.modules():  # random weights large enough that the output follows the input
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.normal_(module.weight, 0.0, 0.1)
    return Colorizer(generator, cfg, step=7, run_name="tiny", device="cpu")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_evaluating_twice_gives_identical_numbers(openmoji_small, tmp_path):
    model = tiny_model()
    a = ev.evaluate(model, openmoji_small, "test", max_items=20, batch_size=8, seed=3)
    b = ev.evaluate(model, openmoji_small, "test", max_items=20, batch_size=8, seed=3)
    for report in (a, b):
        report.pop("worst_images", None)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert not torch.are_deterministic_algorithms_enabled()  # evaluation restores the global flags
    c = ev.evaluate(model, openmoji_small, "test", max_items=20, batch_size=8, seed=4)
    assert c["hint_curve"][-1]["psnr_color"] != a["hint_curve"][-1]["psnr_color"]  # the seed does matter


def test_report_layout_and_the_worst_samples(openmoji_small, tmp_path):
    model = tiny_model()
    gallery = tmp_path / "worst.png"
    report = ev.evaluate(model, openmoji_small, "test", max_items=20, batch_size=8, worst=5, gallery=gallery)
    assert report["items"] == 20 and report["size"] == [32, 32] and report["step"] == 7
    assert set(report["modes"]) == {"none", "spatial", "palette"}
    assert set(report["modes"]["spatial"]) == {"psnr", "psnr_color", "ssim", "ssim_color", "hint_error",
                                               "shape_accuracy", "colourfulness"}
    for row in list(report["modes"].values()) + list(report["baselines"].values()):
        assert 0 <= row["shape_accuracy"] <= 1 and row["colourfulness"] >= 0
    # a constant colour has no colour variance: its colourfulness is that of one colour, never the target's
    assert report["baselines"]["mean_color"]["colourfulness"] < 1
    assert [row["patches"] for row in report["hint_curve"]] == [0, 1, 2, 5, 10, 20, 50]
    assert report["hint_curve"][0]["hint_error"] is None and report["hint_curve"][3]["hint_error"] >= 0
    worst = [w["psnr_color"] for w in report["worst"]]
    assert len(worst) == 5 and worst == sorted(worst)
    assert report["worst_images"]["pred"].shape == (5, 3, 32, 32)
    assert gallery.is_file()
    assert report["lpips"].startswith("not computed") and report["fid"].startswith("not computed")
    # hintless mode is the 0-patch point of the curve, drawn with the same (empty) hints
    assert report["modes"]["none"]["psnr_color"] == pytest.approx(report["hint_curve"][0]["psnr_color"])


def test_a_model_returning_the_line_art_scores_exactly_the_line_art_baseline(openmoji_small):
    cfg = load_config(overrides=TINY)
    model = Colorizer(LineArtGenerator(), cfg, device="cpu")
    report = ev.evaluate(model, openmoji_small, "test", max_items=16, batch_size=8)
    for metric in ev.METRICS + ev.SHAPE_METRICS:
        assert report["modes"]["none"][metric] == pytest.approx(report["baselines"]["line_art"][metric], abs=1e-9)
    # the colour region excludes the paper, so it scores the line art lower than the whole image does
    assert report["baselines"]["line_art"]["psnr_color"] < report["baselines"]["line_art"]["psnr"]


def test_placement_is_an_option_and_leaves_the_model_config_alone(openmoji_small):
    model = tiny_model()
    color = ev.evaluate(model, openmoji_small, "test", max_items=16, batch_size=8, placement="color")
    uniform = ev.evaluate(model, openmoji_small, "test", max_items=16, batch_size=8, placement="uniform")
    assert model.config.hints.placement == "color"
    assert uniform["placement"] == "uniform"
    assert uniform["hint_curve"][4]["psnr"] != color["hint_curve"][4]["psnr"]


def test_command_line_writes_json_plot_gallery_and_a_markdown_table(openmoji_small, tmp_path, capsys):
    cfg = load_config(overrides=TINY)
    model = tiny_model()
    export = export_generator(tmp_path / "export", model.generator.state_dict(), to_dict(cfg), 7, {}, "off", "tiny")
    out = tmp_path / "eval" / "report.json"
    code = ev.main(["--checkpoint", str(export), "--data", str(openmoji_small), "--out", str(out),
                    "--max-items", "12", "--batch-size", "6", "--device", "cpu", "--worst", "3"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["items"] == 12 and len(report["worst"]) == 3 and "worst_images" not in report
    assert (out.parent / "report_curve.png").stat().st_size > 1000
    assert (out.parent / "report_worst.png").stat().st_size > 100
    printed = capsys.readouterr().out
    assert "| model, none |" in printed and "| baseline: line art |" in printed and "| 50 |" in printed


def test_spread_scores_pairs_from_across_the_split_and_says_so(openmoji_small, tmp_path, capsys):
    """--spread with --max-items: N pairs spread over the split, not the first N (validation's way);
    refused for Hint-AUC, whose published protocol takes the first N."""
    model = tiny_model()
    first = ev.evaluate(model, openmoji_small, "test", max_items=6, batch_size=6, worst=6)
    spread = ev.evaluate(model, openmoji_small, "test", max_items=6, batch_size=6, worst=6, spread=True)
    assert first["items"] == spread["items"] == 6 and (first["spread"], spread["spread"]) == (False, True)
    ids = [r["id"] for r in PairDataset(openmoji_small, "test").records]
    assert {w["id"] for w in first["worst"]} == set(ids[:6])
    assert {w["id"] for w in spread["worst"]} == {ids[i * len(ids) // 6] for i in range(6)} != set(ids[:6])
    with pytest.raises(SystemExit):
        ev.main(["--checkpoint", "x", "--data", str(openmoji_small), "--out", str(tmp_path / "r.json"),
                 "--protocol", "hint-auc", "--max-items", "4", "--spread"])
    assert "--spread is for --protocol ours" in capsys.readouterr().err


def test_validation_reads_its_val_items_spread_over_the_split(openmoji_small, monkeypatch):
    read = []

    class Spy(PairDataset):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            read.append([r["id"] for r in self.records])

    monkeypatch.setattr(ev, "PairDataset", Spy)
    cfg = load_config(overrides=TINY + ["--train.val_items=5", "--train.batch_size=5"])
    table = ev.validate_folder(cfg, tiny_model().generator.eval(), openmoji_small, torch.device("cpu"), None)
    ids = [r["id"] for r in PairDataset(openmoji_small, "val").records]
    assert read == [[ids[i * len(ids) // 5] for i in range(5)]] and not math.isnan(table["val/none/psnr_color"])


def test_several_datasets_are_evaluated_and_compared_side_by_side(openmoji_small, tmp_path, capsys):
    """--data A B: A's report at the top level, B's under "also", each with its line style from its
    report.json, and one comparison table; B's numbers are those of evaluating B alone."""
    import shutil
    xdog = tmp_path / "openmoji32_xdog"  # the same pairs, other line art: a stand-in for --lines xdog
    shutil.copytree(openmoji_small, xdog)
    report_json = json.loads((xdog / "report.json").read_text())
    (xdog / "report.json").write_text(json.dumps({**report_json, "lines": "xdog sigma=0.8"}))
    from PIL import Image, ImageOps
    for path in (xdog / "line").glob("*.png"):
        ImageOps.invert(Image.open(path).convert("L")).save(path)
    cfg = load_config(overrides=TINY)
    export = export_generator(tmp_path / "export", tiny_model().generator.state_dict(), to_dict(cfg), 7, {}, "off", "t")
    out = tmp_path / "both.json"
    common = ["--checkpoint", str(export), "--max-items", "8", "--batch-size", "4", "--device", "cpu", "--worst", "2"]
    assert ev.main([*common, "--data", str(openmoji_small), str(xdog), "--out", str(out)]) == 0
    both = json.loads(out.read_text())
    assert both["data"] == str(openmoji_small) and both["lines"] == "artist"
    (other,) = both["also"]
    assert other["data"] == str(xdog) and other["lines"] == "xdog sigma=0.8" and "worst_images" not in other
    assert other["modes"]["none"]["psnr_color"] != both["modes"]["none"]["psnr_color"]
    assert (tmp_path / "both_worst_openmoji32_xdog.png").is_file() and (tmp_path / "both_worst.png").is_file()
    assert ev.main([*common, "--data", str(xdog), "--out", str(tmp_path / "alone.json")]) == 0
    alone = json.loads((tmp_path / "alone.json").read_text())
    assert alone["modes"] == other["modes"] and alone["hint_curve"] == other["hint_curve"]
    printed = capsys.readouterr().out
    assert "| data | lines |" in printed and f"| {xdog} | xdog sigma=0.8 | 8 |" in printed


def test_full_resolution_paths_and_line_fidelity(tmp_path, capsys):
    """--size N: the split coloured at N px by the demo's three paths. Only the composite keeps every
    line pixel as dark as drawn; a folder prepared smaller than N is refused with the command to run."""
    import subprocess
    import sys
    data = tmp_path / "openmoji64"
    subprocess.run([sys.executable, "-m", "data_prep", "openmoji", "--out", str(data), "--size", "64", "--limit", "60",
                    "--workers", "1"], cwd=Path(__file__).resolve().parents[1], check=True, capture_output=True)
    cfg = load_config(overrides=["--model.depth=3", "--model.base_channels=8", "--model.max_channels=32",
                                 "--data.size=16"])
    torch.manual_seed(0)
    model = Colorizer(build_generator(cfg.model), cfg, device="cpu")
    result = ev.full_resolution(model, data, "train", 64, max_items=6, progress=False)
    assert result["size"] == [64, 64] and result["items"] == 6 and result["working_size"] == [16, 16]
    rows = {(row["path"], row["patches"]): row for row in result["rows"]}
    assert set(rows) == {(path, n) for path in ("enlarge", "composite", "native", "flat", "split") for n in (0, 10)}
    for n in (0, 10):
        for path in ("composite", "native", "flat", "split"):
            assert rows[path, n]["line_error"] <= 2 / 255, (path, n)
        assert rows["enlarge", n]["line_error"] > 10 * max(rows["composite", n]["line_error"], 1 / 255)
    # hintless the flat fills differ; with 10 patches the stroke propagation (on in both) may paint every shape alike
    assert rows["flat", 0]["psnr_color"] != rows["composite", 0]["psnr_color"]
    assert rows["composite", 10]["psnr_color"] != rows["composite", 0]["psnr_color"]  # the hints reached the model
    assert all(math.isfinite(row[k]) for row in rows.values() for k in ev.METRICS + ("line_error",))
    assert rows["split", 0] == {**rows["flat", 0], "path": "split"}  # no colour head: nothing to cut by
    assert all(0 <= row["shape_accuracy"] <= 1 and row["colourfulness"] >= 0 for row in rows.values())
    assert 0 <= result["flat_merged_share"] < 1  # OpenMoji draws some colours side by side without a line
    again = ev.full_resolution(model, data, "train", 64, max_items=6, paths=("flat",), progress=False)
    assert [r for r in again["rows"]] == [rows["flat", 0], rows["flat", 10]]  # seeded per image: the same hints
    with pytest.raises(ValueError, match=r"prepared at 64 px, smaller than --size 128.*--size 128"):
        ev.full_resolution(model, data, "train", 128)
    with pytest.raises(ValueError, match="unknown full-resolution path.*blur"):
        ev.full_resolution(model, data, "train", 64, paths=("blur",))
    export = export_generator(tmp_path / "export", model.generator.state_dict(), to_dict(cfg), 1, {}, "off", "t")
    assert ev.main(["--checkpoint", str(export), "--data", str(data), "--split", "train", "--size", "64",
                    "--size-hints", "0", "--max-items", "4", "--device", "cpu", "--out", str(tmp_path / "r.json")]) == 0
    full = json.loads((tmp_path / "r.json").read_text())["full_resolution"]
    assert full["items"] == 4 and len(full["rows"]) == 5  # every path, hintless
    assert "| composite | 0 |" in capsys.readouterr().out
    # --only-size: the table alone, no protocol at the training size
    assert ev.main(["--checkpoint", str(export), "--data", str(data), "--split", "train", "--size", "64",
                    "--size-paths", "composite", "flat", "--only-size", "--max-items", "3", "--device", "cpu",
                    "--out", str(tmp_path / "o.json")]) == 0
    only = json.loads((tmp_path / "o.json").read_text())
    assert "modes" not in only and [r["path"] for r in only["full_resolution"]["rows"]] == ["composite", "flat"] * 2
    printed = capsys.readouterr().out
    assert "| flat | 10 |" in printed and "Merged share: " in printed


def test_command_line_names_a_missing_dataset(tmp_path, capsys):
    cfg = load_config(overrides=TINY)
    export = export_generator(tmp_path / "export", tiny_model().generator.state_dict(), to_dict(cfg), 0, {}, "off", "x")
    code = ev.main(["--checkpoint", str(export), "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.json"),
                    "--device", "cpu"])
    assert code == 1
    assert "nowhere" in capsys.readouterr().err


def test_worst_samples_go_to_a_wandb_table_offline(openmoji_small, tmp_path):
    model = tiny_model()
    report = ev.evaluate(model, openmoji_small, "test", max_items=12, batch_size=6, worst=3,
                         gallery=tmp_path / "worst.png")
    ev.plot_curve(report, tmp_path / "curve.png")
    where = ev.log_wandb(report, "offline", "colorizer-tests", tmp_path / "curve.png")
    run_dir = Path(where)
    tables = list(run_dir.rglob("worst_samples*.table.json"))
    assert tables, f"no W&B table written under {run_dir}"
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["id", "psnr_color", "line", "prediction", "target"] and len(table["data"]) == 3
    assert os.environ["WANDB_MODE"] == "offline"
