"""Shared fixtures: an offline, sandboxed environment and a tiny prepared OpenMoji dataset."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]

# Property-based tests: "ci" (the default) draws the same examples on every run and keeps no example
# database in the repository; HYPOTHESIS_PROFILE=explore draws new, more examples each run.
settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", max_examples=500, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="session")
def _offline_env(tmp_path_factory):
    """W&B offline in a temp dir, no analytics, nothing written into the repo or $HOME."""
    base = tmp_path_factory.mktemp("env")
    for key in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        os.environ[key] = str(base / key.lower())
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["TORCH_HOME"] = str(base / "torch_home")  # no VGG weights here: the offline path
    yield


@pytest.fixture(autouse=True, scope="session")
def _patient_http():
    """gradio_client's Client(url) fetches the app's config, and its predict uploads each file, with httpx's 5 s
    default, which a loaded 2-core CI machine has missed (the config once, an upload once); every test's client
    waits up to 60 s (a call that names its timeout keeps it)."""
    import functools

    import httpx

    with pytest.MonkeyPatch.context() as patch:
        for verb in ("get", "post"):
            patch.setattr(httpx, verb, functools.partial(getattr(httpx, verb), timeout=60))
        yield


@pytest.fixture(scope="session")
def openmoji_small(tmp_path_factory) -> Path:
    """~300 OpenMoji pairs at 32 px, prepared once per test session by the project's own command."""
    out = tmp_path_factory.mktemp("data") / "openmoji32"
    subprocess.run([sys.executable, "-m", "data_prep", "openmoji", "--out", str(out), "--size", "32",
                    "--limit", "320"], cwd=ROOT, check=True, capture_output=True)
    return out


def smoke_overrides(data_root: Path, run_dir: Path, *extra: str) -> list:
    """Overrides that point the smoke experiment at test data and a temp run folder."""
    return [f"--data.root={data_root}", "--data.prepare=none", f"--train.out_dir={run_dir}", *extra]
