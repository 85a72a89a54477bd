"""The bundled model in models/demo/: what `python serve.py` serves on a fresh clone."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import serve
from colorizer.inference import Colorizer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo"


def test_serve_finds_the_bundled_model_when_there_are_no_runs(tmp_path):
    (tmp_path / "models").symlink_to(ROOT / "models")
    assert serve.find_checkpoint(tmp_path) == tmp_path / "models" / "demo"


def test_bundled_model_loads_and_colours_non_square_line_art():
    model = Colorizer.load(DEMO, device="cpu")
    assert model.box == (256, 256) and model.step > 0
    assert sum(p.numel() for p in model.generator.parameters()) < 25e6 / 4  # fp32 file under 25 MB
    assert (DEMO / "generator.safetensors").stat().st_size < 25 * 2**20
    art = Image.new("L", (300, 180), 255)
    ImageDraw.Draw(art).ellipse((40, 30, 170, 160), outline=0, width=4)
    ImageDraw.Draw(art).rectangle((190, 40, 280, 150), outline=0, width=4)
    hints = Image.new("RGBA", art.size, (0, 0, 0, 0))
    ImageDraw.Draw(hints).rectangle((95, 85, 115, 105), fill=(30, 90, 220, 255))  # blue inside the circle
    plain = np.asarray(model.colorize(art), dtype=np.float64)
    hinted = np.asarray(model.colorize(art, hints=hints), dtype=np.float64)
    assert plain.shape == hinted.shape == (180, 300, 3)
    inside = (slice(70, 120), slice(80, 130))
    blue_minus_red = lambda a: (a[inside][..., 2] - a[inside][..., 0]).mean()  # noqa: E731
    assert blue_minus_red(hinted) > blue_minus_red(plain) + 20  # the hint's colour spreads into the region


def test_bundled_evaluation_matches_the_issue_bar():
    report = json.loads((DEMO / "eval_test.json").read_text())
    none, curve = report["modes"]["none"], {row["patches"]: row for row in report["hint_curve"]}
    for baseline in report["baselines"].values():
        assert none["psnr_color"] > baseline["psnr_color"] and none["ssim_color"] > baseline["ssim_color"]
    assert curve[10]["psnr_color"] >= curve[0]["psnr_color"] + 2.0
    assert report["split"] == "test" and report["items"] == 477
    config = json.loads((DEMO / "config.json").read_text())
    assert config["step"] == report["step"]


def test_bundled_model_says_where_it_came_from_and_meets_the_line_style_bar():
    """models/demo is the region-scribbles fine-tune (issue 31) of the line-style fine-tune (issue 20)
    of the H100 model: its config names the parent by hash, and its evaluation on XDoG lines beats
    both baselines hintless and gains at least 2 dB at 10 hint patches."""
    config = json.loads((DEMO / "config.json").read_text())
    parent = config["config"]["parent"]
    assert len(parent["sha256"]) == 64 and parent["step"] > 0 and parent["run_name"]
    report = json.loads((DEMO / "eval_test.json").read_text())
    (xdog,) = [r for r in report["also"] if r["lines"].startswith("xdog")]
    assert xdog["items"] == 477 and xdog["step"] == config["step"]
    none, spatial = xdog["modes"]["none"]["psnr_color"], xdog["modes"]["spatial"]["psnr_color"]
    assert all(none > b["psnr_color"] for b in xdog["baselines"].values())
    assert spatial >= none + 2.0
