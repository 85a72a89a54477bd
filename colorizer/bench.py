"""Throughput benchmarks: ``python -m colorizer.bench [--device cuda|cpu] [--size 256] [--quick]``.

Prints a table and writes JSON. Each training figure is the iteration ``train.py`` runs
(``step.prepare_inputs`` and ``step.train_step``: augmentation, line styles, hint simulation, D step, G step with
every configured loss term, clipping, EMA, the non-finite guard) on a fixed random batch, after
warm-up, with synchronisation around GPU timings, as the median over repeats. The pix2pix recipe
(``experiments/baseline.yaml``: batch norm, transposed convolutions, dropout, no hints, no
perceptual loss) at fp32 and batch 1 is measured in the same run as the reference, so speed-ups are
ratios on the same machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from .checkpoint import EXPORT_CONFIG
from .config import PROJECT_ROOT, ConfigError, data_roots, image_size, load_config
from .data import make_train_stream, missing_scribbles
from .images import png_bytes
from .models import build_generator
from .monitor import git_commit
from .runtime import DistInfo, seed_everything
from .step import build_parts, prepare_inputs, train_step

# Dense datasheet peaks in TFLOP/s (SXM parts). "tf32" is what fp32 convolutions run at on these
# GPUs by default (torch.backends.cudnn.allow_tf32 is True); "fp32" is the CUDA-core rate.
PEAK_TFLOPS = {"H100": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
               "H200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
               "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}}
REFERENCE = str(PROJECT_ROOT / "experiments" / "baseline.yaml")  # the pix2pix recipe, as the results compare with it


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, warmup: int, repeats: int) -> float:
    """Median seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_step(cfg, device, batch: int, size: int, data: dict | None = None):
    """The iteration ``train.py`` runs (``step.prepare_inputs`` + ``step.train_step``), built as
    training builds it (seeded with train.seed, then ``build_parts``) for ``cfg`` with its
    train.amp, train.channels_last and train.compile, on a fixed batch: ``data``, a loader batch
    (line (B, 1, H, W) and color (B, 3, H, W) in [-1, 1], and the scribble maps when it has them),
    or random size x size images. Returns (step_fn, parts); step_fn() runs one iteration at the
    curriculum's start and returns its StepResult."""
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    parts = build_parts(cfg, device)
    if data is None:
        data = {"line": torch.rand(batch, 1, size, size) * 2 - 1, "color": torch.rand(batch, 3, size, size) * 2 - 1}
    loader_batch = {key: data[key].to(device) for key in ("line", "color", "scribbles") if key in data}

    def step():
        line, color, hints, _ = prepare_inputs(parts, loader_batch, 0.0)
        return train_step(parts, line, color, hints)

    return step, parts


# Today's eager settings (before issue 16's levers), what --baseline runs next to the defaults.
BASELINE = {"train": {"optimizer": "foreach", "compile": False, "compile_mode": "default"},
            "model": {"pad_inputs": False}, "loss": {"perceptual_amp": False}}


def variant(cfg, precision: str, channels_last: bool, compile_: bool):
    """``cfg`` with the precision, memory format and compilation that a benchmark row measures."""
    return OmegaConf.merge(cfg, {"train": {"amp": precision, "channels_last": channels_last, "compile": compile_}})


def flops_per_image(step, batch: int) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / batch


def profile_step(step, device, steps: int = 5, top: int = 8) -> dict:
    """torch.profiler over ``steps`` iterations: the ``top`` kernels (CUDA) or operators (CPU) by
    self time, and on CUDA the idle share of the GPU (1 - kernel time / wall time; kernels on
    other streams overlapping would lower it, our step uses one stream)."""
    from torch.profiler import ProfilerActivity, profile

    gpu = device.type == "cuda"
    step()  # warm: no first-call costs in the profile
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        wall_us = (time.perf_counter() - start) * 1e6
    attr = "self_device_time_total" if gpu else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr) > 0]
    if gpu:  # kernels only: device time of events with no CPU-side self time of their own
        events = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA] or events
    busy = sum(getattr(e, attr) for e in events)
    ranked = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:top]
    return {"steps": steps, "wall_ms_per_step": wall_us / steps / 1e3,
            "idle_share": max(0.0, 1 - busy / wall_us) if gpu else None,
            "top": [{"name": e.key[:80], "ms_per_step": getattr(e, attr) / steps / 1e3,
                     "share": getattr(e, attr) / busy if busy else 0.0, "calls_per_step": e.count / steps}
                    for e in ranked]}


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The datasheet peak for ``precision`` on a GPU named ``device_name``; None when unknown (CPUs)."""
    if precision == "fp32" and torch.backends.cudnn.allow_tf32:
        precision = "tf32"
    for key, table in PEAK_TFLOPS.items():
        if key in device_name:
            return table[precision]
    return None


def bench_train(cfg, device, precision, batch, size, channels_last, compile_, warmup, repeats,
                profile: bool = False) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step, _ = make_step(variant(cfg, precision, channels_last, compile_), device, batch, size)
    seconds = timed(step, device, warmup, repeats)
    row = {"precision": precision, "batch": batch, "channels_last": channels_last, "compile": compile_,
           "images_per_s": batch / seconds, "step_ms": seconds * 1e3,
           "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
    if not compile_:
        row["gflop_per_image"] = flops_per_image(step, batch) / 1e9
        row["tflops_achieved"] = row["gflop_per_image"] * row["images_per_s"] / 1e3
        peak = peak_tflops(torch.cuda.get_device_name(device), precision) if device.type == "cuda" else None
        row["fraction_of_peak"] = row["tflops_achieved"] / peak if peak else None
    if profile:
        row["profile"] = profile_step(step, device)
    return row


def bench_data(cfg, batch: int, device, seconds: float) -> dict:
    """Images/s of the data path alone, as training runs it: the training stream (cached decode in
    the DataLoader workers), then ``step.prepare_inputs`` (batched augmentation, line styles and hint simulation
    on ``device``). The first epoch decodes the PNGs ("cold"); later epochs read the in-memory uint8
    cache ("warm", the steady state)."""
    roots = data_roots(cfg.data)
    for root in roots:
        if not (root / "manifest.jsonl").is_file():
            return {"skipped": f"no prepared dataset at {root} (python -m data_prep openmoji --out {root} "
                               f"--size {cfg.data.size})"}
    note = None
    unscribbled = [root for root in roots if cfg.hints.scribbles > 0 and missing_scribbles(root)[0]]
    if unscribbled:  # training would make them first; a benchmark does not
        note = (f"measured without region scribbles: the train split of {unscribbled[0]} has no scribble maps "
                f"(python -m data_prep scribbles {unscribbled[0]})")
        cfg = OmegaConf.merge(cfg, {"hints": {"scribbles": 0.0}})
    parts = build_parts(cfg, device)
    stream = make_train_stream(cfg, roots, DistInfo(), batch)
    per_epoch = len(stream.loader)
    rates, start = [], time.perf_counter()
    while (time.perf_counter() - start < seconds or len(rates) < 2) and len(rates) < 20:
        epoch_start = time.perf_counter()
        for _ in range(per_epoch):
            prepare_inputs(parts, next(stream), 0.0)
        sync(device)
        rates.append(per_epoch * batch / (time.perf_counter() - epoch_start))
    return {"images_per_s_cold": rates[0], "images_per_s_warm": statistics.median(rates[1:]),
            "epochs": len(rates), "items": len(stream.loader.dataset), "workers": cfg.data.num_workers,
            "batch": batch, "size": list(image_size(cfg.data)), "root": " + ".join(map(str, roots)), "note": note}


@torch.inference_mode()
def bench_inference(model_cfg, device, size: int, warmup: int, repeats: int) -> dict:
    """Generator forward latency at size x size, batch 1, with a hint map and palette as the demo sends."""
    g = build_generator(model_cfg).to(device).eval()
    line = torch.rand(1, 1, size, size, device=device) * 2 - 1
    hint = torch.zeros(1, 4, size, size, device=device)
    palette = torch.zeros(1, model_cfg.palette_size, 3, device=device)
    keep = torch.zeros(1, model_cfg.palette_size, device=device)
    seconds = timed(lambda: g(line, hint, palette, keep), device, warmup, repeats)
    return {"size": size, "latency_ms": seconds * 1e3, "params": sum(p.numel() for p in g.parameters())}


DEMO_SIZES = (256, 512, 1024, 2048)  # square drawings timed through Colorizer.colorize
PAGE_SIZES = (1024, 2048)  # ... and through what the page's Colorize does (the layers, three PNGs)
STROKE_SIZE, STROKE_COUNT = 1024, 20  # the stroke propagation's budget: 0.5 s extra at this size with this many strokes


def demo_strokes(size: int, count: int = STROKE_COUNT):
    """An RGBA layer of ``count`` short strokes (the demo brush's width, 12 px at 1024 px) on a
    grid over a size x size drawing, each of its own colour: what a user paints."""
    from PIL import Image, ImageDraw

    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    side = int(np.ceil(np.sqrt(count)))
    for i in range(count):
        x, y = (i % side + 0.5) * size / side, (i // side + 0.5) * size / side
        colour = (40 + 50 * (i % 5), 60 + 37 * (i % 4), 220 - 45 * (i % 3), 255)
        draw.line((x - size / 20, y, x + size / 20, y + size / 60), fill=colour, width=max(2, size // 85))
    return layer


def demo_drawing(model_dir: Path, size: int):
    """A size x size line drawing: the first example shipped beside the model (models/demo/examples)
    enlarged, else a circle; the flat fills' cost depends on how many regions it has."""
    from PIL import Image, ImageDraw

    shipped = sorted((model_dir / "examples").glob("*.png"))
    if shipped:
        return Image.open(shipped[0]).convert("L").resize((size, size), Image.Resampling.LANCZOS)
    art = Image.new("L", (size, size), 255)
    ImageDraw.Draw(art).ellipse((size // 8, size // 8, size * 7 // 8, size * 7 // 8), outline=0, width=3)
    return art


def bench_demo(path: Path, device, warmup: int, repeats: int) -> list:
    """End-to-end latency of the exported model at ``path`` as the demo runs it, batch 1: a PIL
    image in, coloured at the model's box, the drawing's lines laid over the colour at its size
    (``Colorizer.colorize``) for DEMO_SIZES; and for PAGE_SIZES what the page's Colorize button does
    (``colorize_layers`` and the three layers encoded as PNG), with flat fills off and on. Empty
    when there is no export there."""
    import io

    from .inference import Colorizer

    if not (path / EXPORT_CONFIG).is_file():
        return []
    model = Colorizer.load(path, device=str(device))
    params = sum(p.numel() for p in model.generator.parameters())
    name = f"demo end to end ({path}, box {model.box[0]}x{model.box[1]})"
    rows = []
    for size in DEMO_SIZES:
        art = demo_drawing(path, size)
        seconds = timed(lambda: model.colorize(art), device, warmup, repeats)
        rows.append({"model": name, "size": size, "latency_ms": seconds * 1e3, "params": params})

    def page(art, fill: bool, before: bool = False):
        layers = model.colorize_layers(art, fill=fill)
        if before:  # the page's encoding until issue 33: PIL's default level, one layer after the other
            for image in (layers.image, layers.flat, layers.lines):
                image.save(io.BytesIO(), format="png")
        else:  # serve.save_images: images.png_bytes
            png_bytes([layers.image, layers.flat, layers.lines])

    art, strokes = demo_drawing(path, STROKE_SIZE), demo_strokes(STROKE_SIZE)
    for propagate in (False, True):
        seconds = timed(lambda: model.colorize(art, hints=strokes, propagate=propagate), device, warmup, repeats)
        rows.append({"model": f"demo with {STROKE_COUNT} strokes{' propagated to their shapes' if propagate else ''} "
                              f"({path})", "size": STROKE_SIZE, "latency_ms": seconds * 1e3, "params": params})
    for size in PAGE_SIZES:
        art = demo_drawing(path, size)
        for fill, before in ((False, True), (False, False), (True, False)):
            seconds = timed(lambda: page(art, fill, before), device, warmup, repeats)
            how = "PNG level 6 one by one, before issue 33" if before else "PNGs as the page encodes them"
            rows.append({"model": f"demo page: layers + 3 {how}{', flat fills' if fill else ''} ({path})",
                         "size": size, "latency_ms": seconds * 1e3, "params": params})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m colorizer.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Other arguments are --section.key=value config overrides of the "
                                            "default model, e.g. --data.root=data/openmoji128 --data.size=128.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=256, help="training image side in pixels")
    parser.add_argument("--quick", action="store_true", help="fewer configurations and repeats (CPU: < 3 min)")
    parser.add_argument("--out", default="bench.json", help="JSON file for every measured row")
    parser.add_argument("--demo-model", default="models/demo", help="export folder whose generator is also timed")
    parser.add_argument("--baseline", action="store_true",
                        help="also time today's eager settings (bench.BASELINE: foreach Adam with its host-side "
                             "guard, no compile, no input padding, float32 VGG) next to the defaults")
    parser.add_argument("--profile", action="store_true",
                        help="profile the default row (and the baseline): top kernels and the GPU's idle share")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(overrides=overrides + ["--loss.perceptual_weights=random"])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available; use --device cpu", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    gpu = device.type == "cuda"
    warmup, repeats = (2, 3) if args.quick else (5, 20)
    precisions = ["fp32"] + (["bf16", "fp16"] if gpu and torch.cuda.is_bf16_supported() else ["fp16"] if gpu else [])
    batches = ([16] if args.quick else [8, 16, 32]) if gpu else [2 if args.quick else 4]
    default_batch = cfg.train.batch_size if cfg.train.batch_size in batches else batches[-1]
    rows = []
    for precision in precisions:
        for batch in batches:
            for channels_last in ([False, True] if gpu else [False]):
                rows.append(bench_train(cfg, device, precision, batch, args.size, channels_last, False,
                                        warmup, repeats))
                print(_fmt(rows[-1]), flush=True)
    default_precision = "bf16" if "bf16" in precisions else ("fp16" if gpu else "fp32")
    if gpu and not args.quick:  # what train.py runs with --train.compile=true
        rows.append(bench_train(cfg, device, default_precision, default_batch, args.size, True, True,
                                warmup, repeats))
        print(_fmt(rows[-1]), flush=True)
    reference_cfg = load_config(REFERENCE, overrides)  # same size and data, the pix2pix recipe
    reference = bench_train(reference_cfg, device, "fp32", 1, args.size, False, False, warmup, repeats)
    reference["name"] = "pix2pix-style reference"
    print(_fmt(reference), flush=True)

    def pick(precision):  # the row train.py's defaults give: default batch, channels_last on GPU, no compile
        return next((r for r in rows if r["precision"] == precision and r["batch"] == default_batch
                     and not r["compile"] and r["channels_last"] == gpu), None)

    default_row, fp32_row = pick(default_precision), pick("fp32")
    compared = {}
    if args.baseline or args.profile:  # before and after, in one run, at the default precision and batch
        runs = ([("baseline", OmegaConf.merge(cfg, BASELINE))] if args.baseline else []) + [("defaults", cfg)]
        for name, run_cfg in runs:
            row = bench_train(run_cfg, device, default_precision, default_batch, args.size, gpu,
                              bool(run_cfg.train.compile), warmup, repeats, profile=args.profile)
            compared[name] = {"name": name, **row}
            print(_fmt(compared[name]), flush=True)
    data = bench_data(cfg, default_batch, device, 6.0 if args.quick else 20.0)
    if "images_per_s_warm" in data:
        data["ratio_to_training"] = data["images_per_s_warm"] / default_row["images_per_s"]
    print(f"data path: {json.dumps(data)}", flush=True)
    inference = [{"model": "default", **bench_inference(cfg.model, device, s, warmup, repeats)} for s in (256, 512)]
    inference += bench_demo(Path(args.demo_model), device, warmup, repeats)
    for row in inference:
        print(f"inference {row['model']} {row['size']}px batch 1: {row['latency_ms']:.1f} ms", flush=True)
    result = {
        "device": torch.cuda.get_device_name(device) if gpu else f"{platform.machine()} CPU",
        "torch": torch.__version__, "commit": git_commit(), "size": args.size, "quick": args.quick,
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "default_precision": default_precision,
        "default_batch": default_batch, "train": rows, "reference": reference,
        "speedup_default_vs_reference": default_row["images_per_s"] / reference["images_per_s"],
        "speedup_amp_vs_fp32": (default_row["images_per_s"] / fp32_row["images_per_s"]
                                if default_precision != "fp32" else None),
        "data": data, "inference": inference, "compared": compared,
        "speedup_defaults_vs_baseline": (compared["defaults"]["images_per_s"] / compared["baseline"]["images_per_s"]
                                         if "baseline" in compared else None),
    }
    print(markdown(result))
    print(json.dumps({k: result[k] for k in ("device", "speedup_default_vs_reference", "speedup_amp_vs_fp32")}))
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


def markdown(result: dict) -> str:
    """The measured figures as Markdown tables (what docs/PERFORMANCE.md records)."""
    ref = result["reference"]
    head = (f"Device: {result['device']}, torch {result['torch']}, commit {result['commit']}, {result['size']} px, "
            f"{'quick' if result['quick'] else 'full'} run, {result['threads']} CPU threads.\n\n"
            "| config | precision | batch | channels_last | compile | images/s | x reference | step ms | "
            "GFLOP/image | TFLOP/s | of peak | peak GiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]

    def fraction(row):  # from the current PEAK_TFLOPS table, so a corrected datasheet figure applies
        peak = peak_tflops(result["device"], row["precision"])
        return "n/a" if peak is None or row.get("tflops_achieved") is None else f"{row['tflops_achieved'] / peak:.1%}"

    for row in result["train"] + [ref]:
        def num(key, fmt):
            value = row.get(key)
            return "n/a" if value is None else format(value, fmt)
        lines.append(f"| {row.get('name', 'default')} | {row['precision']} | {row['batch']} | "
                     f"{'on' if row['channels_last'] else 'off'} | {'on' if row['compile'] else 'off'} | "
                     f"{row['images_per_s']:.1f} | {row['images_per_s'] / ref['images_per_s']:.2f} | "
                     f"{row['step_ms']:.1f} | {num('gflop_per_image', '.1f')} | {num('tflops_achieved', '.2f')} | "
                     f"{fraction(row)} | {num('peak_mem_gb', '.2f')} |")
    lines += compared_tables(result.get("compared", {}))
    data = result["data"]
    lines.append("")
    if "skipped" in data:
        lines.append(f"Data path: skipped ({data['skipped']}).")
    else:
        lines.append(f"Data path ({data['workers']} workers, batch {data['batch']}, {data['size'][0]} px, "
                     f"{data['items']} images): {data['images_per_s_cold']:.0f} images/s in the first (decoding) "
                     f"epoch, {data['images_per_s_warm']:.0f} images/s from the cache, "
                     f"{data['ratio_to_training']:.2f}x what the default training step consumes"
                     + (f"; {data['note']}." if data.get("note") else "."))
    lines += ["", "| inference, batch 1 | size | latency ms |", "|---|---|---|"]
    lines += [f"| {row['model']} | {row['size']} | {row['latency_ms']:.1f} |" for row in result["inference"]]
    return "\n".join(lines)


def compared_tables(compared: dict) -> list:
    """--baseline / --profile: the before/after rows and the profiles, as Markdown lines."""
    if not compared:
        return []
    lines = ["", "| before / after | precision | batch | images/s | step ms | x baseline |",
             "|---|---|---|---|---|---|"]
    base = compared.get("baseline")
    for name, row in compared.items():
        ratio = f"{row['images_per_s'] / base['images_per_s']:.2f}" if base else "n/a"
        lines.append(f"| {name} | {row['precision']} | {row['batch']} | {row['images_per_s']:.1f} | "
                     f"{row['step_ms']:.1f} | {ratio} |")
    for name, row in compared.items():
        prof = row.get("profile")
        if not prof:
            continue
        idle = "n/a (CPU)" if prof["idle_share"] is None else f"{prof['idle_share']:.1%}"
        lines += ["", f"Profile, {name} ({prof['steps']} steps, {prof['wall_ms_per_step']:.1f} ms/step under the "
                      f"profiler, GPU idle {idle}):", "", "| kernel / operator | ms/step | share | calls/step |",
                  "|---|---|---|---|"]
        lines += [f"| `{t['name']}` | {t['ms_per_step']:.2f} | {t['share']:.1%} | {t['calls_per_step']:g} |"
                  for t in prof["top"]]
    return lines


def _fmt(row: dict) -> str:
    gf = row.get("gflop_per_image")
    return (f"{row.get('name', 'default'):>24} {row['precision']:>5} batch {row['batch']:>3} "
            f"cl={int(row['channels_last'])} compile={int(row['compile'])}: {row['images_per_s']:8.2f} img/s"
            + (f", {gf:.1f} GFLOP/img, {row['tflops_achieved']:.2f} TFLOP/s" if gf else "")
            + (f", peak {row['peak_mem_gb']:.2f} GiB" if row["peak_mem_gb"] else ""))


if __name__ == "__main__":
    sys.exit(main())
