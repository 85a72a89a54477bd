"""The training run, readable top to bottom in ``train``: setup, resume, the loop around the shared
GAN iteration (``step.train_step``: D step, then G step), logging, validation, saving.

Who owns what: ``step`` the iteration and its losses, ``checkpoint`` the run folder's files and
resume, ``evaluate`` the validation protocol, ``monitor`` W&B and the logs, ``runtime`` devices,
DDP, stopping together and the data order.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.distributed as torch_dist
from omegaconf import OmegaConf
from tqdm import tqdm

from . import config as config_lib
from .checkpoint import (ARCHITECTURE_KEYS, CheckpointError, CheckpointSaveError, ParentModel, RunCheckpoints,
                         TrainState, check_compatible, read_parent, resolve_run_dir,
                         without_discriminator)
from .colour_bins import decoded
from .data import PairDataset, data_credits, ensure_dataset, inherited_credits, make_train_stream
from .evaluate import predict_modes, validate
from .hints import MODES
from .models import count_parameters, grown_state, growth_note
from .monitor import ActivationProbe, Monitor, NullMonitor, grad_norms, log_histograms
from .runtime import (DistInfo, StopControl, TrainingError, all_reduce_mean, ddp_weight_spread,
                      elastic_restart_count, pick_device, seed_everything, setup_distributed)
from .step import Parts, StepResult, build_parts, prepare_inputs, train_step
from .visualize import hint_image, save_grid

__all__ = ["TrainingError", "train"]


def train(cfg) -> dict:
    """Train with ``cfg`` (a validated Config); returns the final summary (also in summary.json)."""
    # ---- setup: processes, data, networks, run folder ------------------------------------------
    dist = setup_distributed(cfg.train.device)
    device = pick_device(cfg.train.device, dist)
    seed_everything(cfg.train.seed + dist.rank, cfg.train.deterministic)
    if elastic_restart_count() and not cfg.train.resume:
        cfg.train.resume = "auto"  # torchrun restarted the worker group: continue the run, not a new one
    roots = prepare_dataset(cfg, dist)
    parts = build_parts(cfg, device, dist)
    stream = make_train_stream(cfg, roots, dist, cfg.train.batch_size)
    parent = read_parent(cfg.train.init) if cfg.train.init else None  # fine-tuning: the model it starts from
    # perceptual_status: so no result is credited to a loss that did not run; parent: the lineage;
    # data_credits: the licences of everything the weights learnt from, the parent's data included
    config = {**config_lib.to_dict(cfg), "perceptual_status": parts.perceptual.status,
              **({"parent": parent.record} if parent else {}),
              "data_credits": data_credits(roots, inherited_credits(parent.config, parent.record) if parent else ())}
    run_dir = from_main(resolve_run_dir(cfg.train.out_dir, run_name(cfg, parts.perceptual.enabled), cfg.train.resume),
                        dist)
    checkpoints = RunCheckpoints(run_dir, config, cfg.train.keep_checkpoints, dist)

    # ---- resume ------------------------------------------------------------------------------
    checkpoints.remove_unfinished_writes()
    state = checkpoints.resume(cfg.train.resume, parts, stream)
    if parent and checkpoints.last_saved is None:  # a new run: start from the parent's weights
        init_from(parent, cfg.train.init, parts, config, dist)
    monitor = open_monitor(cfg, run_dir, config, parts, state, dist, device)
    probe = ActivationProbe(parts.generator)
    samples = {split: fixed_samples(cfg, roots, split, cfg.log.num_samples) for split in ("train", "val")} \
        if dist.is_main else {}

    # ---- the loop ----------------------------------------------------------------------------
    steps, start_step, started, history = cfg.train.steps, state.step, time.time(), []
    guard = NonFiniteGuard(device, min(cfg.log.every, cfg.train.max_bad_steps), cfg.train.max_bad_steps)
    bar = tqdm(total=steps, initial=state.step, disable=not (dist.is_main and cfg.log.progress), desc="train",
               dynamic_ncols=True)
    with StopControl(dist, device) as stop, bar:
        def save(improved: bool = False) -> None:
            try:
                checkpoints.save(parts, stream, state, improved)
            except CheckpointSaveError as err:  # never train on without checkpoints
                stop.fail(str(err))

        while state.step < steps and not stop.check():
            if cfg.train.stop_after and state.step - start_step >= cfg.train.stop_after:
                save()
                break
            batch = next(stream)
            note_unreadable(batch["skipped"], state, len(stream.loader.dataset), cfg.data.max_bad_fraction, monitor,
                            stop)
            line, color, hints, probs = prepare_inputs(parts, batch, state.step / steps)
            if state.step == start_step and dist.is_main:
                grid = save_grid([line.expand(-1, 3, -1, -1)[:8], hint_image(hints)[:8], color[:8]],
                                 run_dir / "samples" / "inputs.png")
                monitor.image("inputs", grid, state.step, "exact model inputs: line | hints | target")
            hist_step = dist.is_main and state.step % cfg.log.hist_every == 0
            log_step = state.step % cfg.log.every == 0 or state.step == steps - 1
            before = {n: p.detach().clone() for n, p in parts.generator.named_parameters()} if hist_step else None

            probe.armed = hist_step  # G's forward pre-activations, on histogram steps
            result = train_step(parts, line, color, hints)  # D step, then G step, EMA update
            probe.armed = False
            parts.step_schedules()
            guard.add(result)  # on the device: no sync
            state.step += 1
            bar.update(1)
            monitor.step_done(state.step)
            image_step = dist.is_main and (state.step % cfg.log.image_every == 0 or state.step == steps)
            val_step = state.step % cfg.train.val_every == 0 or state.step == steps
            ckpt_step = state.step % cfg.train.ckpt_every == 0
            report = log_step or hist_step or image_step or val_step or ckpt_step or state.step % guard.every == 0
            if report and not guard.check(state.step, monitor, stop, checkpoints):
                continue  # this step's update was skipped: nothing of it to log or save
            if not report:
                continue

            if log_step:
                scalars = log_scalars(result, parts, probs, stream.epoch, state.step, start_step, started, dist,
                                      monitor)
                history.append({"step": state.step, **{k: v for k, v in scalars.items() if k.startswith("loss/")}})
                bar.set_postfix(d=f"{scalars['loss/d_total']:.3f}", g=f"{scalars['loss/g_total']:.3f}",
                                rec=f"{scalars['loss/recon']:.4f}", refresh=False)
            if hist_step:
                log_histograms(monitor, parts.generator, parts.discriminator, probe, before, state.step)
            if image_step:
                log_sample_grids(monitor, parts, samples, run_dir, state.step)
            if val_step:
                save(run_validation(cfg, parts, roots, state, monitor, dist))
            elif ckpt_step:
                save()
        if stop.signal and state.step < steps:
            save()
            if dist.is_main:
                print(f"\n{stop.signal}: saved {checkpoints.dir / 'latest.pt'} at step {state.step} of {steps}. "
                      f"Resume with:\n  python train.py ... --train.resume=auto   "
                      f"(or --train.resume={checkpoints.dir / 'latest.pt'})", flush=True)
        stop.check()  # a rank that failed in the last iteration stops every rank

    summary = {"run_dir": str(run_dir), "step": state.step, "metrics": state.metrics, "best": state.best,
               "perceptual_status": parts.perceptual.status, "wall_s": time.time() - started,
               "stopped_by": stop.signal, "unreadable": sorted(state.unreadable), "history": history}
    if dist.enabled:
        summary["ddp_max_weight_diff"] = ddp_weight_spread(parts.generator, dist)
    if dist.is_main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        monitor.summary({k: v for k, v in summary.items() if k not in ("history", "metrics")})
        monitor.finish()
    return summary


# ---- setup ------------------------------------------------------------------------------------------

def run_name(cfg, perceptual_on: bool) -> str:
    """A name that reads as a tree of the experiment's choices, e.g. openmoji256.unet64.curriculum.perc1.lr2e-4
    (a mix's folders joined by +: openmoji256+iconify256.unet64...)."""
    if cfg.train.name:
        return cfg.train.name
    points = list(cfg.hints.curriculum)
    modes = {m for p in points for m in MODES if getattr(p, m) > 0}
    schedule = "curriculum" if len(points) > 1 and len({(p.spatial, p.palette, p.none) for p in points}) > 1 \
        else "+".join(sorted(modes))
    perc = f"perc{cfg.loss.perceptual_weight:g}" if perceptual_on else "percOFF"
    dataset = "+".join(root.name for root in config_lib.data_roots(cfg.data))
    return f"{dataset}.{cfg.model.generator}{cfg.model.base_channels}.{schedule}.{perc}.lr{cfg.train.lr_g:g}"


def prepare_dataset(cfg, dist: DistInfo) -> list:
    """The prepared dataset folders (``config.data_roots``), checked and, where missing, prepared
    (OpenMoji for a single folder, and the region scribble maps when ``hints.scribbles > 0``) by
    rank 0 first (``data.ensure_dataset``)."""
    if dist.is_main:
        ensure_dataset(cfg.data, scribbles=cfg.hints.scribbles > 0)
    if dist.enabled:
        torch_dist.barrier()
    return config_lib.data_roots(cfg.data)


def init_from(parent: ParentModel, path: str, parts: Parts, config: dict, dist: DistInfo) -> None:
    """Load the parent's weights into a new run; its architecture (``model.*``) must match this
    run's, while data, loss, hint and schedule keys may differ. From an export, which holds no
    discriminator, D starts fresh, so its keys (``model.disc_*``) may differ too: a CPU fine-tune
    can use a narrower D. A parent may also grow (``models.grown_state``): a plain U-Net into a
    ``unet_features`` run, whose frozen ImageNet features join at zero, and any parent a colour head
    (model.colour_head), which starts at zero.
    CheckpointError naming each differing key otherwise."""
    saved, current = parent.config, config
    parent_model = saved.get("model") or {}
    # grown: the new parts as build_parts gave them (a colour head at zero), so the run starts as the parent
    grown = grown_state(parent.generator, parent_model, current["model"], parts.generator.state_dict())
    grown_ema = grown_state(parent.generator_ema, parent_model, current["model"], parts.ema.module.state_dict())
    if grown is not None:  # compare the rest of the architecture as if the parent had the new parts
        (generator, grown_model), (generator_ema, _) = grown, grown_ema
        saved = {**saved, "model": grown_model}
    else:
        generator, generator_ema = parent.generator, parent.generator_ema
    if parent.discriminator is None:
        saved, current = without_discriminator(saved), without_discriminator(current)
    check_compatible(saved, current, Path(path), keys=ARCHITECTURE_KEYS,
                     advice="--train.init needs the parent's architecture: pass its model settings (they are "
                            "in its config.json or config.yaml), e.g. --model.base_channels=N.")
    try:
        parts.load_weights(generator, generator_ema, parent.discriminator)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its weights do not fit this run's networks: "
                              f"{' '.join(str(err).split())[:500]}") from None
    if dist.is_main:
        kept = ("G, EMA-G and D" if parent.discriminator is not None
                else "G and EMA-G (D starts fresh: an export has none)")
        growth = growth_note(parent_model, current["model"])
        growth = f"; {growth}" if growth else ""
        print(f"initialised {kept} from {path} (step {parent.record['step']:,}, sha256 "
              f"{parent.record['sha256'][:12]}){growth}; optimisers and schedules start fresh", flush=True)


def from_main(value, dist: DistInfo):
    """Rank 0's ``value`` on every rank (e.g. the run folder it chose)."""
    if not dist.enabled:
        return value
    holder = [value]
    torch_dist.broadcast_object_list(holder, src=0)
    return holder[0]


def fixed_samples(cfg, roots: list, split: str, count: int) -> dict:
    """The first ``count`` pairs of ``split`` for the sample grids: line (N, 1, H, W) and color (N, 3, H, W)
    in [-1, 1]; from a mix, taken in turn from each folder (the first of each, then the second ...)."""
    datasets = [PairDataset(root, split, size=config_lib.image_size(cfg.data), cache=False,
                            max_items=cfg.data.max_items) for root in roots]
    items = [dataset[i] for i in range(count) for dataset in datasets if i < len(dataset)][:count]
    return {k: torch.stack([it[k] for it in items]) if items else torch.zeros(0) for k in ("line", "color")}


def open_monitor(cfg, run_dir: Path, config: dict, parts: Parts, state: TrainState, dist: DistInfo, device):
    """Rank 0: the run folder's config.yaml, the W&B run (continued on resume) and a one-line banner."""
    if not dist.is_main:
        return NullMonitor()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    monitor = Monitor(cfg, run_dir, config, run_dir.name, state.wandb_id, start_step=state.step)
    state.wandb_id = monitor.run_id
    g_params, d_params = count_parameters(parts.generator), count_parameters(parts.discriminator)
    monitor.summary({"perceptual_status": parts.perceptual.status, "perceptual_net": parts.perceptual.net,
                     "params/generator": g_params,
                     "params/discriminator": d_params})
    print(f"run folder {run_dir} | device {device} | amp {parts.amp_dtype or 'fp32'} | world {dist.world_size} | "
          f"G {g_params:,} params, D {d_params:,} | perceptual {parts.perceptual.status}")
    return monitor


# ---- inside the loop ----------------------------------------------------------------------------------

def note_unreadable(skipped: list, state: TrainState, total: int, max_fraction: float, monitor, stop) -> None:
    """Record the training pairs the loader skipped as unreadable; more than ``max_fraction`` of the
    split stops the run (on every rank) with the list."""
    new = {name for text in skipped for name in text.splitlines()} - state.unreadable
    if not new:
        return
    state.unreadable |= new
    for name in sorted(new):
        monitor.message(f"step {state.step}: skipped unreadable training pair {name} "
                        f"({len(state.unreadable)} of {total} so far; data.max_bad_fraction={max_fraction:g})")
    monitor.log({"data/unreadable_pairs": len(state.unreadable)}, state.step)
    if len(state.unreadable) > max_fraction * total:
        stop.fail(f"{len(state.unreadable)} of the {total} training pairs are unreadable, more than "
                  f"data.max_bad_fraction={max_fraction:g} allows; stopped at step {state.step}. Re-run data_prep "
                  f"or replace these files:\n  " + "\n  ".join(sorted(state.unreadable)))


class NonFiniteGuard:
    """Counts the steps whose update the non-finite guard skipped (``StepResult.d_ok/g_ok``) on the
    device, so the loop has no host sync per step, and reads the counts (one sync) in ``check``:
    at every step that logs or saves, and at least every ``every`` steps (<= train.max_bad_steps), so
    a run of ``max_bad_steps`` skipped steps in a row stops the run at most ``every`` steps late."""

    def __init__(self, device: torch.device, every: int, max_bad_steps: int):
        self.every, self.max_bad_steps = max(1, every), max_bad_steps
        self.run = torch.zeros((), dtype=torch.long, device=device)  # skipped steps in a row, up to now
        self.longest = torch.zeros_like(self.run)  # the longest such run since the last check
        self.skipped = torch.zeros_like(self.run)  # skipped steps since the last check
        self.bad_terms = None  # (n_terms,) bool: terms that were non-finite since the last check
        self.names: list = []
        self.checked = 0  # the step of the last check

    def add(self, result: StepResult) -> None:
        bad = ~(result.d_ok & result.g_ok)
        self.run = torch.where(bad, self.run + 1, 0)
        self.longest = torch.maximum(self.longest, self.run)
        self.skipped += bad
        terms = ~result.finite_terms()
        self.names = result.term_names()
        self.bad_terms = terms if self.bad_terms is None else self.bad_terms | terms

    def check(self, step: int, monitor, stop, checkpoints: RunCheckpoints) -> bool:
        """Report the steps skipped since the last check; stop the run (``stop.fail``) when
        ``max_bad_steps`` were skipped in a row. Returns whether the last step was good."""
        run, longest, skipped, *bad = torch.cat([torch.stack([self.run, self.longest, self.skipped]),
                                                 self.bad_terms.long()]).tolist()  # CPU-GPU sync point
        culprits = [name for name, flag in zip(self.names, bad) if flag]
        first = self.checked
        self.checked = step
        self.longest.copy_(self.run)
        self.skipped.zero_()
        self.bad_terms.zero_()
        if not skipped:
            return True
        what = ", ".join(culprits) or "gradients"
        monitor.message(f"steps {first + 1}-{step}: non-finite {what}; {skipped} update(s) skipped "
                        f"({longest} in a row at most; {run} in a row now; train.max_bad_steps={self.max_bad_steps})")
        monitor.log({"nonfinite_steps": skipped, **{f"nonfinite/{k}": 1 for k in culprits}}, step)
        if longest >= self.max_bad_steps:
            stop.fail(f"{longest} consecutive steps with non-finite losses or gradients ({what}); stopped at step "
                      f"{step}. The last good checkpoint is {checkpoints.dir / 'latest.pt'}: lower the learning rate, "
                      f"enable train.grad_clip or use train.amp=fp32, then resume from it.")
        return run == 0


def log_scalars(result: StepResult, parts: Parts, probs: dict, epoch: int, step: int, start_step: int,
                started: float, dist: DistInfo, monitor) -> dict:
    """Losses (averaged over ranks: a collective), learning rates, loss scale, curriculum mix, speed and,
    on rank 0, gradient norms; logged by rank 0 and returned as floats."""
    scalars = all_reduce_mean(result.scalars(), dist, parts.device)
    images = (step - start_step) * parts.cfg.train.batch_size * dist.world_size
    scalars.update({
        "lr/g": parts.sched_g.get_last_lr()[0], "lr/d": parts.sched_d.get_last_lr()[0],
        "amp/scale": parts.scaler.get_scale() if parts.scaler.is_enabled() else 1.0,
        **{f"curriculum/{k}": v for k, v in probs.items()},
        "speed/images_per_s": images / max(time.time() - started, 1e-9), "epoch": epoch,
    })
    if dist.is_main:
        g_norms, d_norms = grad_norms(parts.generator), grad_norms(parts.discriminator)
        scalars["grad/g_total"], scalars["grad/d_total"] = g_norms.pop("total"), d_norms.pop("total")
        scalars.update({f"grad_g/{k}": v for k, v in g_norms.items()})
        scalars.update({f"grad_d/{k}": v for k, v in d_norms.items()})
        monitor.log(scalars, step)
    return scalars


@torch.no_grad()
def log_sample_grids(monitor, parts: Parts, samples: dict, run_dir: Path, step: int) -> None:
    """EMA-G on the fixed train and val samples in each hint mode, with the evaluation protocol's hints."""
    generator = parts.ema.module.eval()
    for split, batch in samples.items():
        if not len(batch["line"]):
            continue
        line, color = batch["line"].to(parts.device), batch["color"].to(parts.device)
        preds = predict_modes(generator, parts.hint_sampler, line, color, parts.cfg.train.seed, autocast=parts.autocast)
        for mode, (pred, hints) in preds.items():
            grid = save_grid([line.expand(-1, 3, -1, -1), hint_image(hints), pred, color],
                             run_dir / "samples" / f"{split}_{mode}_{step:07d}.png")
            monitor.image(f"samples/{split}/{mode}", grid, step, "line | hint | prediction | target")


def run_validation(cfg, parts: Parts, roots: list, state: TrainState, monitor, dist: DistInfo) -> bool:
    """Validate EMA-G on rank 0 on the val splits of ``roots`` (``evaluate.validate``), log it, and
    say on every rank whether ``train.best_metric`` improved."""
    improved = False
    if dist.is_main:
        # a colour head's model is validated as it is shown: its annealed-mean colours
        generator = decoded(parts.ema.module.eval(), cfg.model)
        state.metrics = validate(cfg, generator, roots, parts.device, parts.autocast)
        monitor.log(state.metrics, state.step)
        value = state.metrics.get(cfg.train.best_metric)
        improved = value is not None and not math.isnan(value) and (
            state.best is None or (value > state.best if cfg.train.best_mode == "max" else value < state.best))
        state.best = value if improved else state.best
    state.best, state.metrics, improved = from_main([state.best, state.metrics, improved], dist)
    return improved
