"""The one GAN iteration (colorizer/step.py): train, lr_find and bench run the same code, its loss
terms are weighted by name from the config, and its non-finite guard skips only what it must."""
from pathlib import Path

import pytest
import torch

from colorizer import bench
from colorizer import step
from colorizer.config import LossConfig, load_config
from colorizer.runtime import DistInfo
from colorizer.step import LOSS_WEIGHTS, build_parts, prepare_inputs, train_step, weighted_total
from colorizer.data import make_train_stream
from colorizer.training import train
from conftest import ROOT, smoke_overrides

SMOKE = str(ROOT / "experiments" / "smoke.yaml")
CPU = torch.device("cpu")


def test_train_and_bench_take_the_same_step(openmoji_small, tmp_path):
    """Same seed, same batch: train.py's first iteration and bench's timed iteration give identical
    losses and identical updated weights (so the benchmark times what training runs)."""
    cfg = load_config(SMOKE, smoke_overrides(openmoji_small, tmp_path, "--train.name=one", "--train.steps=1",
                                             "--train.deterministic=true", "--log.every=1", "--log.progress=false",
                                             "--model.disc_hints=true", "--loss.gp=r1", "--train.grad_clip=1.0"))
    summary = train(cfg)
    trained = torch.load(tmp_path / "one" / "checkpoints" / "latest.pt", weights_only=True)

    batch = next(make_train_stream(cfg, Path(cfg.data.root), DistInfo(), cfg.train.batch_size))  # what train saw
    assert "scribbles" in batch  # on by default: train made the maps first
    step, parts = bench.make_step(cfg, CPU, cfg.train.batch_size, cfg.data.size, data=batch)
    result = step()

    benched = {k: v.item() for k, v in result.scalars().items() if k.startswith("loss/")}
    logged = {k: v for k, v in summary["history"][0].items() if k.startswith("loss/")}
    assert set(benched) == set(logged) >= {"loss/d_gp", "loss/perceptual", "loss/recon", "loss/g_adv"}
    assert benched == logged
    for key, module in (("generator", parts.generator), ("discriminator", parts.discriminator),
                        ("generator_ema", parts.ema)):
        state = module.state_dict()
        assert set(state) == set(trained[key])
        for name, value in state.items():
            assert torch.equal(value, trained[key][name]), f"{key}.{name}"


def test_totals_are_the_named_terms_weighted_by_their_config_keys():
    cfg = load_config(overrides=["--loss.gan_weight=0.5", "--loss.recon_weight=7", "--loss.perceptual_weight=3",
                                 "--loss.gp_weight=2"])
    terms = {name: torch.tensor(float(i + 1)) for i, name in enumerate(LOSS_WEIGHTS)}
    expected = sum(value * (1.0 if LOSS_WEIGHTS[name] is None else getattr(cfg.loss, LOSS_WEIGHTS[name]))
                   for name, value in terms.items())
    assert weighted_total(terms, cfg.loss).item() == pytest.approx(expected.item())
    assert {k for k in LOSS_WEIGHTS.values() if k} <= set(LossConfig.__dataclass_fields__)  # every weight is a key


def tiny(*extra):
    return load_config(overrides=["--model.depth=3", "--model.base_channels=8", "--model.max_channels=16",
                                  "--model.disc_channels=8", "--model.disc_layers=2", "--train.batch_size=2",
                                  "--loss.perceptual_weights=random", *extra])


def random_batch(height=16, width=24):  # non-square
    torch.manual_seed(1)
    return {"line": torch.rand(2, 1, height, width) * 2 - 1, "color": torch.rand(2, 3, height, width) * 2 - 1}


@pytest.mark.parametrize("extra", [[], ["--model.disc_hints=true"], ["--loss.gp=dragan", "--loss.gan=hinge"],
                                   ["--loss.perceptual_weight=0", "--loss.recon=l1", "--train.grad_clip=0.5"]])
def test_every_configured_term_runs_and_updates_both_networks(extra):
    parts = build_parts(tiny(*extra), CPU)
    before = [p.detach().clone() for p in (*parts.generator.parameters(), *parts.discriminator.parameters())]
    line, color, hints, _ = prepare_inputs(parts, random_batch(), 0.0)
    result = train_step(parts, line, color, hints)
    assert result.ok and all(torch.isfinite(v) for v in result.scalars().values())
    assert ("d_gp" in result.d_terms) == ("--loss.gp=dragan" in extra)
    assert ("perceptual" in result.g_terms) == ("--loss.perceptual_weight=0" not in extra)
    params = [*parts.generator.parameters(), *parts.discriminator.parameters()]
    stepped = [not torch.equal(b, p.detach()) for b, p in zip(before, params) if p.grad is not None and p.grad.any()]
    assert len(stepped) > len(params) // 2 and all(stepped)  # every parameter that got a gradient moved
    assert parts.ema.n_averaged.item() == 1


@pytest.mark.parametrize("optimizer", ["foreach", "fused"])  # fused: the skip is decided on the device
def test_a_nonfinite_generator_loss_skips_only_the_generator(monkeypatch, optimizer):
    import colorizer.step as step

    parts = build_parts(tiny(f"--train.optimizer={optimizer}"), CPU)
    assert parts.opt_g.defaults[optimizer] and parts.opt_d.defaults[optimizer]
    line, color, hints, _ = prepare_inputs(parts, random_batch(), 0.0)
    train_step(parts, line, color, hints)  # one good step: Adam has state to keep
    g_before = [p.detach().clone() for p in parts.generator.parameters()]
    d_before = [p.detach().clone() for p in parts.discriminator.parameters()]
    ema_before = [p.detach().clone() for p in parts.ema.module.parameters()]
    adam_before = {k: v.clone() for k, v in parts.opt_g.state[next(parts.generator.parameters())].items()}
    monkeypatch.setattr(step, "recon_loss", lambda pred, target, kind: pred.sum() * float("nan"))
    result = train_step(parts, line, color, hints)
    assert isinstance(result.g_ok, torch.Tensor) and result.g_ok.device == CPU  # a device verdict
    assert result.d_ok and not result.g_ok and result.culprits() == ["recon"]
    assert all(torch.equal(a, b) for a, b in zip(g_before, parts.generator.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(d_before, parts.discriminator.parameters()))
    adam_after = parts.opt_g.state[next(parts.generator.parameters())]
    assert all(torch.equal(v, adam_after[k]) for k, v in adam_before.items())  # moments and step count kept
    assert all(torch.equal(a, b) for a, b in zip(ema_before, parts.ema.module.parameters()))
    assert parts.ema.n_averaged.item() == 1  # the good step only


def test_the_ema_update_is_the_averaged_models_lerp():
    parts = build_parts(tiny(), CPU)
    with torch.no_grad():
        for p in parts.generator.parameters():
            p.add_(1.0)
    expected = [e + (1 - parts.cfg.train.ema_decay) * (g - e)
                for e, g in zip(parts.ema.module.parameters(), parts.generator.parameters())]
    step.update_ema(parts.ema, parts.generator, parts.cfg.train.ema_decay, torch.tensor(True))
    assert all(torch.allclose(a, b) for a, b in zip(expected, parts.ema.module.parameters()))


def test_the_ema_warmup_forgets_a_zero_start_that_the_plain_ema_keeps():
    """train.ema_warmup: after 1,200 updates toward a constant, a part that started at zero keeps under
    1 % of that start (decay ramping as (1 + n) / (10 + n)); at a fixed 0.999 it keeps 0.999^1200 = 30 %."""
    kept = {}
    for warmup in (False, True):
        parts = build_parts(tiny(), CPU)
        parts.ema.n_averaged.fill_(1)  # as train.init leaves it
        with torch.no_grad():
            for e, p in zip(parts.ema.module.parameters(), parts.generator.parameters()):
                e.zero_(), p.fill_(1.0)
        for _ in range(1200):
            step.update_ema(parts.ema, parts.generator, 0.999, torch.tensor(True), warmup)
        kept[warmup] = 1 - next(parts.ema.module.parameters()).mean().item()
    assert kept[False] == pytest.approx(0.999 ** 1200, rel=1e-3)
    assert kept[True] < 0.01


def test_padded_inputs_train_and_export(tmp_path):
    from colorizer.checkpoint import export_generator
    from colorizer.config import to_dict
    from colorizer.inference import Colorizer

    cfg = tiny("--model.pad_inputs=true", "--model.disc_hints=true")
    parts = build_parts(cfg, CPU)
    assert parts.generator.downs[0].conv.in_channels == 8  # 5 -> 8
    assert parts.discriminator.net[0].weight.shape[1] == 8  # 8 (line, image, hints) stays 8
    assert build_parts(tiny("--model.pad_inputs=true"), CPU).discriminator.net[0].weight.shape[1] == 8  # 4 -> 8
    line, color, hints, _ = prepare_inputs(parts, random_batch(), 0.0)
    assert train_step(parts, line, color, hints).ok
    folder = export_generator(tmp_path / "export", parts.ema.module.state_dict(), to_dict(cfg), 1, {}, "off", "pad")
    from PIL import Image

    out = Colorizer.load(folder, device="cpu").colorize(Image.new("L", (40, 24), 255))
    assert out.size == (40, 24)


def test_perceptual_amp_runs_vgg_in_bfloat16_within_its_noise():
    cfg = tiny("--train.amp=bf16")
    parts = build_parts(cfg, CPU)
    line, color, hints, _ = prepare_inputs(parts, random_batch(), 0.0)
    fake = parts.generator(line, hints.spatial, hints.palette, hints.palette_keep).detach()
    full = parts.perceptual(fake, color)
    with parts.autocast:
        low = parts.perceptual(fake, color)
    assert full.dtype == torch.float32 and low.item() == pytest.approx(full.item(), rel=0.05)
    amp_parts = build_parts(tiny("--train.amp=bf16", "--loss.perceptual_amp=true"), CPU)
    assert torch.isfinite(train_step(amp_parts, line, color, hints).g_terms["perceptual"])


def test_cuda_graph_compile_is_refused_on_cpu():
    with pytest.raises(ValueError, match="reduce-overhead.*CUDA"):
        build_parts(tiny("--train.compile=true", "--train.compile_mode=reduce-overhead"), CPU)
