"""Fuzzed inputs for Colorizer.colorize and the demo's /colorize and /colorize_file endpoints.

Every input gets an image of the right size or an error saying what is wrong; the server (a
serve.py process of its own, so its memory can be read) keeps answering, and its peak memory stays
within MEMORY_BUDGET_MIB of what it held after warm-up. Named odd files come from odd_images.py,
generated ones from Hypothesis (profile in conftest.py).
"""
import argparse
import io
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image, ImageOps

from conftest import ROOT
from odd_images import TOO_LARGE, UNREADABLE, drawing, write_odd_images
from test_serve import write_export

sys.path.insert(0, str(ROOT / "tools"))
import load_test  # noqa: E402  (the load test's own server start and memory reading)

SERVER_MAX_PIXELS = 1_000_000
MEMORY_BUDGET_MIB = 250  # a 1-megapixel RGBA request needs well under 100 MiB; a decoded bomb, gigabytes
# What a clear refusal says: each names the input and what is wrong (see serve.py and inference.py).
CLEAR = (UNREADABLE, TOO_LARGE, "empty canvas", "is not a colour", "hints are", "alpha channel", "palette",
         "must be text", "mode ", "is empty", "paint some strokes", "no line art given")
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "I;16", "I", "F", "CMYK", "YCbCr", "LAB", "HSV"]
FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]


# ---- generated inputs ------------------------------------------------------------------------------

@st.composite
def images(draw, max_side: int = 48) -> Image.Image:
    """A PIL image of any common mode, 1 to max_side px a side (sometimes a long strip), random or flat."""
    width, height = draw(st.sampled_from([(draw(st.integers(1, max_side)), draw(st.integers(1, max_side))),
                                          (1, draw(st.integers(100, 600))), (draw(st.integers(100, 600)), 1)]))
    mode = draw(st.sampled_from(MODES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    else:  # line art: mostly paper
        rgba = np.where(rng.random((height, width, 1)) < 0.9, 255, 0).astype(np.uint8).repeat(4, axis=2)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode in ("I", "F"):
        values = rng.normal(0, draw(st.sampled_from([1.0, 300.0, 1e6])), (height, width))
        return Image.fromarray(values.astype(np.int32 if mode == "I" else np.float32))
    return Image.fromarray(rgba, "RGBA").convert(mode)


def hints_like(draw, size: tuple):
    """None, RGBA strokes of ``size`` or of another size, or an image without alpha."""
    kind = draw(st.sampled_from(["none", "same", "other size", "no alpha"]))
    if kind == "none":
        return None
    if kind == "other size":
        size = (size[0] + draw(st.integers(1, 20)), size[1])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    strokes = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    return Image.fromarray(strokes, "RGBA").convert("RGB" if kind == "no alpha" else "RGBA")


palettes = st.one_of(
    st.none(), st.text(max_size=30), st.sampled_from(["", " , ,", "#zzzzzz", "#12345", "rgb(300, 0, 0)",
                                                      ", ".join(["#e63946"] * 500)]),
    st.lists(st.one_of(st.text(max_size=8), st.tuples(st.integers(-5, 300), st.integers(0, 255), st.integers(0, 255)),
                       st.integers(), st.none()), max_size=10))


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt)
    except (OSError, ValueError, KeyError):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, fmt)
    return buffer.getvalue()


def corrupt(data: bytes, how: str, seed: int) -> bytes:
    rng = random.Random(seed)
    if how == "truncate":
        return data[: rng.randrange(0, max(1, len(data)))]
    if how == "flip":
        data = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    return data


def oriented_size(path: Path):
    """The (W, H) a readable file decodes to, EXIF orientation applied; None if PIL cannot read it."""
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image).size
    except Exception:  # noqa: BLE001  (unreadable in any way: the demo must refuse it)
        return None


def assert_clear(message: str) -> None:
    assert any(text in message for text in CLEAR), f"unclear error: {message!r}"
    assert "Traceback" not in message and "Could not preprocess" not in message and "/tmp/" not in message


# ---- Colorizer.colorize directly --------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from colorizer.inference import Colorizer

    return Colorizer.load(write_export(tmp_path_factory.mktemp("fuzz") / "export"))


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> dict:
    return write_odd_images(tmp_path_factory.mktemp("odd"))


def test_named_odd_files_directly(model, odd):
    for name, (path, expected) in odd.items():
        for source in (path, path.read_bytes()):
            if isinstance(expected, tuple):
                result = model.colorize(source)
                assert result.size == expected and result.mode == "RGB", name
            else:
                with pytest.raises(ValueError, match=expected):
                    model.colorize(source)


@given(data=st.data(), image=images(), palette=palettes)
def test_generated_images_hints_and_palettes_directly(model, data, image, palette):
    hints = hints_like(data.draw, image.size)
    try:
        result = model.colorize(image, hints=hints, palette=palette)
    except (ValueError, TypeError) as err:
        assert_clear(str(err))
        return
    assert result.size == image.size and result.mode == "RGB"


@given(blob=st.binary(max_size=4096), fmt=st.sampled_from(FORMATS), how=st.sampled_from(["truncate", "flip"]),
       seed=st.integers(0, 10**6))
def test_random_and_corrupted_bytes_directly(model, blob, fmt, how, seed):
    for data in (blob, corrupt(encode(drawing((37, 23), "RGB"), fmt), how, seed)):
        try:
            result = model.colorize(data)
        except ValueError as err:
            assert_clear(str(err))
            continue
        assert result.size == Image.open(io.BytesIO(data)).size


# ---- the endpoints, on a server process of their own -------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from gradio_client import Client, handle_file

    folder = tmp_path_factory.mktemp("fuzz_server")
    args = argparse.Namespace(queue_size=4, max_pixels=SERVER_MAX_PIXELS)
    proc, url, log = load_test.start_server(write_export(folder / "export"), args, folder / "server.log")
    try:
        client = Client(url, verbose=False)
        line = folder / "line.png"
        drawing((61, 100)).save(line)
        for _ in range(3):  # warm-up: the first requests allocate the model's and Gradio's buffers
            assert Image.open(client.predict(handle_file(str(line)), api_name="/colorize_file")).size == (61, 100)
        yield {"client": client, "pid": proc.pid, "folder": folder, "line": line,
               "warm_mib": load_test.rss_mib(proc.pid)}
    finally:
        load_test.stop_server(proc, log)


def call(server, path: Path, endpoint: str, hints: Path = None, palette="", mode=None):
    """One request -> ("image", (W, H)) or ("error", message)."""
    from gradio_client import handle_file

    client = server["client"]
    try:
        if endpoint == "/colorize_file":
            kwargs = {"palette": palette, "mode": mode if mode is not None else ""}
            if hints is not None:
                kwargs["hints"] = handle_file(str(hints))
            result = client.predict(handle_file(str(path)), api_name="/colorize_file", **kwargs)
        else:
            value = {"background": handle_file(str(path)),
                     "layers": [handle_file(str(hints))] if hints is not None else [], "composite": None}
            label = mode if mode is not None else ("painted hints" if hints is not None else
                                                   "palette" if palette else "automatic")
            result = client.predict(value, label, palette, api_name="/colorize")
    except Exception as err:  # noqa: BLE001  (the error message is what is checked)
        return "error", " ".join(str(err).split())
    with Image.open(result) as image:
        return "image", image.size


def check(outcome, expected_size) -> None:
    kind, value = outcome
    if kind == "error":
        assert_clear(value)
    else:
        assert expected_size is not None, "an unreadable file was answered with an image"
        assert value == expected_size


@pytest.mark.parametrize("endpoint", ["/colorize_file", "/colorize"])
def test_named_odd_files_through_the_endpoints(server, odd, endpoint):
    for name, (path, expected) in odd.items():
        kind, value = call(server, path, endpoint)
        if isinstance(expected, tuple):
            assert (kind, value) == ("image", expected), name
        else:
            assert kind == "error" and expected in value, f"{name}: {value}"
            assert_clear(value)


@pytest.mark.parametrize("endpoint", ["/colorize_file", "/colorize"])
def test_odd_hints_and_palettes_through_the_endpoints(server, endpoint, tmp_path):
    other = tmp_path / "other_size.png"
    Image.new("RGBA", (20, 20), (230, 57, 70, 255)).save(other)
    kind, message = call(server, server["line"], endpoint, hints=other)
    assert kind == "error" and "hints are 20x20 but the line art is 61x100" in message
    for palette, expected in [("#zzzzzz", "'#zzzzzz' is not a colour"), ("", "needs at least one colour"),
                              (" , ,", "needs at least one colour"),
                              (", ".join(["#e63946"] * 500), "the palette has 500 colours")]:
        kind, message = call(server, server["line"], endpoint, palette=palette, mode="palette")
        assert kind == "error" and expected in message, (palette[:20], message)
    if endpoint == "/colorize_file":  # an API client can send any JSON value
        for palette, mode in [(123, ""), ("", ["palette"]), ("#e63946", "sepia")]:
            kind, message = call(server, server["line"], endpoint, palette=palette, mode=mode)
            assert kind == "error" and ("must be text" in message or "is not one of" in message), message


@settings(max_examples=12)
@given(image=images(max_side=80), fmt=st.sampled_from(FORMATS), how=st.sampled_from(["none", "truncate", "flip"]),
       seed=st.integers(0, 10**6), endpoint=st.sampled_from(["/colorize_file", "/colorize"]))
def test_generated_files_through_the_endpoints(server, image, fmt, how, seed, endpoint):
    path = server["folder"] / f"generated.{fmt.lower()}"
    path.write_bytes(corrupt(encode(image, fmt), how, seed))
    check(call(server, path, endpoint), oriented_size(path))


def test_server_still_answers_and_its_memory_stayed_bounded(server):
    """Runs last in this file: the peak (VmHWM) covers every request above."""
    assert call(server, server["line"], "/colorize_file") == ("image", (61, 100))
    status = Path(f"/proc/{server['pid']}/status")
    if not status.is_file():
        pytest.skip("no /proc here: the server's peak memory cannot be read")
    peak = next(int(line.split()[1]) / 1024 for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
    assert peak - server["warm_mib"] < MEMORY_BUDGET_MIB, f"peak {peak:.0f} MiB, after warm-up {server['warm_mib']:.0f}"
