"""Multi-process training on CPU (gloo): torchrun restarts a killed worker group and the run resumes;
a rank that must stop brings every rank down with its message instead of leaving them waiting."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from colorizer.data import read_manifest
from colorizer.runtime import ResumableSampler
from conftest import ROOT, smoke_overrides

SMOKE = str(ROOT / "experiments" / "smoke.yaml")
QUIET = ["--log.progress=false", "--log.image_every=1000", "--log.hist_every=1000", "--train.val_every=1000"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def children(pid: int) -> list:
    """PIDs whose parent is ``pid`` (Linux /proc): torchrun's worker processes."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds torchrun's workers through /proc")
def test_torchrun_restarts_a_killed_worker_and_the_run_reaches_its_step(openmoji_small, tmp_path):
    steps = 60
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=3",
           "train.py", SMOKE, *smoke_overrides(openmoji_small, tmp_path, *QUIET, "--train.name=el",
                                               f"--train.steps={steps}", "--train.ckpt_every=5",
                                               "--train.batch_size=4", "--train.resume=auto")]
    log = tmp_path / "torchrun.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=ENV)
        latest = tmp_path / "el" / "checkpoints" / "latest.pt"
        deadline = time.time() + 180
        while not latest.is_file() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        workers = children(proc.pid)
        assert latest.is_file() and len(workers) == 2, log.read_text()[-3000:]
        killed_at = time.time()
        os.kill(workers[-1], signal.SIGKILL)  # one worker dies mid-run, as on a lost GPU or an OOM kill
        proc.wait(timeout=300)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    resumed = re.search(r"resumed \S+latest\.pt at step (\d+)", text)
    assert resumed and 0 < int(resumed.group(1)) < steps, text[-3000:]
    summary = json.loads((tmp_path / "el" / "summary.json").read_text())
    assert summary["step"] == steps and summary["ddp_max_weight_diff"] == 0.0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["el"]  # the same run folder, continued
    print(f"kill to the end of the restarted run: {time.time() - killed_at:.1f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_ranks(args: list, tmp_path: Path) -> list:
    """Two train.py processes forming one DDP group without torchrun (nothing kills a waiting rank for
    us); returns (returncode, stderr) per rank."""
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank),
               "LOCAL_RANK": str(rank)}
        procs.append(subprocess.Popen([sys.executable, "train.py", SMOKE, *args], cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return [(p.wait(timeout=240), p.communicate()[1]) for p in procs]


def test_an_unreadable_file_on_one_rank_stops_both_with_its_message(openmoji_small, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(openmoji_small, data)
    records = read_manifest(data, "train")[:256]  # smoke.yaml: data.max_items=256
    batch = 4
    first_of_rank1 = list(ResumableSampler(len(records), 0, rank=1, world_size=2))[:batch]
    broken = data / records[first_of_rank1[0]]["color"]
    broken.write_bytes(broken.read_bytes()[:40])
    (rank0, err0), (rank1, err1) = launch_two_ranks(
        smoke_overrides(data, tmp_path, *QUIET, "--train.name=u", "--train.steps=20", f"--train.batch_size={batch}",
                        "--data.max_bad_fraction=0"), tmp_path)
    assert (rank0, rank1) == (1, 1), (err0[-2000:], err1[-2000:])
    assert "Traceback" not in err0 + err1
    stopped = f"1 of the {len(records)} training pairs are unreadable"
    assert re.search(f"error: {stopped}.*\n.*" + re.escape(str(broken)), err1), err1
    assert f"error: rank 1 stopped the run: {stopped}" in err0, err0


def test_a_failed_save_on_rank_0_stops_both_with_its_message(openmoji_small, tmp_path):
    blocked = tmp_path / "s" / "checkpoints" / "latest.pt"
    blocked.mkdir(parents=True)  # a folder where the checkpoint file must go: every save fails
    (rank0, err0), (rank1, err1) = launch_two_ranks(
        smoke_overrides(openmoji_small, tmp_path, *QUIET, "--train.name=s", "--train.steps=20",
                        "--train.ckpt_every=5", "--train.batch_size=4", "--train.resume=auto"), tmp_path)
    assert (rank0, rank1) == (1, 1), (err0[-2000:], err1[-2000:])
    assert "Traceback" not in err0 + err1
    message = f"could not write {blocked} at step 5"
    assert f"error: {message}" in err0 and f"error: rank 0 stopped the run: {message}" in err1, (err0, err1)
