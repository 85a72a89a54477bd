"""colorizer/files.py: uploads decoded within their limits, result files written atomically and once,
and the cache trimmed oldest first. The same limits on a running demo: test_demo_limits.py."""
import io
import time

import numpy as np
import pytest
from PIL import Image

from colorizer import files
from colorizer.images import png_bytes


def cache_bytes(cache) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())


def aged_files(folder, names, size=1000) -> None:
    """One ``size``-byte file per name, each in its own folder as Gradio keeps them, oldest first."""
    for name in names:
        path = folder / name / "file.bin"
        path.parent.mkdir()
        path.write_bytes(b"x" * size)
        time.sleep(0.05)  # ctime (what the cache ages by) cannot be set: space the writes out


def test_identical_results_share_one_cache_file_written_once(tmp_path):
    """Under load, identical results must not rewrite a file a client may be downloading."""
    data = png_bytes([Image.new("RGB", (61, 100), (200, 30, 40))])[0]
    first = files.cache_file(data, tmp_path, "colorized.png")
    written = (tmp_path / first).stat()
    time.sleep(0.05)  # more than the kernel's timestamp granularity
    second = files.cache_file(bytes(data), tmp_path, "colorized.png")
    assert second == first and (tmp_path / second).stat().st_ino == written.st_ino
    assert (tmp_path / second).stat().st_mtime_ns == written.st_mtime_ns  # not rewritten ...
    assert (tmp_path / second).stat().st_ctime_ns > written.st_ctime_ns  # ... but not aged out by the cleaner either
    assert Image.open(second).size == (61, 100) and not list(tmp_path.rglob("*.tmp"))


def test_trim_cache_deletes_the_oldest_first(tmp_path):
    aged_files(tmp_path, ("old", "mid", "new"))
    assert files.trim_cache(str(tmp_path), 3000) == 0
    assert files.trim_cache(str(tmp_path), 2000) == 1000
    assert not (tmp_path / "old").exists() and (tmp_path / "new" / "file.bin").is_file()
    kept = {str(tmp_path / "mid" / "file.bin")}
    assert files.trim_cache(str(tmp_path), 1000, keep=kept) == 1000 and (tmp_path / "mid" / "file.bin").is_file()
    assert files.trim_cache(str(tmp_path), 0) == 1000 and cache_bytes(tmp_path) == 0


def test_cached_results_trim_the_cache_but_never_themselves(tmp_path):
    aged_files(tmp_path, ("old", "example"))
    example = str(tmp_path / "example" / "file.bin")
    named = [("colorized.png", b"a" * 600), ("colorized.psd", b"b" * 600)]
    paths = files.cache_files(named, tmp_path, max_bytes=1500, keep={example})
    assert [p.rsplit("/", 1)[1] for p in paths] == ["colorized.png", "colorized.psd"]
    assert all(open(p, "rb").read() == data for p, (_, data) in zip(paths, named))
    assert not (tmp_path / "old").exists() and (tmp_path / "example" / "file.bin").is_file()
    assert files.cache_files(named, tmp_path) == paths  # without a limit nothing is trimmed, nothing rewritten


def test_write_file_replaces_a_file_whole(tmp_path):
    target = tmp_path / "out" / "drawing.png"
    assert files.write_file(target, b"first") == target and target.read_bytes() == b"first"
    files.write_file(target, b"second")
    assert target.read_bytes() == b"second" and sorted(p.name for p in target.parent.iterdir()) == ["drawing.png"]


def test_an_upload_is_read_only_from_the_upload_folder_and_within_the_pixel_limit(tmp_path):
    uploads, elsewhere = tmp_path / "uploads", tmp_path / "secret"
    uploads.mkdir(), elsewhere.mkdir()
    Image.new("L", (40, 30), 255).save(uploads / "line.png")
    Image.new("L", (40, 30), 255).save(elsewhere / "line.png")
    (uploads / "notes.png").write_text("not an image")
    image = files.open_upload({"path": str(uploads / "line.png")}, "line art", str(uploads), 40 * 30)
    assert image.size == (40, 30)
    with pytest.raises(ValueError, match="must be an uploaded file"):
        files.open_upload({"path": str(elsewhere / "line.png")}, "line art", str(uploads), 10**6)
    with pytest.raises(ValueError, match="must be an uploaded file"):
        files.open_upload({"path": str(uploads / ".." / "secret" / "line.png")}, "line art", str(uploads), 10**6)
    with pytest.raises(ValueError, match=r"the line art \(notes.png\) is not a readable image"):
        files.open_upload({"path": str(uploads / "notes.png")}, "line art", str(uploads), 10**6)
    with pytest.raises(ValueError, match="more than the limit of 1,000 pixels"):
        files.open_upload({"path": str(uploads / "line.png")}, "line art", str(uploads), 1000)
    with pytest.raises(ValueError, match="no hints image given"):
        files.open_upload(None, "hints image", str(uploads), 10**6)


def test_the_editor_layer_is_oriented_and_its_hints_are_the_first_painted_layer():
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees clockwise to display
    Image.new("L", (40, 30), 255).save(rotated, format="jpeg", exif=exif)
    assert files.editor_layer(rotated.getvalue(), True, 10**6).shape == (40, 30, 4)  # the line art, upright
    assert files.editor_layer(rotated.getvalue(), False, 10**6).shape == (30, 40, 4)  # a painted layer, as stored
    assert files.editor_layer(None, True, 10**6) is None

    line = np.full((30, 40, 4), 255, np.uint8)
    line[10:20, 10:20, :3] = 0
    blank, painted = np.zeros((30, 40, 4), np.uint8), np.zeros((30, 40, 4), np.uint8)
    painted[5:8, 5:8] = (230, 57, 70, 255)
    art, hints = files.editor_images({"background": line, "layers": [blank, painted]})
    assert art.mode == "RGBA" and art.size == (40, 30) and hints.getpixel((6, 6)) == (230, 57, 70, 255)
    assert files.editor_images({"background": line, "layers": [blank]})[1] is None
    for empty in ({"background": None}, {"background": blank}, {"background": np.full((30, 40, 3), 9, np.uint8)}):
        with pytest.raises(ValueError, match="empty canvas"):
            files.editor_images(empty)
