"""The demo under load: tools/load_test.py at a reduced count against its own local server."""
import json
import subprocess
import sys

from conftest import ROOT


def test_load_test_reduced(tmp_path):
    out = tmp_path / "load.json"
    cmd = [sys.executable, str(ROOT / "tools" / "load_test.py"), "--requests", "20", "--clients", "4",
           "--burst", "16", "--timeout", "60", "--max-seconds", "180", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["requests"] == 20 and result["failures"] == 0
    assert result["good"] == result["good_images"] == 14  # every good input got an image of its size
    assert result["bad"] == result["bad_refused"] == 6  # every bad one an error saying what is wrong
    burst = result["burst"]  # 16 at once into a queue of 4 with 1 worker: some must be turned away
    assert burst["rejected"] >= 1 and burst["images"] + burst["rejected"] == 16 and burst["answered_after"]
    # A leak raises every later sample: the trend after warm-up must stay flat. The growth from warm-up
    # to the end also holds what the allocator keeps after the burst's larger drawings (their
    # full-resolution compositing buffers: +58 to +143 MiB measured), so its bound is looser.
    assert result["rss_trend_mib"] is None or result["rss_trend_mib"] < 50
    assert result["rss_growth_mib"] is None or result["rss_growth_mib"] < 250
    for line in ("requests 20 from 4 clients", "latency p50", "failures 0"):
        assert line in proc.stdout


def test_result_pngs_are_lossless_and_in_order():
    """The page's layers are encoded side by side at a fast zlib level: still exactly the pixels."""
    import io

    import numpy as np
    from PIL import Image

    from colorizer.images import PNG_COMPRESS_LEVEL, png_bytes

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)),
              Image.fromarray(rng.integers(0, 256, (90, 130, 4), dtype=np.uint8), "RGBA"),
              Image.new("L", (7, 3), 9)]
    encoded = png_bytes(images)
    assert PNG_COMPRESS_LEVEL == 1 and len(encoded) == 3
    for image, data in zip(images, encoded):
        back = Image.open(io.BytesIO(data))
        assert back.mode == image.mode and np.array_equal(np.asarray(back), np.asarray(image))
