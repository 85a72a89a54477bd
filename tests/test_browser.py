"""The demo in a real browser: Debian's headless chromium driven by playwright uploads a 1600 x 1000
drawing, paints a hint stroke, presses Colorize (automatic mode, which must use the stroke) and
downloads the result and its layers, as a person would."""
import io
import os
import shutil
import socket
import sys
import urllib.request
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

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]
TINY = ["--model.depth=3", "--model.base_channels=8", "--model.max_channels=32", "--data.size=32",
        "--model.palette_size=8"]


@pytest.fixture
def served(tmp_path):
    """The demo on a free port, its colorizer recording what each request passed to it."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)"
        if os.environ.get("COLORIZER_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    cfg = load_config(overrides=TINY)
    torch.manual_seed(0)
    generator = build_generator(cfg.model)
    for module in generator.modules():  # N(0, 0.1): an untrained output that still shows some structure
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.normal_(module.weight, 0.0, 0.1)
    export = export_generator(tmp_path / "export", generator.state_dict(), to_dict(cfg), step=300, metrics={},
                              perceptual="random", run_name="browser-test")
    colorizer = Colorizer.load(export)
    calls = []
    colorize_layers = colorizer.colorize_layers

    def recording_colorize_layers(line_art, hints=None, palette=None, fill=False):
        calls.append({"size": line_art.size, "hints": hints, "palette": palette, "fill": fill})
        return colorize_layers(line_art, hints=hints, palette=palette, fill=fill)

    colorizer.colorize_layers = recording_colorize_layers
    demo = serve.build_demo(colorizer)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(prevent_thread_lock=True, quiet=True, show_error=True, server_name="127.0.0.1", server_port=port)
    try:
        yield f"http://127.0.0.1:{port}/", calls
    finally:
        demo.close()


def test_upload_paint_and_colorize_in_chromium(served, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    url, calls = served
    line_path = tmp_path / "line.png"
    image = Image.new("L", (1600, 1000), 255)  # non-square, larger than the model's working size
    ImageDraw.Draw(image).ellipse((100, 100, 1500, 900), outline=0, width=6)
    ImageDraw.Draw(image).line((200, 800, 1400, 200), fill=0, width=2)
    image.save(line_path)
    screenshot = tmp_path / "demo.png"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, timeout=60_000, wait_until="networkidle")
            upload_prompt = page.get_by_text("Upload an image")
            upload_prompt.wait_for(state="visible", timeout=60_000)  # the editor has mounted
            for attempt in range(3):  # a file set while the editor is still mounting can be dropped
                page.locator("#line-art input[type=file]").set_input_files(str(line_path))
                try:
                    upload_prompt.wait_for(state="hidden", timeout=15_000)  # background loaded
                    break
                except PlaywrightTimeout:
                    if attempt == 2:
                        raise

            page.get_by_role("button", name="Brush", exact=True).click()
            canvas = page.locator("#line-art canvas").first.bounding_box()
            x, y = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
            page.mouse.move(x - 60, y)
            page.mouse.down()
            for step in range(13):
                page.mouse.move(x - 60 + 10 * step, y + (step % 2) * 4)
            page.mouse.up()
            page.locator("#colorize").click()  # mode still "automatic": the stroke must be used anyway

            result = page.locator("#result img")
            try:
                result.wait_for(state="visible", timeout=60_000)
            finally:
                page.screenshot(path=str(screenshot), full_page=True)
                if os.environ.get("COLORIZER_SCREENSHOT_DIR"):
                    Path(os.environ["COLORIZER_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
                    shutil.copy(screenshot, Path(os.environ["COLORIZER_SCREENSHOT_DIR"]) / "demo.png")
            source = result.get_attribute("src") or ""
            assert "/file=" in source
            downloaded = Image.open(io.BytesIO(urllib.request.urlopen(source, timeout=30).read()))
            layers = page.locator("#layers a")
            layers.first.wait_for(state="visible", timeout=30_000)
            names = sorted(link.get_attribute("download") or "" for link in layers.all())  # the saved file names
            links = [link.get_attribute("href") for link in layers.all()]

            # a bad request shows its reason on the page, and the app keeps serving
            page.get_by_role("radio", name="palette").check()
            page.locator("#palette textarea").fill("#e63946, nope")
            page.locator("#colorize").click()
            page.get_by_text("palette entry 'nope' is not a colour").first.wait_for(state="visible", timeout=30_000)
        finally:
            browser.close()

    assert len(calls) == 1, calls  # the coloured request; the bad palette is refused before the model
    assert calls[0]["size"] == (1600, 1000) and calls[0]["palette"] is None and calls[0]["fill"] is False
    hints = calls[0]["hints"]
    assert hints is not None and hints.size == (1600, 1000)  # automatic mode used the stroke
    strokes = np.asarray(hints.convert("RGBA"))
    painted = strokes[strokes[..., 3] > 128, :3]
    assert len(painted) > 100  # a stroke ~120 px long
    assert (np.median(painted, axis=0) == (230, 57, 70)).all()  # the brush's first colour, unchanged by PNG

    # the download: the drawing's size, and every line pixel as dark as the artist drew it
    assert downloaded.size == (1600, 1000)
    line, out = np.asarray(image).astype(int), np.asarray(downloaded.convert("RGB")).astype(int)
    assert (out[line < 255] <= line[line < 255, None] + 2).all()
    assert names == ["colorized.png", "colorized_flat.png", "colorized_lines.png"], names
    for link in links:  # each layer downloads as an image of the drawing's size
        href = link if link.startswith("http") else url.rstrip("/") + "/" + link.lstrip("/")
        assert Image.open(io.BytesIO(urllib.request.urlopen(href, timeout=30).read())).size == (1600, 1000)
