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


# Square hint patches (our protocol, colour region): the gain at 10 patches over none, on OpenMoji's
# artist and XDoG lines. It was 2 dB up to the mix fine-tune (issue 32), whose replacement rule asks for
# OpenMoji within 0.5 dB hintless and every new source better, and which spreads a square patch less far
# (+1.66 and +1.71 dB; the model before it +2.44 and +2.55) while its network alone gains 5.5 dB
# under Hint-AUC scribbles (the model before it 1.2): experiments/RESULTS.md, "Training on a mix".
# Issue 40 asked for 2 dB again and ended with no bundled model that gains it (its best candidate +1.74,
# models/demo +1.69: RESULTS.md, "Issue 40 at its end").
PATCH_GAIN_DB = 1.5
PREVIOUS_OPENMOJI_HINTLESS = 12.743  # models/demo before the mix fine-tune (commit 851759a), its eval_test.json


def test_bundled_evaluation_matches_the_issue_bar():
    report = json.loads((DEMO / "eval_test.json").read_text())
    none, curve = report["modes"]["none"], {row["patches"]: row for row in report["hint_curve"]}
    for baseline in report["baselines"].values():
        assert none["psnr_color"] > baseline["psnr_color"] and none["ssim_color"] > baseline["ssim_color"]
    assert curve[10]["psnr_color"] >= curve[0]["psnr_color"] + PATCH_GAIN_DB
    assert report["split"] == "test" and report["items"] == 477
    config = json.loads((DEMO / "config.json").read_text())
    assert config["step"] == report["step"]
    if config["config"]["model"].get("colour_head"):  # scored as the demo shows its colours
        assert report["colour_decode"] == config["config"]["model"]["colour_decode"]


def test_bundled_model_colours_the_new_sources_better_than_a_mean_fill_and_keeps_openmoji():
    """Issue 32: on the test split of every source with colour-extracted lines (the Iconify sets it was
    fine-tuned on), hintless colour-region PSNR above the mean-colour fill; OpenMoji's artist split
    within 0.5 dB of the model it replaced. Its config credits every source's licence."""
    report = json.loads((DEMO / "eval_test.json").read_text())
    assert report["modes"]["none"]["psnr_color"] >= PREVIOUS_OPENMOJI_HINTLESS - 0.5
    new = [r for r in report["also"] if r["lines"].startswith("colour")]
    assert len(new) >= 3 and all(r["split"] == "test" and r["items"] > 0 for r in new)
    for r in new:
        assert r["modes"]["none"]["psnr_color"] > r["baselines"]["mean_color"]["psnr_color"], r["data"]
    config = json.loads((DEMO / "config.json").read_text())["config"]
    credits = " ".join(config["data_credits"])
    assert all(name in credits for name in ("OpenMoji", "Fluent Emoji Flat", "Noto Emoji", "Flat Color Icons"))


def test_bundled_model_uses_more_scribbles_for_a_better_picture():
    """Hint-AUC with scribbles (the field's protocol), first 100 OpenMoji artist test images, on the
    default path (the "model" row: ``Colorizer.colorize``, the network with the stroke propagation at
    its ΔE 3 tolerance), the bars of issue 30's done-when: whole-image PSNR never falls by more than
    0.1 dB as the share of scribbled regions grows, all scribbles give at least 6 dB over none, and
    its PSNR-AUC beats the network alone, the network with flat fills and the classical peer.
    Measured: never falls, +6.90 dB, AUC 25.35 against 24.07, 21.04 and 20.74 (issue 40's head blend;
    the model before it, issue 42: +6.81 dB, 25.14 against 23.73, 21.05 and 20.74). The bar was 3 dB on
    the network-alone row until issue 42 (+5.51 dB there); the default path is what a user gets, so it
    is the row tested."""
    report = json.loads((DEMO / "eval_hint_auc.json").read_text())
    config = json.loads((DEMO / "config.json").read_text())
    assert report["protocol"] == "hint-auc" and report["split"] == "test" and report["step"] == config["step"]
    model = report["methods"]["model"]
    assert model["hint_type"] == "scribble" and model["items"] == 100
    psnr = [point["psnr"] for point in sorted(model["curve"], key=lambda point: point["alpha"])]
    assert all(later >= earlier - 0.1 for earlier, later in zip(psnr, psnr[1:])), psnr
    assert psnr[-1] >= psnr[0] + 6.0
    for other in ("network", "network_flat_fills", "peer"):
        assert model["auc"]["psnr"] > report["methods"][other]["auc"]["psnr"], other


def _ancestors(record: dict) -> list:
    """A model's lineage record -> its parent, that parent's parent, and so on."""
    chain = []
    while record.get("parent"):
        record = record["parent"]
        chain.append(record)
    return chain


def test_bundled_model_says_where_it_came_from_and_meets_the_line_style_bar():
    """models/demo's config names its ancestors, each by hash, step and run: its parent, that model's own
    parent, and so on (a parent's record carries its lineage, issue 40). Among them is a blend (WiSE-FT,
    colorizer.interpolate) that names its two models, and the model it blends toward is among the ancestors
    its config names (its child's parent or, for a fine-tune of a fine-tune, an older one).
    Its evaluation on XDoG lines beats both baselines hintless and gains PATCH_GAIN_DB at 10 hint patches."""
    config = json.loads((DEMO / "config.json").read_text())
    ancestors = _ancestors(config["config"])
    models = [config["config"], *ancestors]
    assert ancestors and all(len(r["sha256"]) == 64 and r["step"] > 0 and r["run_name"] for r in ancestors)
    blends = [m for m in models if m.get("interpolation")]
    assert blends
    for blend in blends:
        mix = blend["interpolation"]
        assert 0 < mix["alpha"] <= 1 and len(mix["child"]["sha256"]) == 64
        assert mix["parent"] in _ancestors(blend)  # whole; a grandparent when its child is a fine-tune of one
    report = json.loads((DEMO / "eval_test.json").read_text())
    (xdog,) = [r for r in report["also"] if r["lines"].startswith("xdog")]
    assert xdog["items"] == 477 and xdog["step"] == config["step"]
    none, spatial = xdog["modes"]["none"]["psnr_color"], xdog["modes"]["spatial"]["psnr_color"]
    assert all(none > b["psnr_color"] for b in xdog["baselines"].values())
    assert spatial >= none + PATCH_GAIN_DB
