"""Iconify's packaged icon sets (``@iconify-json/NAME`` on npm) -> pairs: each icon rendered in colour,
its line art extracted from the colour render (``lineart.extractor(--lines)``, as the folder importer does).

A set is fetched with the ordinary npm client (``npm pack``, cached in --cache) or read from a local
package folder or .tgz (--package-dir: offline). It is imported only if the licence stated in the
package itself is in ALLOWED_LICENCES; Twemoji, in any packaging, is refused: it is our held-out
evaluation set. Aliases (other names of an icon) and hidden icons (kept for old names) are left out.

Groups, so that no emoji straddles two splits, in any set:
- an icon that ``chars.json`` maps to a code-point sequence: OpenMoji's own group of that emoji
  (``openmoji.group_of`` of its file name) when OpenMoji has it, so the emoji falls in the same split
  as in the embedded dataset and a mix never tests on an emoji it trained on in another set; else the
  sequence in upper-case hex without variation selectors (FE0E, FE0F) and skin-tone modifiers. Either
  way a skin-tone variant shares its base emoji's group, and the same emoji shares it across sets;
- any other icon: ``PREFIX:NAME`` with trailing skin-tone suffixes stripped (NAME_TONE), repeatedly
  (``handshake-light-dark`` -> ``handshake``). This errs towards grouping: ``bulb-light`` and
  ``bulb-dark`` share a group too, which costs nothing but keeps variants out of the other splits.

Non-square icons are drawn centred in a square viewBox on white (a nested <svg> clips the icon to its
own box): the long side is --size, the padding white, the result antialiased in one render.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path


from . import lineart
from .common import PrepError, Source, collect, new_report, one_thread, prepare_out, skip, split_for
from .openmoji import group_of, render, svg_files
from .outputs import finish

SCOPE = "@iconify-json/"
SET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")  # Iconify prefixes; also keeps names from reading as npm options
# SPDX ids of licences that allow training on the icons and redistributing the prepared pairs (a derived
# work). Permissive code/content licences: MIT, ISC, Apache-2.0 (keep notices; Apache adds a patent grant).
# CC0-1.0: public-domain dedication. CC-BY-4.0: attribution, kept in report.json. CC-BY-SA-4.0: attribution
# and share-alike: the prepared folder must be shared under CC BY-SA 4.0 too (as the OpenMoji source is).
# Deliberately absent: OFL-1.1 (written for fonts; whether its terms carry over to images of the glyphs is
# unclear), NC/ND licences (no commercial use / no derivatives), GPL (copyleft terms meant for code), and
# anything unstated. Extend only with a licence you have read.
ALLOWED_LICENCES = ("MIT", "ISC", "Apache-2.0", "CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0")
RESERVED = "twemoji"  # held out for evaluation: never imported, whatever the packaging
VARIATION_SELECTORS = {"FE0E", "FE0F"}
NAME_TONE = re.compile(r"-(?:medium-light|medium-dark|light|medium|dark)(?:-skin-tone)?$|-tone-?[1-5]$")
DEFAULT_BOX = 16  # Iconify's default width and height of an icon's box
EMPTY_LINES = f"no line art found (fewer than {lineart.MIN_LINE_FRACTION:.1%} dark pixels)"
HIDDEN = "hidden icon (kept in the set only for old names)"
NPM_MISSING = "this source needs npm (Node.js): apt install npm, or pass --package-dir with downloaded packages"


def refuse_reserved(*names: str) -> None:
    """PrepError if any of ``names`` (set name, path, prefix, display name) contains "twemoji"."""
    for name in names:
        if name and RESERVED in str(name).lower():
            raise PrepError(f"{name!r}: Twemoji is reserved as a held-out evaluation set and is never imported "
                            f"for training (in any packaging); remove it from the command")


def set_name(spec: str) -> str:
    """``fluent-emoji-flat`` or ``@iconify-json/fluent-emoji-flat`` -> ``fluent-emoji-flat``."""
    name = spec[len(SCOPE):] if spec.startswith(SCOPE) else spec
    if not SET_NAME.match(name):
        raise PrepError(f"{spec!r} is not an Iconify set name (lower-case letters, digits and '-', e.g. "
                        f"fluent-emoji-flat; see https://icon-sets.iconify.design/)")
    return name


def cached_tgz(name: str, cache: Path) -> Path | None:
    """The newest ``npm pack`` tarball of set ``name`` in ``cache``, or None."""
    pattern = re.compile(rf"^iconify-json-{re.escape(name)}-(\d+(?:\.\d+)*)(?:[-+][0-9A-Za-z.-]+)?\.tgz$")
    found = [(tuple(int(v) for v in m.group(1).split(".")), p) for p in Path(cache).glob("*.tgz")
             if (m := pattern.match(p.name))]
    return max(found)[1] if found else None


def fetch(name: str, cache: Path) -> Path:
    """The package tarball of set ``name``: from ``cache``, else ``npm pack`` into it (via a temporary
    folder, so an interrupted download never leaves a partial file in the cache)."""
    cache = Path(cache)
    hit = cached_tgz(name, cache)
    if hit:
        print(f"{SCOPE}{name}: using {hit} (delete it to fetch again)")
        return hit
    npm = shutil.which("npm")
    if npm is None:
        raise PrepError(NPM_MISSING)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".pack-") as tmp:
        try:
            done = subprocess.run([npm, "pack", f"{SCOPE}{name}", "--pack-destination", tmp],
                                  capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            raise PrepError(f"npm pack {SCOPE}{name} took over 15 minutes: check the network, or pass "
                            f"--package-dir") from None
        tgz = sorted(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tgz:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise PrepError(f"npm pack {SCOPE}{name} failed (exit {done.returncode}): {' | '.join(tail)}. Check "
                            f"the set name at https://icon-sets.iconify.design/ and the network, or pass --package-dir")
        return Path(shutil.move(str(tgz[0]), cache / tgz[0].name))


def extract(tgz: Path, dest: Path) -> Path:
    """Unpack an npm tarball into ``dest`` safely (no absolute paths, no '..', no links out) -> the
    package folder (npm puts it under ``package/``)."""
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # Python without the extraction filters (< 3.11.4): plain files and folders only
                members = [m for m in tar.getmembers() if (m.isfile() or m.isdir()) and not m.name.startswith("/")
                           and ".." not in Path(m.name).parts]
                tar.extractall(dest, members=members)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise PrepError(f"{tgz}: not a readable npm package tarball ({err}); delete it and run again") from None
    return package_root(Path(dest), tgz)


def package_root(folder: Path, shown: Path) -> Path:
    """The folder holding icons.json: ``folder`` itself or its ``package/`` (an unpacked npm tarball)."""
    for root in (folder, folder / "package"):
        if (root / "icons.json").is_file():
            return root
    raise PrepError(f"{shown}: no icons.json in it: expected an @iconify-json package (folder or .tgz)")


def read_json(path: Path, required: bool = True) -> dict:
    if not path.is_file():
        if required:
            raise PrepError(f"{path} is missing: expected an @iconify-json package")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PrepError(f"{path} is not valid JSON ({err}); fetch the package again") from None
    if not isinstance(data, dict):
        raise PrepError(f"{path}: expected a JSON object")
    return data


def licence_of(root: Path, package: dict, info: dict) -> str:
    """The set's SPDX licence as the package states it; PrepError unless allowed. info.json's licence
    (the icons') must be stated; package.json's, where stated, must be allowed too."""
    spdx = (info.get("license") or {}).get("spdx") if isinstance(info.get("license"), dict) else None
    stated = [s for s in (spdx, package.get("license")) if s]
    refused = [s for s in stated if s not in ALLOWED_LICENCES]
    if not spdx or refused:
        what = f"licence {', '.join(map(repr, refused))}" if refused else "no SPDX licence in info.json"
        raise PrepError(f"icon set {info.get('prefix') or root.name!r} ({root}): {what}; only "
                        f"{', '.join(ALLOWED_LICENCES)} are imported (training and sharing the pairs must be "
                        f"allowed); leave this set out")
    return spdx


def emoji_key(sequence: str) -> str:
    """A code-point sequence (``1f44b-1F3FD``, ``2764-fe0f``) -> the emoji's key across sets: upper-case
    4-digit hex, no variation selectors, no skin tones (``1F44B``, ``2764``). ValueError if not hex."""
    parts = [f"{int(p, 16):04X}" for p in str(sequence).split("-")]
    return group_of("-".join(p for p in parts if p not in VARIATION_SELECTORS))


@functools.lru_cache(maxsize=1)
def openmoji_groups() -> dict:
    """{emoji_key: OpenMoji's group} for every emoji of the embedded OpenMoji ({} without it)."""
    try:
        stems = [path.stem for path in svg_files()]
    except (FileNotFoundError, ImportError):
        return {}
    found: dict = {}
    for stem in stems:
        try:
            found.setdefault(emoji_key(stem), set()).add(group_of(stem))
        except ValueError:
            continue  # OpenMoji's extra, non-Unicode icons (named, not code points)
    return {key: min(groups) for key, groups in found.items()}


def emoji_groups(chars: dict) -> dict:
    """chars.json {"1f44b-1f3fd": "waving-hand-medium", ...} -> {icon name: group}: OpenMoji's group
    of the emoji where it has one (``1F44B``; ``2764-FE0F``), else its ``emoji_key``. Several
    sequences of one icon: the shortest key (then the smallest)."""
    keys = {}
    for sequence, name in chars.items():
        try:
            key = emoji_key(sequence)
        except ValueError:
            continue  # not a code-point sequence: the icon falls back to its name's group
        if name not in keys or (len(key), key) < (len(keys[name]), keys[name]):
            keys[name] = key
    openmoji = openmoji_groups()
    return {name: openmoji.get(key, key) for name, key in keys.items()}


def name_group(prefix: str, name: str) -> str:
    """``noto``, ``waving-hand-medium-light-skin-tone`` -> ``noto:waving-hand`` (see the module docstring)."""
    base, previous = name, None
    while base != previous:
        previous, base = base, NAME_TONE.sub("", base)
    return f"{prefix}:{base or name}"


def icon_svg(icon: dict, defaults: dict) -> tuple:
    """-> (SVG text, width, height): ``<svg viewBox="left top width height">body</svg>`` with the set's
    defaults (top level of icons.json, else 0 0 16 16) where the icon states none."""
    box = {k: icon.get(k, defaults.get(k, DEFAULT_BOX if k in ("width", "height") else 0))
           for k in ("left", "top", "width", "height")}
    if not (box["width"] > 0 and box["height"] > 0):
        raise ValueError(f"empty box {box['width']}x{box['height']}")
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{box["left"]:g} {box["top"]:g} {box["width"]:g} '
           f'{box["height"]:g}">{icon["body"]}</svg>')
    return svg, box["width"], box["height"]


def square_svg(svg: str, width: float, height: float) -> str:
    """The icon centred in a square canvas whose side is its long side; the nested <svg> clips to the
    icon's box, so nothing drawn outside it shows in the (white) padding."""
    if width == height:
        return svg
    side = max(width, height)
    x, y = (side - width) / 2, (side - height) / 2
    inner = svg.replace("<svg ", f'<svg x="{x:g}" y="{y:g}" width="{width:g}" height="{height:g}" ', 1)
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {side:g} {side:g}">{inner}</svg>'


def icon_id(prefix: str, name: str, taken: set) -> str:
    """``prefix_name``, file-name safe; a (rare) clash after cleaning gets a short hash of the raw pair."""
    base = re.sub(r"[^A-Za-z0-9-]+", "_", f"{prefix}_{name}").strip("_") or "icon"
    pid = base if base not in taken else f"{base}_{hashlib.sha1(f'{prefix}:{name}'.encode()).hexdigest()[:8]}"
    taken.add(pid)
    return pid


def load_set(root: Path, shown: str) -> dict:
    """Read and check one unpacked package -> {prefix, icons, meta, groups (icon name -> emoji group), defaults}."""
    package, info = read_json(root / "package.json", required=False), read_json(root / "info.json")
    icons_json = read_json(root / "icons.json")
    prefix = icons_json.get("prefix") or info.get("prefix")
    if not prefix or not isinstance(icons_json.get("icons"), dict):
        raise PrepError(f"{shown}: icons.json has no prefix or no icons: expected an @iconify-json package")
    refuse_reserved(prefix, info.get("name"), package.get("name"))
    licence = licence_of(root, package, info)
    author = info.get("author") if isinstance(info.get("author"), dict) else {}
    meta = {"package": package.get("name") or f"{SCOPE}{prefix}", "version": package.get("version", ""),
            "licence": licence, "licence_title": info["license"].get("title", licence),
            "author": author.get("name", ""), "url": author.get("url", ""),
            "licence_url": info["license"].get("url", ""),
            "name": info.get("name", prefix), "palette": info.get("palette"),
            "icons": len(icons_json["icons"]), "aliases_skipped": len(icons_json.get("aliases") or {}), "imported": 0}
    groups = emoji_groups(read_json(root / "chars.json", required=False))
    for alias, target in (icons_json.get("aliases") or {}).items():  # chars.json may name an alias: use its icon
        parent = target.get("parent") if isinstance(target, dict) else None
        if alias in groups and parent in icons_json["icons"]:
            groups.setdefault(parent, groups[alias])
    return {"prefix": prefix, "icons": icons_json["icons"], "meta": meta, "groups": groups,
            "defaults": {k: icons_json[k] for k in ("left", "top", "width", "height") if k in icons_json}}


def convert_one(item: tuple, out: Path, size: int, lines: str):
    """(id, group, source, prefix, SVG) -> (record, None) or (None, (reason, source))."""
    pid, group, source, prefix, svg = item
    extract_lines = lineart.extractor(lines)
    try:
        color = render(svg, size)  # (size, size) RGB on white
        line = extract_lines(color)  # (size, size) L, lines dark on 255
        if not lineart.has_lines(line):
            return None, (EMPTY_LINES, source)
        color.save(out / "color" / f"{pid}.png")
        line.save(out / "line" / f"{pid}.png")
    except Exception as err:  # noqa: BLE001  a bad SVG body must not stop the run
        return None, (f"unrenderable SVG ({type(err).__name__})", source)
    return {"id": pid, "group": group, "split": split_for(group), "line": f"line/{pid}.png",
            "color": f"color/{pid}.png", "source": source, "set": prefix,
            "style": extract_lines.describe()}, None


def gather(sets: list, packages: list, cache: Path) -> list:
    """Check every name (Twemoji refused before anything is fetched), then fetch/unpack and load each
    set -> list of load_set dicts. Unpacking happens in a temporary folder removed at once."""
    refuse_reserved(*sets, *(Path(p).name for p in packages))
    names = [set_name(s) for s in sets]
    loaded = []
    for source in [*names, *map(Path, packages)]:
        if isinstance(source, Path) and source.is_dir():
            loaded.append(load_set(package_root(source, source), str(source)))
            continue
        if isinstance(source, Path) and not source.is_file():
            raise PrepError(f"--package-dir {source} does not exist: give an unpacked package folder or its .tgz")
        tgz = source if isinstance(source, Path) else fetch(source, cache)
        with tempfile.TemporaryDirectory(prefix="iconify-") as tmp:
            loaded.append(load_set(extract(tgz, Path(tmp)), str(tgz)))
    prefixes = [s["prefix"] for s in loaded]
    twice = sorted({p for p in prefixes if prefixes.count(p) > 1})
    if twice:
        raise PrepError(f"icon set(s) {', '.join(twice)} given more than once: give each set once")
    return loaded


def run(sets: list, packages: list, cache: Path, out: Path, size: int, workers: int, overwrite: bool,
        limit: int = 0, lines: str | None = None) -> int:
    """Import the named ``sets`` (fetched into ``cache``) and the local ``packages`` into ``out``;
    ``lines`` is a lineart.LINE_EXTRACTORS name (None: lineart.DEFAULT_LINES)."""
    started = time.time()
    lines = lines or lineart.DEFAULT_LINES
    if not sets and not packages:
        raise PrepError("name at least one icon set (e.g. fluent-emoji-flat) or pass --package-dir")
    if limit < 0:
        raise PrepError(f"--limit {limit}: give a number of icons per set, or 0 for all")
    loaded = gather(sets, packages, cache)
    style = lineart.extractor(lines).describe()
    report = new_report("iconify", size, 0, lines=style, sets={}, licences=[], attribution=[])
    items, taken = [], set()
    for s in loaded:
        prefix, meta = s["prefix"], s["meta"]
        report["sets"][prefix] = meta
        if meta["palette"] is False:
            print(f"warning: {prefix} is a monochrome set (info.json palette: false): its colour images are grey")
        visible = []
        for name in sorted(s["icons"]):
            if isinstance(s["icons"][name], dict) and s["icons"][name].get("hidden"):
                skip(report, HIDDEN, f"{prefix}/{name}")
            else:
                visible.append(name)
        report["found"] += len(s["icons"]) - len(visible)
        for name in visible[:limit] if limit else visible:
            report["found"] += 1
            source = f"iconify:{prefix}/{name}"
            try:
                svg = square_svg(*icon_svg(s["icons"][name], s["defaults"]))
            except (AttributeError, KeyError, TypeError, ValueError) as err:
                skip(report, f"unusable icon entry ({type(err).__name__})", source)
                continue
            group = s["groups"].get(name) or name_group(prefix, name)
            items.append((icon_id(prefix, name, taken), group, source, prefix, svg))
        report["licences"].append(f"{prefix}: {meta['licence']}")
        report["attribution"].append(f"{meta['name']} by {meta['author'] or 'unknown author'}"
                                     f"{' (' + meta['url'] + ')' if meta['url'] else ''}, {meta['licence_title']}; "
                                     f"from the Iconify package {meta['package']} {meta['version']}".rstrip())
    out = prepare_out(out, overwrite)
    with Pool(max(1, workers), initializer=one_thread) as pool:
        records = collect(pool, partial(convert_one, out=out, size=size, lines=lines), items, report, "iconify",
                          chunksize=16)
    for r in records:
        report["sets"][r["set"]]["imported"] += 1
    return finish(out, records, report, started)


def add_arguments(parser) -> None:
    parser.add_argument("sets", nargs="*", metavar="SET",
                        help="Iconify set names, e.g. fluent-emoji-flat noto (or @iconify-json/NAME); fetched "
                             "with `npm pack`")
    parser.add_argument("--package-dir", nargs="+", default=[], metavar="DIR",
                        help="local @iconify-json packages (unpacked folders or .tgz files) instead of fetching")
    parser.add_argument("--cache", type=Path, default=Path("data/.npm-cache"),
                        help="where fetched package tarballs are kept, so re-runs fetch nothing "
                             "(default data/.npm-cache; delete a file there to fetch a newer version)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N icons of each set by name (0 = all)")
    parser.add_argument("--lines", choices=lineart.LINE_EXTRACTORS, default=lineart.DEFAULT_LINES,
                        help=f"line extractor applied to the colour render (default {lineart.DEFAULT_LINES})")


SOURCE = Source(
    name="iconify", help="Iconify icon sets from npm (@iconify-json/NAME); line art extracted from colour",
    description="Fetch Iconify icon sets with npm (or read --package-dir), render each icon in colour on white, "
                f"extract its line art. Only sets whose package states one of {', '.join(ALLOWED_LICENCES)} are "
                "imported; Twemoji is refused (held-out evaluation set). Licences and attribution go to report.json.",
    add_arguments=add_arguments,
    run=lambda args: run(args.sets, args.package_dir, args.cache, args.out, args.size, args.workers, args.overwrite,
                         args.limit, args.lines))
