"""The Hint-AUC protocol through the hintauc package (colorizer/hint_auc.py): deterministic twice,
flat curves for the baselines that ignore hints, the region fill rate on a known answer, and the
command line."""
import json

import numpy as np
import pytest
import torch

from colorizer import evaluate as ev
from colorizer import hint_auc
from colorizer.checkpoint import export_generator
from colorizer.config import load_config, to_dict
from colorizer.inference import Colorizer
from colorizer.models import build_generator
from colorizer.strokes import STROKE_TOLERANCE

TINY = ["--model.depth=3", "--model.base_channels=8", "--model.max_channels=32", "--data.size=32"]
ALPHAS = [0.0, 0.01, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0]  # the paper's grid


def test_fill_rate_is_the_share_of_each_region_within_delta_e_of_its_hint():
    region = np.zeros((20, 30), np.int32)
    region[:, 15:] = 7  # two regions: ids 0 (left) and 7 (right)
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[:, :15] = (200, 40, 40)  # each region's hint colour
    colour[:, 15:] = (40, 90, 200)
    pred = np.full((20, 30, 3), 255, np.uint8)  # white: far from both
    pred[:15, :15] = (203, 42, 38)  # 3/4 of the left region a few ΔE off its hint: taken
    pred[:, 15:20] = (40, 160, 200)  # a third of the right region, but a clearly different colour: not taken
    rates = hint_auc.fill_rates(pred, region, colour, np.array([0, 7]))
    assert rates == pytest.approx([0.75, 0.0])
    assert hint_auc.fill_rates(colour, region, colour, np.array([7])) == pytest.approx([1.0])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = load_config(overrides=TINY)
    torch.manual_seed(0)
    generator = build_generator(cfg.model)
    for module in generator.modules():  # an untrained output that still depends on the hints
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, 0.0, 0.1)
    export = export_generator(tmp_path_factory.mktemp("hint_auc") / "export", generator.state_dict(), to_dict(cfg),
                              5, {}, "off", "tiny")
    return export, Colorizer.load(export, device="cpu")


def test_protocol_is_deterministic_and_the_baselines_ignore_hints(openmoji_small, tiny):
    _, model = tiny
    first = hint_auc.run(model, openmoji_small, "test", max_items=4, progress=False)
    again = hint_auc.run(model, openmoji_small, "test", max_items=4, progress=False)
    assert first == again
    methods = first["methods"]
    assert set(methods) == {"model", "network", "network_flat_fills", "peer", "line_art", "mean_color",
                            "oracle_fill", "ceiling"}
    oracle = [row["psnr"] for row in methods["oracle_fill"]["curve"]]
    assert oracle[-1] > oracle[0]  # every region filled with its mean colour beats light grey everywhere
    assert methods["ceiling"]["auc"] == {} and 0 < methods["ceiling"]["curve"][-1]["fill_rate"] <= 1
    # the peer without strokes is white paper under the lines: the line art itself
    assert methods["peer"]["curve"][0]["psnr"] == pytest.approx(methods["line_art"]["curve"][0]["psnr"])
    # the network without the propagation sees the same hints: the same picture at alpha 0
    assert methods["network"]["curve"][0] == methods["model"]["curve"][0]
    for name, report in methods.items():
        assert [row["alpha"] for row in report["curve"]] == ALPHAS and report["items"] == 4
        assert report["protocol"]["protocol"] == "hint-auc/v1" and report["protocol"]["path_method"] == "geodesic"
        assert report["protocol"]["versions"]["hintauc"] == "0.3.3"
    for name in ("line_art", "mean_color"):  # hints ignored: a flat curve, and its AUC is that value
        psnrs = [row["psnr"] for row in methods[name]["curve"]]
        assert max(psnrs) - min(psnrs) < 1e-9
        assert methods[name]["auc"]["psnr"] == pytest.approx(psnrs[0])
    for name, report in methods.items():  # the pooled PSNR (of the mean MSE) never exceeds the mean PSNR (Jensen)
        if name != "ceiling":
            assert all(row["pooled_psnr"] <= row["psnr"] + 1e-9 for row in report["curve"])
            assert report["auc"]["pooled_psnr"] <= report["auc"]["psnr"] + 1e-9
    model_psnrs = [row["psnr"] for row in methods["model"]["curve"]]
    assert len(set(model_psnrs)) > 1  # the model does see the hints
    full = methods["model"]["curve"][-1]
    assert full["scribbles"] > 0 and 0 <= full["fill_rate"] <= 1
    assert methods["model"]["curve"][0]["fill_rate"] is None  # alpha 0: no scribbles
    assert first["lpips"].startswith("not computed")


def test_command_line_hint_auc(openmoji_small, tiny, tmp_path, capsys):
    export, _ = tiny
    out = tmp_path / "hint_auc.json"
    assert ev.main(["--checkpoint", str(export), "--data", str(openmoji_small), "--protocol", "hint-auc",
                    "--max-items", "2", "--device", "cpu", "--lpips-weights", "off", "--out", str(out),
                    "--stroke-tolerances", f"{STROKE_TOLERANCE:g}", "30"]) == 0
    report = json.loads(out.read_text())
    assert report["protocol"] == "hint-auc" and report["methods"]["model"]["items"] == 2
    methods = report["methods"]  # a row per tolerance: the default's is the model's own
    assert methods[f"model_tolerance_{STROKE_TOLERANCE:g}"]["curve"] == methods["model"]["curve"]
    assert methods["model_tolerance_30"]["curve"][0] == methods["model"]["curve"][0]  # no strokes at alpha 0
    assert report["published_context"]["psnr_auc"] == 19.72
    printed = capsys.readouterr().out
    assert "| model |" in printed and "| mean_color |" in printed and "PSNR-AUC" in printed
    assert "| peer |" in printed and "divided by the ceiling's" in printed
    assert "Stroke across the largest closed shape" in printed and "stroke_fill" in report


def test_a_stroke_across_the_largest_closed_shape_and_its_fill(tmp_path):
    from PIL import Image, ImageDraw

    drawings = {"box": (30, 20, 150, 80), "ring": None}  # a closed box on 180x100 paper; an open arc only
    (tmp_path / "line").mkdir()
    with open(tmp_path / "manifest.jsonl", "w") as f:
        for name, box in drawings.items():
            art = Image.new("L", (180, 100), 255)
            if box:
                ImageDraw.Draw(art).rectangle(box, outline=0, width=3)
                ImageDraw.Draw(art).rectangle((5, 5, 15, 15), outline=0, width=2)  # a smaller closed shape
            else:
                ImageDraw.Draw(art).arc((40, 10, 140, 90), 0, 180, fill=0, width=3)
            art.save(tmp_path / "line" / f"{name}.png")
            f.write(json.dumps({"id": name, "group": name, "split": "test", "line": f"line/{name}.png",
                                "color": f"line/{name}.png"}) + "\n")
    labels, shape, (x0, y, x1) = hint_auc.stroke_across_shape(np.asarray(Image.open(tmp_path / "line" / "box.png")))
    assert (labels == shape).sum() == 115 * 55  # the box's inside, not the paper or the small square
    assert y == 50 and (x0, x1) == (33 + 22, 147 - 22)  # its middle row, from 1/5 to 4/5 of its width
    assert hint_auc.stroke_across_shape(np.asarray(Image.open(tmp_path / "line" / "ring.png"))) is None

    def fills_the_shape(line, hints):  # paints the stroke's colour over every closed shape: fill 1
        rgb = np.asarray(hints)[..., :3][np.asarray(hints)[..., 3] > 0][0]
        out = np.repeat(np.asarray(line)[..., None], 3, axis=-1)
        out[labels > 0] = rgb
        out[labels == labels[0, 0]] = 255
        return out

    def copies_the_stroke(line, hints):  # the stroke alone: its share of the shape
        out = np.repeat(np.asarray(line)[..., None], 3, axis=-1)
        stroke = np.asarray(hints)
        return np.where(stroke[..., 3:] > 0, stroke[..., :3], out)

    full = hint_auc.stroke_fill(fills_the_shape, tmp_path, "test", progress=False)
    assert full["items"] == 1 and full["skipped_no_closed_shape"] == 1
    assert full["mean"] == pytest.approx(1.0) and full["share_over_half"] == 1.0
    thin = hint_auc.stroke_fill(copies_the_stroke, tmp_path, "test", progress=False)
    width = max(2, round(180 * hint_auc.STROKE_WIDTH))
    assert thin["mean"] == pytest.approx((x1 - x0 + 1) * width / (115 * 55), rel=0.1) and thin["share_over_half"] == 0


def test_methods_scored_beside_the_first_score_as_the_package_does(openmoji_small):
    def grey(line, hints):
        return np.full((line.size[1], line.size[0], 3), 128, np.uint8)

    def painted(line, hints):
        out = np.repeat(np.asarray(line)[..., None], 3, axis=-1)
        if hints is not None:
            stroke = np.asarray(hints)
            out = np.where(stroke[..., 3:] > 0, stroke[..., :3], out)
        return out

    reports = hint_auc.evaluate({"a": painted, "b": grey, "c": painted}, openmoji_small, "test", max_items=2,
                                progress=False)
    assert reports["a"]["curve"] == reports["c"]["curve"] and reports["a"]["auc"] == reports["c"]["auc"]
    alone = hint_auc.evaluate({"b": grey}, openmoji_small, "test", max_items=2, progress=False)["b"]
    assert [r["psnr"] for r in alone["curve"]] == pytest.approx([r["psnr"] for r in reports["b"]["curve"]])
    with pytest.raises(ValueError, match="first method"):
        hint_auc.evaluate({"ceiling": hint_auc.TARGET}, openmoji_small, "test", max_items=1, progress=False)


def test_the_classical_peer_paints_flat():
    from PIL import Image, ImageDraw

    line = Image.new("L", (200, 120), 255)
    ImageDraw.Draw(line).rectangle((20, 20, 150, 100), outline=0, width=3)
    hints = Image.new("RGBA", line.size, (0, 0, 0, 0))
    ImageDraw.Draw(hints).line((40, 60, 120, 60), fill=(230, 57, 70, 255), width=4)
    out = hint_auc.peer_colour(line, hints)
    assert (out[30:90, 30:140] == (230, 57, 70)).all()  # the stroke's own colour, not one within the tolerance
    assert (out[5:15, 5:195] == 255).all()  # the paper stays white paper
