"""End-to-end training on CPU with the smoke experiment and a tiny OpenMoji subset."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from colorizer import checkpoint as checkpoint_lib
from colorizer.config import load_config
from colorizer.training import TrainingError, train
from conftest import ROOT, smoke_overrides

SMOKE = str(ROOT / "experiments" / "smoke.yaml")


def smoke_cfg(data, runs, *extra):
    return load_config(SMOKE, smoke_overrides(data, runs, *extra))


def test_smoke_run_writes_a_complete_run_folder(openmoji_small, tmp_path):
    summary = train(smoke_cfg(openmoji_small, tmp_path, "--train.name=smoke"))
    run = Path(summary["run_dir"])
    assert run == tmp_path / "smoke" and summary["step"] == 40
    for rel in ("config.yaml", "checkpoints/latest.pt", "checkpoints/best.pt", "export/generator.safetensors",
                "export/config.json", "samples/inputs.png", "summary.json", "log.jsonl"):
        assert (run / rel).is_file(), rel
    assert list((run / "samples").glob("val_spatial_*.png"))
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    expected = {"generator", "discriminator", "generator_ema", "opt_g", "opt_d", "scaler", "sched_g", "sched_d",
                "step", "curriculum_progress", "rng", "data_position", "config", "wandb_id", "metrics"}
    assert expected <= set(state)
    assert state["step"] == 40 and state["curriculum_progress"] == 1.0
    meta = json.loads((run / "export" / "config.json").read_text())
    assert meta["step"] == 40 and meta["config"]["model"]["depth"] == 3
    weights = load_file(run / "export" / "generator.safetensors")
    assert set(weights) == set(state["generator"])  # the EMA generator, under the plain module's names
    for mode in ("none", "spatial", "palette"):
        assert f"val/{mode}/psnr_color" in summary["metrics"]
    assert "val/spatial/hint_error" in summary["metrics"]


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(openmoji_small, tmp_path):
    common = ["--train.deterministic=true", "--log.every=1", "--train.ckpt_every=20", "--train.val_every=20"]
    straight = train(smoke_cfg(openmoji_small, tmp_path / "a", "--train.name=r", *common))
    first = train(smoke_cfg(openmoji_small, tmp_path / "b", "--train.name=r", "--train.stop_after=20", *common))
    assert first["step"] == 20
    second = train(smoke_cfg(openmoji_small, tmp_path / "b", "--train.name=r", "--train.resume=auto", *common))
    assert second["step"] == 40
    losses = lambda hist: {h["step"]: h["loss/g_total"] for h in hist}  # noqa: E731
    resumed = {**losses(first["history"]), **losses(second["history"])}
    reference = losses(straight["history"])
    assert sorted(resumed) == sorted(reference)
    for step, value in reference.items():
        assert resumed[step] == pytest.approx(value, rel=1e-5, abs=1e-6), f"step {step}"
    assert second["metrics"]["val/none/psnr"] == pytest.approx(straight["metrics"]["val/none/psnr"], rel=1e-5)


def test_overfit_one_batch_drives_reconstruction_down(openmoji_small, tmp_path):
    summary = train(smoke_cfg(openmoji_small, tmp_path, "--train.overfit_batches=1", "--train.steps=150",
                              "--train.lr_g=2e-3", "--train.val_every=1000", "--train.ckpt_every=1000",
                              "--log.every=1", "--log.image_every=1000", "--log.hist_every=1000",
                              "--hints.curriculum=[{at: 0.0, spatial: 0.0, palette: 0.0, none: 1.0}]",
                              "--data.hflip=false", "--loss.perceptual_weight=0",
                              "--lines.artist=1", "--lines.xdog=0", "--lines.varied=0"))  # the same inputs every step
    recon = [h["loss/recon"] for h in summary["history"]]
    start, end = sum(recon[:3]) / 3, sum(recon[-3:]) / 3
    assert end < 0.1 * start, (start, end)


def test_nonfinite_losses_skip_steps_then_stop_with_a_clear_message(openmoji_small, tmp_path, monkeypatch):
    import colorizer.step as step

    monkeypatch.setattr(step, "recon_loss", lambda pred, target, kind: pred.sum() * float("nan"))
    # counted on the device, read at least every max_bad_steps steps: it stops as soon as the third is in
    with pytest.raises(TrainingError, match="3 consecutive.*non-finite.*recon.*stopped at step 3"):
        train(smoke_cfg(openmoji_small, tmp_path, "--train.max_bad_steps=3", "--train.optimizer=fused"))


def test_an_isolated_nonfinite_step_is_skipped_and_reported(openmoji_small, tmp_path, monkeypatch, capsys):
    import colorizer.step as step

    real, calls = step.recon_loss, []

    def recon_nan_once(pred, target, kind):
        calls.append(1)
        loss = real(pred, target, kind)
        return loss * float("nan") if len(calls) == 7 else loss  # the 7th step's G loss only

    monkeypatch.setattr(step, "recon_loss", recon_nan_once)
    summary = train(smoke_cfg(openmoji_small, tmp_path, "--train.name=nan1", "--train.steps=12", "--log.every=5"))
    assert summary["step"] == 12 and len(calls) == 12
    assert re.search(r"steps \d+-\d+: non-finite recon; 1 update\(s\) skipped", capsys.readouterr().out)


def test_interrupted_save_keeps_the_previous_checkpoint(openmoji_small, tmp_path, monkeypatch):
    cfg = smoke_cfg(openmoji_small, tmp_path, "--train.name=s", "--train.steps=20")
    train(cfg)
    latest = tmp_path / "s" / "checkpoints" / "latest.pt"
    before = torch.load(latest, weights_only=True)["step"]

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # what a crash mid-write leaves behind
        raise OSError("No space left on device (simulated)")

    monkeypatch.setattr(checkpoint_lib.torch, "save", dying_save)
    with pytest.raises(OSError, match="No space left"):
        checkpoint_lib.save_checkpoint(latest, {"step": 999})
    assert torch.load(latest, weights_only=True)["step"] == before
    assert not [p for p in latest.parent.iterdir() if p.name.endswith(".tmp")]


def test_offline_wandb_run_holds_images_and_histograms(openmoji_small, tmp_path):
    summary = train(smoke_cfg(openmoji_small, tmp_path, "--log.wandb=offline", "--train.steps=20"))
    runs = list(Path(summary["run_dir"]).glob("wandb/offline-run-*"))
    assert len(runs) == 1
    media = [p.relative_to(runs[0]).as_posix() for p in runs[0].glob("files/media/images/**/*.png")]
    assert any("/samples/val/spatial" in p for p in media) and any("/inputs_" in p for p in media)
    records = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert b"histogram" in records and b"dead_relu_g" in records and b"update_ratio_g" in records


def test_ddp_two_gloo_processes_end_in_sync(openmoji_small, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "train.py", SMOKE, *smoke_overrides(openmoji_small, tmp_path, "--train.name=ddp", "--train.steps=10",
                                               "--train.batch_size=4")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["step"] == 10
    assert summary["ddp_max_weight_diff"] == 0.0


def test_the_pace_line_comes_once_after_the_first_steps_and_suggests_help_beyond_a_day(monkeypatch):
    from colorizer import monitor

    now = {"s": 0.0}
    monkeypatch.setattr(monitor.time, "perf_counter", lambda: now["s"])

    def run(pace, steps):
        lines = []
        for step in steps:
            now["s"] = 2.0 * step  # 2 s per step
            lines.append(pace.update(step))
        return lines

    lines = run(monitor.Pace(start_step=100, steps=200, measure=3), range(101, 120))
    said = [line for line in lines if line]
    assert len(said) == 1 and lines[3] == said[0]  # step 101 starts the clock; 3 steps later, once
    assert said[0].startswith("pace: 2 s/step here; the remaining 96 steps take about 3 min") and "day" not in said[0]
    said = [line for line in run(monitor.Pace(start_step=0, steps=100_000, measure=3), range(1, 10)) if line]
    assert "more than a day" in said[0] and "experiments/cpu.yaml" in said[0]
