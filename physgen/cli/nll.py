"""``physgen nll``: exact negative log-likelihood of data under a process and field, by the
probability-flow ODE and the instantaneous change of variables (:mod:`physgen.likelihood`).

The field is ``exact`` (the empirical field of ``--n-data`` training points), ``analytic``
(Gaussian-mixture datasets), or ``mlp``: loaded from ``--ckpt`` (a checkpoint file or run
directory written by :func:`physgen.training.train`), or trained on the spot as
``physgen toy`` does.  The NLL is evaluated on ``--n`` fresh points drawn with another seed
(for toy sets), or on the first ``--n`` images of the dataset (image checkpoints).
Writes ``DIR/nll.json``.
"""
from __future__ import annotations

import math
import sys
import time

import torch

from solvers.base import SolverError

from ..errors import UserError
from ..runfolder import add_overwrite_argument, prepare
from .flags import (BATCH, DEPTH, LR, POSITIVE, SAMPLES, SEED, STEPS, TOLERANCE, TRAIN_STEPS, WIDTH, add_process_arguments,
                    process_options)
from .. import checkpoints
from ..compare.problems import check_field_header, load_toy_checkpoint
from ..images.train import load_trained
from ..data import load_toy
from ..io import write_json
from ..likelihood import LikelihoodResult, check_prior_density, log_likelihood
from ..noise import SeededNoise
from ..processes import data_defaults, make_process
from ..runtime import resolve_device
from ..toy import ToyConfig, build_field
from ..sampling import grid, solver_spec
from ..fields.analytic import GaussianMixtureField
from ..images.data import load_image_dataset

__all__ = ["register", "run", "load_field_checkpoint"]


def register(sub) -> None:
    p = sub.add_parser("nll", help="exact NLL (nats, bits/dim) by the probability-flow ODE; writes nll.json")
    add_process_arguments(p)
    p.set_defaults(process=None)  # from the checkpoint when one is given, else edm
    p.add_argument("--dataset", default=None, help="a toy name, FILE.npy/.npz/.json (default moons, or the checkpoint's); with an image checkpoint: digits, cifar10:PATH, ... (default: the one it was trained on)")
    p.add_argument("--field", default=None, help="exact, analytic or mlp (default: analytic for a Gaussian-mixture dataset, else mlp: from --ckpt or trained here)")
    p.add_argument("--ckpt", default=None, help="checkpoint file or run directory (state dicts under 'model'/'ema')")
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="which weights of the checkpoint")
    p.add_argument("--n", type=SAMPLES, default=1000, help="number of points to evaluate")
    p.add_argument("--n-data", type=SAMPLES, default=10_000, help="points behind an exact field / MLP training")
    p.add_argument("--batch", type=BATCH, default=500, help="points per ODE solve")
    div = p.add_mutually_exclusive_group()
    div.add_argument("--exact-divergence", dest="divergence", action="store_const", const="exact", help="exact divergence (N backward passes)")
    div.add_argument("--hutchinson", dest="divergence", action="store_const", const="hutchinson", help="Hutchinson's estimator (one Rademacher probe per sample)")
    p.set_defaults(divergence="auto")
    p.add_argument("--solver", default="dopri5", help="dopri5 (adaptive, default) or a fixed-step flow solver on the sampling grid of --steps/--schedule")
    p.add_argument("--steps", type=STEPS, default=None, help="fixed-step solvers: the grid of `physgen toy --steps K` (its positive points, backwards)")
    p.add_argument("--schedule", default=None, help="fixed-step solvers: the schedule of that grid (default: the process's)")
    p.add_argument("--rtol", type=TOLERANCE, default=None, help="dopri5: relative tolerance (default 1e-5)")
    p.add_argument("--atol", type=TOLERANCE, default=None, help="dopri5: absolute tolerance (default 1e-5)")
    p.add_argument("--s-min", type=POSITIVE, default=None, help="dopri5: start of the integration (default: the process's sigma_min / t_eps)")
    p.add_argument("--dequantize", type=POSITIVE, default=None, metavar="WIDTH",
                   help="uniform dequantisation with this bin width (8-bit images in [-1,1]: 2/255, the default for image data)")
    p.add_argument("--train-steps", type=TRAIN_STEPS, default=2000, help="--field mlp without --ckpt: training steps")
    p.add_argument("--hidden", type=WIDTH, default=256)
    p.add_argument("--depth", type=DEPTH, default=3)
    p.add_argument("--lr", type=LR, default=2e-3)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--out", default="runs/nll")
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def load_field_checkpoint(path, device="cpu", weights: str = "ema"):
    """``(process, field, info)`` from a checkpoint (file or run directory: its newest
    checkpoint that verifies).

    Image checkpoints (``meta.image``, written by ``physgen train``) are rebuilt by
    :func:`physgen.images.train.load_trained`; toy MLPs by
    :func:`physgen.compare.problems.load_toy_checkpoint` (sizes from the checkpoint's
    metadata, else from the shapes of its state dict).
    """
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


def run(args) -> int:
    for name in ("n", "n_data", "batch"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    device = resolve_device(args.device)
    out = prepare(args.out, "nll", ("nll.json",), overwrite=args.overwrite).path
    opts = process_options(args)
    info: dict = {}
    labels = None
    dequantize = args.dequantize
    if args.ckpt is not None:
        if args.field not in (None, "mlp"):
            raise UserError(f"--ckpt loads a network field; --field {args.field} cannot be combined with it")
        process, field, info = load_field_checkpoint(args.ckpt, device, args.weights)
        if args.process is not None and args.process != process.name:
            raise UserError(f"--process {args.process} disagrees with the checkpoint's process {process.name!r}")
        given = {k: v for k, v in opts.items() if v is not None}
        if given:
            raise UserError(f"process options ({', '.join(sorted(given))}) come from the checkpoint; drop them with --ckpt")
        field_kind = "mlp"
        dataset_spec = args.dataset or info["dataset"] or "moons"
        if info["kind"] == "image":
            try:
                ds = load_image_dataset(dataset_spec)
            except UserError as exc:
                raise UserError(f"checkpoint {info['path']!r} holds an image network (trained on {info['dataset']!r}); "
                                f"--dataset must be an image dataset: {exc}") from None
            x = ds.images[: args.n].to(device=device, dtype=torch.float32)
            if tuple(x.shape[1:]) != tuple(info["shape"]):
                raise UserError(f"dataset {dataset_spec!r} has images {list(x.shape[1:])}, the checkpoint was trained on {info['shape']}")
            dequantize = 2.0 / 255.0 if dequantize is None else dequantize
            dataset = None
        else:
            dataset = load_toy(dataset_spec)
            if dataset.dim != info["mlp"]["dim"]:
                raise UserError(f"dataset {dataset_spec!r} is {dataset.dim}-dimensional, the checkpoint's MLP takes {info['mlp']['dim']}")
            x = dataset.sample(args.n, torch.Generator(device=device).manual_seed(args.seed + 1_000_003), device=device)
    else:
        dataset_spec = args.dataset or "moons"
        dataset = load_toy(dataset_spec)
        field_kind = args.field or ("analytic" if dataset.mixture is not None else "mlp")
        g_data = torch.Generator(device=device).manual_seed(args.seed)
        if dataset.num_classes is not None:
            data, labels = dataset.sample_labelled(args.n_data, g_data, device=device)
        else:
            data = dataset.sample(args.n_data, g_data, device=device)
        name = args.process or "edm"
        process = make_process(name, **data_defaults(name, data, opts))
        check_prior_density(process, data)  # before a field is built: the telegrapher has no prior density
        if field_kind == "exact":
            print("note: the exact field is the empirical distribution of --n-data points blurred by s_min; fresh points "
                  "score far below the data density and the ODE is stiff (use --field mlp or a larger --s-min)", file=sys.stderr)
        cfg = ToyConfig(process=name, dataset=dataset_spec, field=field_kind, n_data=args.n_data, train_steps=args.train_steps,
                        hidden=args.hidden, depth=args.depth, lr=args.lr, seed=args.seed, device=args.device)
        field, _ = build_field(process, field_kind, dataset, data, None, cfg, device, log_stream=sys.stderr)
        if hasattr(field, "eval"):
            field.eval()
        x = dataset.sample(args.n, torch.Generator(device=device).manual_seed(args.seed + 1_000_003), device=device)

    adaptive = solver_spec(args.solver).adaptive
    if not adaptive and (args.rtol is not None or args.atol is not None):
        raise UserError(f"--rtol/--atol apply to adaptive solvers; {args.solver!r} takes --steps")
    if adaptive and (args.steps is not None or args.schedule is not None):
        raise UserError(f"--steps/--schedule apply to fixed-step solvers; {args.solver!r} is adaptive (it takes --rtol/--atol)")
    rtol, atol = (1e-5 if args.rtol is None else args.rtol), (1e-5 if args.atol is None else args.atol)
    schedule = None if adaptive else grid(process, args.steps, args.schedule, method=args.solver, dim=int(x[0].numel()), field=field,
                                          cache_dir=args.out)
    n = x.shape[0]
    noise = SeededNoise(args.seed, range(n))
    t0 = time.perf_counter()
    parts = []
    for start in range(0, n, args.batch):
        stop = min(n, start + args.batch)
        try:
            parts.append(log_likelihood(process, field, x[start:stop], divergence=args.divergence, rtol=rtol, atol=atol,
                                        s_min=args.s_min, noise=noise.subset(slice(start, stop)), dequantize=dequantize,
                                        solver=args.solver, schedule=schedule))
        except SolverError as exc:  # the solver's advice in this command's flags (nll has no max_steps)
            raise UserError(f"{exc}; here: loosen --rtol/--atol, or start at a larger --s-min (an exact field is stiff near "
                            f"s_min = {process.s_min if args.s_min is None else args.s_min:g})") from None
    result = LikelihoodResult.concat(parts)
    wall = time.perf_counter() - t0
    summary = result.summary()
    summary.update(process={"name": process.name, **process.config()}, dataset=dataset_spec, field=field_kind, wall_s=wall,
                   solver=args.solver, rtol=rtol if adaptive else None, atol=atol if adaptive else None, ckpt=info.get("path"), seed=args.seed,
                   steps=None if schedule is None else int(schedule.numel() - 1),
                   schedule=None if schedule is None else (args.schedule or process.default_schedule_name),
                   grid=None if schedule is None else schedule.tolist())
    summary = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
    if dataset is not None and dataset.mixture is not None and "score" in process.capabilities():
        ref = GaussianMixtureField(dataset.mixture, process.coefficients)
        s = torch.full((n,), result.s_min, dtype=torch.float64, device=x.device)
        summary["analytic_nll_nats"] = float(-ref.log_prob(x.double(), s).mean())
        summary["data_nll_nats"] = float(-dataset.mixture.log_prob(x.double().cpu()).mean())
    write_json(out / "nll.json", summary)
    ref_text = f"  (analytic at s_min: {summary['analytic_nll_nats']:.4f})" if "analytic_nll_nats" in summary else ""
    print(f"nll = {result.nll:.4f} ± {result.nll_std_err:.4f} nats ({result.bits_per_dim:.4f} bits/dim) over {n} points, "
          f"{result.divergence} divergence, {result.nfe} NFE, {wall:.1f} s{ref_text}")
    print(f"wrote {out / 'nll.json'}")
    return 0


