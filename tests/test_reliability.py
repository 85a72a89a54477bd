"""Training faults: kills, signals, failed saves, damaged or unsafe checkpoints, unreadable images."""
import ast
import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from colorizer import checkpoint as checkpoint_lib
from colorizer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from colorizer.config import load_config
from colorizer.data import read_manifest
from colorizer.inference import Colorizer, ModelLoadError
from colorizer.training import TrainingError, train
from conftest import ROOT, smoke_overrides

SMOKE = str(ROOT / "experiments" / "smoke.yaml")
QUIET = ["--log.progress=false", "--log.image_every=1000", "--log.hist_every=1000"]

# Runs train.py with torch.save slowed down in the middle of each checkpoint write (half the bytes,
# a pause, the rest), so that a kill can land inside a write on purpose, not only by luck.
SLOW_SAVE_TRAIN = """
import io, runpy, sys, time, torch
real_save = torch.save
def slow_save(obj, f, *args, **kwargs):
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    f.write(data[: len(data) // 2]); f.flush(); time.sleep(0.25); f.write(data[len(data) // 2 :])
torch.save = slow_save
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def smoke_cfg(data, runs, *extra):
    return load_config(SMOKE, smoke_overrides(data, runs, *QUIET, *extra))


def checkpoint_steps(folder: Path) -> dict:
    """{file name: step} of every .pt in ``folder``; load_checkpoint raises if any does not load."""
    return {p.name: load_checkpoint(p)["step"] for p in sorted(folder.glob("*.pt"))}


def unfinished_writes(folder: Path) -> list:
    return sorted(p.name for p in folder.glob(".*.tmp")) if folder.is_dir() else []


# ---- kills and signals ----------------------------------------------------------------------------

def test_repeated_sigkill_then_resume_auto_reaches_the_planned_step(openmoji_small, tmp_path):
    # 80 steps: enough that the kills below (at most ~12 steps into a launch for a write, a save plus
    # 1.2 s for a random moment) cannot reach the end even on a machine several times faster than CI.
    steps, keep = 80, 3
    cmd = [sys.executable, "-c", SLOW_SAVE_TRAIN, SMOKE,
           *smoke_overrides(openmoji_small, tmp_path, *QUIET, "--train.name=k", f"--train.steps={steps}",
                            "--train.ckpt_every=4", "--train.val_every=12", f"--train.keep_checkpoints={keep}",
                            "--train.resume=auto")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # the log is read while it runs
    ckpt_dir = tmp_path / "k" / "checkpoints"
    rng = random.Random(7)
    # Where each kill lands: inside the 1st-3rd checkpoint write of a launch (half of it on disk), while
    # starting up, or at a random moment of the training loop (steps, validation, saves).
    moments = ["write", "training", "startup", "write", "training"]
    on_disk, resumed, left_mid_write = 0, 0, 0
    for launch in range(len(moments) + 2):
        log = tmp_path / f"launch{launch}.log"
        moment = moments[launch] if launch < len(moments) else None
        earlier, writes = set(unfinished_writes(ckpt_dir)), set()
        nth_write = rng.randint(1, 3)
        with open(log, "w") as out:
            started = time.time()
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
            while moment and proc.poll() is None and time.time() < started + 120:
                if moment == "write":
                    writes |= {p.name for p in ckpt_dir.glob(".latest.pt.*.tmp")
                               if p.name not in earlier and p.exists() and p.stat().st_size}
                    ready, pause = len(writes) >= nth_write, 0.0
                elif moment == "training":  # once this launch has saved once, within the next 1.2 s
                    latest = ckpt_dir / "latest.pt"
                    ready, pause = latest.exists() and latest.stat().st_mtime > started, rng.uniform(0.0, 1.2)
                else:
                    ready, pause = True, rng.uniform(0.5, 2.0)
                if ready:
                    time.sleep(pause)
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.005)
            proc.wait(timeout=300)
        text = log.read_text()
        # Once past loading (a startup kill may come before), it carries on from the newest checkpoint on
        # disk: only the steps since then are lost.
        carried_on = re.search(r"resumed \S+ at step (\d+)\n", text)
        assert int(carried_on.group(1)) == on_disk if carried_on else not on_disk or "run folder" not in text, text
        resumed += bool(carried_on)
        if moment is None:
            assert proc.returncode == 0, text[-3000:]
            break
        assert proc.returncode == -signal.SIGKILL, f"launch {launch} ({moment}) exited {proc.returncode}:\n{text[-3000:]}"
        left_mid_write += bool(set(unfinished_writes(ckpt_dir)) - earlier)
        found = checkpoint_steps(ckpt_dir) if ckpt_dir.is_dir() else {}  # every checkpoint on disk loads
        assert max(found.values(), default=0) >= on_disk  # a kill never takes away a finished checkpoint
        on_disk = max(found.values(), default=0)
    assert left_mid_write >= 2 and resumed >= 3, (left_mid_write, resumed)  # a random kill may hit a write too
    summary = json.loads((tmp_path / "k" / "summary.json").read_text())
    assert summary["step"] == steps and summary["stopped_by"] is None
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["k"]  # one run folder throughout
    found = checkpoint_steps(ckpt_dir)
    assert found["latest.pt"] == steps and unfinished_writes(ckpt_dir) == []
    assert [name for name in found if name.startswith("step_")] == [f"step_{s:07d}.pt" for s in (72, 76, 80)]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_writes_a_final_checkpoint_and_says_how_to_resume(openmoji_small, tmp_path, signum):
    cmd = [sys.executable, "train.py", SMOKE,
           *smoke_overrides(openmoji_small, tmp_path, *QUIET, "--train.name=s", "--train.steps=5000",
                            "--train.ckpt_every=5", "--train.val_every=5000")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    latest = tmp_path / "s" / "checkpoints" / "latest.pt"
    deadline = time.time() + 120
    while not latest.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err
    name = signal.Signals(signum).name
    saved = re.search(rf"{name}: saved (\S+) at step (\d+) of 5000\. Resume with:\n.*--train\.resume=auto", out)
    assert saved, out[-2000:]
    assert Path(saved.group(1)) == latest and load_checkpoint(latest)["step"] == int(saved.group(2)) < 5000


# ---- saves that fail -------------------------------------------------------------------------------

def test_failed_checkpoint_save_stops_training_and_keeps_the_previous_one(openmoji_small, tmp_path, monkeypatch):
    real_save, calls = torch.save, []

    def disk_full_on_second_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 half a zip")  # what the full disk let through
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_lib.torch, "save", disk_full_on_second_save)
    with pytest.raises(TrainingError) as info:
        train(smoke_cfg(openmoji_small, tmp_path, "--train.name=f", "--train.steps=40"))
    ckpt_dir = tmp_path / "f" / "checkpoints"
    message = str(info.value)
    assert f"could not write {ckpt_dir / 'latest.pt'} at step 40: No space left on device (errno 28)" in message
    assert f"the last complete checkpoint, {ckpt_dir / 'latest.pt'} (step 20), is intact" in message
    assert "--train.resume=auto" in message
    assert checkpoint_steps(ckpt_dir) == {"best.pt": 20, "latest.pt": 20, "step_0000020.pt": 20}
    assert unfinished_writes(ckpt_dir) == []


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_save_under_a_file_size_quota_raises_the_os_error_and_keeps_the_old_files(tmp_path):
    """A real write failure from the OS (RLIMIT_FSIZE), which torch.save alone reports as an opaque RuntimeError."""
    import resource

    latest = tmp_path / "latest.pt"
    save_checkpoint(latest, {"config": {}, "step": 1, "w": torch.zeros(10)})
    checkpoint_lib.export_generator(tmp_path / "export", {"w": torch.zeros(10)}, {}, 1, {}, "off", "q")
    big = torch.zeros(200_000)  # 800 kB, over the 64 kB quota below
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(OSError) as saved:
            save_checkpoint(latest, {"config": {}, "step": 2, "w": big})
        with pytest.raises(OSError) as exported:
            checkpoint_lib.export_generator(tmp_path / "export", {"w": big}, {}, 2, {}, "off", "q")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert saved.value.errno == exported.value.errno == errno.EFBIG
    assert load_checkpoint(latest)["step"] == 1
    assert json.loads((tmp_path / "export" / "config.json").read_text())["step"] == 1
    assert unfinished_writes(tmp_path) == unfinished_writes(tmp_path / "export") == []


# ---- damaged, foreign and unsafe checkpoints --------------------------------------------------------

def test_resume_auto_falls_back_to_the_newest_checkpoint_that_loads(openmoji_small, tmp_path, capsys):
    common = ["--train.name=c", "--train.ckpt_every=10", "--train.val_every=1000"]
    train(smoke_cfg(openmoji_small, tmp_path, *common, "--train.steps=30"))
    ckpt_dir = tmp_path / "c" / "checkpoints"
    assert checkpoint_steps(ckpt_dir) == {"best.pt": 30, "latest.pt": 30, "step_0000010.pt": 10,
                                          "step_0000020.pt": 20, "step_0000030.pt": 30}
    data = (ckpt_dir / "latest.pt").read_bytes()
    (ckpt_dir / "latest.pt").write_bytes(data[: len(data) // 2])  # truncated
    (ckpt_dir / "step_0000030.pt").write_bytes(b"\x00" * 1000)  # garbage
    capsys.readouterr()
    summary = train(smoke_cfg(openmoji_small, tmp_path, *common, "--train.steps=40", "--train.resume=auto"))
    out = capsys.readouterr().out
    assert re.search(r"skipping latest\.pt: .*latest\.pt cannot be loaded \(truncated or corrupt\?\)", out), out
    assert re.search(r"skipping step_0000030\.pt: .*cannot be loaded", out), out
    assert f"falling back to {ckpt_dir / 'step_0000020.pt'} (step 20)" in out
    assert f"resumed {ckpt_dir / 'step_0000020.pt'} at step 20" in out
    assert summary["step"] == 40 and load_checkpoint(ckpt_dir / "latest.pt")["step"] == 40

    for path in ckpt_dir.glob("*.pt"):  # nothing loads: an error, not a silent fresh start over the run
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"no checkpoint under .*checkpoints loads"):
        train(smoke_cfg(openmoji_small, tmp_path, *common, "--train.steps=50", "--train.resume=auto"))


def test_checkpoint_from_an_incompatible_config_is_refused_naming_the_keys(openmoji_small, tmp_path):
    train(smoke_cfg(openmoji_small, tmp_path, "--train.name=i", "--train.steps=10"))
    with pytest.raises(CheckpointError) as info:
        train(smoke_cfg(openmoji_small, tmp_path, "--train.name=i", "--train.steps=20", "--train.resume=auto",
                        "--model.base_channels=16", "--model.disc_norm=batch"))
    message = str(info.value)
    assert "incompatible configuration" in message
    assert "model.base_channels: checkpoint 8 vs now 16" in message
    assert "model.disc_norm: checkpoint instance vs now batch" in message
    assert "model.depth" not in message  # only what differs


def test_a_key_added_after_a_checkpoint_was_written_counts_as_its_default(tmp_path):
    from colorizer.checkpoint import check_compatible
    from colorizer.config import load_config, to_dict

    old = to_dict(load_config())
    del old["model"]["pad_inputs"]  # written before model.pad_inputs existed, like models/demo
    check_compatible(old, to_dict(load_config()), tmp_path / "old.pt")  # the default: the same network
    with pytest.raises(CheckpointError, match="model.pad_inputs: checkpoint False vs now True"):
        check_compatible(old, to_dict(load_config(overrides=["--model.pad_inputs=true"])), tmp_path / "old.pt")


class RunsCode:
    """Unpickling this calls os.mkdir: proof that the file ran code, if the marker folder appears."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_checkpoint_with_pickled_code_is_refused(openmoji_small, tmp_path):
    train(smoke_cfg(openmoji_small, tmp_path, "--train.name=p", "--train.steps=10"))
    good = load_checkpoint(tmp_path / "p" / "checkpoints" / "latest.pt")
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    torch.save({**good, "payload": RunsCode(marker)}, evil)

    with pytest.raises(CheckpointError, match=r"evil\.pt is refused: it holds a pickled reference to \S*mkdir"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="is refused"):
        train(smoke_cfg(openmoji_small, tmp_path, "--train.name=p", "--train.steps=20", f"--train.resume={evil}"))
    with pytest.raises(ModelLoadError, match="weights-only"):
        Colorizer.load(evil)
    assert not marker.exists()


def test_every_torch_load_in_the_project_is_weights_only():
    sources = [ROOT / "train.py", ROOT / "serve.py", *sorted((ROOT / "colorizer").glob("*.py")),
               *sorted((ROOT / "data_prep").glob("*.py")), *sorted((ROOT / "tools").glob("*.py"))]
    loads, unsafe = 0, []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            if (owner, node.func.attr) == ("torch", "load"):
                loads += 1
                flag = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    unsafe.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            elif owner in ("pickle", "dill", "joblib") and node.func.attr in ("load", "loads"):
                unsafe.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert loads >= 2 and unsafe == []


# ---- unreadable training images ---------------------------------------------------------------------

def damaged_copy(source: Path, dest: Path, positions) -> list:
    """A copy of the prepared dataset whose train pairs at ``positions`` have a truncated colour PNG."""
    shutil.copytree(source, dest)
    records = read_manifest(dest, "train")
    names = []
    for i in positions:
        path = dest / records[i]["color"]
        path.write_bytes(path.read_bytes()[:40])
        names.append(f"{dest / records[i]['line']} / {path}")
    return names


def test_unreadable_training_image_is_skipped_and_logged(openmoji_small, tmp_path, capsys):
    data = tmp_path / "data"
    [name] = damaged_copy(openmoji_small, data, [5])
    summary = train(smoke_cfg(data, tmp_path, "--train.name=u", "--data.max_items=16", "--train.steps=4",
                              "--train.val_every=1000", "--data.max_bad_fraction=0.1"))
    assert summary["step"] == 4 and summary["unreadable"] == [name]
    assert f"skipped unreadable training pair {name} (1 of 16 so far" in capsys.readouterr().out
    logged = [json.loads(line) for line in (tmp_path / "u" / "log.jsonl").read_text().splitlines()]
    assert any(record.get("data/unreadable_pairs") == 1 for record in logged)
    assert load_checkpoint(tmp_path / "u" / "checkpoints" / "latest.pt")["unreadable"] == [name]


@pytest.mark.parametrize("workers", [0, 2])
def test_too_many_unreadable_images_stop_the_run_with_the_list(openmoji_small, tmp_path, workers):
    data = tmp_path / "data"
    names = damaged_copy(openmoji_small, data, [3, 9])
    with pytest.raises(TrainingError) as info:  # 2 of 16 is more than 10%
        train(smoke_cfg(data, tmp_path, "--data.max_items=16", "--train.steps=4", "--train.val_every=1000",
                        "--data.max_bad_fraction=0.1", f"--data.num_workers={workers}"))
    message = str(info.value)
    assert "2 of the 16 training pairs are unreadable, more than data.max_bad_fraction=0.1" in message
    assert all(name in message for name in names)
