"""The CUDA paths (issue 13): fused Adam, bf16 autocast + channels_last, torch.compile, the exact
field, the U-Net and Heun sampling on the GPU, each against the plain fp32 / CPU computation.

Every test is marked ``cuda`` (``pytest -m cuda`` selects them) and skips without a CUDA
device.  ``DEVICE`` is a module constant so that the logic can be checked on a CPU by
pointing it at ``cpu`` (``PHYSGEN_CUDA_TESTS_DEVICE=cpu``); CI never does that.
"""
from __future__ import annotations

import contextlib
import os

import pytest
import torch

import solvers
from physgen.nets.mlp import MLP
from physgen.nets.unet import build_unet
from physgen.processes import EDM, make_process
from physgen.training import TrainConfig, train

DEVICE = os.environ.get("PHYSGEN_CUDA_TESTS_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs CUDA"),
]
F64 = torch.float64


@contextlib.contextmanager
def no_tf32():
    """Plain fp32 arithmetic in cuBLAS and cuDNN (torch's default lets cuDNN convolutions use TF32)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _tiny_unet_field(process, channels=1, res=8, seed=0):
    torch.manual_seed(seed)
    field = process.precondition(build_unet("tiny", res, channels))
    with torch.no_grad():  # the output conv starts at zero: give the output a dependence on x
        field.net.out_conv.weight.normal_(0, 0.05)
    return field


def test_fused_adam_steps_like_the_foreach_adam():
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.SiLU(), torch.nn.Linear(32, 4)).to(DEVICE) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    fused = torch.optim.Adam(nets[0].parameters(), lr=1e-2, **({"fused": True} if DEVICE == "cuda" else {}))
    plain = torch.optim.Adam(nets[1].parameters(), lr=1e-2, foreach=False)
    g = torch.Generator(device=DEVICE).manual_seed(1)
    for _ in range(10):
        x = torch.randn(64, 8, device=DEVICE, generator=g)
        for net, opt in zip(nets, (fused, plain)):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_channels_last_training_learns():
    # a constant image plus small noise: a tiny U-Net must get the loss well below where it started
    process = EDM()
    field = _tiny_unet_field(process)
    data = (torch.linspace(-0.8, 0.8, 64).reshape(1, 1, 8, 8) + 0.05 * torch.randn(512, 1, 8, 8)).to(DEVICE)

    def batch(n, g):
        return data[torch.randint(0, data.shape[0], (n,), device=data.device, generator=g)], None

    cfg = TrainConfig(steps=150, batch=64, lr=2e-3, warmup_steps=10, log_every=50, precision="bf16", channels_last=True, grad_clip=1.0)
    res = train(process, field, batch, cfg, device=DEVICE, log_stream=open(os.devnull, "w"))
    losses = torch.tensor(res.losses)
    assert torch.isfinite(losses).all()
    assert losses[-20:].mean() < 0.5 * losses[:10].mean()
    assert next(res.field.parameters()).device.type == torch.device(DEVICE).type


def test_compiled_training_steps_like_eager_training():
    # same seeds, same device, fp32 (torch's default: no TF32 in matmuls): compile may reorder reductions, nothing else
    process = EDM()
    data = torch.randn(1024, 2, generator=torch.Generator().manual_seed(0)).to(DEVICE)

    def batch(n, g):
        return data[torch.randint(0, data.shape[0], (n,), device=data.device, generator=g)], None

    runs = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        field = process.precondition(MLP(2, hidden=64, depth=2))
        cfg = TrainConfig(steps=6, batch=128, lr=1e-3, warmup_steps=1, log_every=6, precision="fp32", compile=compile_)
        runs.append(train(process, field, batch, cfg, device=DEVICE, log_stream=open(os.devnull, "w")).losses)
    torch.testing.assert_close(torch.tensor(runs[1]), torch.tensor(runs[0]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["edm", "pfgmpp"])
def test_exact_field_on_the_gpu_equals_the_cpu(name):
    proc = EDM() if name == "edm" else make_process("pfgmpp", D=128)
    g = torch.Generator().manual_seed(0)
    points, x = torch.randn(3000, 3, generator=g, dtype=F64), torch.randn(257, 3, generator=g, dtype=F64) * 2
    labels = torch.arange(3000) % 4
    label = torch.arange(257) % 5 - 1  # -1: unconditional rows
    for sigma in (0.01, 0.4, 20.0):
        s = torch.full((257,), sigma, dtype=F64)
        for lab in (None, label):
            field = proc.exact_field(points, labels)
            field.chunk_elems = 4 * 3000 - 1  # the streamed path
            cpu = field(x, s, lab)
            gpu = field(x.to(DEVICE), s.to(DEVICE), None if lab is None else lab.to(DEVICE))
            torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-10, atol=1e-10)


def test_unet_on_the_gpu_equals_the_cpu_and_bf16_channels_last_is_close():
    process = make_process("pfgmpp", D=2048)
    field = _tiny_unet_field(process, channels=3, res=16).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, 16, 16, generator=g) * 3
    s = torch.tensor([0.01, 0.1, 0.5, 2.0, 10.0, 80.0])
    with torch.no_grad():
        cpu = field(x, s)
        gpu_field = field.to(DEVICE)
        with no_tf32():
            gpu = gpu_field(x.to(DEVICE), s.to(DEVICE))
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
        cl_field = gpu_field.to(memory_format=torch.channels_last)
        with torch.autocast(device_type=torch.device(DEVICE).type, dtype=torch.bfloat16):
            fast = cl_field(x.to(DEVICE).contiguous(memory_format=torch.channels_last), s.to(DEVICE)).float()
    scale = cpu.abs().max()
    assert (fast.cpu() - cpu).abs().max() < 0.05 * scale


def test_heun_sampling_on_the_gpu_equals_the_cpu():
    process = make_process("pfgmpp", D=2048)
    field = _tiny_unet_field(process, channels=1, res=8).eval()
    sched = solvers.edm_schedule(8, process.s_min, process.s_max, process.rho)  # PFGM++'s grid: EDM's, ending at 0
    x0 = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * float(sched[0])
    with torch.no_grad():
        cpu = solvers.solve(process.flow(field), x0, sched, method="heun").x
        gpu_field = field.to(DEVICE)
        with no_tf32():
            gpu = solvers.solve(process.flow(gpu_field), x0.to(DEVICE), sched, method="heun").x
        with torch.autocast(device_type=torch.device(DEVICE).type, dtype=torch.bfloat16):
            fast = solvers.solve(process.flow(gpu_field), x0.to(DEVICE), sched, method="heun").x
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all()
    assert (fast.cpu() - cpu).abs().max() < 0.05 * cpu.abs().max()
