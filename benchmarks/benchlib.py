"""Shared pieces of the benchmark scripts (not a test, not part of the package).

* timing: :func:`timeit` (median of repeats), :func:`interleaved` (several functions in
  rotation, so that drifting machine load hits all alike), :func:`sync`;
* :func:`machine` (one line naming the machine) and :func:`write_subsection` /
  :func:`write_section` (replace one part of ``benchmarks/RESULTS.md``, atomically);
* :class:`FreeDenoiser`: a denoiser field that costs nothing, to time a solver's own work;
* the *official-style reference loops* physgen is measured against, written from the
  papers' published training and sampling procedures (EDM, arXiv 2206.00364, Alg. 1 and
  App. F; PFGM++, arXiv 2302.04265, App. B.2; the structure of NVlabs' ``training_loop.py``
  / ``generate.py:edm_sampler`` and of the PFGM++ repository's loss):
  :func:`reference_pfgmpp_loss`, :func:`reference_train` and :func:`reference_heun_sampler`.
  They call the same preconditioned physgen network, so a ratio to them measures the loop
  (physgen's training / sampling machinery), not the network.
"""
from __future__ import annotations

import copy
import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn


# --------------------------------------------------------------------------- timing


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable, device, repeats: int, warmup: int = 2, inner: int = 1) -> float:
    """Median wall time of ``fn`` (seconds per call), ``inner`` calls per measurement."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def interleaved(fns: Sequence[Callable], device, repeats: int, warmup: int = 1, stat: Callable = statistics.median) -> list[float]:
    """Median (or ``stat``) time of each of ``fns``, run in rotation so that machine load hits all alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        order = list(range(len(fns)))
        order = order[r % len(fns):] + order[: r % len(fns)]
        for i in order:
            t0 = time.perf_counter()
            fns[i]()
            sync(device)
            times[i].append(time.perf_counter() - t0)
    return [stat(t) for t in times]


def paired_ratio(solve, field, nfe: int, device, repeats: int, warmup: int = 2):
    """Median over runs of ``t_solve / (nfe * t_field)``, each solve timed next to ``nfe``
    field calls so that drifting machine load cancels.  Returns (ratio, t_solve, t_field)."""
    for _ in range(warmup):
        solve()
        field()
    sync(device)
    ratios, ts, tf = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        solve()
        sync(device)
        t1 = time.perf_counter()
        for _ in range(nfe):
            field()
        sync(device)
        t2 = time.perf_counter()
        ts.append(t1 - t0)
        tf.append((t2 - t1) / nfe)
        ratios.append((t1 - t0) / (t2 - t1))
    return statistics.median(ratios), statistics.median(ts), statistics.median(tf)


def machine(device) -> str:
    """Python, torch, device (GPU name), CPU model and thread count, in one line."""
    device = torch.device(device)
    lines = [f"python {platform.python_version()}, torch {torch.__version__}, device `{device}`"]
    if device.type == "cuda":
        lines.append(f"GPU: {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})")
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines()
        keep = ("Architecture", "CPU(s):", "Model name", "Thread(s) per core", "Core(s) per socket")
        lines += [" ".join(l.split()) for l in out if l.strip().startswith(keep)]
    except (OSError, subprocess.SubprocessError):
        lines.append(platform.processor() or platform.machine())
    lines.append(f"torch threads: {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    return "; ".join(lines)


# --------------------------------------------------------------------------- RESULTS.md


def _replace_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace (or append) the ``## heading`` section of the results file."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"{heading}\n\n{body.strip()}\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.strip() == heading), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        new = "".join(lines[:start]) + section + ("\n" + "".join(lines[end:]) if end < len(lines) else "")
    _replace_atomically(path, new)


def report_subsection(body: str, write: bool, path: Path, heading: str, subheading: str) -> int:
    """Print a benchmark's table and, with ``--write`` (``write``), put it in ``path`` as the
    ``### subheading`` of ``## heading`` (:func:`write_subsection`); the exit status 0."""
    print("\n" + body)
    if write:
        write_subsection(path, heading, subheading, body)
        print(f"wrote sub-section of {heading!r} in {path}")
    return 0


def write_subsection(path: Path, heading: str, subheading: str, body: str) -> None:
    """Replace (or add) the ``### subheading`` inside the ``## heading`` section."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.strip() == heading), None)
    if start is None:
        lines += ["\n" if lines and not lines[-1].endswith("\n") else "", f"\n{heading}\n", "\n"]
        start = next(i for i, l in enumerate(lines) if l.strip() == heading)
    end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
    sub = next((j for j in range(start + 1, end) if lines[j].strip() == subheading), None)
    block = [f"{subheading}\n", "\n", body.strip() + "\n", "\n"]
    if sub is None:
        new = lines[:end] + (["\n"] if lines[end - 1].strip() else []) + block + lines[end:]
    else:
        sub_end = next((j for j in range(sub + 1, end) if lines[j].startswith("### ") or lines[j].startswith("## ")), end)
        new = lines[:sub] + block + lines[sub_end:]
    _replace_atomically(path, "".join(new).rstrip("\n") + "\n")


# --------------------------------------------------------------------------- fields


class FreeDenoiser:
    """A denoiser field that costs (almost) nothing: it returns a fixed tensor.

    Solving with it measures a solver's own work (Python, scale bookkeeping, elementwise
    updates) without the network."""

    kind = "denoiser"
    num_classes = 0

    def __init__(self, like: Tensor):
        self.out = torch.zeros_like(like)

    def __call__(self, x: Tensor, s: Tensor, label: Optional[Tensor] = None) -> Tensor:
        return self.out


def edm_grid(process, steps: int) -> Tensor:
    """EDM's rho-schedule over the process's scale range, ending at 0: ``steps`` steps, ``2 steps - 1``
    Heun NFE (PFGM++'s and EDM's own grid; the same points ``edm_sampler`` uses)."""
    import solvers

    return solvers.edm_schedule(steps, process.s_min, process.s_max, rho=process.rho)


# --------------------------------------------------------------------------- reference loops


def reference_pfgmpp_loss(field, images: Tensor, D: float, rng: np.random.Generator,
                          p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 0.5) -> Tensor:
    """Per-element PFGM++ loss ``λ(σ) (D(y + n, σ) - y)²`` the way the official code draws it.

    ``ln σ ~ N(p_mean, p_std²)``, ``λ = (σ² + σ_d²)/(σ σ_d)²`` (EDM).  ``D = inf``: ``n = σ ε``.
    Finite ``D`` (PFGM++ App. B.2): ``r = σ √D``, ``b ~ Beta(N/2, D/2)`` drawn on the host
    with numpy, ``R = r √(b/(1-b))``, ``n = R u`` with ``u`` a normalised Gaussian drawn on
    the host (``torch.randn(B, N)``) and copied to the device; both host draws are what the
    official implementation does each step, and are part of what this reference costs.
    """
    b = images.shape[0]
    n_dim = images[0].numel()
    device = images.device
    sigma = (torch.randn(b, device=device) * p_std + p_mean).exp()
    weight = ((sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2).view(-1, *([1] * (images.ndim - 1)))
    if math.isinf(D):
        noise = torch.randn_like(images) * sigma.view_as(weight)
    else:
        r = sigma.double() * math.sqrt(D)
        beta = rng.beta(n_dim / 2.0, D / 2.0, size=b)
        odds = torch.from_numpy(beta / (1.0 - beta)).to(device)
        radius = (r * odds.sqrt()).view(b, 1)
        gauss = torch.randn(b, n_dim).to(device)
        noise = (gauss / gauss.norm(dim=1, keepdim=True) * radius).float().view_as(images)
    denoised = field(images + noise, sigma)
    return weight * (denoised.float() - images) ** 2


def reference_train(field: nn.Module, next_images: Callable[[int], Tensor], *, steps: int, batch: int, micro_batch: int,
                    lr: float, D: float, warmup_images: float, ema_halflife_images: float, ema_rampup: Optional[float] = 0.05,
                    seed: int = 0, on_step: Optional[Callable[[int], None]] = None) -> list[float]:
    """A plain EDM-style training loop (the structure of NVlabs' ``training_loop.py``), fp32.

    Per step: gradient accumulation over ``batch / micro_batch`` rounds of
    ``loss.sum() / batch`` (:func:`reference_pfgmpp_loss`), the learning-rate ramp
    ``lr · min(seen / warmup_images, 1)``, ``nan_to_num`` on every gradient, a default
    (foreach) Adam step, and the EMA as a Python loop over parameters
    ``p_ema ← lerp(p, p_ema, β)``, ``β = 0.5^(batch / min(h, rampup · seen))``.  Returns
    the mean per-element loss of each step (collected on the device, read once at the end).
    """
    device = next(field.parameters()).device
    field.train().requires_grad_(True)
    ema = copy.deepcopy(field).eval().requires_grad_(False)
    opt = torch.optim.Adam(field.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    seen = 0
    losses = []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for _ in range(batch // micro_batch):
            loss = reference_pfgmpp_loss(field, next_images(micro_batch), D, rng)
            loss.sum().mul(1.0 / batch).backward()
            total += loss.detach().mean() * (micro_batch / batch)
        losses.append(total)
        for group in opt.param_groups:
            group["lr"] = lr * min(seen / max(warmup_images, 1e-8), 1.0)
        for p in field.parameters():
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
        opt.step()
        seen += batch
        halflife = ema_halflife_images if ema_rampup is None else min(ema_halflife_images, seen * ema_rampup)
        beta = 0.5 ** (batch / max(halflife, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), field.parameters()):
                p_ema.copy_(p.detach().lerp(p_ema, beta))
        if on_step is not None:
            on_step(step + 1)
    return [float(v) for v in torch.stack(losses).tolist()]


def reference_heun_sampler(field, latents: Tensor, t_steps: Tensor) -> Tensor:
    """EDM's deterministic Heun sampler as NVlabs' ``edm_sampler`` runs it (S_churn = 0).

    The state is float64; the schedule ``t_steps`` (ending at 0) lives on the device and is
    iterated as 0-d tensors; each step tests ``S_min <= t_cur <= S_max`` on the host (a
    device-to-host copy and sync per step), draws the churn noise (multiplied by 0 at
    S_churn = 0), calls the network in float32 and casts its output to float64; the last
    step is Euler (EDM Alg. 1).  ``latents`` are the prior draw already scaled to ``t_steps[0]``.
    """
    s_min, s_max, s_noise = 0.0, float("inf"), 1.0
    b = latents.shape[0]
    t_steps = t_steps.to(device=latents.device, dtype=torch.float64)
    x_next = latents.to(torch.float64)
    n = len(t_steps) - 1
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        x_cur = x_next
        in_churn_range = bool(s_min <= t_cur <= s_max)  # a device-to-host sync per step, as upstream
        gamma = 0.0 * in_churn_range  # S_churn = 0: deterministic whatever the range says
        t_hat = t_cur + gamma * t_cur
        x_hat = x_cur + (t_hat**2 - t_cur**2).sqrt() * s_noise * torch.randn_like(x_cur)
        denoised = field(x_hat.float(), t_hat.float().expand(b)).to(torch.float64)
        d_cur = (x_hat - denoised) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        if i < n - 1:
            denoised = field(x_next.float(), t_next.float().expand(b)).to(torch.float64)
            d_prime = (x_next - denoised) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next
