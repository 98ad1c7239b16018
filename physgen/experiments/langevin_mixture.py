"""NCSN's mixture demonstration: plain Langevin gets the 0.8/0.2 mode weights wrong, annealed Langevin gets them right.

Song & Ermon 2019 (NCSN, arXiv 1907.05600, §3.2 and Fig. 3).  The data are
``0.8 N((5,5), I) + 0.2 N((-5,-5), I)`` and every sampler uses its *exact* score (the
analytic field of :class:`physgen.fields.analytic.GaussianMixtureField` under the NCSN/VE
perturbation).  All chains start from the same uniform draw on ``[-8, 8]²``.

* **plain Langevin** at the data score (``σ = 0``): ``x <- x + (α/2) ∇log p(x) + √α z``.
  The two modes are separated by a region of vanishing density, so each chain stays in the
  mode it first falls into: the weights follow the start (about 0.5/0.5), not the data.
* **annealed Langevin** (NCSN Alg. 1): geometric ``σ`` from 20 to 1 in 10 levels; at large
  ``σ`` the perturbed modes overlap and chains move between them, so the mass splits
  0.8/0.2 before the modes separate.
* **annealed, NCSNv2 plan**: the settings ``physgen toy --process ncsn --solver ald`` uses
  by default (NCSNv2 techniques 1, 2, 4 with 1000 score evaluations), for comparison.
  Technique 4 tunes ``ε`` for the per-level *variance*, not for mass transfer between
  modes, so in 2-D its weights lag slightly behind the annealed run above.

Writes ``langevin_mixture.png`` (data / plain / annealed / NCSNv2 plan, as NCSN Fig. 3),
``weights.json`` and ``weights.csv``.
"""
from __future__ import annotations

import csv
import io
import time

import torch
import solvers
from physgen.config import arg, parse_seed
from physgen.data import ncsn_mixture
from physgen.errors import UserError
from physgen.metrics import mode_weights
from physgen.noise import SeededNoise
from physgen.processes import make_process
from physgen.ncsnv2_plan import ncsnv2_levels
from physgen.io import save_figure, atomic_write, ensure_dir, write_json

OUTPUTS = ("langevin_mixture.png", "weights.json", "weights.csv")  # what the experiment writes into --out

__all__ = ["add_arguments", "run", "run_mixture", "MEANS"]

MEANS = ((5.0, 5.0), (-5.0, -5.0))


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/langevin_mixture", help="output folder")
    parser.add_argument("--n", type=int, default=3000, help="chains per sampler")
    parser.add_argument("--seed", type=arg(parse_seed), default=0)
    parser.add_argument("--plain-step", type=float, default=0.1, help="plain Langevin step α")
    parser.add_argument("--plain-steps", type=int, default=1000, help="plain Langevin steps")
    parser.add_argument("--sigma-max", type=float, default=20.0, help="annealed: σ_1")
    parser.add_argument("--sigma-min", type=float, default=1.0, help="annealed: σ_L")
    parser.add_argument("--levels", type=int, default=10, help="annealed: L")
    parser.add_argument("--steps-per-level", type=int, default=100, help="annealed: T")
    parser.add_argument("--eps", type=float, default=0.2, help="annealed: ε (α_i = ε σ_i²/σ_L², our convention)")
    parser.add_argument("--no-ncsnv2", action="store_true", help="skip the NCSNv2-plan run")


def run_mixture(n: int = 3000, seed: int = 0, *, plain_step: float = 0.1, plain_steps: int = 1000, sigma_max: float = 20.0,
                sigma_min: float = 1.0, levels: int = 10, steps_per_level: int = 100, eps: float = 0.2,
                ncsnv2: bool = True) -> dict:
    """Run the samplers; returns ``{"data": x, "plain": ..., "annealed": ..., "ncsnv2": ..., "rows": [...]}``."""
    if n <= 0:
        raise UserError(f"--n must be > 0, got {n}")
    mix = ncsn_mixture()
    noise = SeededNoise(seed, range(n))
    x0 = noise.rand((n, 2)) * 16.0 - 8.0  # the same uniform start for every sampler
    data = mix.sample(n, torch.Generator().manual_seed(seed + 7)).float()
    out: dict = {"data": data, "rows": []}

    def record(name: str, x, nfe: int, wall: float, settings: str) -> None:
        w = mode_weights(x, mix.means).tolist()
        out[name] = x
        out["rows"].append({"sampler": name, "weight_(5,5)": w[0], "weight_(-5,-5)": w[1], "n": n, "nfe": nfe,
                            "wall_s": wall, "settings": settings})

    w = mode_weights(data, mix.means).tolist()
    out["rows"].append({"sampler": "data", "weight_(5,5)": w[0], "weight_(-5,-5)": w[1], "n": n, "nfe": 0, "wall_s": 0.0,
                        "settings": "exact samples"})

    proc = make_process("ncsn", sigma_max=sigma_max, sigma_min=sigma_min, num_levels=levels)
    field = proc.analytic_field(mix)
    t = time.perf_counter()
    sol = solvers.langevin(field, x0, [1.0, 0.0], sigma=0.0, step=plain_step, n_steps=plain_steps, noise=noise)
    record("plain", sol.x, sol.stats.nfe, time.perf_counter() - t, f"sigma=0 (data score), step={plain_step}, {plain_steps} steps")

    t = time.perf_counter()
    sol = solvers.annealed_langevin(field, x0, proc.levels(), eps=eps, steps_per_level=steps_per_level, noise=noise,
                                    final_denoise=False)
    record("annealed", sol.x, sol.stats.nfe, time.perf_counter() - t,
           f"{levels} levels {sigma_max:g} -> {sigma_min:g}, T={steps_per_level}, eps={eps:g}, no final denoising (NCSN Alg. 1)")

    if ncsnv2:
        plan = ncsnv2_levels(data)
        p2 = make_process("ncsn", sigma_max=plan.sigma_max, sigma_min=plan.sigma_min, num_levels=plan.num_levels)
        f2 = p2.analytic_field(mix)
        t = time.perf_counter()
        sol = solvers.annealed_langevin(f2, x0, plan.levels, eps=plan.eps, steps_per_level=plan.steps_per_level, noise=noise)
        record("ncsnv2", sol.x, sol.stats.nfe, time.perf_counter() - t,
               f"{plan.num_levels} levels {plan.sigma_max:.3g} -> {plan.sigma_min:g}, T={plan.steps_per_level}, "
               f"eps={plan.eps:.3g}, final denoising (NCSNv2 plan)")
        out["plan"] = plan.explain()
    return out


def _figure(result: dict, path) -> None:
    import matplotlib  # heavy optional dependency: imported only where it is used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy optional dependency: imported only where it is used

    names = [k for k in ("data", "plain", "annealed", "ncsnv2") if k in result]
    titles = {"data": "data (exact samples)", "plain": "Langevin (exact score)", "annealed": "annealed Langevin",
              "ncsnv2": "annealed, NCSNv2 plan"}
    rows = {r["sampler"]: r for r in result["rows"]}
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.9), sharex=True, sharey=True)
    for ax, name in zip(axes, names):
        x = result[name].cpu()
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
        r = rows[name]
        ax.set_title(f"{titles[name]}\nweights {r['weight_(5,5)']:.3f} / {r['weight_(-5,-5)']:.3f}", fontsize=9)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_aspect("equal")
    fig.suptitle("0.8 N((5,5), I) + 0.2 N((-5,-5), I): mode weights by sampler (NCSN Fig. 3)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def run(args) -> int:
    t0 = time.perf_counter()
    result = run_mixture(args.n, args.seed, plain_step=args.plain_step, plain_steps=args.plain_steps, sigma_max=args.sigma_max,
                         sigma_min=args.sigma_min, levels=args.levels, steps_per_level=args.steps_per_level, eps=args.eps,
                         ncsnv2=not args.no_ncsnv2)
    out = ensure_dir(args.out)
    _figure(result, out / "langevin_mixture.png")
    rows = result["rows"]
    write_json(out / "weights.json", {"true_weights": [0.8, 0.2], "means": [list(m) for m in MEANS], "samplers": rows,
                                      "ncsnv2_plan": result.get("plan"), "seed": args.seed, "wall_s": time.perf_counter() - t0})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(out / "weights.csv", "w") as f:
        f.write(buf.getvalue())
    for r in rows:
        print(f"{r['sampler']:>9}: weights {r['weight_(5,5)']:.3f} / {r['weight_(-5,-5)']:.3f}  ({r['nfe']} NFE; {r['settings']})")
    print(f"wrote {out}/langevin_mixture.png, weights.json, weights.csv")
    return 0
