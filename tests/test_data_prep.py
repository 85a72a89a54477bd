"""data_prep: the one on-disk format from three sources, stable splits, and bad input that never stops a run."""
import json
import shutil
import struct
import subprocess
import sys
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from data_prep.__main__ import main
from data_prep.common import open_image, split_for
from data_prep.folder import EMPTY_LINES, GREYSCALE
from data_prep.lineart import XDoG
from data_prep.openmoji import SKIN_TONES, group_of, line_only, svg_files

ROOT = Path(__file__).resolve().parents[1]


def art(seed: int, size=(160, 120)) -> Image.Image:
    """A colourful synthetic illustration: saturated shapes with dark outlines on a light background."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(im)
    w, h = size
    for _ in range(8):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x1, y1 = x0 + int(rng.integers(15, w // 2)), y0 + int(rng.integers(15, h // 2))
        fill = tuple(int(v) for v in rng.permutation([int(rng.integers(0, 80)), int(rng.integers(80, 180)), 255]))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=fill, outline=(0, 0, 0), width=2)
    return im


def png16(rgb16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def read_manifest(out: Path) -> list:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]


def by_source(out: Path) -> dict:
    return {r["source"]: r for r in read_manifest(out)}


def assert_valid_dataset(out: Path, size: int) -> list:
    """The format contract colorizer/data.py relies on."""
    records = read_manifest(out)
    report = json.loads((out / "report.json").read_text())
    for key in ("source", "size", "found", "imported", "groups", "splits", "skipped", "duplicates", "elapsed_s"):
        assert key in report, key
    assert report["imported"] == len(records) > 0
    assert sum(report["splits"].values()) == len(records)
    assert len({r["id"] for r in records}) == len(records)
    splits_of_group = defaultdict(set)
    for r in records:
        assert r["split"] in ("train", "val", "test") and r["split"] == split_for(r["group"])
        splits_of_group[r["group"]].add(r["split"])
        with Image.open(out / r["line"]) as line, Image.open(out / r["color"]) as color:
            assert (line.mode, line.size) == ("L", (size, size))
            assert (color.mode, color.size) == ("RGB", (size, size))
    assert all(len(s) == 1 for s in splits_of_group.values())
    assert report["groups"] == len(splits_of_group)
    assert (out / "preview.png").is_file()
    return records


# ---- splits and groups -------------------------------------------------------------------------

def test_split_is_a_stable_70_20_10_function_of_the_group():
    groups = [f"folder/image_{i}.png" for i in range(4000)]
    first = [split_for(g) for g in groups]
    assert first == [split_for(g) for g in reversed(groups)][::-1]  # no dependence on order or state
    fractions = {s: first.count(s) / len(first) for s in ("train", "val", "test")}
    assert abs(fractions["train"] - 0.7) < 0.03 and abs(fractions["val"] - 0.2) < 0.03
    assert abs(fractions["test"] - 0.1) < 0.02


def test_skin_tone_variants_share_the_base_group_and_split():
    assert group_of("1F44B-1F3FD") == group_of("1F44B") == "1F44B"
    assert group_of("1F9D1-1F3FB-200D-1F91D-200D-1F9D1-1F3FF") == "1F9D1-200D-1F91D-200D-1F9D1"
    assert group_of("1F469-200D-2764-FE0F-200D-1F468") == "1F469-200D-2764-FE0F-200D-1F468"
    stems = {p.stem for p in svg_files()}
    family = defaultdict(set)
    for stem in stems:
        family[group_of(stem)].add(stem)
    assert family["1F44B"] == {"1F44B"} | {f"1F44B-{tone}" for tone in SKIN_TONES}
    variants = [s for s in stems if SKIN_TONES & set(s.split("-"))]
    with_base = [s for s in variants if group_of(s) in stems]  # a few mixed-tone couples have no toneless base
    assert len(variants) > 1000 and len(with_base) > 0.8 * len(variants)
    assert len(family) == 2485  # 2,478 groups with a usable line layer + the 7 empty ones


def test_line_only_keeps_the_line_group_and_root_attributes():
    svg = ('<svg id="emoji" viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg"><g id="color"><rect/></g>'
           '<g id="skin"><circle/></g><g id="line"><path d="M0 0L72 72" stroke="#000"/></g></svg>')
    kept = line_only(svg)
    assert 'viewBox="0 0 72 72"' in kept and 'id="line"' in kept
    assert "rect" not in kept and "circle" not in kept and "ns0:" not in kept
    assert line_only('<svg xmlns="http://www.w3.org/2000/svg"><g id="color"/></svg>') is None


# ---- sources ---------------------------------------------------------------------------------

def test_openmoji_small_run_writes_the_format(tmp_path):
    out = tmp_path / "om"
    assert main(["openmoji", "--out", str(out), "--size", "32", "--limit", "20", "--workers", "2"]) == 0
    records = assert_valid_dataset(out, 32)
    report = json.loads((out / "report.json").read_text())
    assert report["found"] == 20 and report["source"] == "openmoji"
    assert len(records) + sum(len(v) for v in report["skipped"].values()) == 20
    line = np.asarray(Image.open(out / records[0]["line"]))
    assert line.max() == 255 and line.min() < 100  # white paper, dark lines


def test_openmoji_svg_dir_reads_a_copied_folder_and_names_an_empty_one(tmp_path, capsys):
    """--svg-dir: the same pairs from a copy of the package's SVGs (a machine without the package)."""
    copy = tmp_path / "svg"
    copy.mkdir()
    for path in svg_files(12):
        shutil.copy(path, copy / path.name)
    out = tmp_path / "om"
    assert main(["openmoji", "--out", str(out), "--size", "32", "--workers", "1", "--svg-dir", str(copy)]) == 0
    assert {r["id"] for r in assert_valid_dataset(out, 32)} <= {p.stem for p in svg_files(12)}
    assert json.loads((out / "report.json").read_text())["found"] == 12
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["openmoji", "--out", str(tmp_path / "none"), "--svg-dir", str(empty)]) == 2
    assert str(empty) in capsys.readouterr().err


def test_openmoji_xdog_lines_keep_the_pairs_and_splits(tmp_path):
    """--lines xdog: the same ids, groups and splits as the artist-line set (no group can leak from
    training into the test), line art from the folder importer's extractor, recorded as such."""
    sets = {}
    for lines in ("artist", "xdog"):
        out = tmp_path / lines
        assert main(["openmoji", "--out", str(out), "--size", "32", "--limit", "30", "--workers", "2",
                     "--lines", lines]) == 0
        sets[lines] = {r["id"]: r for r in assert_valid_dataset(out, 32)}
    artist, xdog = sets["artist"], sets["xdog"]
    assert artist.keys() == xdog.keys() and len(artist) > 20
    assert all(xdog[i]["split"] == artist[i]["split"] and xdog[i]["group"] == artist[i]["group"] for i in artist)
    assert {r["style"] for r in artist.values()} == {"artist"}
    assert {r["style"] for r in xdog.values()} == {XDoG().describe()}
    assert json.loads((tmp_path / "xdog" / "report.json").read_text())["lines"] == XDoG().describe()
    differ = 0
    for i, r in xdog.items():
        color = Image.open(tmp_path / "xdog" / r["color"]).convert("RGB")
        artist_color = Image.open(tmp_path / "artist" / r["color"]).convert("RGB")
        assert np.array_equal(np.asarray(color), np.asarray(artist_color))
        line = np.asarray(Image.open(tmp_path / "xdog" / r["line"]))
        assert np.array_equal(line, np.asarray(XDoG()(color)))  # exactly what the folder importer extracts
        differ += not np.array_equal(line, np.asarray(Image.open(tmp_path / "artist" / artist[i]["line"])))
    assert differ == len(xdog)


def test_folder_handles_every_kind_of_bad_and_odd_input(tmp_path):
    src, out, size = tmp_path / "src", tmp_path / "out", 48
    (src / "sub").mkdir(parents=True)
    art(1).save(src / "good.png")
    shutil.copy(src / "good.png", src / "sub" / "exact_copy.png")  # same bytes
    art(1).save(src / "same_pixels.bmp")  # same pixels, other container
    art(2, (200, 150)).save(src / "original.jpg", quality=95)
    art(2, (200, 150)).resize((140, 105), Image.Resampling.LANCZOS).save(src / "near_copy.jpg", quality=70)
    good_bytes = (src / "good.png").read_bytes()
    (src / "truncated.png").write_bytes(good_bytes[: len(good_bytes) // 2])
    (src / "zero.png").write_bytes(b"")
    (src / "text.png").write_text("this is not an image\n")
    (src / "notes.txt").write_text("notes")
    art(3).convert("CMYK").save(src / "cmyk.jpg", quality=95)
    rgba = Image.new("RGBA", (150, 150), (0, 0, 0, 0))  # transparent black: must become white paper
    ImageDraw.Draw(rgba).ellipse((40, 40, 110, 110), fill=(220, 30, 30, 255))
    rgba.save(src / "rgba.png")
    deep = np.zeros((120, 160, 3), np.uint16)
    deep[:] = (60000, 30000, 1000)  # 16-bit orange-brown: 8-bit (233, 117, 4), not clipped to (255, 255, 255)
    deep[60:, 100:] = (1000, 30000, 60000)
    deep[58:60, 98:], deep[58:, 98:100] = 0, 0  # a black outline: XDoG needs an edge to draw
    (src / "rgb16.png").write_bytes(png16(deep))
    stored = Image.new("RGB", (200, 120), (230, 20, 20))  # stored landscape: top red, bottom blue
    ImageDraw.Draw(stored).rectangle((0, 60, 199, 119), fill=(20, 20, 230))
    ImageDraw.Draw(stored).line((0, 60, 199, 60), fill=(0, 0, 0), width=3)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display (a portrait photo)
    stored.save(src / "exif.jpg", exif=exif, quality=95)
    frames = [art(4).convert("P", palette=Image.Palette.ADAPTIVE), art(5).convert("P", palette=Image.Palette.ADAPTIVE)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    art(6, (60, 40)).save(src / "tiny.png")
    Image.fromarray(np.asarray(art(7).convert("L"))).convert("RGB").save(src / "grey.png")
    radius = np.hypot(*np.mgrid[-60:60, -60:60]) / 85  # colourful, but without a single edge
    smooth = np.stack([80 + 170 * radius, np.full_like(radius, 60), 200 - 100 * radius], -1)
    Image.fromarray(smooth.astype(np.uint8)).save(src / "gradient.png")

    assert main(["folder", str(src), "--out", str(out), "--size", str(size), "--min-size", "64", "--workers", "2"]) == 0
    assert_valid_dataset(out, size)
    report = json.loads((out / "report.json").read_text())
    skipped = report["skipped"]
    assert skipped["empty file"] == ["zero.png"]
    assert skipped["not an image"] == ["text.png"]
    assert skipped["corrupt or truncated image"] == ["truncated.png"]
    assert skipped["not an image file extension"] == ["notes.txt"]
    assert skipped["smaller than --min-size 64 px"] == ["tiny.png"]
    assert skipped[GREYSCALE] == ["grey.png"]
    assert skipped[EMPTY_LINES] == ["gradient.png"]
    duplicates = {(d["kept"], d["dropped"], d["kind"]) for d in report["duplicates"]}
    assert duplicates == {("good.png", "same_pixels.bmp", "exact"), ("good.png", "sub/exact_copy.png", "exact"),
                          ("original.jpg", "near_copy.jpg", "near")}
    imported = by_source(out)
    assert set(imported) == {"good.png", "original.jpg", "cmyk.jpg", "rgba.png", "rgb16.png", "exif.jpg", "anim.gif"}
    assert report["found"] == 17 and report["imported"] == 7

    def colour(name):
        return np.asarray(Image.open(out / imported[name]["color"]), dtype=np.int16)

    expected = np.asarray(ImageOps.fit(art(3), (size, size), Image.Resampling.LANCZOS), dtype=np.int16)
    assert np.abs(colour("cmyk.jpg") - expected).mean() < 12  # CMYK converted, not inverted
    assert (colour("rgba.png")[2, 2] >= 250).all()  # transparent -> white
    assert np.abs(colour("rgba.png")[size // 2, size // 2] - (220, 30, 30)).max() < 10
    assert np.abs(colour("rgb16.png")[2, 2] - (233, 117, 4)).max() <= 3
    assert np.abs(colour("rgb16.png")[-3, -3] - (4, 117, 233)).max() <= 3
    rotated = colour("exif.jpg")  # displayed portrait: left half blue, right half red
    assert rotated[size // 2, 2, 2] > 200 and rotated[size // 2, 2, 0] < 60
    assert rotated[size // 2, -3, 0] > 200 and rotated[size // 2, -3, 2] < 60
    frames = [np.asarray(ImageOps.fit(art(seed), (size, size), Image.Resampling.LANCZOS), np.int16) for seed in (4, 5)]
    assert np.abs(colour("anim.gif") - frames[0]).mean() < 0.5 * np.abs(colour("anim.gif") - frames[1]).mean()
    line = np.asarray(Image.open(out / imported["good.png"]["line"]))
    assert np.median(line) == 255 and (line < 128).mean() > 0.01  # XDoG: dark lines on white paper


def test_open_image_scales_16_bit_greyscale_instead_of_clipping(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    assert np.asarray(open_image(path))[0, 0].tolist() == [128, 128, 128]
    la = Image.new("LA", (8, 8), (0, 0))  # fully transparent black -> white
    la.save(tmp_path / "la.png")
    assert np.asarray(open_image(tmp_path / "la.png"))[0, 0].tolist() == [255, 255, 255]


def test_existing_groups_keep_their_split_when_images_are_added(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        art(100 + i).save(src / f"img{i:02d}.png")
    assert main(["folder", str(src), "--out", str(tmp_path / "v1"), "--size", "32", "--min-size", "64"]) == 0
    for i in range(12, 24):
        art(100 + i).save(src / f"img{i:02d}.png")
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "old.txt").write_text("left by a user")
    assert main(["folder", str(src), "--out", str(tmp_path / "v2"), "--size", "32", "--min-size", "64",
                 "--overwrite"]) == 0
    first, second = by_source(tmp_path / "v1"), by_source(tmp_path / "v2")
    assert len(first) == 12 and len(second) == 24
    for name, record in first.items():
        assert (second[name]["group"], second[name]["split"], second[name]["id"]) == \
               (record["group"], record["split"], record["id"])
    assert (tmp_path / "v2" / "old.txt").is_file()  # --overwrite replaces only data_prep's own outputs
    assert_valid_dataset(tmp_path / "v2", 32)


def test_styles_give_several_pairs_in_one_group(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        art(200 + i).save(src / f"a{i}.png")
    out = tmp_path / "out"
    assert main(["folder", str(src), "--out", str(out), "--size", "40", "--min-size", "64",
                 "--styles", "0.6", "1.5"]) == 0
    records = assert_valid_dataset(out, 40)
    assert len(records) == 6 and len({r["group"] for r in records}) == 3
    for group in {r["group"] for r in records}:
        pair = [r for r in records if r["group"] == group]
        assert len({r["color"] for r in pair}) == 1 and len({r["style"] for r in pair}) == 2
        fine, bold = (np.asarray(Image.open(out / r["line"])) for r in sorted(pair, key=lambda r: r["id"]))
        assert (bold < 128).sum() > (fine < 128).sum()  # a larger sigma draws bolder lines


@pytest.mark.parametrize("layout", ["color-left", "color-right"])
def test_pairs_splits_side_by_side_images(tmp_path, layout):
    src = tmp_path / "src"
    src.mkdir()
    colour = art(300, (100, 100))
    sketch = Image.new("RGB", (100, 100), "white")
    ImageDraw.Draw(sketch).ellipse((20, 20, 80, 80), outline=(0, 0, 0), width=3)
    pair = Image.new("RGB", (200, 100))
    pair.paste(colour if layout == "color-left" else sketch, (0, 0))
    pair.paste(sketch if layout == "color-left" else colour, (100, 0))
    pair.save(src / "0001.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    out = tmp_path / "out"
    assert main(["pairs", str(src), "--out", str(out), "--size", "32", "--layout", layout]) == 0
    (record,) = assert_valid_dataset(out, 32)
    line = np.asarray(Image.open(out / record["line"]), dtype=np.int16)
    expected_line = np.asarray(sketch.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.int16)
    assert np.abs(line - expected_line).mean() < 4
    got = np.asarray(Image.open(out / record["color"]), dtype=np.int16)
    assert np.abs(got - np.asarray(colour.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.int16)).mean() < 4
    assert json.loads((out / "report.json").read_text())["skipped"] == {"corrupt or truncated image": ["broken.jpg"]}


# ---- refusals and failures ---------------------------------------------------------------------

def test_refuses_a_non_empty_out_without_overwrite(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    art(400).save(src / "a.png")
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["folder", str(src), "--out", str(out), "--size", "32", "--min-size", "64"]) != 0
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_nothing_usable_exits_non_zero_with_a_report(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "a.png").write_bytes(b"")
    (src / "b.jpg").write_text("hello")
    result = subprocess.run([sys.executable, "-m", "data_prep", "folder", str(src), "--out", str(out), "--size", "32"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "nothing usable" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["imported"] == 0 and report["skipped"] == {"empty file": ["a.png"], "not an image": ["b.jpg"]}
    missing = subprocess.run([sys.executable, "-m", "data_prep", "pairs", str(tmp_path / "nope"), "--out",
                              str(tmp_path / "o2")], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode != 0 and "is not a folder" in missing.stderr


def test_help_names_every_source_with_its_own_options():
    from data_prep.__main__ import SOURCES, build_parser

    assert list(SOURCES) == ["openmoji", "folder", "pairs", "iconify"]  # each declared by its own file
    result = subprocess.run([sys.executable, "-m", "data_prep", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "manifest.jsonl" in result.stdout
    text = " ".join(result.stdout.split())  # argparse wraps long help lines
    assert all(f"{source.name} {source.help}" in text for source in SOURCES.values())
    parser = build_parser()
    assert parser.parse_args(["folder", "src", "--out", "o", "--styles", "0.6", "1.2"]).styles == [0.6, 1.2]
    assert parser.parse_args(["openmoji", "--out", "o", "--limit", "3"]).limit == 3
    with pytest.raises(SystemExit):  # an option of another source is refused
        parser.parse_args(["openmoji", "--out", "o", "--styles", "1"])


def test_xdog_draws_dark_lines_only_at_edges():
    flat = Image.new("RGB", (64, 64), (200, 60, 60))
    assert np.asarray(XDoG()(flat)).min() == 255
    edged = flat.copy()
    ImageDraw.Draw(edged).rectangle((16, 16, 47, 47), fill=(20, 20, 120))
    lines = np.asarray(XDoG()(edged))
    assert lines[:8, :8].min() == 255 and (lines < 128).sum() > 40
