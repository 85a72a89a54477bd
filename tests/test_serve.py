"""serve.py: the Gradio app over HTTP with gradio_client, the CLI's model lookup, examples."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from colorizer.checkpoint import export_generator
from colorizer.config import load_config, to_dict
from colorizer.inference import Colorizer
from colorizer.models import build_generator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # serve.py lives at the repository root, outside the package
import serve  # noqa: E402

TINY = ["--model.depth=3", "--model.base_channels=8", "--model.max_channels=32", "--data.size=32",
        "--model.palette_size=8", "--data.root=data/openmoji256"]
MAX_PIXELS = 200 * 200


def write_export(out: Path, seed: int = 0) -> Path:
    cfg = load_config(overrides=TINY)
    torch.manual_seed(seed)
    generator = build_generator(cfg.model)
    for module in generator.modules():  # N(0, 0.1): an untrained output that still depends on its input
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.normal_(module.weight, 0.0, 0.1)
    return export_generator(out, generator.state_dict(), to_dict(cfg), step=300,
                            metrics={"val/none/psnr_color": 13.5}, perceptual="random", run_name="tiny")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def save_line_art(path: Path, size=(61, 100)) -> Path:
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).ellipse((5, 5, size[0] - 10, size[1] - 10), outline=0, width=2)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    strokes = Image.new("RGBA", (61, 100), (0, 0, 0, 0))
    ImageDraw.Draw(strokes).ellipse((20, 30, 40, 60), fill=(230, 57, 70, 255))
    strokes.save(folder / "hints.png")
    (folder / "not_an_image.png").write_text("this is a text file, not a PNG")
    Image.new("RGB", (80, 60), "white").save(folder / "blank.png")
    save_line_art(folder / "huge.png", size=(300, 300))
    return {"line": save_line_art(folder / "line.png"), "hints": folder / "hints.png",
            "bad": folder / "not_an_image.png", "blank": folder / "blank.png", "huge": folder / "huge.png"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The demo on a free local port (with a one-item examples list), closed after the module."""
    from gradio_client import Client

    folder = tmp_path_factory.mktemp("served")
    colorizer = Colorizer.load(write_export(folder / "export"), max_pixels=MAX_PIXELS)
    demo = serve.build_demo(colorizer, examples=[str(save_line_art(folder / "example.png"))])
    port = free_port()
    demo.launch(prevent_thread_lock=True, quiet=True, show_error=True, server_name="127.0.0.1", server_port=port)
    url = f"http://127.0.0.1:{port}/"
    try:
        yield {"url": url, "client": Client(url, verbose=False), "colorizer": colorizer}
    finally:
        demo.close()


def editor(background, layers=()):
    from gradio_client import handle_file

    return {"background": handle_file(str(background)), "layers": [handle_file(str(p)) for p in layers],
            "composite": None}


def test_colorize_endpoint_reports_bad_input_then_keeps_serving(app, files):
    client = app["client"]
    with pytest.raises(Exception, match=r"the line art \(not_an_image.png\) is not a readable image"):
        client.predict(editor(files["bad"]), "automatic", "", api_name="/colorize")
    with pytest.raises(Exception, match="empty canvas"):
        client.predict(editor(files["blank"]), "automatic", "", api_name="/colorize")
    with pytest.raises(Exception, match=r"300x300 = 90,000 pixels, more than the limit of 40,000"):
        client.predict(editor(files["huge"]), "automatic", "", api_name="/colorize")
    with pytest.raises(Exception, match="'nope'"):
        client.predict(editor(files["line"]), "palette", "#e63946, nope", api_name="/colorize")
    with pytest.raises(Exception, match="paint some strokes"):
        client.predict(editor(files["line"]), "painted hints", "", api_name="/colorize")
    result = client.predict(editor(files["line"]), "automatic", "", api_name="/colorize")
    assert Image.open(result).size == (61, 100)


def test_colorize_endpoint_modes_use_their_hints(app, files):
    client = app["client"]

    def colour(value, mode, palette):
        return np.asarray(Image.open(client.predict(value, mode, palette, api_name="/colorize")).convert("RGB"))

    automatic_with_strokes = colour(editor(files["line"], [files["hints"]]), "automatic", "#123456")
    automatic = colour(editor(files["line"]), "automatic", "#123456")
    painted = colour(editor(files["line"], [files["hints"]]), "painted hints", "")
    palette = colour(editor(files["line"]), "palette", "#e63946, #457b9d")
    expected = np.asarray(app["colorizer"].colorize(Image.open(files["line"]), hints=Image.open(files["hints"])))
    assert np.array_equal(painted, expected)  # PNG all the way: hint colours arrive unchanged
    assert np.array_equal(automatic_with_strokes, painted)  # painted strokes are never ignored
    assert np.array_equal(automatic, np.asarray(app["colorizer"].colorize(Image.open(files["line"]))))
    assert not np.array_equal(automatic, painted)
    assert not np.array_equal(automatic, palette)


def test_layers_endpoint_returns_the_three_named_layers(app, files):
    from gradio_client import handle_file

    client = app["client"]
    paths = client.predict(handle_file(str(files["line"])), handle_file(str(files["hints"])),
                           api_name="/colorize_layers")
    assert [Path(p).name for p in paths] == ["colorized.png", "colorized_flat.png", "colorized_lines.png"]
    image, flat, lines = (Image.open(p) for p in paths)
    line = Image.open(files["line"])
    expected = app["colorizer"].colorize_layers(line, hints=Image.open(files["hints"]))
    assert image.size == flat.size == lines.size == (61, 100)
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(expected.image))
    assert np.array_equal(np.asarray(flat.convert("RGB")), np.asarray(expected.flat))
    assert lines.mode == "RGBA" and np.array_equal(np.asarray(lines)[..., 3], 255 - np.asarray(line.convert("L")))


def test_psd_endpoint_returns_the_layered_file(app, files):
    from gradio_client import handle_file
    from psd_tools import PSDImage

    from colorizer.psd import LAYER_NAMES

    path = app["client"].predict(handle_file(str(files["line"])), handle_file(str(files["hints"])),
                                 api_name="/colorize_psd")
    assert Path(path).name == "colorized.psd"
    psd = PSDImage.open(path)
    names = [layer.name for layer in psd]
    assert psd.size == (61, 100) and names[0] == LAYER_NAMES[0] and names[-2:] == list(LAYER_NAMES[1:])
    assert all(name.startswith("paint #") for name in names[1:-2]) and len(names) > 3  # the hint file's strokes
    expected = app["colorizer"].colorize_layers(Image.open(files["line"]), hints=Image.open(files["hints"]))
    line = np.asarray(Image.open(files["line"]).convert("L"))
    solid = (line == 0) | (line == 255)
    composite = np.asarray(psd.composite(force=True).convert("RGB")).astype(int)
    assert np.abs(composite - np.asarray(expected.image).astype(int))[solid].max() <= 2


def test_colorize_file_endpoint(app, files):
    from gradio_client import handle_file

    client = app["client"]
    with pytest.raises(Exception, match=r"the line art \(not_an_image.png\) is not a readable image"):
        client.predict(handle_file(str(files["bad"])), api_name="/colorize_file")
    with pytest.raises(Exception, match=r"300x300 = 90,000 pixels, more than the limit of 40,000"):
        client.predict(handle_file(str(files["huge"])), api_name="/colorize_file")
    result = client.predict(handle_file(str(files["line"])), handle_file(str(files["hints"])), "", "painted hints",
                            api_name="/colorize_file")
    assert Image.open(result).size == (61, 100)


def test_readme_api_snippet(app, files, monkeypatch):
    """The snippet README shows, verbatim apart from the URL."""
    monkeypatch.chdir(files["line"].parent)  # line.png and hints.png (RGBA strokes) are here
    url = app["url"]
    # --- README snippet start
    from gradio_client import Client, handle_file

    client = Client(url)  # e.g. "http://127.0.0.1:7860/"
    # automatic; with a palette (global hint); with painted strokes (an RGBA PNG, transparent = no hint)
    result = client.predict(handle_file("line.png"), api_name="/colorize_file")
    result = client.predict(handle_file("line.png"), palette="#e63946, #457b9d", api_name="/colorize_file")
    result = client.predict(handle_file("line.png"), hints=handle_file("hints.png"), api_name="/colorize_file")
    print(result)  # path of the coloured PNG, same size as line.png
    image, flat, lines = client.predict(handle_file("line.png"), api_name="/colorize_layers")  # the three layers
    result = client.predict(handle_file("line.png"), flat_fill=True, api_name="/colorize_file")  # flat fills

    # the endpoint behind the page's Colorize button takes the editor's value
    result = client.predict(
        editor={"background": handle_file("line.png"), "layers": [handle_file("hints.png")], "composite": None},
        mode="painted hints", palette="", api_name="/colorize")
    # --- README snippet end
    assert Image.open(result).size == (61, 100)
    assert [Image.open(p).size for p in (image, flat, lines)] == [(61, 100)] * 3


def test_flat_fill_option_on_every_endpoint(app, files):
    """flat_fill=True gives what Colorizer.colorize(fill=True) gives, on the file, layers and
    editor endpoints; left out, the default (off); not a boolean, a clear refusal."""
    from gradio_client import handle_file

    client, line = app["client"], Image.open(files["line"])
    filled = np.asarray(app["colorizer"].colorize(line, fill=True))
    assert not np.array_equal(filled, np.asarray(app["colorizer"].colorize(line)))

    def rgb(path):
        return np.asarray(Image.open(path).convert("RGB"))

    assert np.array_equal(rgb(client.predict(handle_file(str(files["line"])), flat_fill=True,
                                             api_name="/colorize_file")), filled)
    assert np.array_equal(rgb(client.predict(handle_file(str(files["line"])), flat_fill=True,
                                             api_name="/colorize_layers")[0]), filled)
    assert np.array_equal(rgb(client.predict(editor(files["line"]), "automatic", "", True, api_name="/colorize")), filled)
    with pytest.raises(Exception, match="flat_fill must be true or false"):
        client.predict(handle_file(str(files["line"])), flat_fill="yes", api_name="/colorize_file")


def test_colorize_file_infers_the_mode_and_refuses_server_paths(app, files):
    from gradio_client import handle_file

    client = app["client"]
    line = Image.open(files["line"])
    colorizer = app["colorizer"]
    cases = [((), {}, colorizer.colorize(line)),
             ((), {"palette": "#e63946"}, colorizer.colorize(line, palette=["#e63946"])),
             ((handle_file(str(files["hints"])),), {}, colorizer.colorize(line, hints=Image.open(files["hints"])))]
    for args, kwargs, expected in cases:
        result = client.predict(handle_file(str(files["line"])), *args, api_name="/colorize_file", **kwargs)
        assert np.array_equal(np.asarray(Image.open(result).convert("RGB")), np.asarray(expected)), kwargs
    with pytest.raises(Exception, match="must be an uploaded file"):
        client.predict(str(files["line"]), api_name="/colorize_file")  # a server path, not an upload


def test_page_has_model_facts_and_attribution(app):
    import urllib.request

    config = json.loads(urllib.request.urlopen(app["url"] + "config", timeout=10).read())
    text = json.dumps(config)
    assert "300 training steps" in text and "val/none/psnr_color 13.5" in text
    assert serve.ATTRIBUTION in text  # TINY sets data.root to the OpenMoji folder


def test_no_model_exits_with_instructions_and_no_training_code(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # -X importtime lists every imported module on stderr
    proc = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "serve.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "python train.py" in proc.stderr and "--checkpoint PATH" in proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "colorizer.inference" in imported
    assert not imported & {"colorizer.training", "colorizer.losses", "colorizer.data", "colorizer.monitor", "wandb"}


def test_missing_checkpoint_argument_is_an_error(tmp_path, capsys):
    assert serve.main(["--checkpoint", str(tmp_path / "nowhere")]) != 0
    assert "no model at" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--queue-size", "0"], ["--concurrency", "0"], ["--keep-files-hours", "0"]])
def test_bad_server_limits_are_refused(bad, capsys):
    with pytest.raises(SystemExit):
        serve.parse_args(bad)
    assert "--queue-size and --concurrency must be >= 1" in capsys.readouterr().err


def test_old_uploads_and_results_are_cleaned_on_a_schedule(tmp_path):
    colorizer = Colorizer.load(write_export(tmp_path / "export"), max_pixels=MAX_PIXELS)
    assert serve.build_demo(colorizer).delete_cache == (3600, 24 * 3600)  # hourly, older than a day
    assert serve.build_demo(colorizer, keep_files_s=600).delete_cache == (600, 600)


def test_find_checkpoint_serves_the_bundled_model_unless_told_otherwise(tmp_path):
    assert serve.find_checkpoint(tmp_path) is None and serve.find_checkpoint(tmp_path, "latest") is None
    old = write_export(tmp_path / "runs" / "old" / "export")
    new = write_export(tmp_path / "runs" / "new" / "export")
    os.utime(old / "config.json", (2_000_000_000, 2_000_000_000))
    os.utime(new / "config.json", (1_000_000_000, 1_000_000_000))
    assert serve.find_checkpoint(tmp_path) == old  # no bundled model: the newest run
    demo = write_export(tmp_path / "models" / "demo")
    assert serve.find_checkpoint(tmp_path) == demo  # a newcomer meets the bundled model, not a smoke run
    assert serve.find_checkpoint(tmp_path, "latest") == old
    assert serve.find_checkpoint(tmp_path, str(new)) == new


def test_model_picker_offers_the_bundled_model_and_the_runs_with_their_numbers(tmp_path, monkeypatch):
    """The page's picker: the served model first, then the bundled model and each run's export
    (steps, validation PSNR); a picked model is loaded once and used; nothing else can be named."""
    monkeypatch.chdir(tmp_path)
    demo_model = write_export(Path("models/demo"))
    old = write_export(Path("runs/old/export"), seed=1)
    new = write_export(Path("runs/new/export"), seed=2)
    os.utime(old / "config.json", (1_000_000_000, 1_000_000_000))
    (Path("runs/broken/export")).mkdir(parents=True)  # no config.json: not offered
    choices = serve.model_choices(served=demo_model)
    assert [path for _, path in choices] == [str(demo_model), str(new), str(old)]
    assert choices[0][0] == "bundled model: 300 steps, val PSNR colour 13.50 dB (models/demo)"
    assert choices[1][0].startswith("tiny: 300 steps, val PSNR colour 13.50 dB (runs/new/export)")
    assert serve.describe_model(tmp_path / "some.pt") == f"some.pt: a training checkpoint ({tmp_path / 'some.pt'})"
    served = Colorizer.load(demo_model)
    shelf = serve.ModelShelf(served, choices)
    assert shelf.get("") is served and shelf.get(str(demo_model)) is served
    picked = shelf.get(str(old))
    assert picked is not served and shelf.get(str(old)) is picked  # loaded once
    line = Image.open(save_line_art(tmp_path / "line.png"))
    assert not np.array_equal(np.asarray(picked.colorize(line)), np.asarray(served.colorize(line)))
    with pytest.raises(Exception, match="not one this demo offers"):
        shelf.get("/etc")
    page = serve.build_demo(served, choices=choices)
    dropdown = next(b for b in page.blocks.values() if getattr(b, "elem_id", None) == "model")
    assert [c[1] for c in dropdown.choices] == [str(demo_model), str(new), str(old)] and dropdown.interactive


def test_checkpoint_latest_without_runs_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert serve.main(["--checkpoint", "latest"]) == 2
    assert "no trained run found" in capsys.readouterr().err


def test_find_examples_takes_the_test_split(tmp_path):
    assert serve.find_examples(tmp_path / "missing") == []
    records = [{"id": f"e{i}", "split": split, "line": f"line/e{i}.png"} for i, split in
               enumerate(["train", "test", "val", "test", "test"])]
    (tmp_path / "line").mkdir()
    for record in records[:4]:  # the last test item's file is missing: skipped
        save_line_art(tmp_path / record["line"])
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert serve.find_examples(tmp_path) == [str(tmp_path / "line/e1.png"), str(tmp_path / "line/e3.png")]


def test_examples_come_from_the_models_own_data_when_it_is_here(tmp_path, monkeypatch):
    own = tmp_path / "openmoji96"
    (own / "line").mkdir(parents=True)
    save_line_art(own / "line" / "t.png")
    (own / "manifest.jsonl").write_text(json.dumps({"id": "t", "split": "test", "line": "line/t.png"}) + "\n")
    cfg = load_config(overrides=TINY[:-1] + [f"--data.root={own}"])
    assert serve.examples_for(Colorizer(build_generator(cfg.model), cfg)) == [str(own / "line" / "t.png")]
    monkeypatch.setattr(serve, "EXAMPLES_ROOT", tmp_path / "nothing")
    elsewhere = load_config(overrides=TINY[:-1] + [f"--data.root={tmp_path / 'gone'}"])
    assert serve.examples_for(Colorizer(build_generator(elsewhere.model), elsewhere)) == []
    shipped = tmp_path / "model" / "examples"
    shipped.mkdir(parents=True)
    save_line_art(shipped / "b.png")
    save_line_art(shipped / "a.png")
    assert serve.examples_for(Colorizer(build_generator(elsewhere.model), elsewhere), tmp_path / "model") == [
        str(shipped / "a.png"), str(shipped / "b.png")]


def test_the_bundled_model_ships_its_examples_with_their_licence():
    """A fresh clone (no data/ folder) still has clickable examples: OpenMoji test-split drawings."""
    shipped = ROOT / "models" / "demo" / "examples"
    drawings = sorted(shipped.glob("*.png"))
    assert len(drawings) >= 4 and all(p.stat().st_size < 50_000 for p in drawings)
    assert "CC BY-SA 4.0" in (shipped / "README.md").read_text()
    from data_prep.common import split_for
    from data_prep.openmoji import group_of
    assert {split_for(group_of(p.stem)) for p in drawings} == {"test"}  # never seen in training
    cfg = load_config(overrides=TINY[:-1] + ["--data.root=/nonexistent"])
    assert serve.examples_for(Colorizer(build_generator(cfg.model), cfg), ROOT / "models" / "demo") == [
        str(p) for p in drawings]


def test_attribution_follows_the_openmoji_drawings(tmp_path):
    cfg = load_config(overrides=TINY[:-1] + [f"--data.root={tmp_path / 'drawings'}"])
    own_data = Colorizer(build_generator(cfg.model), cfg)
    assert serve.ATTRIBUTION not in serve.model_facts(own_data)
    assert serve.ATTRIBUTION in serve.model_facts(own_data, examples_shown=True)  # the examples are OpenMoji's
    own_data.notes["data_credits"] = [serve.ATTRIBUTION, "Noto Emoji by Google Inc, Apache 2.0"]
    facts = serve.model_facts(own_data, examples_shown=True)
    assert f"**Training data:** {serve.ATTRIBUTION} (https://openmoji.org) · Noto Emoji by Google Inc" in facts
    assert "**Examples:**" not in facts  # the credit above covers them


def test_suggest_colours_endpoint(app, files, tmp_path):
    """/suggest_colours: the colour head's likeliest colours at a point; a model without one says so."""
    from gradio_client import Client, handle_file

    with pytest.raises(Exception, match="no colour head"):
        app["client"].predict(handle_file(str(files["line"])), 30, 50, api_name="/suggest_colours")
    cfg = load_config(overrides=TINY + ["--model.colour_head=true", "--loss.colour_classes=1"])
    torch.manual_seed(0)
    export = export_generator(tmp_path / "head", build_generator(cfg.model).state_dict(), to_dict(cfg), step=1,
                              metrics={}, perceptual="random", run_name="head")
    demo = serve.build_demo(Colorizer.load(export, max_pixels=MAX_PIXELS))
    port = free_port()
    demo.launch(prevent_thread_lock=True, quiet=True, show_error=True, server_name="127.0.0.1", server_port=port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        found = client.predict(handle_file(str(files["line"])), 30, 50, count=4, api_name="/suggest_colours")
        assert 1 <= len(found) <= 4 and all(len(s["colour"]) == 7 and 0 < s["probability"] <= 1 for s in found)
        assert [s["probability"] for s in found] == sorted((s["probability"] for s in found), reverse=True)
        with pytest.raises(Exception, match="outside"):
            client.predict(handle_file(str(files["line"])), 500, 50, api_name="/suggest_colours")
    finally:
        demo.close()
