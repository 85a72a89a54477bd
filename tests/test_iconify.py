"""data_prep iconify: tiny fake @iconify-json packages (folder and .tgz) imported offline; groups shared
across skin tones and sets, licences and Twemoji refused before anything is fetched, npm missing."""
import io
import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep import iconify, lineart
from data_prep.openmoji import svg_files
from data_prep.__main__ import main
from data_prep.common import split_for

SIZE = 48


def outlined(fill: str, shape: str = "circle") -> str:
    """A coloured shape with a dark outline in a 32-unit box: something any line extractor finds."""
    if shape == "circle":
        return f'<circle cx="16" cy="16" r="11" fill="{fill}" stroke="#111" stroke-width="2"/>'
    return f'<rect x="5" y="7" width="22" height="18" fill="{fill}" stroke="#111" stroke-width="2"/>'


def write_package(root: Path, prefix: str, icons: dict, licence: str = "MIT", chars: dict | None = None,
                  aliases: dict | None = None, name: str | None = None) -> Path:
    """An unpacked @iconify-json package: package.json, info.json, icons.json (box 32x32), chars.json."""
    root.mkdir(parents=True)
    (root / "package.json").write_text(json.dumps({"name": f"@iconify-json/{prefix}", "version": "1.2.3",
                                                   "license": licence}))
    (root / "info.json").write_text(json.dumps({"prefix": prefix, "name": name or prefix.title(),
                                                "author": {"name": "Test Artist", "url": "https://example.org/art"},
                                                "license": {"title": licence, "spdx": licence}, "palette": True}))
    (root / "icons.json").write_text(json.dumps({"prefix": prefix, "icons": icons, "aliases": aliases or {},
                                                 "width": 32, "height": 32}))
    if chars is not None:
        (root / "chars.json").write_text(json.dumps(chars))
    return root


def as_tgz(folder: Path, tgz: Path) -> Path:
    """The folder packed as npm does: every file under ``package/``."""
    with tarfile.open(tgz, "w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=f"package/{path.name}")
    return tgz


WIDE_BODY = '<rect x="0" y="-20" width="64" height="72" fill="#d22"/>'  # spills past its 64x32 box on purpose


@pytest.fixture
def packages(tmp_path) -> tuple:
    """(folder of set "testemoji", .tgz of set "otheremoji")."""
    emoji = write_package(tmp_path / "pkg-emoji", "testemoji", {
        "grinning": {"body": outlined("#fc0")},
        "waving-hand": {"body": outlined("#fd5", "rect")},
        "waving-hand-medium": {"body": outlined("#a65", "rect")},
        "wide": {"body": WIDE_BODY, "width": 64},
        "ghost": {"body": outlined("#ccc"), "hidden": True},
        "broken": {"body": '<path d="M0 0 L'},
        "blank": {"body": ""},
        "bodiless": {"width": 32},
    }, chars={"1f600": "grinning", "1f44b": "waving-hand", "1f44b-1f3fd": "waving-hand-medium"},
        aliases={"wave": {"parent": "waving-hand"}})
    other_dir = write_package(tmp_path / "pkg-other", "otheremoji", {
        "hand": {"body": outlined("#fb4", "rect")},
        "star": {"body": outlined("#36f")},
        "star-tone2": {"body": outlined("#63f")},
    }, licence="CC-BY-4.0", chars={"1f44b-fe0f": "hand"})
    return emoji, as_tgz(other_dir, tmp_path / "otheremoji-1.2.3.tgz")


def run_import(out: Path, *args: str) -> int:
    return main(["iconify", "--out", str(out), "--size", str(SIZE), "--workers", "1", *args])


def read(out: Path) -> tuple:
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return {r["id"]: r for r in records}, json.loads((out / "report.json").read_text())


def test_import_from_folder_and_tgz_writes_pairs_groups_and_report(tmp_path, packages):
    emoji, other_tgz = packages
    out = tmp_path / "out"
    assert run_import(out, "--package-dir", str(emoji), str(other_tgz)) == 0
    records, report = read(out)
    assert sorted(records) == ["otheremoji_hand", "otheremoji_star", "otheremoji_star-tone2", "testemoji_grinning",
                               "testemoji_waving-hand", "testemoji_waving-hand-medium", "testemoji_wide"]
    style = lineart.extractor(lineart.DEFAULT_LINES).describe()
    for r in records.values():
        assert r["split"] == split_for(r["group"]) and r["style"] == style
        prefix, name = r["id"].split("_", 1)
        assert (r["set"], r["source"]) == (prefix, f"iconify:{prefix}/{name}")
        with Image.open(out / r["line"]) as line, Image.open(out / r["color"]) as color:
            assert (line.mode, line.size, color.mode, color.size) == ("L", (SIZE, SIZE), "RGB", (SIZE, SIZE))
            assert (np.asarray(line) < 128).any()
    # one emoji, one group: skin-tone variant with its base, and across sets (FE0F ignored)
    hands = {records[i]["group"] for i in ("testemoji_waving-hand", "testemoji_waving-hand-medium", "otheremoji_hand")}
    assert hands == {"1F44B"}  # OpenMoji's own group of the emoji: the same split as in OpenMoji
    assert records["testemoji_grinning"]["group"] == "1F600"
    assert records["otheremoji_star"]["group"] == records["otheremoji_star-tone2"]["group"] == "otheremoji:star"
    assert records["testemoji_wide"]["group"] == "testemoji:wide"
    skipped = report["skipped"]
    assert skipped[iconify.HIDDEN] == ["testemoji/ghost"]
    assert skipped[iconify.EMPTY_LINES] == ["iconify:testemoji/blank"]
    assert [k for k, v in skipped.items() if v == ["iconify:testemoji/broken"]][0].startswith("unrenderable SVG")
    assert skipped["unusable icon entry (KeyError)"] == ["iconify:testemoji/bodiless"]
    assert report["found"] == 11 and report["imported"] == 7 and report["lines"] == style
    mine, other = report["sets"]["testemoji"], report["sets"]["otheremoji"]
    assert (mine["aliases_skipped"], mine["icons"], mine["imported"], mine["licence"]) == (1, 8, 4, "MIT")
    assert (other["licence"], other["version"], other["imported"]) == ("CC-BY-4.0", "1.2.3", 3)
    assert report["licences"] == ["testemoji: MIT", "otheremoji: CC-BY-4.0"]
    assert all("Test Artist" in a and "https://example.org/art" in a for a in report["attribution"])


def test_non_square_icon_is_centred_on_white_padding_and_clipped_to_its_box(tmp_path, packages):
    out = tmp_path / "out"
    assert run_import(out, "--package-dir", str(packages[0])) == 0
    with Image.open(out / "color" / "testemoji_wide.png") as im:
        rgb = np.asarray(im).astype(int)  # (48, 48, 3): a 64x32 box -> 48x24 in rows 12..35
    assert (rgb[:11] == 255).all() and (rgb[37:] == 255).all()  # the spill above and below the box is clipped
    assert (rgb[14:34, :, 0] > 180).all() and (rgb[14:34, :, 1] < 80).all()  # red across the full width


def test_limit_counts_per_set_and_skips_hidden_icons(tmp_path, packages):
    out = tmp_path / "out"
    assert run_import(out, "--package-dir", *map(str, packages), "--limit", "2") == 0
    records, report = read(out)
    assert sorted(records) == ["otheremoji_hand", "otheremoji_star"]  # testemoji's first two: blank, bodiless
    assert report["sets"]["testemoji"]["imported"] == 0 and report["found"] == 5  # 2 + 2 + the hidden one
    assert report["skipped"][iconify.HIDDEN] == ["testemoji/ghost"]


@pytest.mark.parametrize("licence", ["GPL-3.0", "proprietary", "OFL-1.1", "CC-BY-NC-4.0"])
def test_a_set_whose_package_states_another_licence_is_refused(tmp_path, capsys, licence):
    pkg = write_package(tmp_path / "pkg", "closedset", {"a": {"body": outlined("#f00")}}, licence=licence)
    out = tmp_path / "out"
    assert run_import(out, "--package-dir", str(pkg)) == 2
    err = capsys.readouterr().err
    assert "closedset" in err and licence in err
    assert not out.exists()  # refused before anything is written


def test_package_json_licence_is_checked_too(tmp_path, capsys):
    pkg = write_package(tmp_path / "pkg", "mixed", {"a": {"body": outlined("#f00")}})
    (pkg / "package.json").write_text(json.dumps({"name": "@iconify-json/mixed", "license": "GPL-3.0"}))
    assert run_import(tmp_path / "out", "--package-dir", str(pkg)) == 2
    assert "GPL-3.0" in capsys.readouterr().err


@pytest.fixture
def fake_npm(monkeypatch, packages):
    """npm "on PATH"; ``npm pack`` writes the otheremoji tarball into --pack-destination. -> the calls."""
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("--pack-destination") + 1])
        name = cmd[2].removeprefix("@iconify-json/")
        (dest / f"iconify-json-{name}-1.2.3.tgz").write_bytes(packages[1].read_bytes())
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(iconify.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(iconify.subprocess, "run", fake_run)
    return calls


@pytest.mark.parametrize("names", [["twemoji"], ["otheremoji", "@iconify-json/twemoji"], ["TwEmoji-Flat"]])
def test_twemoji_is_refused_by_name_before_anything_is_fetched(tmp_path, capsys, fake_npm, names):
    out = tmp_path / "out"
    assert run_import(out, *names, "--cache", str(tmp_path / "cache")) == 2
    assert "held-out evaluation set" in capsys.readouterr().err
    assert fake_npm == [] and not (tmp_path / "cache").exists() and not out.exists()


def test_twemoji_inside_a_local_package_is_refused(tmp_path, capsys):
    pkg = write_package(tmp_path / "pkg", "emoji-pack", {"a": {"body": outlined("#f00")}}, name="Twemoji repack")
    assert run_import(tmp_path / "out", "--package-dir", str(pkg)) == 2
    assert "held-out evaluation set" in capsys.readouterr().err


def test_fetched_packages_are_cached_and_not_fetched_again(tmp_path, fake_npm):
    cache = tmp_path / "cache"
    assert run_import(tmp_path / "a", "@iconify-json/otheremoji", "--cache", str(cache)) == 0
    assert run_import(tmp_path / "b", "otheremoji", "--cache", str(cache)) == 0
    assert len(fake_npm) == 1 and fake_npm[0][1:3] == ["pack", "@iconify-json/otheremoji"]
    assert [p.name for p in cache.iterdir()] == ["iconify-json-otheremoji-1.2.3.tgz"]  # no temporary folder left
    assert read(tmp_path / "a")[0].keys() == read(tmp_path / "b")[0].keys() == {
        "otheremoji_hand", "otheremoji_star", "otheremoji_star-tone2"}


def test_missing_npm_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(iconify.shutil, "which", lambda name: None)
    assert run_import(tmp_path / "out", "fluent-emoji-flat", "--cache", str(tmp_path / "cache")) == 2
    err = capsys.readouterr().err
    assert "this source needs npm (Node.js): apt install npm, or pass --package-dir" in err


def test_failed_npm_pack_names_the_set(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(iconify.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(iconify.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 1, stdout="", stderr="npm error 404 Not Found - GET https://registry.npmjs.org/@iconify-json%2fnope"))
    assert run_import(tmp_path / "out", "nope", "--cache", str(tmp_path / "cache")) == 2
    err = capsys.readouterr().err
    assert "npm pack @iconify-json/nope failed" in err and "404" in err


def test_tarball_members_outside_the_package_are_refused(tmp_path):
    evil = tmp_path / "evil.tgz"
    with tarfile.open(evil, "w:gz") as tar:
        data = b"owned"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (tmp_path / "dest").mkdir()
    with pytest.raises(iconify.PrepError, match="evil.tgz"):
        iconify.extract(evil, tmp_path / "dest")
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize("name, group", [
    ("waving-hand", "p:waving-hand"),
    ("waving-hand-medium-light", "p:waving-hand"),
    ("waving-hand-medium-dark-skin-tone", "p:waving-hand"),
    ("handshake-light-dark", "p:handshake"),
    ("thumbs-up-tone-3", "p:thumbs-up"),
    ("thumbs-up-tone5", "p:thumbs-up"),
    ("dark", "p:dark"),  # nothing left after stripping: the name itself
    ("darkness", "p:darkness"),
])
def test_name_group_strips_skin_tone_suffixes(name, group):
    assert iconify.name_group("p", name) == group


def test_emoji_groups_ignore_case_variation_selectors_and_skin_tones():
    groups = iconify.emoji_groups({"23-fe0f-20e3": "keycap", "1F44B-1F3FB": "wave-light",
                                   "1f3f3-fe0f-200d-1f308": "flag", "1f3f3-200d-1f308": "flag", "not-hex": "odd"})
    # OpenMoji's groups, FE0F as in its file names, so each emoji takes its OpenMoji split
    assert groups == {"keycap": "0023-FE0F-20E3", "wave-light": "1F44B", "flag": "1F3F3-FE0F-200D-1F308"}
    openmoji_stems = {path.stem for path in svg_files()}
    assert {"0023-FE0F-20E3", "1F44B", "1F3F3-FE0F-200D-1F308"} <= openmoji_stems
    assert iconify.emoji_groups({"e0ff0-1f3fb": "private"}) == {"private": "E0FF0"}  # not in OpenMoji: its key


@pytest.mark.parametrize("spec", ["--help", "Noto", "../noto", ""])
def test_bad_set_names_are_refused(spec):
    with pytest.raises(iconify.PrepError, match="not an Iconify set name"):
        iconify.set_name(spec)
    assert iconify.set_name("@iconify-json/noto-v1") == "noto-v1"
