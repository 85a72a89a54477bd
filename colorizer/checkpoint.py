"""Everything written to and read from a run folder's ``checkpoints/`` and ``export/``.

- Training checkpoints: one self-describing dict of tensors, numbers, strings, lists and dicts, so
  ``torch.load(path, weights_only=True)`` reads it and no pickled code can run from it. Written
  atomically; ``RunCheckpoints`` keeps latest.pt, rotated step_NNNNNNN.pt copies and best.pt, and
  resumes from the newest one that loads (``TrainState`` is what the loop carries besides the networks).
- The export: ``generator.safetensors`` + ``config.json``, weights only, what the demo serves;
  ``read_generator`` reads it (or a training checkpoint) for inference and evaluation.

Nothing here imports training code: the demo imports this module.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist
from omegaconf import OmegaConf
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from .config import Config

RUNS_DIR = Path("runs")  # where train.py puts its run folders (train.out_dir's default)
DEMO_MODEL = Path("models/demo")  # the bundled model (experiments/demo.yaml, see experiments/RESULTS.md)
LATEST = "latest"  # --checkpoint latest: the newest trained run
EXPORT_FORMAT = "colorizer-export/1"
EXPORT_DIR = "export"  # the export's folder inside a run folder
EXPORT_WEIGHTS = "generator.safetensors"  # the EMA generator's state dict, float32
EXPORT_CONFIG = "config.json"  # {"format", "config", "step", "metrics", "perceptual", "run_name", "created"}
# Entries training stores beside the config sections: not configuration, but facts about the run.
# Plain notes: the lineage (parent, interpolation) and the licences of the data (data_credits).
CONFIG_NOTES = ("perceptual_status", "parent", "interpolation", "data_credits")
ARCHITECTURE_KEYS = ("model",)  # what a run started from another model's weights must share with it
RESUME_KEYS = ("model", "data.size", "data.width", "data.crop", "data.root", "data.shares")  # ... and a resumed run
DISPLAY_KEYS = ("model.colour_decode",)  # how a model shows its colours, not its shapes: free to differ in both


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit this run; the message says which and why."""


class CheckpointSaveError(CheckpointError):
    """A checkpoint or the export could not be written; the message names the file, the OS error and
    the last intact checkpoint."""


class ModelLoadError(ValueError):
    """The path is not a usable colorizer export or checkpoint; the message says which and why."""


def atomic_write(path: Path, write, durable: bool = True) -> None:
    """Call ``write(tmp_path)`` then rename into place: a crash mid-write never leaves a broken file,
    and readers see the old file or the new one, never a part. ``durable`` also syncs the data and the
    rename to disk (for checkpoints; a cache can skip it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: without this a power cut can lose it even though the data was synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _KeepWriteError:
    """A file wrapper that keeps the OSError of a failed write: torch.save reports a full disk as an
    opaque RuntimeError ("unexpected pos ..."), which would hide the errno and the reason."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data):
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self):
        self.file.flush()


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic ``torch.save``; a failed write (disk full, quota) raises the OSError, the old file stays."""

    def write(tmp):
        with open(tmp, "wb") as f:
            writer = _KeepWriteError(f)
            try:
                torch.save(state, writer)
            except RuntimeError:
                if writer.error is not None:
                    raise writer.error from None
                raise

    atomic_write(Path(path), write)


def step_checkpoint(folder: Path, step: int) -> Path:
    """The rotated copy of the checkpoint at ``step``: ``folder/step_0000200.pt``."""
    return Path(folder) / f"step_{step:07d}.pt"


def step_checkpoints(folder: Path) -> list:
    """``step_NNNNNNN.pt`` files in ``folder``, oldest step first."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("step_*.pt")
             if (m := re.fullmatch(r"step_(\d+)\.pt", p.name))]
    return [p for _, p in sorted(found)]


def prune_step_checkpoints(folder: Path, keep: int) -> None:
    for path in step_checkpoints(folder)[: -keep or None]:
        path.unlink(missing_ok=True)


def remove_unfinished_writes(folder: Path) -> list:
    """Delete the temporary files of writes that a kill interrupted (``atomic_write``'s names); returns them."""
    stale = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: Path) -> dict:
    """Weights-only load onto the CPU; a clear CheckpointError for missing, corrupt or unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickled code, wrong format: all unusable
        # torch's own message opens by suggesting weights_only=False: the one thing not to do with such a file.
        text = str(err)
        code = re.search(r"GLOBAL ([\w.]+)", text)
        if code:
            raise CheckpointError(
                f"checkpoint {path} is refused: it holds a pickled reference to {code.group(1).rstrip('.')}, and "
                f"unpickling it could run code. A colorizer checkpoint holds only tensors, numbers, strings, lists "
                f"and dicts; load nothing else from an untrusted source.") from None
        unpickler = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(\n\n|$)", text)
        detail = unpickler.group(1) if unpickler else (text.strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise CheckpointError(f"checkpoint {path} cannot be loaded (truncated or corrupt?): {detail[:300]}") from None
    if not isinstance(state, dict) or "config" not in state or "step" not in state:
        raise CheckpointError(f"{path} is not a colorizer training checkpoint (no config/step)")
    return state


def rng_state() -> dict:
    """Python, numpy and torch RNG states in a weights_only-loadable form (no numpy arrays)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def export_generator(out_dir: Path, generator_state: dict, config: dict, step: int, metrics: dict,
                     perceptual: str, run_name: str, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``generator.safetensors`` + ``config.json``: all the demo needs, no pickle. ``dtype``: of
    the floating-point weights (float16 halves the file: a GPU window's return limit); loading casts
    them to the model's float32."""
    out_dir = Path(out_dir)
    tensors = {k: v.detach().to(dtype).cpu().contiguous() for k, v in generator_state.items()
               if torch.is_floating_point(v)}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in generator_state.items()
                    if not torch.is_floating_point(v)})
    meta = {
        "format": EXPORT_FORMAT,
        "config": config,
        "step": int(step),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "perceptual": perceptual,
        "run_name": run_name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    # Serialised in memory and written by Python: a full disk is an OSError, not a SafetensorError.
    atomic_write(out_dir / EXPORT_WEIGHTS, lambda tmp: Path(tmp).write_bytes(save_safetensors(tensors)))
    atomic_write(out_dir / EXPORT_CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return out_dir


# ---- reading a generator (export or checkpoint) ---------------------------------------------------

@dataclass
class GeneratorFile:
    """A trained generator as stored: ``config`` is the stored config dict (its sections, plus plain
    notes such as perceptual_status), ``weights`` the generator's state dict under the plain
    module's names."""

    config: dict
    weights: dict
    step: int
    metrics: dict
    run_name: str
    source: str  # the export folder or checkpoint file read
    where: str  # the file holding the config, for messages


def read_generator(path) -> GeneratorFile:
    """From an export folder (``runs/NAME/export``, its config.json or generator.safetensors, or the
    run folder holding it) or a training checkpoint ``.pt`` (weights-only: no pickled code runs; the
    EMA generator when it has one). FileNotFoundError for a missing path, ModelLoadError otherwise."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no model at {path}: pass an export folder (runs/NAME/export) or a "
                                f"training checkpoint (runs/NAME/checkpoints/best.pt)")
    if path.is_dir() and not (path / EXPORT_CONFIG).is_file() and (path / EXPORT_DIR / EXPORT_CONFIG).is_file():
        path = path / EXPORT_DIR
    if path.is_dir():
        if not (path / EXPORT_CONFIG).is_file():
            raise ModelLoadError(f"{path} is not a colorizer export folder: it has no {EXPORT_CONFIG} (expected "
                                 f"{EXPORT_CONFIG} + {EXPORT_WEIGHTS}, as training writes to runs/NAME/export)")
        return _read_export(path)
    if path.name == EXPORT_CONFIG or path.suffix == ".safetensors":
        return _read_export(path.parent)
    return _read_checkpoint_generator(path)


def _read_export(folder: Path) -> GeneratorFile:
    config_path, weights_path = folder / EXPORT_CONFIG, folder / EXPORT_WEIGHTS
    try:
        meta = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{config_path} is not a readable colorizer export config: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT or not isinstance(meta.get("config"), dict):
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelLoadError(f"{config_path} is not a colorizer export (format {found!r}, expected {EXPORT_FORMAT!r})")
    if not weights_path.is_file():
        raise ModelLoadError(f"{folder} has {EXPORT_CONFIG} but no {EXPORT_WEIGHTS}")
    try:
        weights = load_file(str(weights_path), device="cpu")
    except Exception as err:  # safetensors raises its own error types for truncated/invalid files
        raise ModelLoadError(f"{weights_path} cannot be read as safetensors: {str(err).splitlines()[0]}") from None
    return GeneratorFile(meta["config"], weights, int(meta.get("step", 0)), dict(meta.get("metrics") or {}),
                         str(meta.get("run_name", "")), str(folder), str(config_path))


def plain_names(weights: dict) -> dict:
    """A stored state dict under the plain module's names. The EMA is stored as
    torch.optim.swa_utils.AveragedModel: its keys carry a "module." prefix (as DDP / torch.compile
    wrappers do) and a step counter the generator lacks."""
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in weights.items() if k != "n_averaged"}


def _read_checkpoint_generator(path: Path, state: dict | None = None) -> GeneratorFile:
    """The (EMA) generator of the training checkpoint at ``path``; ``state``: its contents when
    already loaded (``read_parent`` reads the same file for G and D too)."""
    if state is None:
        state = _load_weights_only(path)
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise ModelLoadError(f"{path} is not a colorizer training checkpoint (no 'config' entry)")
    weights = next((state[k] for k in ("generator_ema", "generator") if isinstance(state.get(k), dict)), None)
    if weights is None:
        raise ModelLoadError(f"{path} holds no generator weights ('generator_ema' or 'generator')")
    weights = plain_names(weights)
    train = state["config"].get("train")
    run_name = str((train.get("name") if isinstance(train, dict) else "") or "") or path.parent.parent.name
    return GeneratorFile(state["config"], weights, int(state.get("step", 0)), dict(state.get("metrics") or {}),
                         run_name, str(path), str(path))


def _load_weights_only(path: Path):
    try:
        # weights_only: a checkpoint can come from anywhere, and unpickling arbitrary objects runs code.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelLoadError(
            f"{path} cannot be loaded safely as a weights-only checkpoint (only tensors, numbers, strings, "
            f"lists and dicts are allowed): {str(err).splitlines()[0][:300]}") from None


@dataclass
class ParentModel:
    """A trained model a new run starts from (``train.init``): its weights as the plain modules name
    them, and ``record``, the lineage every checkpoint, export and W&B run of the new run carries."""

    config: dict
    generator: dict
    generator_ema: dict
    discriminator: dict | None  # None from an export, which holds only the generator
    record: dict  # {"path", "sha256", "step", "run_name"}, and its own "parent" / "interpolation" if it has them


def read_parent(path) -> ParentModel:
    """An export folder or a training checkpoint -> ParentModel. From a checkpoint: its generator,
    EMA generator and discriminator; from an export: its (EMA) generator, as both G and EMA-G.
    FileNotFoundError or ModelLoadError, saying which and why, as for ``read_generator``."""
    path = Path(path)
    discriminator = None
    if path.is_file() and path.name != EXPORT_CONFIG and path.suffix != ".safetensors":  # a training checkpoint
        state = _load_weights_only(path)  # read once, for G, EMA-G and D
        stored = _read_checkpoint_generator(path, state)  # its EMA generator
        generator = ema = stored.weights
        if isinstance(state.get("generator"), dict):
            generator = plain_names(state["generator"])
        if isinstance(state.get("discriminator"), dict):
            discriminator = plain_names(state["discriminator"])
        hashed = path
    else:
        stored = read_generator(path)
        generator = ema = stored.weights
        hashed = Path(stored.source) / EXPORT_WEIGHTS
    lineage = dict(stored.config.get("parent") or {})
    if lineage and not (lineage.keys() & {"parent", "interpolation"}):
        lineage = _with_ancestors(lineage, Path(path).resolve())
    record = {"path": str(Path(path).resolve()), "sha256": _sha256(hashed), "step": stored.step,
              "run_name": stored.run_name,
              # its own lineage, so a fine-tune of a fine-tune (or of a blend) still names every ancestor
              **({"parent": lineage} if lineage else {}),
              **({"interpolation": stored.config["interpolation"]} if stored.config.get("interpolation") else {})}
    return ParentModel(stored.config, generator, ema, discriminator, record)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _with_ancestors(record: dict, reading: Path) -> dict:
    """A parent's record that names no ancestors of its own (written before records carried them, or a model
    trained from scratch): its file's record, with the ancestors that file's config names, when the file is
    still at its path with the recorded hash; else the record as written (the file moved or was replaced)."""
    where = Path(str(record.get("path") or ""))
    if not where.name or where.resolve() == reading:
        return record
    try:
        found = read_parent(where).record  # hashes the file it loads, as when the record was written
    except (FileNotFoundError, ModelLoadError):  # gone, or no model there now: the record stands
        return record
    return found if found["sha256"] == record.get("sha256") else record


# ---- the run folder during training -----------------------------------------------------------------

def resolve_run_dir(out_dir: str, name: str, resume: str) -> Path:
    """Fresh runs never overwrite: name, name-2, ... ; resume=auto takes the newest of those (one killed
    before its first checkpoint too, so a kill-and-resume loop stays in one folder)."""
    parent = Path(out_dir)
    candidates = [parent / name] + sorted(parent.glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
    existing = [p for p in candidates if (p / "checkpoints").is_dir()]
    started = existing or [p for p in candidates if p.is_dir()]
    if resume == "auto" and started:
        return max(started, key=lambda p: p.stat().st_mtime)
    if not existing and not (parent / name).exists():
        return parent / name
    k = 2
    while (parent / f"{name}-{k}").exists():
        k += 1
    return parent / f"{name}-{k}"


def without_discriminator(config: dict) -> dict:
    """``config`` without its ``model.disc_*`` settings: what a run that starts from an export (which holds
    no discriminator, so D starts fresh) must share with it."""
    return {**config, "model": {k: v for k, v in config.get("model", {}).items() if not k.startswith("disc_")}}


def check_compatible(saved: dict, current: dict, path: Path, keys=RESUME_KEYS, advice: str = "") -> None:
    """Refuse a checkpoint whose config differs from this run's at ``keys`` (the network shapes and
    data for a resume), naming each differing leaf key; ``advice`` ends the message. A key the
    checkpoint lacks was added to colorizer after it was written: it holds the key's default."""
    advice = advice or ("Resume with the settings it was trained with (config.yaml beside its checkpoints), "
                        "or start a fresh run without --train.resume.")
    differing = []
    defaults = OmegaConf.to_container(OmegaConf.structured(Config))

    def compare(key, a, b, default):  # down to the leaves, so the message names model.base_channels, not "model"
        if key in DISPLAY_KEYS:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                old = default.get(sub) if isinstance(default, dict) else None
                compare(f"{key}.{sub}", a.get(sub, old), b.get(sub), old)
        elif a != b:
            differing.append(f"{key}: checkpoint {a} vs now {b}")

    def lookup(config, key):
        for part in key.split("."):
            config = config.get(part) if isinstance(config, dict) else None
        return config

    for key in keys:
        compare(key, lookup(saved, key), lookup(current, key), lookup(defaults, key))
    if differing:
        raise CheckpointError(f"{path} comes from an incompatible configuration:\n  " + "\n  ".join(differing)
                              + "\n" + advice)


@dataclass
class TrainState:
    """What the training loop carries besides the networks; all of it goes into every checkpoint."""

    step: int = 0
    best: float | None = None  # best value of train.best_metric so far
    metrics: dict = field(default_factory=dict)  # the latest validation metrics
    wandb_id: str | None = None
    unreadable: set = field(default_factory=set)  # training pairs skipped as unreadable ("line / color" paths)


class RunCheckpoints:
    """The checkpoint files of one run folder: ``checkpoints/latest.pt``, its ``step_NNNNNNN.pt``
    copies (the last ``keep``), ``best.pt``, and ``export/``. Every rank calls ``resume`` and
    ``save`` (both are collective under DDP); rank 0 alone chooses and writes."""

    def __init__(self, run_dir: Path, config: dict, keep: int, dist):
        self.run_dir, self.dir = Path(run_dir), Path(run_dir) / "checkpoints"
        self.config, self.keep, self.dist = config, keep, dist
        self.last_saved = None  # (path, step) of the newest complete checkpoint

    def remove_unfinished_writes(self) -> None:
        """Delete the temporary files that killed writes left in checkpoints/ and export/ (rank 0)."""
        if self.dist.is_main:
            for folder in (self.dir, self.run_dir / EXPORT_DIR):
                for stale in remove_unfinished_writes(folder):
                    print(f"removed {stale}, the temporary file of a write that was interrupted")

    def newest_loadable(self) -> tuple:
        """(path, state) of the newest checkpoint that loads: latest.pt, then the step copies newest
        first, then best.pt, saying which it skipped and why; (None, None) when there is none.
        CheckpointError when there are checkpoints and none loads (never a silent fresh start)."""
        candidates = [self.dir / "latest.pt", *reversed(step_checkpoints(self.dir)), self.dir / "best.pt"]
        problems = []
        for path in (p for p in candidates if p.is_file()):
            try:
                state = load_checkpoint(path)
            except CheckpointError as err:
                problems.append(str(err))
                print(f"train.resume=auto: skipping {path.name}: {err}")
                continue
            if problems:
                print(f"train.resume=auto: falling back to {path} (step {state['step']})")
            return path, state
        if problems:
            raise CheckpointError(f"no checkpoint under {self.dir} loads:\n  " + "\n  ".join(problems)
                                  + "\nStart a fresh run (without --train.resume) or pass a good checkpoint path.")
        return None, None

    def resume(self, resume: str, parts, stream) -> TrainState:
        """The state to continue from (fresh when ``resume`` is "" or auto finds nothing), with the
        networks, optimisers, data position and this rank's RNG restored. ``resume``: "", "auto" or a
        path. Rank 0 chooses the file; every rank then loads that same file, so ``train.out_dir`` must
        be on a filesystem that every node sees. An error on any rank is raised on every rank."""
        chosen, state, error = None, None, None
        if self.dist.is_main and resume:
            try:
                chosen, state = self.newest_loadable() if resume == "auto" else (Path(resume), load_checkpoint(resume))
            except CheckpointError as err:
                error = str(err)
        if self.dist.enabled:
            holder = [None if chosen is None else str(chosen), error]
            torch_dist.broadcast_object_list(holder, src=0)
            chosen, error = (None if holder[0] is None else Path(holder[0])), holder[1]
        if error:
            raise CheckpointError(error)
        if chosen is None:
            if resume == "auto" and self.dist.is_main:
                print(f"train.resume=auto: no checkpoint under {self.run_dir}, starting fresh")
            return TrainState()
        try:
            if state is None:  # ranks other than 0
                if not chosen.is_file():
                    raise CheckpointError(f"rank {self.dist.rank} cannot see {chosen}, which rank 0 resumes from: "
                                          f"train.out_dir must be on a filesystem that every node mounts")
                state = load_checkpoint(chosen)
            check_compatible(state["config"], self.config, chosen)
            parts.load_state_dict(state)
            stream.restore(state["data_position"])
        except CheckpointError as err:
            error = str(err)
        except (KeyError, RuntimeError, ValueError) as err:
            error = f"{chosen} does not fit this run's models or optimisers: {' '.join(str(err).split())[:500]}"
        self._raise_on_every_rank(error)
        rank_rng = state["rng"][self.dist.rank] if self.dist.rank < len(state["rng"]) else None
        if rank_rng is not None:
            set_rng_state(rank_rng)
        self.last_saved = (chosen, state["step"])
        if self.dist.is_main:
            print(f"resumed {chosen} at step {state['step']}")
        return TrainState(state["step"], state.get("best"), state.get("metrics", {}), state.get("wandb_id"),
                          set(state.get("unreadable", [])))

    def _raise_on_every_rank(self, error: str | None) -> None:
        """CheckpointError on every rank when any rank has an ``error``: a rank that stopped alone
        would leave the others waiting at their next collective."""
        if self.dist.enabled:
            errors = [None] * self.dist.world_size
            torch_dist.all_gather_object(errors, error)
            error = error or next((f"rank {rank}: {e}" for rank, e in enumerate(errors) if e), None)
        if error:
            raise CheckpointError(error)

    def save(self, parts, stream, state: TrainState, improved: bool = False) -> None:
        """latest.pt, its step_NNNNNNN.pt copy, best.pt if ``improved``, and the export of the EMA
        generator. Collective under DDP (every rank's RNG state is gathered); rank 0 writes.
        CheckpointSaveError when a write fails: the files already on disk stay intact."""
        rngs = [rng_state()]
        if self.dist.enabled:
            rngs = [None] * self.dist.world_size
            torch_dist.all_gather_object(rngs, rng_state())
        if not self.dist.is_main:
            return
        payload = {**parts.state_dict(), "step": state.step,
                   "curriculum_progress": state.step / self.config["train"]["steps"],
                   "data_position": stream.position(), "rng": rngs, "config": self.config,
                   "wandb_id": state.wandb_id, "metrics": state.metrics, "best": state.best,
                   "perceptual_status": self.config.get("perceptual_status"), "unreadable": sorted(state.unreadable)}
        latest = target = self.dir / "latest.pt"  # target: the file being written, for the error message
        try:
            save_checkpoint(latest, payload)
            self.last_saved = (latest, state.step)
            if self.keep:
                target = step_checkpoint(self.dir, state.step)
                atomic_write(target, lambda tmp: shutil.copyfile(latest, tmp))
                prune_step_checkpoints(self.dir, self.keep)
            if improved:
                target = self.dir / "best.pt"
                atomic_write(target, lambda tmp: shutil.copyfile(latest, tmp))
            target = self.run_dir / EXPORT_DIR
            export_generator(target, parts.ema.module.state_dict(), self.config, state.step, state.metrics,
                             self.config.get("perceptual_status", "unknown"), self.run_dir.name)
        except OSError as err:
            kept = (f"the last complete checkpoint, {self.last_saved[0]} (step {self.last_saved[1]}), is intact"
                    if self.last_saved else "no checkpoint had been written yet")
            raise CheckpointSaveError(
                f"could not write {target} at step {state.step}: {err.strerror or err} (errno {err.errno}); {kept}. "
                f"Training stopped rather than running on without checkpoints: free disk space (or fix the "
                f"folder's permissions), then resume with --train.resume=auto.") from err


def latest_run(root: Path = Path(".")) -> Path | None:
    """The newest export under ``root/runs`` (by its config.json's mtime), or None."""
    exports = sorted((root / RUNS_DIR).glob(f"*/{EXPORT_DIR}/{EXPORT_CONFIG}"), key=lambda p: p.stat().st_mtime)
    return exports[-1].parent if exports else None


def find_checkpoint(root: Path = Path("."), which: str | None = None) -> Path | None:
    """The model to use (serve.py, colorize): ``which`` as a path; "latest": the newest run's export; None: the bundled
    model (``root/models/demo``), else the newest run's export. None when there is nothing."""
    if which == LATEST:
        return latest_run(root)
    if which:
        return Path(which)
    if (root / DEMO_MODEL / EXPORT_CONFIG).is_file():
        return root / DEMO_MODEL
    return latest_run(root)
