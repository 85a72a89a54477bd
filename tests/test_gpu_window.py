"""tools/gpu_window.py (issue 43): the dry run proves the chain of a lent GPU window on the CPU (kit
unpacked, data prepared from it, bench, training stopped at the deadline and saved, the fp16 export
checked and laid out as the device tool returns it), and the step plan follows the bench and a
resumed run's first plan."""
import argparse
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

from colorizer.checkpoint import read_generator
from colorizer.inference import Colorizer
from data_prep.openmoji import svg_files

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import gpu_window  # noqa: E402  (a script, not a package module)


def test_dry_run_chains_every_step_and_returns_a_loadable_fp16_model(tmp_path):
    kit, out, work = tmp_path / "kit", tmp_path / "out", tmp_path / "work"
    kit.mkdir()
    with tarfile.open(kit / gpu_window.SVG_ARCHIVE, "w:xz") as tar:  # the packed SVGs; no wheels, no npm sets
        for path in svg_files(60):
            tar.add(path, arcname=path.name)
    # --steps far beyond the time: the run must be stopped at the deadline, save, and still export
    done = subprocess.run([sys.executable, "tools/gpu_window.py", "run", "--dry-run", "--minutes", "3.5",
                           "--steps", "100000", "--out", str(out), "--work", str(work), "--kit", str(kit)],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)
    record = json.loads((out / "window.json").read_text())
    steps = {s["step"]: s for s in record["steps"]}
    assert list(steps) == ["setup", "data", "bench", "train", "export"], done.stdout + done.stderr
    assert steps["setup"]["status"] == "ok" and "60 OpenMoji SVGs" in steps["setup"]["note"]
    unpacked = "not packed: fluent-emoji-flat, noto, flat-color-icons, emojione, streamline-emojis"
    assert steps["data"]["status"] == "ok" and unpacked in steps["data"]["note"]
    manifest = (work / "data" / "openmoji64" / "manifest.jsonl").read_text().splitlines()
    assert 0 < len(manifest) <= 40  # --limit 40 of the 60 unpacked
    assert any((work / "data" / "openmoji64" / "scribbles").glob("*.png"))
    assert steps["bench"]["status"] == "ok", (out / "bench.log").read_text()[-3000:]
    assert json.loads((out / "bench.json").read_text())["compared"]["defaults"]["images_per_s"] > 0
    train = record["train"]
    assert steps["train"]["status"] == "ok", (out / "train.log").read_text()[-3000:]
    assert train["stopped_at_deadline"] and 0 < train["step"] < 100000 and train["planned_steps"] == 100000
    assert train["perceptual"].startswith("on: efficientnet_lite0")
    assert steps["export"]["status"] == "ok" and done.returncode == 0
    # the returned layout: files at most one folder down, the model fp16 and under the return limit
    returned = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert returned == ["bench.json", "bench.log", "data.log", "model/config.json", "model/generator.safetensors",
                        "train.log", "window.json"]
    assert (out / "model" / "generator.safetensors").stat().st_size < gpu_window.RETURN_LIMIT
    stored = read_generator(out / "model")
    assert stored.step == train["step"] and stored.config["train"]["init"] == "models/demo"
    assert {v.dtype for v in stored.weights.values() if v.is_floating_point()} == {torch.float16}
    model = Colorizer.load(out / "model", device="cpu")  # the demo loads it as it is
    assert next(model.generator.parameters()).dtype == torch.float32
    parent = read_generator(ROOT / "models" / "demo")
    moved = max((stored.weights[k].float() - parent.weights[k]).abs().max().item()
                for k in parent.weights if parent.weights[k].is_floating_point())
    assert moved > 1e-3  # it trained: not the bundled model sent back


def test_step_plan_follows_the_bench_and_keeps_a_resumed_runs_plan(tmp_path):
    args = argparse.Namespace(
        out=tmp_path / "out", minutes=9.5, work=tmp_path, kit=tmp_path / "kit", size=256, steps=0, dry_run=False)
    window = gpu_window.Window(args)
    window.out.mkdir()
    steps, why = window.plan_steps(100)
    assert steps == 200 and "no bench" in why  # no figure: a fixed guess, with SIGTERM at the deadline as the stop
    (window.out / "bench.json").write_text(json.dumps({"compared": {"defaults": {"images_per_s": 320.0}}}))
    steps, why = window.plan_steps(100)
    assert steps == int(100 * 320 / 16 * gpu_window.STEP_SAFETY) and "bench" in why
    plan = tmp_path / "runs" / gpu_window.RUN_NAME / gpu_window.PLAN_FILE
    plan.parent.mkdir(parents=True)
    plan.write_text(json.dumps({"steps": 1234}))
    assert window.plan_steps(10)[0] == 1234  # a second call continues the same schedule


def test_tail_folds_progress_updates_and_cuts_long_logs():
    assert gpu_window.tail("a\rb\rc\nd\n") == "c\nd\n"
    assert gpu_window.tail("50%\r100%\r\n") == "100%\n"
    assert gpu_window.tail("x" * 50, chars=11) == "[... 39 characters cut]\n" + "x" * 11
