"""serve.py exposed: upload size and cache limits, the login on every route, the exposure warning."""
import os
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from conftest import ROOT
from test_serve import MAX_PIXELS, free_port, save_line_art, write_export

sys.path.insert(0, str(ROOT))
import serve  # noqa: E402

FILE_LIMIT_MB = 0.25
CACHE_LIMIT_MB = 1.0


def start(folder: Path, monkeypatch, **launch_kwargs) -> tuple:
    """A demo with its own cache folder on a free port -> (url, cache folder, demo)."""
    from colorizer.inference import Colorizer

    cache = folder / "cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))  # Gradio reads it when the app is built
    example = save_line_art(folder / "example.png")
    demo = serve.build_demo(Colorizer.load(write_export(folder / "export"), max_pixels=MAX_PIXELS),
                            examples=[str(example)])
    port = free_port()
    serve.launch(demo, port=port, prevent_thread_lock=True, **launch_kwargs)
    return f"http://127.0.0.1:{port}/", cache, demo


def cache_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())


def upload(url: str, data: bytes, name: str = "drawing.png", **kwargs) -> httpx.Response:
    return httpx.post(url + "gradio_api/upload", files={"files": (name, data, "image/png")}, timeout=60, **kwargs)


@pytest.fixture
def limited(tmp_path, monkeypatch):
    url, cache, demo = start(tmp_path, monkeypatch, max_file_mb=FILE_LIMIT_MB, max_cache_mb=CACHE_LIMIT_MB)
    try:
        yield url, cache, demo
    finally:
        demo.close()


def test_an_oversized_upload_is_refused_before_it_is_stored(limited, tmp_path):
    from gradio_client import Client, handle_file

    url, cache, _ = limited
    limit = int(FILE_LIMIT_MB * serve.MIB)
    response = upload(url, os.urandom(2 * limit), "big.png")
    assert response.status_code == 413
    assert f"maximum allowed size of {limit} bytes" in response.text
    assert all(p.stat().st_size < limit for p in cache.rglob("*") if p.is_file())  # no partial copy kept
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(2 * limit))
    with pytest.raises(Exception, match=f"exceeds the maximum file size of {limit} bytes"):
        Client(url, verbose=False).predict(handle_file(str(big)), api_name="/colorize_file")
    assert upload(url, os.urandom(limit // 2)).status_code == 200  # under the limit: accepted


def test_the_cache_never_exceeds_its_limit_under_a_stream_of_uploads(limited, tmp_path):
    from gradio_client import Client, handle_file

    url, cache, demo = limited
    limit = int(CACHE_LIMIT_MB * serve.MIB)
    examples = serve.kept_files(demo)
    assert examples and all(Path(p).is_relative_to(cache) for p in examples)  # the page's example, cached
    for i in range(20):  # 20 x 0.2 MiB into 1 MiB
        response = upload(url, os.urandom(200_000), f"u{i}.png")
        assert response.status_code == 200
        assert cache_bytes(cache) <= limit, f"after upload {i}"
        assert Path(response.json()[0]).is_file()  # the newest upload is kept for its request
    # Results are cached too, and trimmed after they are written.
    client = Client(url, verbose=False)
    line = save_line_art(tmp_path / "line.png")
    for palette in ("#e63946", "#457b9d", "#2a9d8f"):
        result = client.predict(handle_file(str(line)), palette=palette, api_name="/colorize_file")
        assert Image.open(result).size == (61, 100)
        assert cache_bytes(cache) <= limit
    assert all(Path(p).is_file() for p in examples)  # the oldest files, but never deleted
    kept = {p.name for p in cache.rglob("u*.png")}
    assert kept and not kept & {"u0.png", "u1.png", "u2.png"} and "u19.png" in kept  # the oldest went first


def test_with_auth_nothing_is_reachable_without_the_login(tmp_path, monkeypatch):
    from gradio_client import Client, handle_file

    url, _, demo = start(tmp_path, monkeypatch, auth=("ann", "s3cret"))
    try:
        assert upload(url, b"\x89PNG not really").status_code == 401
        assert httpx.post(url + "gradio_api/call/colorize_file", json={"data": [None]}, timeout=30).status_code == 401
        assert httpx.post(url + "gradio_api/queue/join", json={"fn_index": 0, "data": []},
                          timeout=30).status_code == 401
        assert httpx.get(url + "config", timeout=30).status_code == 401
        with pytest.raises(Exception):
            Client(url, verbose=False, auth=("ann", "wrong"))
        line = save_line_art(tmp_path / "line.png")
        result = Client(url, verbose=False, auth=("ann", "s3cret")).predict(handle_file(str(line)),
                                                                          api_name="/colorize_file")
        assert Image.open(result).size == (61, 100)
    finally:
        demo.close()


@pytest.mark.parametrize("host,auth,share,exposed", [
    ("127.0.0.1", None, False, False), ("localhost", None, False, False), ("::1", None, False, False),
    ("0.0.0.0", None, False, True), ("192.168.1.20", None, False, True), ("my-box.lan", None, False, True),
    ("0.0.0.0", "ann:s3cret", False, False), ("127.0.0.1", None, True, True)])
def test_exposure_warning_names_the_risk(host, auth, share, exposed):
    warning = serve.exposure_warning(host, auth, share)
    assert (warning is not None) == exposed
    if exposed:
        assert "without --auth" in warning and "upload files" in warning and "--auth USER:PASS" in warning


def test_main_warns_and_applies_the_limits(tmp_path, monkeypatch, caplog):
    launched = {}
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))  # restored after the test: main sets it
    monkeypatch.setattr(serve, "launch", lambda demo, *args, **kwargs: launched.update(kwargs, demo=demo))
    export = write_export(tmp_path / "export")
    code = serve.main(["--checkpoint", str(export), "--host", "0.0.0.0", "--max-file-mb", "5",
                       "--max-cache-mb", "40", "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    assert "WARNING: --host 0.0.0.0 without --auth" in caplog.text
    assert launched["max_file_mb"] == 5 and launched["max_cache_mb"] == 40
    assert Path(launched["demo"].GRADIO_CACHE) == (tmp_path / "cache").resolve()


@pytest.mark.parametrize("bad", [["--max-file-mb", "0"], ["--max-file-mb", "30", "--max-cache-mb", "100"]])
def test_upload_limits_must_leave_room(bad, capsys):
    with pytest.raises(SystemExit):
        serve.parse_args(bad)
    assert "--max-cache-mb >= 4 x --max-file-mb" in capsys.readouterr().err
