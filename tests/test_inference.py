"""colorizer.inference: loading exports and checkpoints safely, any image in, same size out, hints."""
import io
import json
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from colorizer.checkpoint import export_generator
from colorizer.config import load_config, to_dict
from colorizer.inference import Colorizer, ModelLoadError, fit_size, parse_palette
from colorizer.models import build_generator

TINY = ["--model.depth=3", "--model.base_channels=8", "--model.max_channels=32", "--data.size=32",
        "--model.palette_size=8"]


def tiny_generator(cfg, seed: int = 0) -> torch.nn.Module:
    """Random weights N(0, 0.1): large enough that the untrained output varies with its input
    (the pix2pix init, N(0, 0.02), gives a flat grey that hides conversion mistakes)."""
    torch.manual_seed(seed)
    generator = build_generator(cfg.model)
    for module in generator.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.normal_(module.weight, 0.0, 0.1)
    return generator


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine two competing thread
    pools make them ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides=TINY)


@pytest.fixture(scope="module")
def export_dir(cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "export"
    export_generator(out, tiny_generator(cfg).state_dict(), to_dict(cfg), step=1234,
                     metrics={"val/none/psnr_color": 14.25}, perceptual="random", run_name="tiny")
    return out


@pytest.fixture(scope="module")
def model(export_dir):
    return Colorizer.load(export_dir)


def line_art(width=61, height=100, mode="L") -> Image.Image:
    """Black outlines on white paper."""
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.1, height * 0.1, width * 0.8, height * 0.9), outline=0, width=2)
    draw.line((0, height - 1, width - 1, 0), fill=0, width=1)
    return image.convert(mode)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.mark.parametrize("width,height", [(37, 53), (100, 61), (32, 32), (7, 300), (640, 480)])
def test_output_has_the_input_size(model, width, height):
    result = model.colorize(line_art(width, height))
    assert result.size == (width, height)
    assert result.mode == "RGB"


def test_fit_size_keeps_aspect_and_pads_to_multiple():
    assert fit_size(53, 37, (32, 32), 8) == (32, 22, 32, 24)  # long side 32, 22 padded to 24
    assert fit_size(61, 100, (32, 32), 8) == (20, 32, 24, 32)
    assert fit_size(300, 7, (32, 32), 8) == (32, 1, 32, 8)  # never below one multiple


def _with_alpha(mode):
    """Lines on a transparent background: must read as lines on white paper."""
    def make():
        base = line_art()
        alpha = Image.eval(base, lambda v: 255 - v)  # ink opaque, paper transparent
        if mode == "RGBA":
            return Image.merge("RGBA", (base, base, base, alpha))
        return Image.merge("LA", (base, alpha))
    return make


def _palette_transparent():
    image = line_art().convert("P")
    image.info["transparency"] = 255  # paper index made transparent
    return image


def _sixteen_bit(mode):
    def make():
        values = np.asarray(line_art(), dtype=np.int32) * 257  # 0..255 -> 0..65535
        return Image.fromarray(values.astype(np.uint16), "I;16") if mode == "I;16" else Image.fromarray(values, "I")
    return make


@pytest.mark.parametrize("name,make", [
    ("RGB", lambda: line_art(mode="RGB")),
    ("RGBA on transparent", _with_alpha("RGBA")),
    ("LA on transparent", _with_alpha("LA")),
    ("P", lambda: line_art().convert("P")),
    ("P with transparency", _palette_transparent),
    ("CMYK", lambda: line_art(mode="RGB").convert("CMYK")),
    ("I;16", _sixteen_bit("I;16")),
    ("I 16-bit values", _sixteen_bit("I")),
    ("1", lambda: line_art().convert("1")),
])
def test_image_modes_read_as_the_same_line_art(model, name, make):
    expected = pixels(model.colorize(line_art()))
    got = pixels(model.colorize(make()))
    # Resampling rounds slightly differently per mode; a wrong conversion (clipped 16-bit, black
    # transparent paper) changes the whole picture.
    assert np.abs(got - expected).mean() < 2.0, name


def test_fully_transparent_rgba_is_blank_paper(model):
    blank = model.colorize(Image.new("L", (40, 30), 255))
    transparent = model.colorize(Image.new("RGBA", (40, 30), (0, 0, 0, 0)))
    assert np.array_equal(pixels(blank), pixels(transparent))


def test_exif_orientation_is_honoured(model):
    image = line_art(40, 24, mode="RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif)
    reopened = Image.open(io.BytesIO(buffer.getvalue()))
    result = model.colorize(reopened)
    assert result.size == (24, 40)
    upright = model.colorize(image.transpose(Image.Transpose.ROTATE_270))
    assert np.array_equal(pixels(result), pixels(upright))


def _hint_strokes(size, box, colour):
    strokes = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(strokes).ellipse(box, fill=colour + (255,))
    return strokes


def test_palette_and_hints_change_the_output(model):
    image = line_art()
    plain = pixels(model.colorize(image))
    with_palette = pixels(model.colorize(image, palette=["#e63946", (69, 123, 157)]))
    other_palette = pixels(model.colorize(image, palette="#2a9d8f, #ffd166"))
    hinted = pixels(model.colorize(image, hints=_hint_strokes(image.size, (20, 30, 40, 60), (230, 57, 70))))
    assert np.abs(with_palette - plain).mean() > 1.0
    assert np.abs(with_palette - other_palette).mean() > 1.0
    assert np.abs(hinted - plain).mean() > 0.5
    empty_strokes = Image.new("RGBA", image.size, (255, 0, 0, 0))  # coloured but fully transparent
    assert np.array_equal(pixels(model.colorize(image, hints=empty_strokes)), plain)
    faint_strokes = Image.new("RGBA", image.size, (255, 0, 0, 60))  # anti-aliasing fringe only
    assert np.array_equal(pixels(model.colorize(image, hints=faint_strokes)), plain)


def test_palette_parsing():
    assert parse_palette(["#ff0000", "00ff00", "#00f", (1, 2, 3)], 8) == [(255, 0, 0), (0, 255, 0), (0, 0, 255),
                                                                         (1, 2, 3)]
    assert parse_palette("#ff0000, #00ff00 #0000ff", 8) == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    assert parse_palette(["rgb(230, 57, 70)", "rgba(1,2,3,0.5)"], 8) == [(230, 57, 70), (1, 2, 3)]
    assert parse_palette(None, 8) == [] and parse_palette("", 8) == []
    with pytest.raises(ValueError, match="'#ggg000'"):
        parse_palette(["#ff0000", "#ggg000"], 8)
    with pytest.raises(ValueError, match=r"\(300, 0, 0\)"):
        parse_palette([(300, 0, 0)], 8)
    with pytest.raises(ValueError, match="at most 2"):
        parse_palette(["#ff0000"] * 3, 2)


def test_bad_inputs_are_refused_clearly(model, export_dir):
    with pytest.raises(TypeError, match="PIL.Image.Image, a file path or bytes, got ndarray"):
        model.colorize(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="the hints: no file at strokes.png"):
        model.colorize(line_art(), hints="strokes.png")
    with pytest.raises(ValueError, match="'red'"):
        model.colorize(line_art(), palette=["red"])
    with pytest.raises(ValueError, match="hints are 10x10 but the line art is 61x100"):
        model.colorize(line_art(), hints=Image.new("RGBA", (10, 10)))
    with pytest.raises(ValueError, match="alpha channel"):
        model.colorize(line_art(), hints=Image.new("RGB", (61, 100)))
    small = Colorizer.load(export_dir, max_pixels=1000)
    with pytest.raises(ValueError, match=r"61x100 = 6,100 pixels, more than the limit of 1,000"):
        small.colorize(line_art())
    assert small.colorize(line_art(20, 30)).size == (20, 30)


def test_load_from_export_paths(model, export_dir):
    expected = pixels(model.colorize(line_art()))
    for path in (export_dir / "config.json", export_dir / "generator.safetensors", export_dir.parent):
        assert np.array_equal(pixels(Colorizer.load(path).colorize(line_art())), expected)
    assert model.step == 1234 and model.metrics == {"val/none/psnr_color": 14.25}
    assert model.config.model.depth == 3
    info = model.info()
    assert "1,234 training steps" in info and "val/none/psnr_color 14.2" in info and "tiny" in info
    assert "\n" not in info


def test_load_checkpoint_prefers_the_ema_generator(cfg, model, export_dir, tmp_path):
    # the EMA as training keeps it: an AveragedModel ("module." keys, an n_averaged counter)
    ema = AveragedModel(tiny_generator(cfg, seed=0), multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)
    other = tiny_generator(cfg, seed=1)
    config = {**to_dict(cfg), "perceptual_status": "random weights (tests only)"}  # training adds such notes
    state = {"generator": other.state_dict(), "generator_ema": ema.state_dict(), "discriminator": {},
             "config": config, "step": 77, "metrics": {"val/none/psnr": 12.0}, "note": "plain data only"}
    path = tmp_path / "latest.pt"
    torch.save(state, path)
    loaded = Colorizer.load(path)
    assert loaded.step == 77 and loaded.metrics == {"val/none/psnr": 12.0}
    assert np.array_equal(pixels(loaded.colorize(line_art())), pixels(model.colorize(line_art())))
    del state["generator_ema"]
    torch.save(state, path)
    assert not np.array_equal(pixels(Colorizer.load(path).colorize(line_art())), pixels(model.colorize(line_art())))


UNPICKLED = []


def _record_unpickling():
    UNPICKLED.append(True)
    return {}


class Payload:
    """Unpickling this runs code (records it): a weights-only load must refuse it first."""

    def __reduce__(self):
        return (_record_unpickling, ())


def test_checkpoint_with_pickled_object_is_refused(cfg, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"generator_ema": tiny_generator(cfg).state_dict(), "config": to_dict(cfg), "step": 1,
                "payload": Payload()}, path)
    with pytest.raises(ModelLoadError, match="weights-only"):
        Colorizer.load(path)
    assert UNPICKLED == []


def test_load_errors_say_what_is_wrong(cfg, export_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no model at"):
        Colorizer.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a colorizer export folder"):
        Colorizer.load(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="weights-only"):
        Colorizer.load(tmp_path / "notes.txt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match="not a colorizer training checkpoint"):
        Colorizer.load(tmp_path / "other.pt")

    meta = json.loads((export_dir / "config.json").read_text())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "generator.safetensors").write_bytes((export_dir / "generator.safetensors").read_bytes())
    (broken / "config.json").write_text(json.dumps({**meta, "format": "something-else/2"}))
    with pytest.raises(ModelLoadError, match="not a colorizer export"):
        Colorizer.load(broken)
    deeper = json.loads(json.dumps(meta))
    deeper["config"]["model"]["depth"] = 4
    deeper["config"]["data"]["size"] = 32
    (broken / "config.json").write_text(json.dumps(deeper))
    with pytest.raises(ModelLoadError, match="do not match its config"):
        Colorizer.load(broken)
    unknown = json.loads(json.dumps(meta))
    unknown["config"]["model"]["colour_magic"] = 1
    (broken / "config.json").write_text(json.dumps(unknown))
    with pytest.raises(ModelLoadError, match="does not match this version.*colour_magic"):
        Colorizer.load(broken)
    new_section = json.loads(json.dumps(meta))
    new_section["config"]["augment"] = {"rotate": True}
    (broken / "config.json").write_text(json.dumps(new_section))
    with pytest.raises(ModelLoadError, match="does not match this version.*augment"):
        Colorizer.load(broken)
    (broken / "config.json").write_text(json.dumps(meta))
    (broken / "generator.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ModelLoadError, match="cannot be read as safetensors"):
        Colorizer.load(broken)


def test_openmoji_training_data_is_recognised(cfg, tmp_path):
    def trained_on(root):
        config = load_config(overrides=TINY + [f"--data.root={root}"])
        return Colorizer(build_generator(config.model), config).trained_on_openmoji

    assert trained_on("data/openmoji256")
    (tmp_path / "emoji").mkdir()
    (tmp_path / "emoji" / "manifest.jsonl").write_text(json.dumps({"id": "1F600", "source": "openmoji:1F600.svg"}))
    assert trained_on(tmp_path / "emoji")
    (tmp_path / "drawings").mkdir()
    (tmp_path / "drawings" / "manifest.jsonl").write_text(json.dumps({"id": "cat", "source": "folder:cat.png"}))
    assert not trained_on(tmp_path / "drawings")
    assert not trained_on(tmp_path / "missing")


def test_threads_give_the_serial_results(model):
    inputs = [(line_art(30 + 7 * i, 50 - 3 * i), ["#%02x4060" % (40 * i)]) for i in range(4)]
    serial = [pixels(model.colorize(image, palette=palette)) for image, palette in inputs]
    results = {}
    errors = []

    def work(index):
        try:
            for _ in range(3):
                image, palette = inputs[index]
                results.setdefault(index, []).append(pixels(model.colorize(image, palette=palette)))
        except Exception as err:  # surfaced below: pytest does not see exceptions in threads
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for index, expected in enumerate(serial):
        assert len(results[index]) == 3
        assert all(np.array_equal(got, expected) for got in results[index])


# ---------------------------------------------------------------- a model that learned to use hints

def synthetic_batch(n: int, generator: torch.Generator):
    """32 px outlined rectangles on white: line (n, 1, 32, 32), colour (n, 3, 32, 32) and a hint map
    with a 3x3 patch of each rectangle's fill colour (most of the time), all in [-1, 1]."""
    line = torch.ones(n, 1, 32, 32)
    colour = torch.ones(n, 3, 32, 32)
    hint = torch.zeros(n, 4, 32, 32)
    for i in range(n):
        for _ in range(2):
            top, left = torch.randint(0, 18, (2,), generator=generator).tolist()
            height, width = torch.randint(8, 14, (2,), generator=generator).tolist()
            bottom, right = min(31, top + height), min(31, left + width)
            fill = torch.rand(3, generator=generator) * 2 - 1
            colour[i, :, top:bottom + 1, left:right + 1] = fill[:, None, None]
            line[i, :, top:bottom + 1, left:right + 1] = 1
            line[i, :, (top, bottom), left:right + 1] = -1
            line[i, :, top:bottom + 1, (left, right)] = -1
            if torch.rand((), generator=generator) < 0.8:
                y = int(torch.randint(top + 2, bottom - 1, (), generator=generator))
                x = int(torch.randint(left + 2, right - 1, (), generator=generator))
                hint[i, :3, y - 1:y + 2, x - 1:x + 2] = fill[:, None, None]
                hint[i, 3, y - 1:y + 2, x - 1:x + 2] = 1
        colour[i][:, line[i, 0] < 0] = -1
    return line, colour, hint


@pytest.fixture(scope="module")
def hint_trained(cfg, tmp_path_factory):
    """The tiny generator after 200 MSE steps on synthetic rectangles with simulated hints (~5 s),
    exported and reloaded the way serve.py loads a model."""
    torch.manual_seed(0)
    generator = build_generator(cfg.model)
    optimiser = torch.optim.Adam(generator.parameters(), lr=2e-3)
    data_rng = torch.Generator().manual_seed(0)
    no_palette, no_keep = torch.zeros(16, 8, 3), torch.zeros(16, 8)
    first_loss = None
    for _ in range(200):
        line, colour, hint = synthetic_batch(16, data_rng)
        loss = F.mse_loss(generator(line, hint, no_palette, no_keep), colour)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        first_loss = first_loss or loss.item()
    assert loss.item() < 0.5 * first_loss
    out = tmp_path_factory.mktemp("trained") / "export"
    export_generator(out, generator.state_dict(), to_dict(cfg), step=200, metrics={}, perceptual="none",
                     run_name="hints")
    return Colorizer.load(out)


def test_painted_hints_colour_the_output_near_the_hint(hint_trained):
    image = Image.new("L", (64, 48), 255)
    ImageDraw.Draw(image).rectangle((8, 8, 40, 40), outline=0, width=2)  # 64x48 -> worked at 32x24
    near = (slice(18, 31), slice(18, 31))  # rows, cols around the painted dot
    plain = pixels(hint_trained.colorize(image))[near].reshape(-1, 3).mean(0)
    red = pixels(hint_trained.colorize(image, hints=_hint_strokes(image.size, (20, 20, 28, 28), (220, 30, 30))))
    blue = pixels(hint_trained.colorize(image, hints=_hint_strokes(image.size, (20, 20, 28, 28), (30, 60, 220))))
    red, blue = red[near].reshape(-1, 3).mean(0), blue[near].reshape(-1, 3).mean(0)
    assert red[0] > red[2] + 60, red  # reddish near the red stroke
    assert blue[2] > blue[0] + 60, blue  # bluish near the blue stroke
    assert np.abs(plain - red).sum() > 100 and np.abs(plain - blue).sum() > 100
    far = (slice(0, 6), slice(50, 64))  # paper far from the rectangle: stays close to the unhinted result
    hinted_far = pixels(hint_trained.colorize(image, hints=_hint_strokes(image.size, (20, 20, 28, 28), (220, 30, 30))))
    assert np.abs(hinted_far[far] - pixels(hint_trained.colorize(image))[far]).mean() < 20
