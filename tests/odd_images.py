"""The named odd inputs of the demo's fuzz tests, written fresh (and identically) by each test session.

``write_odd_images(folder)`` -> {name: (path, expected)}: expected is the (W, H) of the coloured
result (EXIF orientation applied), or the text a clear refusal contains.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

UNREADABLE = "is not a readable image"
TOO_LARGE = "more than the limit"


def drawing(size: tuple, mode: str = "L") -> Image.Image:
    """A black ellipse outline and a diagonal on white, ``size`` (W, H), converted to ``mode``."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    draw.ellipse((1, 1, max(2, size[0] - 2), max(2, size[1] - 2)), outline=0, width=2)
    draw.line((0, 0, size[0] - 1, size[1] - 1), fill=0, width=1)  # lines even in a 1-pixel strip
    return image.convert(mode)


def png_header_only(width: int, height: int, color_type: int = 6) -> bytes:
    """A valid PNG signature and IHDR claiming ``width`` x ``height`` (RGBA by default), with a
    tiny IDAT: a few hundred bytes on disk that would take width*height*4 bytes once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + chunk(b"IEND", b""))


def write_odd_images(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    cases = {}

    def add(name: str, filename: str, expected, write) -> None:
        path = folder / filename
        write(path)
        cases[name] = (path, expected)

    rng = np.random.default_rng(0)
    for ext in ("png", "jpg", "webp", "gif"):
        add(f"random bytes .{ext}", f"random.{ext}", UNREADABLE, lambda p: p.write_bytes(rng.bytes(3000)))
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg")):
        buffer = io.BytesIO()
        drawing((120, 90), "RGB").save(buffer, fmt)
        data = buffer.getvalue()
        add(f"truncated {fmt}", f"truncated.{ext}", UNREADABLE, lambda p, d=data: p.write_bytes(d[: len(d) // 2]))
    # PIL refuses 2.5 G pixels itself. A real 12,000 x 12,000 drawing (a 200 KB PNG) is under PIL's
    # own limit: only the check of its header stops the demo from decoding it (144 MB, 576 MB as RGBA).
    add("decompression bomb 50000x50000", "bomb.png", UNREADABLE,
        lambda p: p.write_bytes(png_header_only(50_000, 50_000)))

    def big(path):
        image = Image.new("L", (12_000, 12_000), 255)
        ImageDraw.Draw(image).line((0, 0, 11_999, 11_999), fill=0, width=3)
        image.save(path, compress_level=9)
    add("12000x12000 drawing", "big.png", TOO_LARGE, big)
    add("1 pixel", "one_pixel.png", (1, 1), lambda p: Image.new("L", (1, 1), 0).save(p))
    add("1x10000", "tall.png", (1, 10_000), lambda p: drawing((1, 10_000)).save(p))
    add("16-bit", "sixteen.png", (70, 50),
        lambda p: Image.fromarray(np.asarray(drawing((70, 50)), np.uint16) * 257).save(p))
    add("CMYK", "cmyk.jpg", (70, 50), lambda p: drawing((70, 50), "RGB").convert("CMYK").save(p))
    add("palette", "palette.png", (70, 50), lambda p: drawing((70, 50), "RGB").convert("P").save(p))

    def la(path):
        image = drawing((70, 50)).convert("LA")
        image.putalpha(200)
        image.save(path)
    add("LA", "la.png", (70, 50), la)
    frames = [drawing((70, 50), "RGB"), Image.new("RGB", (70, 50), "red")]
    for ext in ("gif", "webp"):
        add(f"animated {ext}", f"animated.{ext}", (70, 50),
            lambda p: frames[0].save(p, save_all=True, append_images=frames[1:], duration=100))
    for orientation, size in ((3, (70, 50)), (6, (50, 70)), (8, (50, 70))):
        def rotated(path, orientation=orientation):
            exif = Image.Exif()
            exif[0x0112] = orientation
            drawing((70, 50), "RGB").save(path, exif=exif)
        add(f"EXIF orientation {orientation}", f"exif{orientation}.jpg", size, rotated)
    return cases
