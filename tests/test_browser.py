"""The demo in a real browser: Debian's headless chromium driven by playwright uploads line art,
paints a hint stroke, presses Colorize and must see a result image."""
import os
import shutil
import socket
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
    colorize = colorizer.colorize

    def recording_colorize(line_art, hints=None, palette=None):
        calls.append({"size": line_art.size, "hints": hints, "palette": palette})
        return colorize(line_art, hints=hints, palette=palette)

    colorizer.colorize = recording_colorize
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
    image = Image.new("L", (300, 200), 255)
    ImageDraw.Draw(image).ellipse((20, 20, 280, 180), outline=0, width=3)
    image.save(line_path)
    screenshot = tmp_path / "demo.png"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, timeout=60_000, wait_until="networkidle")
            upload_prompt = page.get_by_text("Upload an image")
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
            page.get_by_label("painted hints").check()
            page.locator("#colorize").click()

            result = page.locator("#result img")
            try:
                result.wait_for(state="visible", timeout=60_000)
            finally:
                page.screenshot(path=str(screenshot), full_page=True)
                if os.environ.get("COLORIZER_SCREENSHOT_DIR"):
                    Path(os.environ["COLORIZER_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
                    shutil.copy(screenshot, Path(os.environ["COLORIZER_SCREENSHOT_DIR"]) / "demo.png")
            assert "/file=" in (result.get_attribute("src") or "")

            # a bad request shows its reason on the page, and the app keeps serving
            page.get_by_role("radio", name="palette").check()
            page.locator("#palette textarea").fill("#e63946, nope")
            page.locator("#colorize").click()
            page.get_by_text("palette entry 'nope' is not a colour").first.wait_for(state="visible", timeout=30_000)
        finally:
            browser.close()

    assert len(calls) == 1, calls  # the painted-hints request; the bad palette is refused before the model
    assert calls[0]["size"] == (300, 200) and calls[0]["palette"] is None
    hints = calls[0]["hints"]
    assert hints is not None and hints.size == (300, 200)
    strokes = np.asarray(hints.convert("RGBA"))
    painted = strokes[strokes[..., 3] > 128, :3]
    assert len(painted) > 100  # a stroke ~120 px long
    assert (np.median(painted, axis=0) == (230, 57, 70)).all()  # the brush's first colour, unchanged by PNG
