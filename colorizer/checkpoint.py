"""Self-describing checkpoints, atomic writes, RNG state, and the weights-only export for serving.

A checkpoint is one dict of tensors, numbers, strings, lists and dicts only, so
``torch.load(path, weights_only=True)`` reads it and no pickled code can run from it.
"""
from __future__ import annotations

import json
import os
import random
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as save_safetensors

EXPORT_FORMAT = "colorizer-export/1"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit this run; the message says which and why."""


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
                     perceptual: str, run_name: str) -> Path:
    """Write ``generator.safetensors`` + ``config.json``: all the demo needs, no pickle."""
    out_dir = Path(out_dir)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in generator_state.items()
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
    atomic_write(out_dir / "generator.safetensors", lambda tmp: Path(tmp).write_bytes(save_safetensors(tensors)))
    atomic_write(out_dir / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return out_dir
