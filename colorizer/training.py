"""The training loop, readable top to bottom in ``train``: D step, then G step, in the open."""
from __future__ import annotations

import json
import math
import shutil
import signal
import time
from pathlib import Path

import torch
import torch.distributed as torch_dist
import torch.nn as nn
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from . import config as config_lib
from .checkpoint import (CheckpointError, atomic_write, export_generator, load_checkpoint, prune_step_checkpoints,
                         remove_unfinished_writes, rng_state, save_checkpoint, set_rng_state, step_checkpoint,
                         step_checkpoints)
from .data import PairDataset, ensure_dataset
from .hints import MODES, HintSampler, clean_hints, color_region, curriculum_probs
from .losses import PerceptualLoss, d_adv_loss, g_adv_loss, gradient_penalty, recon_loss
from .metrics import hint_error, image_metrics
from .models import build_discriminator, build_generator, count_parameters
from .monitor import ActivationProbe, Monitor, NullMonitor, grad_norms, save_grid
from .runtime import (BatchStream, ResumableSampler, all_reduce_mean, amp_dtype, augment, pick_device,
                      seed_everything, seed_worker, setup_distributed)
from .visualize import hint_image

VAL_PATCHES = 10  # clean spatial hint patches per image in validation (the "10 hints" protocol point)


class TrainingError(RuntimeError):
    """The run cannot go on; the message says why and what to do."""


def run_name(cfg, perceptual_on: bool) -> str:
    """A name that reads as a tree of the experiment's choices, e.g. openmoji256.unet64.curriculum.perc1.lr2e-4."""
    if cfg.train.name:
        return cfg.train.name
    points = list(cfg.hints.curriculum)
    modes = {m for p in points for m in MODES if getattr(p, m) > 0}
    schedule = "curriculum" if len(points) > 1 and len({(p.spatial, p.palette, p.none) for p in points}) > 1 \
        else "+".join(sorted(modes))
    perc = f"perc{cfg.loss.perceptual_weight:g}" if perceptual_on else "percOFF"
    dataset = Path(cfg.data.root).name
    return f"{dataset}.{cfg.model.generator}{cfg.model.base_channels}.{schedule}.{perc}.lr{cfg.train.lr_g:g}"


def resolve_run_dir(cfg, name: str) -> Path:
    """Fresh runs never overwrite: name, name-2, ... ; resume=auto takes the newest of those (one killed
    before its first checkpoint too, so a kill-and-resume loop stays in one folder)."""
    parent = Path(cfg.train.out_dir)
    candidates = [parent / name] + sorted(parent.glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
    existing = [p for p in candidates if (p / "checkpoints").is_dir()]
    started = existing or [p for p in candidates if p.is_dir()]
    if cfg.train.resume == "auto" and started:
        return max(started, key=lambda p: p.stat().st_mtime)
    if not existing and not (parent / name).exists():
        return parent / name
    k = 2
    while (parent / f"{name}-{k}").exists():
        k += 1
    return parent / f"{name}-{k}"


def load_resume_checkpoint(cfg, run_dir: Path, announce: bool) -> tuple:
    """(path, state) to resume from, or (None, None) for a fresh start.

    A path in train.resume must load. resume=auto takes the newest checkpoint of the run folder that
    loads: latest.pt, then the step_NNNNNNN.pt copies newest first, then best.pt, saying which it
    skipped and why. If there are checkpoints and none loads, that is an error, not a fresh start.
    """
    if not cfg.train.resume:
        return None, None
    if cfg.train.resume != "auto":
        path = Path(cfg.train.resume)
        return path, load_checkpoint(path)
    ckpt_dir = run_dir / "checkpoints"
    candidates = [ckpt_dir / "latest.pt", *reversed(step_checkpoints(ckpt_dir)), ckpt_dir / "best.pt"]
    problems = []
    for path in (p for p in candidates if p.is_file()):
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            problems.append(str(err))
            if announce:
                print(f"train.resume=auto: skipping {path.name}: {err}")
            continue
        if problems and announce:
            print(f"train.resume=auto: falling back to {path} (step {state['step']})")
        return path, state
    if problems:
        raise CheckpointError(f"no checkpoint under {ckpt_dir} loads:\n  " + "\n  ".join(problems)
                              + "\nStart a fresh run (without --train.resume) or pass a good checkpoint path.")
    return None, None


def lr_lambda(cfg):
    steps, warmup, kind = cfg.train.steps, cfg.train.warmup_steps, cfg.train.lr_schedule

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "linear":  # pix2pix: constant for the first half, then linearly to zero
            half = steps // 2
            return 1.0 if step < half else max(0.0, 1.0 - (step - half) / max(1, steps - half))
        if kind == "cosine":
            progress = (step - warmup) / max(1, steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


def stop_requested(stop: dict, dist, device) -> bool:
    """SIGINT/SIGTERM seen? Under DDP all ranks must agree, or the next collective would hang."""
    flag = stop["signal"] is not None
    if dist.enabled:
        t = torch.tensor([float(flag)], device=device)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        flag = bool(t.item())
        stop["signal"] = stop["signal"] or ("SIGTERM" if flag else None)
    return flag


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def make_train_stream(cfg, root: Path, dist, batch_size: int) -> BatchStream:
    # Augmentation (crop, flip) happens batched on the device, not in the dataset.
    dataset = PairDataset(root, "train", size=config_lib.image_size(cfg.data), train=False, cache=cfg.data.cache,
                          max_items=cfg.data.max_items, cache_copies=max(1, cfg.data.num_workers))
    if cfg.train.overfit_batches:
        dataset = Subset(dataset, range(min(len(dataset), cfg.train.overfit_batches * batch_size)))
    if len(dataset) < batch_size * dist.world_size:
        raise TrainingError(f"the train split of {root} has {len(dataset)} pairs, fewer than one batch "
                            f"({batch_size} x {dist.world_size} ranks): lower train.batch_size")
    sampler = ResumableSampler(len(dataset), cfg.train.seed, dist.rank, dist.world_size,
                               shuffle=not cfg.train.overfit_batches)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
        num_workers=cfg.data.num_workers, pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.data.num_workers > 0, worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(cfg.train.seed),  # keeps the global RNG untouched
    )
    return BatchStream(loader, sampler, batch_size)


def fixed_samples(cfg, root: Path, split: str, count: int) -> dict:
    dataset = PairDataset(root, split, size=config_lib.image_size(cfg.data), train=False, cache=False,
                          max_items=cfg.data.max_items)
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    return {k: torch.stack([it[k] for it in items]) for k in ("line", "color")}


@torch.no_grad()
def predict_modes(generator, sampler: HintSampler, line, color, seed: int) -> dict:
    """EMA-G predictions in each hint mode with clean, seeded hints: {mode: (pred, hints)}."""
    out = {}
    for mode in MODES:
        gen = torch.Generator(device=color.device).manual_seed(seed)
        hints = clean_hints(sampler, color, mode, VAL_PATCHES, gen)
        out[mode] = (generator(line, hints.spatial, hints.palette, hints.palette_keep).float(), hints)
    return out


@torch.no_grad()
def validate(cfg, generator, sampler: HintSampler, root: Path, device, autocast) -> dict:
    """Mean val metrics per hint mode: keys like val/none/psnr_color, val/spatial/hint_error."""
    dataset = PairDataset(root, "val", size=config_lib.image_size(cfg.data), train=False,
                          cache=cfg.data.cache, max_items=cfg.train.val_items or cfg.data.max_items)
    if len(dataset) == 0:
        return {}
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=False, num_workers=0)
    sums: dict = {}
    for i, batch in enumerate(loader):
        line, color = batch["line"].to(device), batch["color"].to(device)
        region = color_region(color)
        with autocast:
            preds = predict_modes(generator, sampler, line, color, seed=cfg.train.seed + i)
        for mode, (pred, hints) in preds.items():
            values = image_metrics(pred, color, region)
            if mode == "spatial":
                values["hint_error"] = hint_error(pred, hints.spatial)
            for name, v in values.items():
                total, count = sums.get((mode, name), (0.0, 0))
                finite = v[torch.isfinite(v)]
                sums[(mode, name)] = (total + finite.sum().item(), count + finite.numel())
    return {f"val/{mode}/{name}": (t / c if c else float("nan")) for (mode, name), (t, c) in sums.items()}


def train(cfg) -> dict:
    """Train with ``cfg`` (a validated Config); returns the final summary (also in summary.json)."""
    dist = setup_distributed(cfg.train.device)
    device = pick_device(cfg.train.device, dist)
    seed_everything(cfg.train.seed + dist.rank, cfg.train.deterministic)
    if dist.is_main:
        root = ensure_dataset(cfg.data)
    if dist.enabled:
        torch_dist.barrier()
    root = Path(cfg.data.root)

    # ---- models, losses, optimisers -------------------------------------------------------
    g_raw = build_generator(cfg.model).to(device)
    d_raw = build_discriminator(cfg.model).to(device)
    if dist.enabled and device.type == "cuda" and "batch" in (cfg.model.norm, cfg.model.disc_norm):
        g_raw = nn.SyncBatchNorm.convert_sync_batchnorm(g_raw)
        d_raw = nn.SyncBatchNorm.convert_sync_batchnorm(d_raw)
    if cfg.train.channels_last and device.type == "cuda":
        g_raw, d_raw = g_raw.to(memory_format=torch.channels_last), d_raw.to(memory_format=torch.channels_last)
    ema = AveragedModel(g_raw, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay), use_buffers=True)
    perceptual = PerceptualLoss(cfg.loss).to(device)
    hint_sampler = HintSampler(cfg.hints, cfg.model.palette_size)
    opt_g = torch.optim.Adam(g_raw.parameters(), lr=cfg.train.lr_g, betas=(cfg.train.beta1, cfg.train.beta2))
    opt_d = torch.optim.Adam(d_raw.parameters(), lr=cfg.train.lr_d, betas=(cfg.train.beta1, cfg.train.beta2))
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lr_lambda(cfg))
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lr_lambda(cfg))
    dtype = amp_dtype(cfg.train.amp, device)
    autocast = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    generator, discriminator = g_raw, d_raw
    if dist.enabled:
        ids = [device.index] if device.type == "cuda" else None
        generator, discriminator = DDP(g_raw, device_ids=ids), DDP(d_raw, device_ids=ids)
    if cfg.train.compile:
        generator, discriminator = torch.compile(generator), torch.compile(discriminator)
    # The G step runs D without DDP: D's parameters are frozen there, so there is nothing to reduce.
    d_frozen = torch.compile(d_raw) if cfg.train.compile else d_raw

    # ---- run folder, resume ----------------------------------------------------------------
    name = run_name(cfg, perceptual.enabled)
    run_dir = resolve_run_dir(cfg, name)
    if dist.enabled:  # every rank must agree on the folder rank 0 chose
        holder = [str(run_dir)]
        torch_dist.broadcast_object_list(holder, src=0)
        run_dir = Path(holder[0])
    ckpt_dir = run_dir / "checkpoints"
    config_dict = config_lib.to_dict(cfg)
    config_dict["perceptual_status"] = perceptual.status  # so no result is credited to a loss that did not run

    step, best, metrics, wandb_id, unreadable = 0, None, {}, None, set()
    stream = make_train_stream(cfg, root, dist, cfg.train.batch_size)
    if dist.is_main:
        for folder in (ckpt_dir, run_dir / "export"):
            for stale in remove_unfinished_writes(folder):
                print(f"removed {stale}, the temporary file of a write that was interrupted")
    resume_path, state = load_resume_checkpoint(cfg, run_dir, announce=dist.is_main)
    if resume_path is not None:
        check_compatible(state["config"], config_dict, resume_path)
        try:
            g_raw.load_state_dict(state["generator"])
            d_raw.load_state_dict(state["discriminator"])
            ema.load_state_dict(state["generator_ema"])
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
            sched_g.load_state_dict(state["sched_g"])
            sched_d.load_state_dict(state["sched_d"])
            scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{resume_path} does not fit this run's models or optimisers: "
                                  f"{' '.join(str(err).split())[:500]}") from None
        step, best, metrics, wandb_id = state["step"], state.get("best"), state.get("metrics", {}), state.get("wandb_id")
        unreadable = set(state.get("unreadable", []))
        stream.restore(state["data_position"])
        rank_rng = state["rng"][dist.rank] if dist.rank < len(state["rng"]) else None
        if rank_rng is not None:
            set_rng_state(rank_rng)
        if dist.is_main:
            print(f"resumed {resume_path} at step {step}")
    elif cfg.train.resume == "auto" and dist.is_main:
        print(f"train.resume=auto: no checkpoint under {run_dir}, starting fresh")

    monitor = NullMonitor()
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config_dict)))
        monitor = Monitor(cfg, run_dir, config_dict, run_dir.name, wandb_id)
        monitor.summary({"perceptual_status": perceptual.status,
                         "params/generator": count_parameters(g_raw),
                         "params/discriminator": count_parameters(d_raw)})
        print(f"run folder {run_dir} | device {device} | amp {dtype or 'fp32'} | world {dist.world_size} | "
              f"G {count_parameters(g_raw):,} params, D {count_parameters(d_raw):,} | perceptual {perceptual.status}")
    probe = ActivationProbe(g_raw)
    samples = {split: fixed_samples(cfg, root, split, cfg.log.num_samples) for split in ("train", "val")} \
        if dist.is_main else {}

    stop = {"signal": None}

    def request_stop(signum, frame):
        stop["signal"] = signal.Signals(signum).name

    previous_handlers = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}

    def checkpoint_state() -> dict:
        rngs = [rng_state()]
        if dist.enabled:
            rngs = [None] * dist.world_size
            torch_dist.all_gather_object(rngs, rng_state())
        return {
            "generator": g_raw.state_dict(), "discriminator": d_raw.state_dict(),
            "generator_ema": ema.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(), "scaler": scaler.state_dict(),
            "step": step, "curriculum_progress": step / cfg.train.steps, "data_position": stream.position(),
            "rng": rngs, "config": config_dict, "wandb_id": monitor.run_id, "metrics": metrics, "best": best,
            "perceptual_status": perceptual.status, "unreadable": sorted(unreadable),
        }

    last_saved = {"path": resume_path, "step": step}

    def save(improved: bool = False) -> None:
        """latest.pt, its step_NNNNNNN.pt copy (the last train.keep_checkpoints kept), best.pt if
        ``improved``, and the export. A failed write stops the run: going on without checkpoints
        would risk all the steps since the last one."""
        state = checkpoint_state()  # collective under DDP: every rank takes part
        if not dist.is_main:
            return
        latest = target = ckpt_dir / "latest.pt"  # target: the file being written, for the error message
        try:
            save_checkpoint(latest, state)
            last_saved.update(path=latest, step=step)
            if cfg.train.keep_checkpoints:
                target = step_checkpoint(ckpt_dir, step)
                atomic_write(target, lambda tmp: shutil.copyfile(latest, tmp))
                prune_step_checkpoints(ckpt_dir, cfg.train.keep_checkpoints)
            if improved:
                target = ckpt_dir / "best.pt"
                atomic_write(target, lambda tmp: shutil.copyfile(latest, tmp))
            target = run_dir / "export"
            export_generator(target, ema.module.state_dict(), config_dict, step, metrics, perceptual.status,
                             run_dir.name)
        except OSError as err:
            kept = (f"the last complete checkpoint, {last_saved['path']} (step {last_saved['step']}), is intact"
                    if last_saved["path"] else "no checkpoint had been written yet")
            raise TrainingError(
                f"could not write {target} at step {step}: {err.strerror or err} (errno {err.errno}); {kept}. "
                f"Training stopped rather than running on without checkpoints: free disk space (or fix the "
                f"folder's permissions), then resume with --train.resume=auto.") from err

    # ---- the loop -------------------------------------------------------------------------
    bar = tqdm(total=cfg.train.steps, initial=step, disable=not (dist.is_main and cfg.log.progress),
               desc="train", dynamic_ncols=True)
    bad_steps, started, start_step, history = 0, time.time(), step, []
    try:
        while step < cfg.train.steps:
            if stop_requested(stop, dist, device):
                break
            if cfg.train.stop_after and step - start_step >= cfg.train.stop_after:
                save()
                break
            batch = next(stream)
            new_unreadable = {name for text in batch["skipped"] for name in text.splitlines()} - unreadable
            if new_unreadable:
                unreadable |= new_unreadable
                check_unreadable(unreadable, new_unreadable, len(stream.loader.dataset), cfg.data.max_bad_fraction,
                                 step, monitor if dist.is_main else None)
            line = batch["line"].to(device, non_blocking=True)  # (B, 1, H, W) in [-1, 1]
            color = batch["color"].to(device, non_blocking=True)  # (B, 3, H, W) in [-1, 1]
            line, color = augment(line, color, cfg.data.crop, cfg.data.hflip)
            probs = curriculum_probs(cfg.hints, step / cfg.train.steps)
            hints = hint_sampler.sample(color, probs)
            if cfg.train.channels_last and device.type == "cuda":
                line, color = line.contiguous(memory_format=torch.channels_last), color.contiguous(memory_format=torch.channels_last)
            d_hint = hints.spatial if cfg.model.disc_hints else None
            if step == start_step and dist.is_main:
                grid = save_grid([line.expand(-1, 3, -1, -1)[:8], hint_image(hints)[:8], color[:8]],
                                 run_dir / "samples" / "inputs.png")
                monitor.image("inputs", grid, step, "exact model inputs: line | hints | target")
            hist_step = dist.is_main and step % cfg.log.hist_every == 0
            log_step = step % cfg.log.every == 0 or step == cfg.train.steps - 1
            probe.armed = hist_step

            # D step: real pairs up, fakes (detached) down.
            opt_d.zero_grad(set_to_none=True)
            with autocast:
                fake = generator(line, hints.spatial, hints.palette, hints.palette_keep)  # (B, 3, H, W) in [-1, 1]
                real_logits = discriminator(line, color, d_hint)
                fake_logits = discriminator(line, fake.detach(), d_hint)
                d_terms = {"d_adv": d_adv_loss(real_logits, fake_logits, cfg.loss.gan)}
            probe.armed = False
            if cfg.loss.gp != "none":
                d_terms["d_gp"] = gradient_penalty(d_raw, line, color, d_hint, cfg.loss.gp)
            d_loss = d_terms["d_adv"] + cfg.loss.gp_weight * d_terms.get("d_gp", 0.0)
            d_ok = bool(torch.isfinite(d_loss).item())  # CPU-GPU sync point
            if d_ok:
                scaler.scale(d_loss).backward()
                if cfg.train.grad_clip:
                    scaler.unscale_(opt_d)
                    torch.nn.utils.clip_grad_norm_(d_raw.parameters(), cfg.train.grad_clip)
                scaler.step(opt_d)

            # G step: D frozen; adversarial + reconstruction + perceptual.
            set_requires_grad(d_raw, False)
            opt_g.zero_grad(set_to_none=True)
            with autocast:
                g_terms = {
                    "g_adv": g_adv_loss(d_frozen(line, fake, d_hint), cfg.loss.gan),
                    "recon": recon_loss(fake.float(), color, cfg.loss.recon),
                }
            if perceptual.enabled:
                g_terms["perceptual"] = perceptual(fake.float(), color)
            g_loss = (cfg.loss.gan_weight * g_terms["g_adv"] + cfg.loss.recon_weight * g_terms["recon"]
                      + cfg.loss.perceptual_weight * g_terms.get("perceptual", 0.0))
            set_requires_grad(d_raw, True)
            g_ok = bool(torch.isfinite(g_loss).item())
            if g_ok:
                scaler.scale(g_loss).backward()
                if cfg.train.grad_clip:
                    scaler.unscale_(opt_g)
                    torch.nn.utils.clip_grad_norm_(g_raw.parameters(), cfg.train.grad_clip)
                before = {n: p.detach().clone() for n, p in g_raw.named_parameters()} if hist_step else None
                scaler.step(opt_g)
                ema.update_parameters(g_raw)
            if d_ok or g_ok:
                scaler.update()  # once per iteration, for both optimisers
            sched_g.step()
            sched_d.step()

            if not (d_ok and g_ok):
                bad_steps += 1
                culprits = [k for k, v in {**d_terms, **g_terms}.items() if not torch.isfinite(torch.as_tensor(v)).all()]
                if dist.is_main:
                    tqdm.write(f"step {step}: non-finite loss in {', '.join(culprits) or 'total'}; update skipped "
                               f"({bad_steps}/{cfg.train.max_bad_steps} in a row)")
                    monitor.log({"nonfinite_steps": bad_steps, **{f"nonfinite/{k}": 1 for k in culprits}}, step)
                if bad_steps >= cfg.train.max_bad_steps:
                    raise TrainingError(
                        f"{bad_steps} consecutive steps with non-finite losses ({', '.join(culprits)}); stopped at "
                        f"step {step}. The last good checkpoint is {ckpt_dir / 'latest.pt'}: lower the learning "
                        f"rate, enable train.grad_clip or use train.amp=fp32, then resume from it.")
                step += 1
                bar.update(1)
                continue
            bad_steps = 0
            step += 1
            bar.update(1)

            # ---- monitoring -------------------------------------------------------------------
            if log_step:
                scalars = {f"loss/{k}": v for k, v in {**d_terms, **g_terms}.items()}
                scalars.update({"loss/d_total": d_loss, "loss/g_total": g_loss,
                                "d/real_logit": real_logits.float().mean(), "d/fake_logit": fake_logits.float().mean()})
                scalars = all_reduce_mean(scalars, dist, device)
                elapsed = time.time() - started
                scalars.update({
                    "lr/g": sched_g.get_last_lr()[0], "lr/d": sched_d.get_last_lr()[0],
                    "amp/scale": scaler.get_scale() if scaler.is_enabled() else 1.0,
                    **{f"curriculum/{k}": v for k, v in probs.items()},
                    "speed/images_per_s": (step - start_step) * cfg.train.batch_size * dist.world_size / max(elapsed, 1e-9),
                    "epoch": stream.epoch,
                })
                if dist.is_main:
                    g_norms, d_norms = grad_norms(g_raw), grad_norms(d_raw)
                    scalars["grad/g_total"], scalars["grad/d_total"] = g_norms.pop("total"), d_norms.pop("total")
                    scalars.update({f"grad_g/{k}": v for k, v in g_norms.items()})
                    scalars.update({f"grad_d/{k}": v for k, v in d_norms.items()})
                    monitor.log(scalars, step)
                    history.append({"step": step, **{k: scalars[k] for k in scalars if k.startswith("loss/")}})
                    bar.set_postfix(d=f"{scalars['loss/d_total']:.3f}", g=f"{scalars['loss/g_total']:.3f}",
                                    rec=f"{scalars['loss/recon']:.4f}", refresh=False)
            if hist_step:
                log_histograms(monitor, g_raw, d_raw, probe, before, step)
            if dist.is_main and (step % cfg.log.image_every == 0 or step == cfg.train.steps):
                log_sample_grids(monitor, ema.module, hint_sampler, samples, run_dir, step, device, autocast, cfg)
            if step % cfg.train.val_every == 0 or step == cfg.train.steps:
                improved = False
                if dist.is_main:
                    ema.module.eval()
                    metrics = validate(cfg, ema.module, hint_sampler, root, device, autocast)
                    monitor.log(metrics, step)
                    value = metrics.get(cfg.train.best_metric)
                    improved = value is not None and not math.isnan(value) and (
                        best is None or (value > best if cfg.train.best_mode == "max" else value < best))
                    best = value if improved else best
                if dist.enabled:
                    holder = [best, metrics, improved]
                    torch_dist.broadcast_object_list(holder, src=0)
                    best, metrics, improved = holder
                save(improved)
            elif step % cfg.train.ckpt_every == 0:
                save()
        if stop["signal"] and step < cfg.train.steps:
            save()
            if dist.is_main:
                print(f"\n{stop['signal']}: saved {ckpt_dir / 'latest.pt'} at step {step} of {cfg.train.steps}. "
                      f"Resume with:\n  python train.py ... --train.resume=auto   "
                      f"(or --train.resume={ckpt_dir / 'latest.pt'})", flush=True)
    finally:
        bar.close()
        for s, h in previous_handlers.items():
            signal.signal(s, h)

    summary = {"run_dir": str(run_dir), "step": step, "metrics": metrics, "best": best,
               "perceptual_status": perceptual.status, "wall_s": time.time() - started,
               "stopped_by": stop["signal"], "unreadable": sorted(unreadable), "history": history}
    if dist.enabled:
        summary["ddp_max_weight_diff"] = ddp_weight_spread(g_raw, dist)
    if dist.is_main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        monitor.summary({k: v for k, v in summary.items() if k not in ("history", "metrics")})
        monitor.finish()
    return summary


def check_unreadable(unreadable: set, new: set, total: int, max_fraction: float, step: int, monitor) -> None:
    """Report newly skipped training pairs; stop once more than ``max_fraction`` of the split is unreadable."""
    if monitor is not None:
        for name in sorted(new):
            tqdm.write(f"step {step}: skipped unreadable training pair {name} "
                       f"({len(unreadable)} of {total} so far; data.max_bad_fraction={max_fraction:g})")
        monitor.log({"data/unreadable_pairs": len(unreadable)}, step)
    if len(unreadable) > max_fraction * total:
        raise TrainingError(
            f"{len(unreadable)} of the {total} training pairs are unreadable, more than data.max_bad_fraction="
            f"{max_fraction:g} allows; stopped at step {step}. Re-run data_prep or replace these files:\n  "
            + "\n  ".join(sorted(unreadable)))


def check_compatible(saved: dict, current: dict, path: Path) -> None:
    """Refuse a checkpoint whose network shapes or data differ from this run's config."""
    keys = ["model", "data.size", "data.width", "data.crop", "data.root"]
    differing = []

    def compare(key, a, b):  # down to the leaves, so the message names model.base_channels, not "model"
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                compare(f"{key}.{sub}", a.get(sub), b.get(sub))
        elif a != b:
            differing.append(f"{key}: checkpoint {a} vs now {b}")

    def lookup(config, key):
        for part in key.split("."):
            config = config.get(part) if isinstance(config, dict) else None
        return config

    for key in keys:
        compare(key, lookup(saved, key), lookup(current, key))
    if differing:
        raise CheckpointError(f"{path} comes from an incompatible configuration:\n  " + "\n  ".join(differing)
                              + "\nResume with the settings it was trained with (config.yaml beside its checkpoints), "
                              "or start a fresh run without --train.resume.")


def ddp_weight_spread(model: nn.Module, dist) -> float:
    """Largest absolute difference of any generator weight between ranks (0 when in sync)."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    lo, hi = flat.clone(), flat.clone()
    torch_dist.all_reduce(lo, op=torch_dist.ReduceOp.MIN)
    torch_dist.all_reduce(hi, op=torch_dist.ReduceOp.MAX)
    return float((hi - lo).max().item())


def log_histograms(monitor, g_raw, d_raw, probe, before, step) -> None:
    values, scalars = {}, {}
    for prefix, model in (("g", g_raw), ("d", d_raw)):
        for n, p in model.named_parameters():
            values[f"weights_{prefix}/{n}"] = p.detach()
            if p.grad is not None:
                values[f"grads_{prefix}/{n}"] = p.grad.detach()
    for n, p in g_raw.named_parameters():
        if before is not None and n in before:
            scalars[f"update_ratio_g/{n}"] = ((p.detach() - before[n]).norm() / before[n].norm().clamp_min(1e-12)).item()
    for layer, (dead, sample) in probe.stats.items():
        values[f"preact_g/{layer}"] = sample
        scalars[f"dead_relu_g/{layer}"] = dead
    monitor.histograms(values, step)
    monitor.log(scalars, step)
    probe.stats.clear()


@torch.no_grad()
def log_sample_grids(monitor, generator, sampler, samples, run_dir, step, device, autocast, cfg) -> None:
    generator.eval()
    for split, batch in samples.items():
        if not len(batch["line"]):
            continue
        line, color = batch["line"].to(device), batch["color"].to(device)
        with autocast:
            preds = predict_modes(generator, sampler, line, color, seed=cfg.train.seed)
        for mode, (pred, hints) in preds.items():
            grid = save_grid([line.expand(-1, 3, -1, -1), hint_image(hints), pred, color],
                             run_dir / "samples" / f"{split}_{mode}_{step:07d}.png")
            monitor.image(f"samples/{split}/{mode}", grid, step, "line | hint | prediction | target")
