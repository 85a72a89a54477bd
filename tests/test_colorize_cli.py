"""python -m colorizer.colorize: a folder of drawings coloured with the model loaded once, hint
files beside the drawings, layers, a bad file reported and skipped, and a batch that resumes."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from colorizer import colorize
from colorizer.checkpoint import export_generator
from colorizer.config import load_config, to_dict
from colorizer.hint_auc import delta_e
from colorizer.models import build_generator
from colorizer.strokes import STROKE_TOLERANCE
from conftest import ROOT

TINY = ["--model.depth=3", "--model.base_channels=8", "--model.max_channels=32", "--data.size=32"]
RED = (230, 57, 70)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    cfg = load_config(overrides=TINY)
    torch.manual_seed(0)
    return export_generator(tmp_path_factory.mktemp("cli") / "export", build_generator(cfg.model).state_dict(),
                            to_dict(cfg), 3, {}, "off", "cli-test")


def box_drawing(width: int, height: int) -> Image.Image:
    art = Image.new("L", (width, height), 255)
    ImageDraw.Draw(art).rectangle((10, 10, width - 11, height - 11), outline=0, width=3)
    return art


@pytest.fixture
def folder(tmp_path):
    """in/: a non-square drawing with a hint file, one in a subfolder, and a file that is no image."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    box_drawing(120, 80).save(root / "wide.png")
    hints = Image.new("RGBA", (120, 80), (0, 0, 0, 0))
    ImageDraw.Draw(hints).line((30, 40, 90, 40), fill=(*RED, 255), width=5)
    hints.save(root / "wide.hints.png")
    box_drawing(64, 96).save(root / "sub" / "tall.png")
    (root / "broken.png").write_bytes(b"not a png at all")
    return root


def run(*args) -> int:
    return colorize.main([*map(str, args), "--quiet"])


def test_a_folder_is_coloured_with_its_hints_and_a_bad_file_is_reported(folder, export, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(folder, "--out", out, "--checkpoint", export, "--layers") == 1  # one file failed
    printed = capsys.readouterr().out
    assert "2 coloured, 0 skipped" in printed and "1 failed" in printed
    assert f"failed: {folder / 'broken.png'}" in printed and "is not a readable image" in printed
    wide = np.asarray(Image.open(out / "wide.png"))
    assert wide.shape == (80, 120, 3)  # the drawing's own size, non-square
    red = np.broadcast_to(np.array(RED, np.uint8), wide.shape)
    assert (delta_e(wide, red)[20:60, 20:100] < STROKE_TOLERANCE + 1).all()  # the hint file's stroke filled its box
    assert Image.open(out / "sub" / "tall.png").size == (64, 96)  # the folder's layout is kept
    assert Image.open(out / "wide.flat.png").mode == "RGB" and Image.open(out / "wide.lines.png").mode == "RGBA"
    assert not (out / "broken.png").exists() and not (out / "wide.hints.png").exists()
    assert not list(out.rglob("*.tmp"))  # nothing half-written


def test_an_interrupted_batch_resumes_and_overwrite_remakes(folder, export, tmp_path, monkeypatch, capsys):
    (folder / "broken.png").unlink()
    out = tmp_path / "out"
    real, done = colorize.write_outputs, []

    def stops_after_one(drawing, layers, args):
        if done:
            raise KeyboardInterrupt  # the user pressed Ctrl-C while the second drawing was written
        real(drawing, layers, args)
        done.append(drawing.path)

    monkeypatch.setattr(colorize, "write_outputs", stops_after_one)
    with pytest.raises(KeyboardInterrupt):
        run(folder, "--out", out, "--checkpoint", export)
    monkeypatch.setattr(colorize, "write_outputs", real)
    first = sorted(out.rglob("*.png"))
    assert len(first) == 1 and not list(out.rglob("*.tmp"))
    stamp = first[0].stat().st_mtime_ns
    assert run(folder, "--out", out, "--checkpoint", export) == 0
    assert "1 coloured, 1 skipped" in capsys.readouterr().out
    assert first[0].stat().st_mtime_ns == stamp  # the finished one was not redone
    assert run(folder, "--out", out, "--checkpoint", export, "--overwrite") == 0
    assert "2 coloured, 0 skipped" in capsys.readouterr().out


def test_palette_and_missing_inputs_are_clear_errors(folder, export, tmp_path, capsys):
    assert run(folder, "--out", tmp_path / "o", "--checkpoint", export, "--palette", "#e63946, nope") == 2
    assert "--palette" in capsys.readouterr().err
    assert run(tmp_path / "nowhere", folder / "wide.png", "--out", tmp_path / "o", "--checkpoint", export) == 1
    printed = capsys.readouterr().out
    assert "1 coloured" in printed and "nowhere: no such file or folder" in printed
    assert (tmp_path / "o" / "wide.png").is_file()


def test_the_command_line_runs(folder, export, tmp_path):
    result = subprocess.run([sys.executable, "-m", "colorizer.colorize", str(folder / "wide.png"), "--out",
                             str(tmp_path / "o"), "--checkpoint", str(export), "--no-propagate"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "1 coloured" in result.stdout and (tmp_path / "o" / "wide.png").is_file()


def test_drawings_of_one_working_size_share_a_network_call(export, tmp_path):
    from colorizer.inference import Colorizer

    model = Colorizer.load(export, device="cpu")
    calls = []
    network = model.generator.forward

    def counting(line, *rest):
        calls.append(line.shape[0])
        return network(line, *rest)

    model.generator.forward = counting
    drawings = [(box_drawing(120, 80), None), (box_drawing(60, 40), None), (box_drawing(64, 96), None),
                (b"not an image", None), (box_drawing(120, 80), None)]
    results = model.colorize_layers_many(drawings, batch_size=2)
    assert sorted(calls) == [1, 1, 2]  # 120x80, 60x40 and the second 120x80 share the 32x21 box: 2 + 1; 64x96 alone
    assert isinstance(results[3], ValueError) and "not a readable image" in str(results[3])
    calls.clear()
    for (art, _), layers in zip(drawings, results):
        if not isinstance(layers, Exception):  # the same as one at a time
            assert np.array_equal(np.asarray(layers.image), np.asarray(model.colorize_layers(art).image))
    assert calls == [1, 1, 1, 1]
