"""Colour-aware line extraction (data_prep.lineart.ColourLines) and the line-quality report
(data_prep.linequality): contours of light shapes on white, no lines in flat or noisy colour, and
coverage/precision that follow their definitions."""
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from data_prep.__main__ import main
from data_prep.lineart import DEFAULT_LINES, ColourLines, XDoG, extractor
from data_prep.linequality import coverage_precision

SIZE = (160, 96)  # (W, H): non-square on purpose


def light_shapes() -> Image.Image:
    """A yellow disc and a light-blue box on white, no outlines: the case luminance XDoG misses,
    and a pink box against an orange one of similar lightness."""
    im = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(im)
    draw.ellipse((10, 10, 70, 70), fill=(255, 230, 40))
    draw.rectangle((90, 15, 150, 45), fill=(170, 210, 255))
    draw.rectangle((90, 55, 120, 85), fill=(240, 150, 150))
    draw.rectangle((120, 55, 150, 85), fill=(240, 160, 90))
    return im


def test_colour_lines_find_the_contours_xdog_misses():
    im = light_shapes()
    color = np.asarray(im)
    xdog_cov, _ = coverage_precision(np.asarray(XDoG()(im)), color)
    colour_line = np.asarray(ColourLines()(im))
    colour_cov, colour_prec = coverage_precision(colour_line, color)
    assert colour_line.shape == (SIZE[1], SIZE[0])
    assert xdog_cov < 0.6, xdog_cov  # the yellow disc and the pink/orange edge are mostly lost
    assert colour_cov >= 0.95 and colour_prec >= 0.9, (colour_cov, colour_prec)
    assert colour_line[40, 40] == 255 and colour_line[2, 2] == 255  # inside the disc and the paper: no ink
    assert colour_line[70, 120] < 128  # the pink/orange edge of similar lightness has a line


def test_colour_lines_draw_nothing_in_flat_or_noisy_colour():
    flat = Image.new("RGB", SIZE, (200, 60, 60))
    assert np.asarray(ColourLines()(flat)).min() == 255
    buffer = io.BytesIO()
    light_shapes().save(buffer, "JPEG", quality=75)  # JPEG ringing and blocks: no speckle in flat areas
    noisy = np.asarray(ColourLines()(Image.open(buffer).convert("RGB")))
    assert (noisy[30:50, 30:50] < 128).mean() == 0  # inside the disc
    assert (noisy[60:90, 2:6] < 128).mean() == 0  # paper


def test_coverage_and_precision_follow_their_definitions():
    color = np.full((40, 64, 3), 255, np.uint8)
    color[:, 32:] = (255, 240, 60)  # a vertical colour boundary at x = 31 | 32
    line = np.full((40, 64), 255, np.uint8)
    assert coverage_precision(line, color) == (0.0, None)  # no ink: nothing covered, precision undefined
    line[:, 31] = 0
    assert coverage_precision(line, color) == (1.0, 1.0)
    line[:, 5] = 0  # a line far from any boundary: half the ink is imprecise
    assert coverage_precision(line, color) == (1.0, 0.5)
    assert coverage_precision(line, np.full_like(color, 90)) == (None, 0.0)  # no boundary at all
    line[:20, 31] = 255
    coverage, _ = coverage_precision(line, color)
    assert 0.45 < coverage < 0.6  # the boundary's lower half, and 2 px around the line's end


def test_extractor_names():
    assert DEFAULT_LINES == "colour" and isinstance(extractor(), ColourLines)
    assert extractor("xdog", XDoG(sigma=1.3)) == XDoG(sigma=1.3)
    assert extractor("colour", XDoG(sigma=1.3)).xdog == XDoG(sigma=1.3)
    with pytest.raises(ValueError, match="unknown line extractor 'canny'"):
        extractor("canny")


@pytest.mark.parametrize("lines", ["colour", "xdog"])
def test_folder_import_extracts_the_chosen_lines_and_reports_their_quality(tmp_path, lines):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for i in range(4):
        im = light_shapes().rotate(90 * i, expand=True)
        im.save(src / f"shapes{i}.png")
    assert main(["folder", str(src), "--out", str(out), "--size", "64", "--min-size", "64", "--workers", "1",
                 "--lines", lines]) == 0
    report = json.loads((out / "report.json").read_text())
    quality = report["line_quality"]
    assert quality["images"] == 4 and report["styles"] == [extractor(lines).describe()]
    if lines == "colour":
        assert quality["coverage"] >= 0.9 and quality["precision"] >= 0.8, quality
    else:
        assert quality["coverage"] < 0.7, quality
    del report["line_quality"]
    (out / "report.json").write_text(json.dumps(report))
    assert main(["lines", str(out), "--workers", "1"]) == 0  # the sub-command measures any prepared folder
    assert json.loads((out / "report.json").read_text())["line_quality"] == quality


def test_lines_report_refuses_a_folder_without_manifest(tmp_path, capsys):
    assert main(["lines", str(tmp_path), "--workers", "1"]) == 2
    assert "has no manifest.jsonl" in capsys.readouterr().err
