"""The learning-rate range test: a short real sweep on the smoke experiment, the stopping rules and
the suggestion rule on a curve whose answer is known."""
import json
import math

import numpy as np
import pytest

from colorizer import lr_find, step
from conftest import ROOT, smoke_overrides

SMOKE = str(ROOT / "experiments" / "smoke.yaml")


def run(data, tmp_path, *extra) -> tuple:
    out = tmp_path / "lr.png"
    code = lr_find.main([SMOKE, *smoke_overrides(data, tmp_path), "--log.progress=false", "--out", str(out), *extra])
    values = json.loads(out.with_suffix(".json").read_text()) if code == 0 else None
    return code, out, values


def test_sweep_on_the_smoke_experiment_writes_plot_values_and_suggestion(openmoji_small, tmp_path, capsys):
    start, end, steps = 1e-5, 1e-1, 30
    code, out, values = run(openmoji_small, tmp_path, "--start", str(start), "--end", str(end), "--steps", str(steps))
    assert code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lrs = [p["lr"] for p in values["points"]]
    assert 2 <= len(lrs) <= steps and (len(lrs) == steps) == (values["stopped"] is None)
    assert lrs[0] == pytest.approx(start) and lrs[-1] <= end * (1 + 1e-12)
    ratios = np.array(lrs[1:]) / np.array(lrs[:-1])
    assert ratios == pytest.approx(np.full(len(ratios), (end / start) ** (1 / (steps - 1))), rel=1e-9)
    assert all(math.isfinite(p["loss"]) and p["loss"] > 0 for p in values["points"][:5])
    assert start <= values["suggested_lr_g"] <= end and values["suggested_lr_g"] in lrs
    assert values["suggested_lr_d"] == pytest.approx(values["suggested_lr_g"])  # smoke: lr_d = lr_g
    assert f"--train.lr_g={values['suggested_lr_g']:.2g}" in capsys.readouterr().out


@pytest.mark.parametrize("bad_value, reason", [(1e3, "diverged"), (float("nan"), "not finite")])
def test_sweep_stops_when_the_loss_blows_up(openmoji_small, tmp_path, monkeypatch, bad_value, reason):
    calls = []

    def recon_then_blow_up(pred, target, kind):
        calls.append(1)
        return pred.sum() * 0 + (1.0 if len(calls) <= 6 else bad_value)

    monkeypatch.setattr(step, "recon_loss", recon_then_blow_up)
    code, _, values = run(openmoji_small, tmp_path, "--steps", "20", "--loss.perceptual_weight=0")
    assert code == 0 and reason in values["stopped"]
    recorded = 7 if reason == "diverged" else 6  # the diverging point is shown; a non-finite one cannot be
    assert len(values["points"]) == recorded and len(calls) == 7


def test_errors_exit_like_train_py(openmoji_small, tmp_path, capsys):
    assert run(openmoji_small, tmp_path, "--train.no_such_key=1")[0] == 2
    assert "no_such_key" in capsys.readouterr().err
    assert run(tmp_path / "missing", tmp_path)[0] == 1
    assert "no prepared dataset" in capsys.readouterr().err
    assert run(openmoji_small, tmp_path, "--start", "1e-1", "--end", "1e-3")[0] == 2


@pytest.mark.parametrize("after", ["blow_up", "blow_up_then_collapse"])
def test_suggestion_is_the_steepest_fall_before_divergence(after):
    lrs = np.geomspace(1e-6, 1e-1, 100)
    log_lr = np.log10(lrs)
    descent = 2 - np.tanh((log_lr + 4) / 0.5)  # falls fastest at lr = 1e-4, flat at 1 from ~1e-3
    if after == "blow_up":  # from ~1e-2 on, a rise far steeper than the fall
        loss = descent + np.exp(4 * (log_lr + 2))
    else:  # up by 30 at 1e-2, then a steep fall by 25 (a collapsing GAN), still above the minimum
        step_up = lambda centre: 1 / (1 + np.exp(-(log_lr - centre) / 0.1))  # noqa: E731
        loss = descent + 30 * step_up(-2) - 25 * step_up(-1.3)
    noisy = loss + np.random.default_rng(0).normal(0, 0.05, lrs.size)
    suggested = lr_find.suggest_lr(lrs, lr_find.smooth(noisy))
    assert 10**-4.15 < suggested < 10**-3.85, suggested


def test_suggestion_when_the_loss_never_falls_is_the_first_lr():
    lrs = np.geomspace(1e-6, 1e-1, 20)
    assert lr_find.suggest_lr(lrs, np.linspace(1, 3, 20)) == pytest.approx(1e-6)
