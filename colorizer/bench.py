"""Throughput benchmarks: ``python -m colorizer.bench [--device cuda|cpu] [--size 256] [--quick]``.

Prints a table and writes JSON. Each training figure is one full GAN iteration (G forward, D step,
G step with adversarial + reconstruction (+ perceptual) terms) on random data, after warm-up, with
synchronisation around GPU timings, as the median over repeats. A pix2pix-style reference
(fp32, batch 1, batch norm, transposed convolutions, no hints, no perceptual loss) is measured in
the same run so speed-ups are ratios on the same machine.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import load_config
from .hints import HintSampler, curriculum_probs
from .losses import PerceptualLoss, d_adv_loss, g_adv_loss, recon_loss
from .models import build_discriminator, build_generator
from .monitor import git_commit

PEAK_TFLOPS = {"H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},  # dense, SXM datasheet figures
               "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
               "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}}
REFERENCE = ["--model.norm=batch", "--model.upsample=transpose", "--model.dropout=0.5", "--loss.perceptual_weight=0",
             "--model.disc_norm=batch", "--model.disc_spectral_norm=false"]


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


def make_step(cfg, device, precision: str, batch: int, size: int, channels_last: bool, compile_: bool, hinted: bool):
    """One training iteration on fixed random data, as train() does it; returns (step_fn, models)."""
    g, d = build_generator(cfg.model).to(device), build_discriminator(cfg.model).to(device)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    g, d = g.to(memory_format=memory), d.to(memory_format=memory)
    g_run, d_run = (torch.compile(g), torch.compile(d)) if compile_ else (g, d)
    perceptual = PerceptualLoss(cfg.loss).to(device) if cfg.loss.perceptual_weight else None
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    autocast = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    line = (torch.rand(batch, 1, size, size, device=device) * 2 - 1).contiguous(memory_format=memory)
    color = (torch.rand(batch, 3, size, size, device=device) * 2 - 1).contiguous(memory_format=memory)
    sampler = HintSampler(cfg.hints, cfg.model.palette_size)
    probs = curriculum_probs(cfg.hints, 0.0) if hinted else {"none": 1.0, "spatial": 0.0, "palette": 0.0}

    def step():
        hints = sampler.sample(color, probs)
        opt_d.zero_grad(set_to_none=True)
        with autocast:
            fake = g_run(line, hints.spatial, hints.palette, hints.palette_keep)
            d_loss = d_adv_loss(d_run(line, color), d_run(line, fake.detach()), cfg.loss.gan)
        scaler.scale(d_loss).backward()
        scaler.step(opt_d)
        for p in d.parameters():
            p.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        with autocast:
            g_loss = g_adv_loss(d_run(line, fake), cfg.loss.gan) + 100 * recon_loss(fake.float(), color, "mse")
        if perceptual is not None and perceptual.enabled:
            g_loss = g_loss + perceptual(fake.float(), color)
        for p in d.parameters():
            p.requires_grad_(True)
        scaler.scale(g_loss).backward()
        scaler.step(opt_g)
        scaler.update()

    return step, g


def flops_per_image(step, batch: int) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / batch


def peak_tflops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, table in PEAK_TFLOPS.items():
        if key in name:
            return table[precision]
    return None


def bench_train(cfg, device, precision, batch, size, channels_last, compile_, hinted, warmup, repeats) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step, _ = make_step(cfg, device, precision, batch, size, channels_last, compile_, hinted)
    seconds = timed(step, device, warmup, repeats)
    row = {"precision": precision, "batch": batch, "channels_last": channels_last, "compile": compile_,
           "images_per_s": batch / seconds, "step_ms": seconds * 1e3,
           "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
    if not compile_:
        row["gflop_per_image"] = flops_per_image(step, batch) / 1e9
        row["tflops_achieved"] = row["gflop_per_image"] * row["images_per_s"] / 1e3
        peak = peak_tflops(device, precision)
        row["fraction_of_peak"] = row["tflops_achieved"] / peak if peak else None
    return row


def bench_data(cfg, size: int, batch: int, device, seconds: float = 5.0) -> dict:
    """Images/s of the data path alone: decode (cached) + batched augmentation + hint simulation."""
    from .data import PairDataset
    from .runtime import augment
    from torch.utils.data import DataLoader

    root = Path(cfg.data.root)
    if not (root / "manifest.jsonl").is_file():
        return {"skipped": f"no prepared dataset at {root} (python -m data_prep openmoji --out {root} --size {size})"}
    dataset = PairDataset(root, "train", size=(size, size), train=False, cache=True)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=cfg.data.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.data.num_workers > 0)
    sampler = HintSampler(cfg.hints, cfg.model.palette_size)
    probs = curriculum_probs(cfg.hints, 0.0)
    images, start, epochs = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds and epochs < 50:
        for b in loader:
            line, color = augment(b["line"].to(device, non_blocking=True), b["color"].to(device, non_blocking=True),
                                  0, True)
            sampler.sample(color, probs)
            images += len(line)
            if time.perf_counter() - start > seconds:
                break
        epochs += 1
    sync(device)
    return {"images_per_s": images / (time.perf_counter() - start), "workers": cfg.data.num_workers,
            "note": "first epoch includes decoding; later epochs read the in-memory cache"}


@torch.inference_mode()
def bench_inference(cfg, device, size: int, warmup: int, repeats: int) -> dict:
    g = build_generator(cfg.model).to(device).eval()
    line = torch.rand(1, 1, size, size, device=device) * 2 - 1
    hint = torch.zeros(1, 4, size, size, device=device)
    palette = torch.zeros(1, cfg.model.palette_size, 3, device=device)
    keep = torch.zeros(1, cfg.model.palette_size, device=device)
    seconds = timed(lambda: g(line, hint, palette, keep), device, warmup, repeats)
    return {"size": size, "latency_ms": seconds * 1e3}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m colorizer.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="fewer configurations and repeats (CPU: < 3 min)")
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("overrides", nargs="*", help="--section.key=value config overrides for the default model")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cfg = load_config(overrides=[a for a in args.overrides] + ["--loss.perceptual_weights=random"])
    torch.backends.cudnn.benchmark = True
    gpu = device.type == "cuda"
    warmup, repeats = (2, 3) if args.quick else (5, 20)
    precisions = ["fp32"] + (["bf16", "fp16"] if gpu and torch.cuda.is_bf16_supported() else ["fp16"] if gpu else [])
    batches = ([16] if args.quick else [8, 16, 32]) if gpu else [2 if args.quick else 4]
    rows = []
    for precision in precisions:
        for batch in batches:
            for channels_last in ([False, True] if gpu else [False]):
                rows.append(bench_train(cfg, device, precision, batch, args.size, channels_last, False, True,
                                        warmup, repeats))
                print(_fmt(rows[-1]), flush=True)
    if gpu and not args.quick:
        best = max(rows, key=lambda r: r["images_per_s"])
        rows.append(bench_train(cfg, device, best["precision"], best["batch"], args.size, best["channels_last"],
                                True, True, warmup, repeats))
        print(_fmt(rows[-1]), flush=True)
    reference_cfg = load_config(overrides=REFERENCE)
    reference = bench_train(reference_cfg, device, "fp32", 1, args.size, False, False, False, warmup, repeats)
    reference["name"] = "pix2pix-style reference"
    print(_fmt(reference), flush=True)
    default_precision = "bf16" if "bf16" in precisions else ("fp16" if gpu else "fp32")
    default_rows = [r for r in rows if r["precision"] == default_precision and r["batch"] == batches[-1]
                    and not r["compile"] and r["channels_last"] == gpu]
    fp32_rows = [r for r in rows if r["precision"] == "fp32" and r["batch"] == batches[-1] and not r["compile"]
                 and r["channels_last"] == gpu]
    result = {
        "device": torch.cuda.get_device_name(device) if gpu else platform.processor() or platform.machine(),
        "torch": torch.__version__, "commit": git_commit(), "size": args.size, "quick": args.quick,
        "threads": torch.get_num_threads(), "train": rows, "reference": reference,
        "speedup_default_vs_reference": default_rows[0]["images_per_s"] / reference["images_per_s"] if default_rows else None,
        "speedup_amp_vs_fp32": (default_rows[0]["images_per_s"] / fp32_rows[0]["images_per_s"]
                                if default_rows and fp32_rows and default_precision != "fp32" else None),
        "data": bench_data(cfg, args.size, batches[-1], device, 3.0 if args.quick else 10.0),
        "inference": [bench_inference(cfg, device, s, warmup, repeats) for s in (256, 512)],
    }
    print(json.dumps({k: result[k] for k in ("speedup_default_vs_reference", "speedup_amp_vs_fp32", "data",
                                              "inference")}, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


def _fmt(row: dict) -> str:
    gf = row.get("gflop_per_image")
    return (f"{row.get('name', 'default'):>24} {row['precision']:>5} batch {row['batch']:>3} "
            f"cl={int(row['channels_last'])} compile={int(row['compile'])}: {row['images_per_s']:8.2f} img/s"
            + (f", {gf:.1f} GFLOP/img, {row['tflops_achieved']:.2f} TFLOP/s" if gf else "")
            + (f", peak {row['peak_mem_gb']:.2f} GiB" if row["peak_mem_gb"] else ""))


if __name__ == "__main__":
    sys.exit(main())
