"""colorizer.bench runs end to end on CPU (figures are printed, never asserted), and the batched
augmentation it times crops exactly as a per-sample loop would."""
import json

import pytest
import torch

from colorizer import bench
from colorizer.checkpoint import export_generator
from colorizer.config import load_config, to_dict
from colorizer.models import build_generator
from colorizer.runtime import augment

TINY = ["--model.depth=3", "--model.base_channels=8", "--model.max_channels=32", "--model.disc_channels=8",
        "--model.disc_layers=2", "--data.num_workers=0"]


def test_bench_quick_on_cpu_writes_every_section(openmoji_small, tmp_path, capsys):
    cfg = load_config(overrides=TINY + ["--data.size=32"])
    demo = export_generator(tmp_path / "demo", build_generator(cfg.model).state_dict(), to_dict(cfg), 0, {}, "off", "t")
    out = tmp_path / "bench.json"
    code = bench.main(["--device", "cpu", "--size", "32", "--quick", "--out", str(out), "--demo-model", str(demo),
                       "--baseline", "--profile", *TINY, f"--data.root={openmoji_small}", "--data.size=32"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["device"].endswith("CPU") and result["quick"] is True
    (row,) = result["train"]  # CPU, quick: fp32 at one batch size
    assert row["precision"] == "fp32" and row["images_per_s"] > 0 and row["gflop_per_image"] > 0
    assert result["reference"]["name"] == "pix2pix-style reference" and result["reference"]["batch"] == 1
    assert result["speedup_default_vs_reference"] > 0 and result["speedup_amp_vs_fp32"] is None
    assert result["data"]["images_per_s_warm"] > 0 and result["data"]["ratio_to_training"] > 0
    sizes = [(r["model"].split()[0], r["size"]) for r in result["inference"]]
    assert sizes == [("default", 256), ("default", 512), *(("demo", s) for s in bench.DEMO_SIZES),
                     ("demo", bench.STROKE_SIZE), ("demo", bench.STROKE_SIZE),
                     *(("demo", s) for s in bench.PAGE_SIZES for _ in (0, 1, 2))]
    assert sum("before issue 33" in r["model"] for r in result["inference"]) == len(bench.PAGE_SIZES)
    assert sum("flat fills" in r["model"] for r in result["inference"]) == len(bench.PAGE_SIZES)
    assert sum("strokes" in r["model"] for r in result["inference"]) == 2  # the propagation off and on
    assert all(r["latency_ms"] > 0 for r in result["inference"])
    printed = capsys.readouterr().out
    assert "| pix2pix-style reference | fp32 | 1 |" in printed and "Data path" in printed
    assert "measured without region scribbles" in result["data"]["note"]  # the fixture has no maps
    # --baseline: today's eager settings next to the defaults, at the default precision and batch; --profile
    assert list(result["compared"]) == ["baseline", "defaults"] and result["speedup_defaults_vs_baseline"] > 0
    for row in result["compared"].values():
        assert row["batch"] == result["default_batch"] and row["images_per_s"] > 0
        assert row["profile"]["top"] and row["profile"]["idle_share"] is None  # CPU: operators, no idle share
    assert "| baseline | fp32 |" in printed and "| defaults | fp32 |" in printed and "Profile, defaults" in printed


def test_bench_refuses_an_unknown_config_key(capsys):
    assert bench.main(["--device", "cpu", "--quick", "--model.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err


def test_peak_table_uses_tf32_for_fp32_convolutions():
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4)
    if torch.backends.cudnn.allow_tf32:
        assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == pytest.approx(494.7)
    assert bench.peak_tflops("x86_64 CPU", "fp32") is None


@pytest.mark.parametrize("crop", [0, 8, 20])
def test_batched_crop_and_flip_match_a_per_sample_loop(crop):
    line, color = torch.rand(5, 1, 20, 36), torch.rand(5, 3, 20, 36)  # non-square
    torch.manual_seed(3)
    got_line, got_color = augment(line, color, crop, hflip=True)
    torch.manual_seed(3)
    expect_line, expect_color = line, color
    if crop and crop < 36:
        top = torch.randint(0, 20 - crop + 1, (5,)).tolist()
        left = torch.randint(0, 36 - crop + 1, (5,)).tolist()
        expect_line = torch.stack([x[:, t : t + crop, s : s + crop] for x, t, s in zip(line, top, left)])
        expect_color = torch.stack([x[:, t : t + crop, s : s + crop] for x, t, s in zip(color, top, left)])
    flip = torch.rand(5) < 0.5
    expect_line = torch.stack([x.flip(-1) if f else x for x, f in zip(expect_line, flip)])
    expect_color = torch.stack([x.flip(-1) if f else x for x, f in zip(expect_color, flip)])
    assert torch.equal(got_line, expect_line) and torch.equal(got_color, expect_color)
