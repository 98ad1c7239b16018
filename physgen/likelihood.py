"""Exact log-likelihood by the instantaneous change of variables along the probability-flow ODE.

Song et al. 2021 (arXiv 2011.13456, App. D.2), after FFJORD (Grathwohl et al. 2019,
arXiv 1810.01367).  Along a solution ``x(s)`` of ``dx/ds = v(x, s)`` the density evolves as

    d/ds log p_s(x(s)) = -∇·v(x(s), s),

so integrating the augmented ODE

    d/ds [x, ℓ] = [v(x, s), ∇·v(x, s)],        x(s_min) = x,  ℓ(s_min) = 0,

from ``s_min`` up to ``s_max`` (adaptive Dormand-Prince, :func:`solvers.dopri5`) gives

    log p_{s_min}(x) = log p_prior(x(s_max)) + ℓ(s_max).

The divergence is exact in low dimension (``N`` vector-Jacobian products on the batch:
``∂v_i/∂x_i`` for ``i = 1..N``) or Hutchinson's estimate ``ε^T (∂v/∂x) ε`` with one
Rademacher probe ``ε`` per sample, fixed for the whole solve (unbiased: ``E[ε εᵀ] = I``).

The prior density is the process's own prior at ``s_max``: ``N(0, σ_max² I)`` for VE, EDM
and NCSN, the Student-t kernel around 0 at ``r_max = σ_max √D`` for PFGM++
(``process.kernel.log_prob``), and ``N(0, I)`` for VP.  (These are the priors the samplers
draw from; the true ``p_{s_max}`` differs from them by ``O(‖data‖²/σ_max²)`` per sample.)

**Offset and dequantisation.**  The ODE starts at ``s_min > 0`` (its velocity is singular at
``s = 0``), so what is computed is the density of the data perturbed at ``s_min``
(``p_{s_min} = p_data * N(0, s_min² I)`` for VE/EDM), evaluated at the data points.  For
continuous data (the toys) that is reported as is: for ``s_min`` well below the data's
scale it differs from ``log p_data`` by ``O(s_min²)``.  For quantised data (8-bit images in
``[-1, 1]``, bin width ``w = 2/255``) pass ``dequantize=w``: uniform noise ``U(-w/2, w/2)``
is added per coordinate and ``N log(1/w)`` nats are added to the NLL, which makes it an
upper bound on the discrete NLL (bits/dim then compare with the literature's).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field as dc_field
from typing import Any, Callable, Optional, TextIO

import torch
from torch import Tensor, nn

import solvers
from solvers.base import SolverError

from . import checkpoints
from .compare.problems import check_field_header, load_toy_checkpoint
from .config import LIMIT_REASONS, MAX_BATCH, MAX_SAMPLES, parse_int
from .data import load_toy
from .errors import UserError
from .fields.analytic import GaussianMixtureField
from .images.data import load_image_dataset
from .images.train import load_trained
from .pretrained import detect_format, load as load_pretrained
from .io import write_json
from .noise import SeededNoise
from .processes import data_defaults, make_process
from .runtime import resolve_device
from .sampling import grid, solver_spec
from .toy import ToyConfig, build_field

__all__ = [
    "LikelihoodResult",
    "log_likelihood",
    "check_prior_density",
    "exact_divergence",
    "hutchinson_divergence",
    "prior_log_prob",
    "rademacher",
    "EXACT_DIVERGENCE_MAX_DIM",
    "NLLConfig",
    "run_nll",
    "load_field_checkpoint",
]

EXACT_DIVERGENCE_MAX_DIM = 32
"""``divergence="auto"`` is exact up to this many dimensions per sample, Hutchinson above."""


@dataclass
class LikelihoodResult:
    """Per-sample ``logp = log p_{s_min}(x)`` (float64 ``[B]``, after dequantisation when asked) and its parts."""

    logp: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    nfe: int
    dim: int
    divergence: str
    s_min: float
    s_max: float
    dequantize_nats: float = 0.0

    @property
    def n(self) -> int:
        return int(self.logp.shape[0])

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood in nats per sample."""
        return float(-self.logp.mean())

    @property
    def nll_std_err(self) -> float:
        return float(self.logp.std(unbiased=True) / math.sqrt(self.n)) if self.n > 1 else float("nan")

    @property
    def bits_per_dim(self) -> float:
        return self.nll / (self.dim * math.log(2.0))

    def summary(self) -> dict:
        """The keys ``physgen nll`` writes to ``nll.json``."""
        return {
            "nll_nats": self.nll,
            "nll_std_err": self.nll_std_err,
            "nll_nats_per_dim": self.nll / self.dim,
            "bits_per_dim": self.bits_per_dim,
            "bits_per_dim_std_err": self.nll_std_err / (self.dim * math.log(2.0)),
            "n": self.n,
            "dim": self.dim,
            "nfe": self.nfe,
            "divergence": self.divergence,
            "s_min": self.s_min,
            "s_max": self.s_max,
            "prior_logp_mean": float(self.prior_logp.mean()),
            "delta_logp_mean": float(self.delta_logp.mean()),
            "dequantize_nats": self.dequantize_nats,
        }

    @staticmethod
    def concat(parts: list["LikelihoodResult"]) -> "LikelihoodResult":
        first = parts[0]
        return LikelihoodResult(
            logp=torch.cat([p.logp for p in parts]), prior_logp=torch.cat([p.prior_logp for p in parts]),
            delta_logp=torch.cat([p.delta_logp for p in parts]), nfe=sum(p.nfe for p in parts), dim=first.dim,
            divergence=first.divergence, s_min=first.s_min, s_max=first.s_max, dequantize_nats=first.dequantize_nats,
        )


VelocityFn = Callable[[Tensor, Tensor], Tensor]


def exact_divergence(fn: VelocityFn, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """``(v, ∇·v)`` with the exact divergence: ``N`` batched vector-Jacobian products.

    ``∂v_i/∂x_i`` for every sample at once is the ``i``-th column of the gradient of
    ``Σ_b v_{b,i}`` (samples do not interact), so ``N`` backward passes give the trace.
    """
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        v = fn(xg, s)
        vf = v.reshape(v.shape[0], -1)
        n = vf.shape[1]
        div = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
        for i in range(n):
            (g,) = torch.autograd.grad(vf[:, i].sum(), xg, retain_graph=i < n - 1)
            div = div + g.reshape(g.shape[0], -1)[:, i]
    return v.detach(), div.detach()


def hutchinson_divergence(fn: VelocityFn, x: Tensor, s: Tensor, probe: Tensor) -> tuple[Tensor, Tensor]:
    """``(v, εᵀ (∂v/∂x) ε)``: Hutchinson's unbiased estimate of ``∇·v`` with the probe ``ε`` (one VJP)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        v = fn(xg, s)
        (g,) = torch.autograd.grad((v * probe).sum(), xg)
    div = (g * probe).reshape(g.shape[0], -1).sum(1)
    return v.detach(), div.detach()


def rademacher(shape, *, noise=None, generator: Optional[torch.Generator] = None, device=None,
               dtype=torch.float32, step: int = -3) -> Tensor:
    """±1 with probability ½ each; per sample from ``noise`` (a ``SeededNoise``) when given."""
    shape = tuple(shape)

    def sampler(n, g):
        return torch.randint(0, 2, (n, *shape[1:]), generator=g, device=device).to(dtype).mul_(2).sub_(1)

    if noise is not None:
        return noise.draw(step, sampler, device)
    return sampler(shape[0], generator)


def prior_log_prob(process, x: Tensor) -> Tensor:
    """``log p_prior(x)`` at ``s_max`` (float64 ``[B]``): the density of the process's prior draw."""
    return process.prior_log_prob(x)


def check_prior_density(process, x: Tensor) -> None:
    """:class:`UserError` (the process's own one line) if ``process`` has no prior density to end
    the likelihood with (the telegrapher's Kac kernel has atoms): asked of one point before any
    field is built or ODE solved, so the refusal costs nothing."""
    with torch.no_grad():
        process.prior_log_prob(x[:1].detach().double())


def _field_dtype(field) -> torch.dtype:
    if isinstance(field, nn.Module):
        for p in field.parameters():
            return p.dtype
    return torch.float64


def _integration_range(process, solver: str, schedule: Optional[Tensor], s_min: Optional[float]) -> tuple[float, float, Optional[Tensor]]:
    """``(lo, hi, points)``: the likelihood ODE runs from ``lo`` to ``hi = s_max``; ``points``
    is a fixed-step solver's grid (the schedule's positive scales, increasing), None for an
    adaptive solver (which starts at ``s_min``, default the process's)."""
    points = None
    if not solvers.get_solver(solver).adaptive:
        if schedule is None:
            raise UserError(f"solver {solver!r} integrates the likelihood ODE on a grid: pass --steps (and --schedule)")
        if s_min is not None:
            raise UserError("--s-min applies to the adaptive likelihood solve; a fixed-step grid starts at its own last positive scale")
        s = torch.as_tensor(schedule, dtype=torch.float64).flatten()
        points = s[s > 0].flip(0)
        if points.numel() < 2:
            raise UserError(f"the likelihood grid needs two positive scales, got {s.tolist()}")
    lo = float(points[0]) if points is not None else float(process.s_min if s_min is None else s_min)
    hi = float(process.s_max)
    if not (0 < lo < hi and math.isfinite(hi)):
        raise UserError(f"process {process.name!r}: the likelihood needs 0 < s_min < s_max (finite), got s_min={lo}, s_max={hi}")
    return lo, hi, points


def _dequantize(x: Tensor, width: Optional[float], noise, generator: Optional[torch.Generator]) -> tuple[Tensor, float]:
    """Uniform dequantisation ``x + w (u - 1/2)``, ``u ~ U[0, 1)`` per sample (``noise``'s step
    -4, else ``generator``), and its ``N log(1/w)`` nats (the bin's volume); ``x`` as it is
    without a width."""
    if width is None:
        return x, 0.0
    w = float(width)
    if not (w > 0 and math.isfinite(w)):
        raise UserError(f"dequantize (the bin width) must be positive, got {width}")
    shape = tuple(x.shape)
    if noise is not None:
        u = noise.rand(shape, step=-4, device=x.device, dtype=x.dtype)
    else:
        u = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + w * (u - 0.5), math.prod(shape[1:]) * math.log(1.0 / w)


def log_likelihood(
    process,
    field,
    x: Tensor,
    *,
    label: Optional[Tensor] = None,
    divergence: str = "auto",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    s_min: Optional[float] = None,
    noise=None,
    generator: Optional[torch.Generator] = None,
    prior: Optional[Callable[[Tensor], Tensor]] = None,
    dequantize: Optional[float] = None,
    dtype: Optional[torch.dtype] = None,
    max_steps: int = 10_000,
    solver: str = "dopri5",
    schedule: Optional[Tensor] = None,
) -> LikelihoodResult:
    """``log p_{s_min}(x)`` for a batch ``x [B, ...]`` by the PF-ODE of ``process`` with ``field``.

    ``divergence``: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact up to
    :data:`EXACT_DIVERGENCE_MAX_DIM` dimensions).  Hutchinson probes and dequantisation noise
    come per sample from ``noise`` (a ``SeededNoise``; then a sample's estimate does not depend
    on its batch) or from ``generator``.  ``prior(x_end)`` overrides :func:`prior_log_prob`
    (tests use the exact ``p_{s_max}``).  ``s_min`` defaults to the process's.  The solve runs
    in float64 for closed-form fields and in the network's dtype for neural ones.

    ``solver``: ``dopri5`` (adaptive, ``rtol``/``atol``, the default) or any fixed-step flow
    solver of the table, which then integrates on ``schedule`` (the sampling grid of
    :func:`physgen.sampling.grid`) run backwards: its positive points from ``s_min`` up to
    ``s_max`` (a grid ending at 0 loses its last, denoising step, which the ODE from the data
    at ``s_min`` does not take).
    """
    if divergence not in ("auto", "exact", "hutchinson"):
        raise UserError(f"divergence must be auto, exact or hutchinson, got {divergence!r}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise UserError(f"x must be shaped [B, ...] with B >= 1, got {tuple(x.shape)}")
    if prior is None:
        check_prior_density(process, x)
    shape = tuple(x.shape)
    B, N = shape[0], math.prod(shape[1:])
    method = ("exact" if N <= EXACT_DIVERGENCE_MAX_DIM else "hutchinson") if divergence == "auto" else divergence
    lo, hi, points = _integration_range(process, solver, schedule, s_min)
    dt = dtype or _field_dtype(field)
    x, extra_nats = _dequantize(x.to(dt), dequantize, noise, generator)
    probe = None
    if method == "hutchinson":
        probe = rademacher(shape, noise=noise, generator=generator, device=x.device, dtype=dt)

    def velocity(xx: Tensor, s: Tensor) -> Tensor:
        return process.velocity(field, xx, s, label)

    def augmented(z: Tensor, s: Tensor) -> Tensor:
        xx = z[:, :N].reshape(shape)
        if probe is None:
            v, div = exact_divergence(velocity, xx, s)
        else:
            v, div = hutchinson_divergence(velocity, xx, s, probe)
        return torch.cat([v.reshape(B, N), div.reshape(B, 1).to(v.dtype)], dim=1)

    z0 = torch.cat([x.reshape(B, N), torch.zeros(B, 1, dtype=dt, device=x.device)], dim=1)
    if points is None:
        sol = solvers.solve(augmented, z0, [lo, hi], solver, rtol=rtol, atol=atol, **({"max_steps": max_steps} if solver == "dopri5" else {}))
    else:
        sol = solvers.solve(augmented, z0, points, solver)
    z1 = sol.x
    if not bool(torch.isfinite(z1).all()):
        raise FloatingPointError(f"the likelihood ODE produced non-finite values between s={lo:g} and s={hi:g}; "
                                 f"tighten rtol/atol (now {rtol:g}/{atol:g})")
    x_end = z1[:, :N].reshape(shape)
    delta = z1[:, N].double()
    prior_lp = (prior or (lambda xe: prior_log_prob(process, xe)))(x_end).double()
    logp = prior_lp + delta - extra_nats
    return LikelihoodResult(logp=logp.cpu(), prior_logp=prior_lp.cpu(), delta_logp=delta.cpu(), nfe=sol.stats.nfe,
                            dim=N, divergence=method, s_min=lo, s_max=hi, dequantize_nats=extra_nats)


# --------------------------------------------------------------------------- physgen nll's pipeline

REFERENCE_SEED_OFFSET = 1_000_003  # the evaluated points are fresh data, never the field's (as physgen toy's reference)


@dataclass
class NLLConfig:
    """What ``physgen nll`` evaluates (flag ``--n-data`` = field ``n_data``): a field (``exact``,
    ``analytic``, ``mlp`` trained here, or a checkpoint's network) and the points, the solver
    and its tolerances or grid.  ``run_nll`` is the one call the command makes."""

    process: Optional[str] = None  # None: the checkpoint's, else edm
    process_options: dict = dc_field(default_factory=dict)
    dataset: Optional[str] = None  # None: the checkpoint's, else moons
    field: Optional[str] = None  # None: analytic for a Gaussian mixture, else mlp
    ckpt: Optional[str] = None
    weights: str = "ema"
    n: int = 1000
    n_data: int = 10_000
    batch: int = 500
    divergence: str = "auto"
    solver: str = "dopri5"
    steps: Optional[int] = None
    schedule: Optional[str] = None
    rtol: Optional[float] = None  # adaptive solvers (default 1e-5)
    atol: Optional[float] = None
    s_min: Optional[float] = None
    dequantize: Optional[float] = None  # None: 2/255 for image data, else none
    train_steps: int = 2000
    hidden: int = 256
    depth: int = 3
    lr: float = 2e-3
    seed: int = 0
    device: str = "auto"
    out: Optional[str] = None  # nll.json (and the optimal-schedule cache) go here

    def __post_init__(self):
        self.n = parse_int(self.n, "--n", 1, MAX_SAMPLES, LIMIT_REASONS["samples"])
        self.n_data = parse_int(self.n_data, "--n-data", 1, MAX_SAMPLES, LIMIT_REASONS["samples"])
        self.batch = parse_int(self.batch, "--batch", 1, MAX_BATCH, LIMIT_REASONS["batch"])


@dataclass
class _Problem:
    """The field and the points ``run_nll`` evaluates, and what the record says of them."""

    process: Any
    field: Any
    x: Tensor
    dataset: Any  # a toy dataset (None for images)
    dataset_spec: str
    field_kind: str
    dequantize: Optional[float]
    info: dict


def load_field_checkpoint(path, device="cpu", weights: str = "ema"):
    """``(process, field, info)`` from a checkpoint (file or run directory: its newest
    checkpoint that verifies), or a model trained elsewhere (:func:`physgen.pretrained.load`).

    Image checkpoints (``meta.image``, written by ``physgen train``) are rebuilt by
    :func:`physgen.images.train.load_trained`; toy MLPs by
    :func:`physgen.compare.problems.load_toy_checkpoint` (sizes from the checkpoint's
    metadata, else from the shapes of its state dict).
    """
    if detect_format(path) != "physgen":  # an EDM / PFGM++ snapshot or a diffusers folder: no dataset recorded
        model = load_pretrained(path, device=device)
        return model.process, model.field, {"kind": "image", "path": str(model.path), "step": None, "shape": list(model.shape),
                                            "dataset": None, "format": model.format}
    found = checkpoints.find(path, kind=("train", "toy-mlp"), check=check_field_header)
    meta = found.header.meta
    if "image" in meta:
        model = load_trained(found.path, device=device, ema=weights == "ema")
        trained_on = (model.meta.get("config") or {}).get("dataset")
        return model.process, model.field, {"kind": "image", "path": str(found.path), "step": model.step, "shape": list(model.shape),
                                            "dataset": trained_on}
    if "process" not in meta:
        raise UserError(f"checkpoint {str(found.path)!r} does not record its process; pass a checkpoint written by physgen.training")

    loaded = load_toy_checkpoint(found.path, device=device, ema=weights == "ema")
    spec = {"dim": loaded["dim"], **((loaded["meta"].get("toy") or {}).get("net") or {})}
    return loaded["process"], loaded["field"], {"kind": "mlp", "path": str(found.path), "step": loaded["step"], "mlp": spec,
                                                "dataset": (loaded["meta"].get("toy") or {}).get("dataset")}


def _fresh_points(dataset, config: NLLConfig, device) -> Tensor:
    return dataset.sample(config.n, torch.Generator(device=device).manual_seed(config.seed + REFERENCE_SEED_OFFSET), device=device)


def _checkpoint_problem(config: NLLConfig, device) -> _Problem:
    """The checkpoint's process and network, on the first ``n`` images of its dataset (image
    networks) or ``n`` fresh points of its toy set (MLPs)."""
    if config.field not in (None, "mlp"):
        raise UserError(f"--ckpt loads a network field; --field {config.field} cannot be combined with it")
    process, field, info = load_field_checkpoint(config.ckpt, device, config.weights)
    if config.process is not None and config.process != process.name:
        raise UserError(f"--process {config.process} disagrees with the checkpoint's process {process.name!r}")
    given = {k: v for k, v in config.process_options.items() if v is not None}
    if given:
        raise UserError(f"process options ({', '.join(sorted(given))}) come from the checkpoint; drop them with --ckpt")
    if info["kind"] == "image" and not (config.dataset or info["dataset"]):
        raise UserError(f"{info['path']!r} does not record its dataset; pass --dataset (e.g. cifar10:PATH, npz:PATH)")
    spec = config.dataset or info["dataset"] or "moons"
    if info["kind"] != "image":
        dataset = load_toy(spec)
        if dataset.dim != info["mlp"]["dim"]:
            raise UserError(f"dataset {spec!r} is {dataset.dim}-dimensional, the checkpoint's MLP takes {info['mlp']['dim']}")
        return _Problem(process, field, _fresh_points(dataset, config, device), dataset, spec, "mlp", config.dequantize, info)
    try:
        images = load_image_dataset(spec)
    except UserError as exc:
        raise UserError(f"checkpoint {info['path']!r} holds an image network (trained on {info['dataset']!r}); "
                        f"--dataset must be an image dataset: {exc}") from None
    x = images.images[: config.n].to(device=device, dtype=torch.float32)
    if tuple(x.shape[1:]) != tuple(info["shape"]):
        raise UserError(f"dataset {spec!r} has images {list(x.shape[1:])}, the checkpoint was trained on {info['shape']}")
    dequantize = 2.0 / 255.0 if config.dequantize is None else config.dequantize
    return _Problem(process, field, x, None, spec, "mlp", dequantize, info)


def _toy_problem(config: NLLConfig, device, log_stream: Optional[TextIO]) -> _Problem:
    """A field built here on ``n_data`` points of a toy set (as ``physgen toy`` builds it) and
    ``n`` fresh points of the same set."""
    spec = config.dataset or "moons"
    dataset = load_toy(spec)
    field_kind = config.field or ("analytic" if dataset.mixture is not None else "mlp")
    g_data = torch.Generator(device=device).manual_seed(config.seed)
    if dataset.num_classes is not None:
        data, _ = dataset.sample_labelled(config.n_data, g_data, device=device)
    else:
        data = dataset.sample(config.n_data, g_data, device=device)
    name = config.process or "edm"
    process = make_process(name, **data_defaults(name, data, config.process_options))
    check_prior_density(process, data)  # before a field is built: the telegrapher has no prior density
    if field_kind == "exact":
        print("note: the exact field is the empirical distribution of --n-data points blurred by s_min; fresh points "
              "score far below the data density and the ODE is stiff (use --field mlp or a larger --s-min)", file=log_stream or sys.stderr)
    toy = ToyConfig(process=name, dataset=spec, field=field_kind, n_data=config.n_data, train_steps=config.train_steps,
                    hidden=config.hidden, depth=config.depth, lr=config.lr, seed=config.seed, device=config.device)
    field, _ = build_field(process, field_kind, dataset, data, None, toy, device, log_stream=log_stream)
    if hasattr(field, "eval"):
        field.eval()
    return _Problem(process, field, _fresh_points(dataset, config, device), dataset, spec, field_kind, config.dequantize, {})


def _likelihood_grid(config: NLLConfig, problem: _Problem) -> tuple[bool, float, float, Optional[Tensor]]:
    """``(adaptive, rtol, atol, schedule)``: tolerances for an adaptive solver, the sampling grid
    (:func:`physgen.sampling.grid`) for a fixed-step one; the other kind's flags are refused."""
    adaptive = solver_spec(config.solver).adaptive
    if not adaptive and (config.rtol is not None or config.atol is not None):
        raise UserError(f"--rtol/--atol apply to adaptive solvers; {config.solver!r} takes --steps")
    if adaptive and (config.steps is not None or config.schedule is not None):
        raise UserError(f"--steps/--schedule apply to fixed-step solvers; {config.solver!r} is adaptive (it takes --rtol/--atol)")
    rtol, atol = (1e-5 if config.rtol is None else config.rtol), (1e-5 if config.atol is None else config.atol)
    schedule = None if adaptive else grid(problem.process, config.steps, config.schedule, method=config.solver,
                                          dim=int(problem.x[0].numel()), field=problem.field, cache_dir=config.out)
    return adaptive, rtol, atol, schedule


def run_nll(config: NLLConfig, log_stream: Optional[TextIO] = None) -> tuple[LikelihoodResult, dict]:
    """``physgen nll``: the likelihood of ``config``'s points under its field, solved in batches
    of ``config.batch`` with per-sample noise (a point's estimate does not depend on its batch).
    Returns the result and the record written to ``config.out/nll.json`` (when ``out`` is set):
    the summary, the process, solver and grid, and for a Gaussian-mixture toy set the analytic
    NLL at ``s_min`` and the data's own NLL."""
    device = resolve_device(config.device)
    problem = _checkpoint_problem(config, device) if config.ckpt is not None else _toy_problem(config, device, log_stream)
    process, x = problem.process, problem.x
    adaptive, rtol, atol, schedule = _likelihood_grid(config, problem)
    n = x.shape[0]
    noise = SeededNoise(config.seed, range(n))
    t0 = time.perf_counter()
    parts = []
    for start in range(0, n, config.batch):
        stop = min(n, start + config.batch)
        try:
            parts.append(log_likelihood(process, problem.field, x[start:stop], divergence=config.divergence, rtol=rtol, atol=atol,
                                        s_min=config.s_min, noise=noise.subset(slice(start, stop)), dequantize=problem.dequantize,
                                        solver=config.solver, schedule=schedule))
        except SolverError as exc:  # the solver's advice in this command's flags (nll has no max_steps)
            raise UserError(f"{exc}; here: loosen --rtol/--atol, or start at a larger --s-min (an exact field is stiff near "
                            f"s_min = {process.s_min if config.s_min is None else config.s_min:g})") from None
    result = LikelihoodResult.concat(parts)
    summary = result.summary()
    summary.update(process={"name": process.name, **process.config()}, dataset=problem.dataset_spec, field=problem.field_kind,
                   wall_s=time.perf_counter() - t0, solver=config.solver, rtol=rtol if adaptive else None, atol=atol if adaptive else None,
                   ckpt=problem.info.get("path"), seed=config.seed, steps=None if schedule is None else int(schedule.numel() - 1),
                   schedule=None if schedule is None else (config.schedule or process.default_schedule_name),
                   grid=None if schedule is None else schedule.tolist())
    summary = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
    dataset = problem.dataset
    if dataset is not None and dataset.mixture is not None and "score" in process.capabilities():
        ref = GaussianMixtureField(dataset.mixture, process.coefficients)
        s = torch.full((n,), result.s_min, dtype=torch.float64, device=x.device)
        summary["analytic_nll_nats"] = float(-ref.log_prob(x.double(), s).mean())
        summary["data_nll_nats"] = float(-dataset.mixture.log_prob(x.double().cpu()).mean())
    if config.out is not None:
        write_json(f"{config.out}/nll.json", summary)
    return result, summary
