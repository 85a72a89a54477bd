"""The layered PSD (colorizer/psd.py): written with psd-tools, read back with it (names, blend modes,
sizes, the composite against our PNG composite), through the command line, and opened by GIMP."""
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from colorizer import colorize
from colorizer.config import load_config
from colorizer.files import write_file
from colorizer.inference import Colorizer
from colorizer.psd import BLEND_MODES, LAYER_NAMES, composite, psd_bytes, psd_layers

TINY = ["--model.depth=3", "--model.base_channels=8", "--model.max_channels=32", "--data.size=32"]
GIMP = shutil.which("gimp-console-2.10") or shutil.which("gimp-console")


class Shaded(torch.nn.Module):
    """A stand-in network: a smooth colour ramp, so the shading layer has something to carry."""

    def forward(self, line, spatial, palette, keep):  # (B, 1, H, W) -> (B, 3, H, W) in [-1, 1]
        ramp = torch.linspace(-0.6, 0.7, line.shape[-1]).view(1, 1, 1, -1)
        return torch.cat([ramp, -ramp * 0.5, ramp * 0 + 0.2], 1).expand(line.shape[0], -1, *line.shape[-2:]).clone()


def drawing() -> Image.Image:
    """Non-square, with anti-aliased lines (drawn big, scaled down)."""
    art = Image.new("L", (600, 400), 255)
    draw = ImageDraw.Draw(art)
    draw.ellipse((60, 60, 300, 340), outline=0, width=12)
    draw.rectangle((350, 80, 540, 320), outline=0, width=12)
    return art.resize((150, 100), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def coloured(tmp_path_factory):
    model = Colorizer(Shaded(), load_config(overrides=TINY), device="cpu")
    hints = Image.new("RGBA", (150, 100), (0, 0, 0, 0))
    ImageDraw.Draw(hints).line((40, 50, 60, 50), fill=(230, 57, 70, 255), width=3)
    layers = model.colorize_layers(drawing(), hints=hints)
    path = write_file(tmp_path_factory.mktemp("psd") / "drawing.psd", psd_bytes(layers))
    return layers, path


def test_the_psd_reads_back_with_its_layers_and_composite(coloured):
    from psd_tools import PSDImage

    layers, path = coloured
    psd = PSDImage.open(path)
    assert psd.size == (150, 100)
    names = [layer.name for layer in psd]
    assert names == [LAYER_NAMES[0], "paint #e63946", *LAYER_NAMES[1:]]  # one paint layer: one stroke colour
    assert [layer.blend_mode.name for layer in psd] == [BLEND_MODES[0], "NORMAL", *BLEND_MODES[1:]]
    assert all(layer.size == (150, 100) for layer in psd if not layer.name.startswith("paint"))
    paint = np.asarray(psd[1].composite(force=True))  # RGBA: the layer through its mask
    assert (paint[50, 50] == (230, 57, 70, 255)).all() and paint[5, 5, 3] == 0  # inside the circle; the paper
    assert Image.fromarray(paint[..., 3]).getbbox() == layers.stroke_masks()[0][1].getbbox()  # where the stroke painted
    ours, theirs = np.asarray(layers.image).astype(int), composite(path).astype(int)
    line = np.asarray(drawing())
    solid = (line == 0) | (line == 255)  # pure ink or pure paper: sRGB and linear-light multiply agree
    assert np.abs(ours - theirs)[solid].max() <= 2
    assert np.abs(ours - theirs).max() <= 12  # anti-aliased edges (7 measured): sRGB multiply there, linear light here
    flat = np.asarray(psd_layers(layers.flat, drawing(), layers.stroke_masks())[0])
    assert len(np.unique(flat[line == 255].reshape(-1, 3), axis=0)) <= 4  # the flats: a colour per region
    assert (np.abs(flat[45:55, 45:55].astype(int) - (230, 57, 70)) <= 1).all()  # the stroke's shape


def test_the_command_line_writes_a_psd(tmp_path):
    from colorizer.checkpoint import export_generator
    from colorizer.config import to_dict
    from colorizer.models import build_generator

    cfg = load_config(overrides=TINY)
    export = export_generator(tmp_path / "export", build_generator(cfg.model).state_dict(), to_dict(cfg), 1, {},
                              "off", "psd")
    drawing().save(tmp_path / "art.png")
    assert colorize.main([str(tmp_path / "art.png"), "--out", str(tmp_path / "out"), "--checkpoint", str(export),
                          "--psd", "--quiet"]) == 0
    assert composite(tmp_path / "out" / "art.psd").shape == (100, 150, 3)
    assert (tmp_path / "out" / "art.png").is_file() and not (tmp_path / "out" / "art.flat.png").exists()


def test_gimp_opens_the_psd(coloured, tmp_path):
    if GIMP is None:
        reason = "GIMP not found: install Debian's gimp (apt-get install gimp)"
        if os.environ.get("COLORIZER_REQUIRE_GIMP") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    _, path = coloured
    script = (f'(begin (gimp-message-set-handler CONSOLE) (let* ((image (car (gimp-file-load RUN-NONINTERACTIVE '
              f'"{path}" "{path}")))) (gimp-message (string-append "layers=" (number->string '
              f'(car (gimp-image-get-layers image)))))))')
    result = subprocess.run([GIMP, "-i", "-d", "-f", "-b", script, "-b", "(gimp-quit 0)"], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "layers=4" in result.stdout + result.stderr, (result.stdout + result.stderr)[-2000:]
