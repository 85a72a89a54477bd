"""Render a folder of SVG drawings to PNG on white paper, for `python -m data_prep folder`.

    python tools/render_svgs.py /usr/share/icons/Tango/scalable data/tango_png --size 256

SVGs are searched recursively; links to files already rendered are skipped (icon themes link one
drawing under several names). Rendering is data_prep's own (resvg, as for OpenMoji). Files that do
not render are listed and left out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="folder of SVG files (searched recursively)")
    parser.add_argument("out", type=Path, help="folder for the PNGs (created)")
    parser.add_argument("--size", type=int, default=256, help="width and height of each PNG in px")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from data_prep.openmoji import render

    svgs = sorted(p for p in args.src.rglob("*.svg") if p.is_file())
    if not svgs:
        print(f"render_svgs: no .svg files under {args.src}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    seen, failed, written = set(), [], 0
    for path in svgs:
        target = path.resolve()
        if target in seen:
            continue
        seen.add(target)
        name = "_".join(path.relative_to(args.src).with_suffix(".png").parts)
        try:
            render(path.read_text(encoding="utf-8"), args.size).save(args.out / name)
            written += 1
        except (ValueError, OSError, UnicodeDecodeError) as err:
            failed.append(f"{path}: {type(err).__name__}: {err}")
    print(f"rendered {written} of {len(svgs)} SVGs ({len(svgs) - len(seen)} links to the same file skipped) "
          f"to {args.out}")
    for line in failed:
        print(f"  not rendered: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
