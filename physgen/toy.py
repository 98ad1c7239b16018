"""The toy pipeline behind ``physgen toy``: data -> process -> field -> solver -> metrics & figures.

``ToyConfig`` is the one dataclass the CLI maps onto (flag ``--n-data`` = field ``n_data``);
it validates on construction.  ``run_toy(config)`` returns the metrics and, with ``out``,
writes ``config.json``, ``samples.npy``, ``metrics.json``, ``samples.png`` and
``trajectories.png`` (all atomically), and with ``--field mlp`` the training checkpoint
``checkpoints/ckpt-<step>.pt`` (what ``physgen reflow --ckpt`` retrains).  The metrics compare the samples with fresh data
drawn with a different seed from the data the field was built on; ``stray_fraction`` is
the fraction of samples the sampler left far from any data
(:data:`physgen.sampling.STRAY_RATIO`), with one warning line when it is not 0.

``condition`` (a :class:`physgen.editing.condition.Condition`, ``--condition x0=1.5``) samples
the other coordinates given the observed ones with an editing method instead; the metrics
then compare the samples with the closed-form conditional where the data are a Gaussian
mixture (:func:`condition_reference`) and record the method, particles and NFE.
``observe`` (a :class:`physgen.editing.observation.LinearObservation`, ``--observe-A``,
``--observe-y``, ``--observe-noise``) samples the posterior given a noisy linear observation
``y = A x + n`` by twisted SMC; the metrics compare with draws of the closed-form posterior
where the data are a Gaussian mixture (:func:`observation_reference`) and record the
observation, the particles, the NFE and each component's posterior weight against the closed form.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field as dc_field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from .config import LIMIT_REASONS, MAX_LR, TOLERANCE_RANGE, parse_float
from .data import load_toy
from .errors import UserError, unknown_name
from .fields.labels import drop_labels
from .fields.neural import c_noise_unit
from .guidance import (GUIDANCE_KINDS, ClassifierFreeGuidance, ClassifierGuidance, bayes_classifier, load_classifier, make_classifier,
                       parse_interval, sample_guided)
from .guidance.wrappers import check_guidance_flags, check_w
from .editing import conditional_mixture, ks_statistic
from .editing.conditional import linear_posterior
from .editing.condition import Condition, sample_conditioned
from .editing.observation import LinearObservation, sample_observed
from .io import ensure_dir, save_figure, save_npy, write_json
from .metrics import sample_metrics
from .noise import SeededNoise
from .processes import data_defaults, make_process, process_class
from .runtime import initial_weights, resolve_device
from .sampling import check_sampler_options, grid, sample, sampling_record, warn_strays
from .training import TrainConfig, train, train_classifier
from .nets.mlp import MLP

__all__ = ["ToyConfig", "run_toy", "check_toy_condition", "condition_reference", "condition_metrics", "observation_reference",
           "observation_metrics", "build_field", "toy_process", "toy_data", "toy_checkpoint_meta", "FIELDS", "check_toy_guidance", "guide_toy",
           "class_fraction", "class_reference"]

FIELDS = ("exact", "analytic", "mlp")


@dataclass
class ToyConfig:
    process: str = "edm"
    dataset: str = "moons"
    field: str = "exact"
    n_data: int = 10_000
    # the toy training recipe (issue 19: measured on moons in benchmarks/RESULTS.md, "The demo's recipe")
    train_steps: int = 2000
    batch: int = 512
    lr: float = 5e-3
    hidden: int = 64
    depth: int = 3
    solver: str = "heun"
    steps: Optional[int] = None  # None: 18 integration steps (ald: the process's NCSNv2 levels)
    schedule: Optional[str] = None
    rtol: Optional[float] = None  # adaptive solvers only (their default: 1e-5)
    atol: Optional[float] = None
    n_samples: int = 2000
    seed: int = 0
    device: str = "auto"
    process_options: dict = dc_field(default_factory=dict)
    sampler_options: dict = dc_field(default_factory=dict)
    label: Optional[int] = None
    cond_drop: float = 0.1
    guidance: Optional[str] = None  # "cfg" or "classifier" (physgen/guidance.py)
    w: float = 1.0
    guidance_interval: Optional[tuple] = None
    classifier_ckpt: Optional[str] = None
    condition: Optional[Condition] = None  # observed coordinates and the editing method (physgen.editing.condition)
    observe: Optional[LinearObservation] = None  # y = A x + n, sampled by twisted SMC (physgen.editing.observation)
    out: Optional[str] = None

    def __post_init__(self):
        process_class(self.process)  # unknown name -> error listing the valid ones
        if self.field not in FIELDS:
            raise unknown_name("field", self.field, FIELDS)
        for name in ("n_data", "train_steps", "batch", "hidden", "depth", "n_samples"):
            if int(getattr(self, name)) <= 0:
                raise UserError(f"{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        self.lr = parse_float(self.lr, "--lr", 0.0, MAX_LR, lo_open=True, why=LIMIT_REASONS["lr"])
        for name in ("rtol", "atol"):  # given by the flag, or by --sampler-opt (a JSON value of any type)
            value = getattr(self, name)
            if value is not None and name in self.sampler_options:
                raise UserError(f"--{name} and --sampler-opt {name}=... both set {name}; give it once")
            if value is not None:
                setattr(self, name, parse_float(value, f"--{name}", *TOLERANCE_RANGE, why=LIMIT_REASONS["tolerance"]))
        check_sampler_options(self.sampler_options)
        check_toy_guidance(self)
        check_toy_condition(self)


def toy_process(config: ToyConfig, data: Tensor):
    """The process of a toy run: ``config.process_options`` over the process's data defaults
    (prior centred on the data, ``σ_max`` matched to its spread: each class's
    ``defaults_for_data``; the image defaults, σ_max = 80, are wrong for toys)."""
    return make_process(config.process, **data_defaults(config.process, data, config.process_options))


def toy_checkpoint_meta(net: MLP, config) -> dict:
    """What a toy MLP checkpoint records beside the process: the network's sizes and the data it
    was trained on (read back by :func:`physgen.compare.problems.load_toy_checkpoint`)."""
    return {"toy": {"net": net.spec(), "dataset": str(config.dataset), "n_data": int(config.n_data), "seed": int(config.seed)}}


def build_field(process, kind: str, dataset, data: Tensor, labels: Optional[Tensor], config: ToyConfig, device, log_stream=None,
                out_dir=None):
    """The field estimator asked for: exact (finite set), analytic (mixture) or a trained MLP
    (with ``out_dir``: its training checkpoints in ``out_dir/checkpoints``, which ``physgen
    reflow``, ``compare-solvers --ckpt`` and ``nll --ckpt`` read)."""
    if kind == "exact":
        return process.exact_field(data, labels), None
    if kind == "analytic":
        if dataset.mixture is None:
            raise UserError(f"--field analytic needs a Gaussian-mixture dataset (8gaussians, 25gaussians, a .json mixture); {dataset.name!r} is not one")
        return process.analytic_field(dataset.mixture), None

    # a conditional network only when a label is asked for; label dropout keeps the null label trained
    if config.label is None:
        labels = None
    num_classes = 0 if labels is None else int(dataset.num_classes or int(labels.max()) + 1)
    out_dim = process.network_out_dim(data.shape[1]) if hasattr(process, "network_out_dim") else None
    with initial_weights(config.seed):
        net = MLP(data.shape[1], hidden=config.hidden, depth=config.depth, num_classes=num_classes, out_dim=out_dim)
    field = process.precondition(net)
    net.c_noise_unit = c_noise_unit(field)  # VP feeds 999 t; the MLP's embedding wants O(1) input
    tcfg = TrainConfig(steps=config.train_steps, batch=config.batch, lr=config.lr, seed=config.seed, log_every=max(1, config.train_steps // 10))

    def batch(n: int, g: torch.Generator):
        idx = torch.randint(0, data.shape[0], (n,), generator=g, device=g.device)
        if labels is None:
            return data[idx], None
        return data[idx], drop_labels(labels[idx], config.cond_drop, num_classes, torch.rand(n, generator=g, device=g.device))

    result = train(process, field.to(device), batch, tcfg, device=device, log_stream=log_stream, out_dir=out_dir,
                   checkpoint_meta=toy_checkpoint_meta(net, config))
    return result.ema, result


REFERENCE_SEED_OFFSET = 1_000_003  # the metrics' reference is fresh data, never the field's


def toy_data(dataset, config: ToyConfig, device) -> tuple[Tensor, Optional[Tensor], Tensor]:
    """``(data, labels, reference)``: the field's data and fresh reference data (other seed).

    A conditional run (``config.label``) is compared with reference data of its class.
    """
    g_data = torch.Generator(device=device).manual_seed(config.seed)
    g_ref = torch.Generator(device=device).manual_seed(config.seed + REFERENCE_SEED_OFFSET)
    if dataset.num_classes is not None:
        data, labels = dataset.sample_labelled(config.n_data, g_data, device=device)
    else:
        data, labels = dataset.sample(config.n_data, g_data, device=device), None
    reference = dataset.sample(config.n_samples, g_ref, device=device)
    if config.label is not None and labels is not None:
        reference = class_reference(dataset, config.n_samples, g_ref, config.label, device)
    return data, labels, reference


def run_toy(config: ToyConfig, log_stream=None) -> dict[str, Any]:
    device = resolve_device(config.device)
    dataset = load_toy(config.dataset)
    data, labels, reference = toy_data(dataset, config, device)
    if config.condition is not None:  # before any training: a coordinate the data lack is refused at once
        config.condition.check_dim(data.shape[1])
    if config.observe is not None:
        config.observe.check_dim(data.shape[1])

    process = toy_process(config, data)
    field, training = build_field(process, config.field, dataset, data, labels, config, device, log_stream, out_dir=config.out)
    sampler = sample
    if config.guidance is not None:  # a guided field; sample_guided reports NFE as field evaluations
        field, sampler = guide_toy(config, process, field, data, labels, device, log_stream), sample_guided

    options = {**{k: v for k, v in (("rtol", config.rtol), ("atol", config.atol)) if v is not None}, **config.sampler_options}
    schedule = grid(process, config.steps, config.schedule, method=config.solver, dim=data.shape[1], field=field, cache_dir=config.out,
                    options=options, label=config.label)
    noise = SeededNoise(config.seed, range(config.n_samples))
    x0 = process.sample_prior((config.n_samples, data.shape[1]), noise=noise, device=device)
    label = None if config.label is None else torch.full((config.n_samples,), config.label, device=device, dtype=torch.long)
    t0 = time.perf_counter()
    with torch.no_grad():
        if config.observe is not None:  # twisted SMC's own ancestral chain
            sol = sample_observed(process, field, config.observe, config.n_samples, data.shape[1], steps=config.steps,
                                  schedule=config.schedule, seed=config.seed, label=label, device=device)
            reference = observation_reference(dataset, config.observe, config.n_samples, config.seed, device)
        elif config.condition is None:
            sol = sampler(process, field, x0, schedule, config.solver, noise=noise, label=label, return_trajectory=True, **options)
        else:  # the editing method's own grid (smc: its ancestral chain's points)
            sol = sample_conditioned(process, field, config.condition, config.n_samples, data.mean(0), solver=config.solver,
                                     steps=config.steps, schedule=config.schedule, seed=config.seed, label=label, options=options)
            reference = condition_reference(dataset, config.condition, config.n_samples, config.seed, device)
    x = sol.x
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0

    metrics = sample_metrics(x, reference) if reference is not None else {}
    if config.label is not None and labels is not None:  # fraction of samples whose nearest data point has the label
        metrics["label_fraction"] = class_fraction(x, data, labels, config.label)
    metrics.update(sampling_record(process, config.solver, config.schedule, schedule, sol.stats),
                   accepted=sol.stats.accepted, rejected=sol.stats.rejected, wall_s=wall)
    if config.condition is not None:  # what the editing method ran, over the unconditional sampler's record
        metrics.update(condition_metrics(dataset, config.condition, x, sol))
    if config.observe is not None:
        metrics.update(observation_metrics(dataset, config.observe, x, sol))
    if training is not None:
        metrics["final_loss"] = float(sum(training.losses[-50:]) / len(training.losses[-50:]))
    metrics.update({k: v for k, v in sol.stats.extra.items() if isinstance(v, (int, float))})  # stray_fraction among them
    warn_strays(metrics.get("stray_fraction"), config.n_samples, log_stream)

    if config.out is not None:
        out = ensure_dir(config.out)
        write_json(out / "config.json", {**asdict(config), "resolved_process": {"name": process.name, **process.config()}, "device_used": str(device)})
        save_npy(out / "samples.npy", x.cpu().numpy())
        write_json(out / "metrics.json", metrics)
        method = config.solver if config.condition is None else f"{config.condition.describe()} by {config.condition.method}"
        method = "y = A x + n by smc" if config.observe is not None else method
        plot_samples((data if reference is None else reference).cpu(), x.cpu(), out / "samples.png",
                     title=f"{config.process} / {config.field} / {method} ({sol.stats.nfe} NFE)")
        traj = sol.stats.trajectory
        plot_trajectories(traj.cpu() if traj is not None else torch.stack([x0.cpu(), x.cpu()]), out / "trajectories.png", process=config.process)
    return metrics


def _plane(x: Tensor) -> Tensor:
    """The two coordinates a figure shows: the first two, or 1-D data on the line y = 0."""
    return x[..., :2] if x.shape[-1] >= 2 else torch.cat([x, torch.zeros_like(x)], -1)


def plot_samples(data: Tensor, samples: Tensor, path: Path, title: str = "") -> None:
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
    lim = float(torch.quantile(data.abs().flatten().double(), 0.995)) * 1.3
    for ax, pts, name in zip(axes, (_plane(data), _plane(samples)), ("data (fresh)", "samples")):
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5)
        ax.set_title(name)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    fig.suptitle(title)
    save_figure(fig, path, dpi=110)


def plot_trajectories(traj: Tensor, path: Path, n_paths: int = 64, process: str = "") -> None:
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    fig, ax = plt.subplots(figsize=(5, 5))
    t = _plane(traj[:, :n_paths])
    for i in range(t.shape[1]):
        ax.plot(t[:, i, 0], t[:, i, 1], lw=0.6, alpha=0.7)
    ax.scatter(t[-1, :, 0], t[-1, :, 1], s=6, c="k", zorder=3, label="end")
    end = traj[-1]
    lim = float(end.abs().max()) * 1.5 + 1e-6
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(f"{process} trajectories (prior -> data), {traj.shape[0]} states")
    ax.legend(loc="upper right")
    save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- observed coordinates (--condition)

def check_toy_condition(config) -> None:
    """Refuse what a conditioned toy run cannot honour: ``--condition`` with ``--observe-A``,
    guidance on top of either, and for SMC (its own ancestral chain) a solver, tolerances or
    solver options it would ignore."""
    for name, value, kind in (("condition", config.condition, Condition), ("observe", config.observe, LinearObservation)):
        if value is not None and not isinstance(value, kind):
            raise UserError(f"{name} must be a {kind.__module__}.{kind.__name__}, got {type(value).__name__}")
    if config.condition is not None and config.observe is not None:
        raise UserError("--condition fixes coordinates exactly and --observe-A observes the point with noise: give one of them")
    what = "--condition" if config.condition is not None else "--observe-A" if config.observe is not None else None
    if what is None:
        return
    if config.guidance is not None:
        raise UserError(f"{what} and --guidance {config.guidance} do not combine: condition on coordinates or guide to a label")
    if config.observe is not None or config.condition.method == "smc":
        ignored = [f for f, v in (("--solver", config.solver != "heun"), ("--rtol", config.rtol is not None),
                                  ("--atol", config.atol is not None), ("--sampler-opt", bool(config.sampler_options))) if v]
        if ignored:
            runner = "--condition-method smc" if config.observe is None else "--observe-A (sampled by smc)"
            raise UserError(f"{runner} runs its own ancestral chain (twisted SMC): {', '.join(ignored)} does not apply to it")


def condition_reference(dataset, condition: Condition, n: int, seed: int, device) -> Optional[Tensor]:
    """``n`` fresh draws of the closed-form conditional ``p(x | x_O = v)`` (full points, the
    observed coordinates at their values), or ``None`` when the data are no Gaussian mixture."""
    if dataset.mixture is None:
        return None
    observed = [i for i, _ in condition.observed]
    mix = conditional_mixture(dataset.mixture, observed, [v for _, v in condition.observed])
    g = torch.Generator().manual_seed(seed + REFERENCE_SEED_OFFSET)
    x = condition.known(n, torch.zeros(dataset.mixture.dim))
    x[:, [i for i in range(dataset.mixture.dim) if i not in observed]] = mix.sample(n, g)
    return x.to(device)


def _smc_record(sol) -> dict:
    """What an editing method ran: NFE, its particles (SMC; else None), resamplings, distinct
    rows, the grid (SMC: its ancestral chain's points, sdedit: the piece after its start)."""
    extra = sol.stats.extra
    return {"nfe": int(sol.stats.nfe), "particles": sum(extra["particles"]) if "particles" in extra else None,
            "resamples": extra.get("resamples"), "distinct": extra.get("distinct"), "grid": extra["grid"], "steps": len(extra["grid"]) - 1}


def condition_metrics(dataset, condition: Condition, x: Tensor, sol) -> dict:
    """The method and what it ran (:func:`_smc_record`) and, with a mixture and one unobserved
    coordinate, the KS distance of that coordinate to the closed-form conditional."""
    extra = sol.stats.extra
    out = {"condition": condition.describe(), "condition_method": condition.method, **_smc_record(sol)}
    out.update({k: extra[k] for k in ("strength", "jump_length", "jump_n_sample") if k in extra})
    if condition.method == "smc":
        out.update(solver="smc", nfe_per_step=1)
    unobserved = [i for i in range(x.shape[1]) if i not in dict(condition.observed)]
    if dataset.mixture is not None and len(unobserved) == 1:
        mix = conditional_mixture(dataset.mixture, list(dict(condition.observed)), list(dict(condition.observed).values()))
        out["ks_conditional"] = ks_statistic(x[:, unobserved[0]].cpu(), mix)
    return out


def observation_reference(dataset, observation: LinearObservation, n: int, seed: int, device) -> Optional[Tensor]:
    """``n`` fresh draws of the closed-form posterior ``p(x | y)``, or ``None`` when the data are no Gaussian mixture."""
    if dataset.mixture is None:
        return None
    post = linear_posterior(dataset.mixture, observation.matrix(), observation.values(), observation.noise_std)
    return post.sample(n, torch.Generator().manual_seed(seed + REFERENCE_SEED_OFFSET)).float().to(device)


def observation_metrics(dataset, observation: LinearObservation, x: Tensor, sol) -> dict:
    """The observation, what SMC ran (:func:`_smc_record`) and, with a mixture, each
    component's posterior weight in the samples (their mean responsibility, unbiased for exact
    samples) against the closed form's, and the largest difference (``weight_error``)."""
    out = {"observation": observation.record(), "solver": "smc", "nfe_per_step": 1, **_smc_record(sol)}
    if dataset.mixture is not None:
        post = linear_posterior(dataset.mixture, observation.matrix(), observation.values(), observation.noise_std)
        got = post.component_moments(x)[0]
        out.update(posterior_weights=post.weights.tolist(), sample_weights=got.tolist(),
                   weight_error=float((got - post.weights).abs().max()))
    return out


# --------------------------------------------------------------------------- guidance (--guidance, --label)

def check_toy_guidance(config) -> None:
    """Validate the guidance fields of a :class:`physgen.toy.ToyConfig`."""
    if config.guidance is not None and config.guidance not in GUIDANCE_KINDS:
        raise unknown_name("guidance", config.guidance, GUIDANCE_KINDS)
    check_guidance_flags(config.guidance, config.w, config.guidance_interval, config.classifier_ckpt)
    if config.guidance is None:
        return
    if config.label is None:
        raise UserError(f"--guidance {config.guidance} needs --label (the class to guide towards)")
    check_w(config.w)
    parse_interval(config.guidance_interval)


def guide_toy(config, process, field, data: Tensor, labels: Optional[Tensor], device, log_stream=None):
    """The guided field for ``physgen toy``: CFG around the (conditional) field, or classifier
    guidance with ``--classifier-ckpt``, the Bayes classifier of an exact/analytic field, or a
    classifier trained here on the same data (``--field mlp`` without a checkpoint)."""
    if config.guidance == "cfg":
        return ClassifierFreeGuidance(field, config.w, interval=config.guidance_interval)
    if config.classifier_ckpt is not None:
        classifier = load_classifier(config.classifier_ckpt, process, device)
    elif config.field in ("exact", "analytic"):
        classifier = bayes_classifier(field)
    else:
        if labels is None:
            raise UserError(f"dataset {config.dataset!r} has no labels to train a classifier on")
        k = int(labels.max()) + 1
        with initial_weights(config.seed + 1):  # the classifier's seed (as its training's)
            classifier = make_classifier(process, data.shape[1:], k, hidden=config.hidden, depth=config.depth,
                                         sigma_data=getattr(process, "sigma_data", 0.5)).to(device)
        tcfg = TrainConfig(steps=config.train_steps, batch=config.batch, lr=config.lr, seed=config.seed + 1,
                           log_every=max(1, config.train_steps // 10))

        def batch(n: int, g: torch.Generator):
            idx = torch.randint(0, data.shape[0], (n,), generator=g, device=g.device)
            return data[idx], labels[idx]

        classifier = train_classifier(process, classifier, batch, tcfg, device=device, log_stream=log_stream).ema
    if classifier.num_classes <= int(config.label):
        raise UserError(f"label {config.label} out of range: the classifier has {classifier.num_classes} classes")
    return ClassifierGuidance(field, process, classifier, config.w, interval=config.guidance_interval)


@torch.no_grad()
def class_fraction(samples: Tensor, data: Tensor, labels: Tensor, label: int, *, chunk: int = 1024) -> float:
    """Fraction of ``samples`` whose nearest point of the labelled ``data`` has class ``label``
    (a 1-nearest-neighbour classifier; samples with a NaN/Inf count as misses)."""
    xs = samples.reshape(samples.shape[0], -1).to(data.device, torch.float32)
    xd = data.reshape(data.shape[0], -1).float()
    hits = 0
    for r0 in range(0, xs.shape[0], chunk):
        xr = xs[r0:r0 + chunk]
        nearest = torch.cdist(xr, xd).argmin(1)
        ok = (labels.to(xd.device)[nearest] == int(label)) & torch.isfinite(xr).all(1)
        hits += int(ok.sum())
    return hits / max(1, xs.shape[0])


def class_reference(dataset, n: int, generator: torch.Generator, label: int, device=None, max_tries: int = 64) -> Tensor:
    """``n`` fresh points of class ``label`` from a labelled toy dataset (rejection on the label)."""
    k = dataset.num_classes
    if k is None or not 0 <= int(label) < int(k):
        raise UserError(f"label {label!r} out of range: dataset {dataset.name!r} has {k or 0} classes")
    out, have = [], 0
    for _ in range(max_tries):
        x, y = dataset.sample_labelled(max(n, 256) * 2, generator, device=device)
        keep = x[y == int(label)]
        out.append(keep)
        have += keep.shape[0]
        if have >= n:
            return torch.cat(out)[:n]
    raise UserError(f"class {label} of dataset {dataset.name!r} is too rare to draw {n} reference points")
