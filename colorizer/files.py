"""The files a colouring takes in and gives out, for the demo and the command line alike.

- **Uploads** (the demo): ``open_upload`` opens a file sent to the API, only from the demo's upload
  folder; ``editor_layer`` decodes one layer of the page's editor; ``editor_images`` picks the line
  art and the painted hints out of the editor's value. Every image is opened by
  ``inference.open_image``, which checks the pixel limit from the header before decoding anything.
- **Results**: ``write_file`` writes one atomically (readers see the whole file or none), for the
  command line beside its drawings and for the demo in its cache, where ``cache_files`` keeps each
  in a folder named by its content, written once.
- **The cache's limit**: ``trim_cache`` deletes the oldest files past a size, and ``CacheLimit``
  (ASGI middleware) makes room before an upload is read and trims after it.

A bad upload is a ValueError whose message names the file and says what is wrong: the demo shows it
to its user. Nothing here imports Gradio or training code.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Optional

import anyio
import numpy as np
from PIL import Image, ImageOps

from .checkpoint import atomic_write
from .inference import HINT_ALPHA_THRESHOLD, open_image

log = logging.getLogger(__name__)
MIB = 1024 * 1024
CACHE_ROOM = 4  # the cache must hold at least this many of the largest uploads at once


# ---------------------------------------------------------------- uploads

def open_upload(upload, what: str, upload_folder: str, max_pixels: int) -> Image.Image:
    """A file sent to the API (``gradio_client.handle_file``: a dict or an object with a ``path``)
    -> the decoded PIL image; ValueError saying why if it is not one. Only files in the demo's
    upload folder are read: a client must not be able to name any file on the server."""
    if not upload:
        raise ValueError(f"no {what} given")
    path = upload.get("path") if isinstance(upload, dict) else getattr(upload, "path", upload)
    if not isinstance(path, str) or not Path(path).resolve().is_relative_to(Path(upload_folder).resolve()):
        raise ValueError(f"the {what} must be an uploaded file: send it with gradio_client.handle_file(path)")
    return open_image(path, f"the {what}", max_pixels)


def editor_layer(file, flatten_on_white: bool, max_pixels: int) -> Optional[np.ndarray]:
    """One layer the page's editor uploaded (a file with a ``path``, or bytes) -> (H, W, 4) uint8
    RGBA, or None for none; ValueError saying why if it is not a usable image. ``flatten_on_white``
    marks the line art (the background and the composite), whose EXIF orientation is applied as
    ``Colorizer.colorize`` applies it and as the browser shows it; without it, a painted layer."""
    if file is None:
        return None
    what = "the line art" if flatten_on_white else "the hint layer"
    image = open_image(file if isinstance(file, (bytes, bytearray)) else file.path, what, max_pixels)
    if flatten_on_white:
        image = ImageOps.exif_transpose(image)
    return np.array(image.convert("RGBA"))


def _image(array: np.ndarray, what: str) -> Image.Image:
    """An editor array (H, W), (H, W, 3) or (H, W, 4) -> PIL L, RGB or RGBA."""
    if array.ndim == 2:
        return Image.fromarray(array.astype(np.uint8), "L")
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"{what} has an unexpected shape {array.shape}")
    return Image.fromarray(array.astype(np.uint8), "RGBA" if array.shape[2] == 4 else "RGB")


def editor_images(value) -> tuple:
    """The page editor's value -> (line art, the first painted layer or None); ValueError for an
    empty canvas (nothing, fully transparent, or one flat colour)."""
    background = value.get("background") if isinstance(value, dict) else None
    if background is None or np.asarray(background).size == 0:
        raise ValueError("empty canvas: upload a line-art image first")
    background = np.asarray(background)
    if background.ndim == 3 and background.shape[2] == 4 and background[..., 3].max() == 0:
        raise ValueError("empty canvas: the image is fully transparent; upload line art")
    if background.min() == background.max():
        raise ValueError("empty canvas: the image is one flat colour; upload line art")
    hints = None
    for layer in value.get("layers") or []:
        layer = np.asarray(layer)
        if layer.ndim == 3 and layer.shape[2] == 4 and (layer[..., 3] > HINT_ALPHA_THRESHOLD).any():
            hints = _image(layer, "the hint layer")
            break
    return _image(background, "the line art"), hints


# ---------------------------------------------------------------- results

def write_file(path, data: bytes) -> Path:
    """Write a result file atomically: a crash or a reader never meets half a file. No fsync: a
    result lost to a power cut is made again."""
    atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data), durable=False)
    return Path(path)


def cache_file(data: bytes, cache_dir, filename: str) -> str:
    """Keep a result file's ``data`` as ``filename`` in the cache, in a folder named by its content
    -> its path. Written once: Gradio's own ``save_pil_to_cache`` rewrites an existing file in place
    when two results are identical, so a client still downloading the first copy can get a truncated
    body (the load test in tools/load_test.py found it with concurrent identical requests)."""
    path = Path(cache_dir) / hashlib.sha256(data).hexdigest() / filename
    try:
        # Written already: only touch its ctime (by which the cache cleaner ages files), so a result
        # handed out again is not deleted on the schedule of its first use; its bytes stay as they are.
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        return str(path)
    except FileNotFoundError:
        pass
    return str(write_file(path, data))


def cache_files(named: list, cache_dir, max_bytes: int = 0, keep=frozenset()) -> list:
    """(filename, bytes) pairs -> their paths in the cache (``cache_file``), in order; then, with
    ``max_bytes``, the cache trimmed to it, never deleting ``keep`` or these files."""
    paths = [cache_file(data, cache_dir, filename) for filename, data in named]
    if max_bytes:
        trim_cache(str(cache_dir), max_bytes, set(keep) | set(paths))
    return paths


# ---------------------------------------------------------------- the cache's limit

def trim_cache(folder: str, max_bytes: int, keep=frozenset()) -> int:
    """Delete the oldest files under ``folder`` (by ctime, the age Gradio's own cleaner uses) until
    what is left takes at most ``max_bytes``; returns the bytes freed. Paths in ``keep`` (the page's
    example drawings) are never deleted. Files other requests delete meanwhile are skipped, so
    concurrent calls are safe."""
    files = []
    for path in Path(folder).rglob("*"):
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if path.is_file() and str(path) not in keep:
            files.append((st.st_ctime_ns, st.st_size, path))
    total = sum(size for _, size, _ in files) + sum(Path(p).stat().st_size for p in keep if Path(p).is_file())
    freed = 0
    for _, size, path in sorted(files, key=lambda f: f[0]):
        if total - freed <= max_bytes:
            break
        try:
            path.unlink()
            freed += size
        except FileNotFoundError:
            continue
        if path.parent != Path(folder):
            try:
                path.parent.rmdir()  # Gradio keeps each file in a folder named by its hash
            except OSError:
                pass
    if freed:
        log.info("cache over %.0f MiB: deleted the oldest %.1f MiB", max_bytes / MIB, freed / MIB)
    return freed


def kept_files(demo) -> set:
    """The cached files Gradio itself never deletes (``keep_in_cache``: the examples' copies) of the
    app ``demo`` (a gr.Blocks)."""
    return set().union(*(getattr(block, "keep_in_cache", set()) for block in demo.blocks.values()))


class CacheLimit:
    """ASGI middleware keeping the demo's upload and result cache (``demo.GRADIO_CACHE``) under
    ``max_bytes``: before an upload is read, it makes room for the size the request declares;
    after it, it trims again. (Results trim after they are written: ``cache_files``.) Gradio's
    ``max_file_size`` bounds each upload, so between two trims the cache can only exceed the limit
    by the uploads in flight."""

    def __init__(self, app, demo, max_bytes: int):
        self.app, self.demo, self.max_bytes = app, demo, int(max_bytes)

    def trim(self, max_bytes: int) -> None:
        trim_cache(self.demo.GRADIO_CACHE, max_bytes, kept_files(self.demo))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/upload"):
            await self.app(scope, receive, send)
            return
        try:
            declared = int(dict(scope["headers"]).get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        await anyio.to_thread.run_sync(self.trim, max(0, self.max_bytes - declared))
        try:
            await self.app(scope, receive, send)
        finally:
            await anyio.to_thread.run_sync(self.trim, self.max_bytes)
