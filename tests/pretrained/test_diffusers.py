"""diffusers folders: a tiny random UNet2DModel saved with save_pretrained loads as a VP
process with the scheduler's betas, and physgen's σ-form Euler / dpmpp-2m on it equal
diffusers' own DDIMScheduler / DPMSolverMultistepScheduler runs on the same model and noise.

DDIM (eta = 0) is Euler on the probability-flow ODE in EDM's σ form ``dx̄/dσ = (x̄ - D)/σ``
(Karras et al. arXiv 2206.00364, §3; Song et al. arXiv 2010.02502, eq. 14).  On physgen's
VP that is the denoiser-form Euler step, ``euler-ancestral`` with ``eta=0``; physgen's
``euler`` on VP steps VP's own ODE in ``t`` (score SDE's form), a different discretisation
of the same ODE.  The comparison needs the optional diffusers package (slow tier; skipped
without it); the refusals without it are fast."""
from __future__ import annotations

import json
import sys

import pytest
import torch

import physgen.pretrained as P
from diffusers_folders import tiny_unet2d
from physgen.errors import UserError
from physgen.pretrained.diffusers import diffusers_betas
from physgen.processes import VP
from physgen.sampling import sample

T = 1000


def _unet_folder(tmp_path, prediction_type="epsilon", beta_schedule="linear", seed=0):
    pytest.importorskip("diffusers")
    folder = tmp_path / f"unet-{prediction_type}-{beta_schedule}"
    return folder, tiny_unet2d(folder, prediction_type, beta_schedule, seed=seed, T=T)


def _diffusers_run(model, scheduler, x, steps):
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t).sample, t, x).prev_sample
    return x, scheduler.timesteps


def _physgen_grid(timesteps) -> torch.Tensor:
    """The scheduler's timesteps τ as physgen's VP times t = (τ + 1)/T, then the data (t = 0)."""
    return torch.cat([(timesteps.double() + 1) / T, torch.zeros(1, dtype=torch.float64)])


@pytest.mark.slow
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_sigma_form_euler_equals_ddim(tmp_path, prediction_type):
    diffusers = pytest.importorskip("diffusers")
    folder, model = _unet_folder(tmp_path, prediction_type)
    m = P.load(folder)
    assert isinstance(m.process, VP) and m.process.beta_schedule == "discrete" and m.shape == (3, 8, 8)
    x0 = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ddim = diffusers.DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", prediction_type=prediction_type, clip_sample=False,
                                   set_alpha_to_one=True)
    want, timesteps = _diffusers_run(model, ddim, x0.clone(), 10)
    with torch.no_grad():
        got = sample(m.process, m.field, x0, _physgen_grid(timesteps), "euler-ancestral", eta=0.0).x
    assert float((got - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))


@pytest.mark.slow
@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_dpmpp_2m_equals_dpm_solver_multistep(tmp_path, beta_schedule):
    diffusers = pytest.importorskip("diffusers")
    folder, model = _unet_folder(tmp_path, "epsilon", beta_schedule)
    m = P.load(folder)
    x0 = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    dpm = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=T, beta_schedule=beta_schedule, algorithm_type="dpmsolver++",
                                                solver_order=2, final_sigmas_type="zero")
    want, timesteps = _diffusers_run(model, dpm, x0.clone(), 12)
    with torch.no_grad():
        got = sample(m.process, m.field, x0, _physgen_grid(timesteps), "dpmpp-2m").x
    assert float((got - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))


@pytest.mark.slow
def test_denoise_is_the_scheduler_implied_denoiser(tmp_path):
    """``denoise(x̄, σ)`` at a trained step ``τ`` is ``(x - √(1-ᾱ) ε)/√ᾱ`` at ``x = √ᾱ x̄``."""
    pytest.importorskip("diffusers")
    folder, model = _unet_folder(tmp_path)
    m = P.load(folder)
    betas = diffusers_betas({"beta_schedule": "linear"}, "test").double()
    alpha_bar = torch.cumprod(1 - betas, 0)
    x = torch.randn(3, 3, 8, 8)
    for tau in (0, 250, 999):
        a, b = alpha_bar[tau].sqrt(), (1 - alpha_bar[tau]).sqrt()
        with torch.no_grad():
            eps = model(a.float() * x, torch.full((3,), tau)).sample
            got = m.denoise(x, float(b / a))
        want = (a.float() * x - b.float() * eps) / a.float()
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), tau


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_betas_are_the_schedulers(schedule):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=schedule)
    assert torch.equal(diffusers_betas(dict(sched.config), "test"), sched.betas)


# --------------------------------------------------------------------------- fast: no diffusers needed


def _fake_folder(tmp_path, weights="diffusion_pytorch_model.safetensors", scheduler=True, **sched):
    from safetensors.torch import save_file

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8, "in_channels": 3}))
    if weights.endswith(".safetensors"):
        save_file({"w": torch.zeros(1)}, str(folder / weights))
    else:
        (folder / weights).write_bytes(b"not read")
    if scheduler:
        (folder / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, **sched}))
    return folder


def test_without_diffusers_a_folder_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers raises ImportError
    with pytest.raises(UserError, match=r'pip install "physgen\[diffusers\]"'):
        P.load(_fake_folder(tmp_path))


@pytest.mark.parametrize("kw, expect", [
    (dict(weights="diffusion_pytorch_model.bin"), "pickles are not read"),
    (dict(scheduler=False), "no scheduler_config.json"),
    (dict(beta_schedule="sigmoid"), "beta_schedule 'sigmoid' is not supported"),
    (dict(rescale_betas_zero_snr=True), "rescale_betas_zero_snr"),
])
def test_folder_refusals_are_one_line(tmp_path, kw, expect):
    with pytest.raises(UserError, match=expect) as info:
        P.load(_fake_folder(tmp_path, **kw))
    assert "\n" not in str(info.value)
