"""colorizer.evaluate: per-mode metrics, the hint curve, baselines, worst samples, determinism."""
import json
import os
from pathlib import Path

import pytest
import torch

from colorizer import evaluate as ev
from colorizer.checkpoint import export_generator
from colorizer.config import load_config, to_dict
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
    assert set(report["modes"]["spatial"]) == {"psnr", "psnr_color", "ssim", "ssim_color", "hint_error"}
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
    for metric in ev.METRICS:
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
