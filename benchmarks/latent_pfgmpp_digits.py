"""PFGM++ D=128 in the digits autoencoder's latent space against the same wall budget in pixel space,
judged by the digit classifier of ``benchmarks/gpu_digits.py`` (issue 25's Done-when; not a test).

One command reproduces the table (its defaults are the measurement)::

    python benchmarks/latent_pfgmpp_digits.py --out /tmp/lpd --figure docs/figures/latent_digits.png --write

It trains, in this order:

1. the digit classifier (``gpu_digits.make_judge``; its report on the real held-out digits is the
   reference);
2. the ``digits`` KL autoencoder (16x16 -> 4x4x4) with ``physgen train-autoencoder``'s defaults;
3. **the latent run a user gets with no flags**: ``physgen train --latent AE --dataset digits --out
   LAT`` (run through the CLI itself: PFGM++ D=128, the ``tiny`` U-Net, the latent recipe of
   ``physgen.images.train.LATENT_DEFAULTS``); its wall time ``W`` is the budget of the next two;
4. the ``mlp`` network on the same latents with the same recipe, stopped at ``W`` at the latest
   (``--arch mlp --max-minutes W``): the network, not the recipe, is what this row changes;
5. PFGM++ D=128 on the 16x16 pixels, ``tiny`` U-Net, the same recipe (batch, lr, warm-up, EMA),
   stopped at ``W``: the same wall minutes (not the same steps; each row says its steps).

Each run draws ``--n-samples`` Heun samples of ``--sample-steps`` steps (the latent ones decoded),
judged by the classifier: mean confidence, share above 0.9, class entropy (normalised, 1 = uniform),
class counts 0..9, Fréchet distance in the classifier's features; the time per image covers
sampling and decoding.  ``NN ratio``: the median distance of a sample to its nearest training
point over the median nearest-neighbour distance among training points, in the run's own space
(latent or pixels): near 0 a run copies its training set, near 1 or above its samples are as far
from the training points as these are from each other.

Writes ``OUT/results.json``, ``OUT/latent_digits.png`` (rows: held-out originals, their
reconstructions, two rows of default latent samples, one row of pixel samples; ``--figure``
copies it) and with ``--write`` the table into the ``## Latent space (issue 25)`` section of
``benchmarks/RESULTS.md``.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_digits  # noqa: E402
from benchlib import machine, write_subsection  # noqa: E402

from physgen import checkpoints  # noqa: E402
from physgen.cli.main import main as physgen_main  # noqa: E402
from physgen.images.data import load_image_dataset, save_image_grid  # noqa: E402
from physgen.images.generate import generate  # noqa: E402
from physgen.images.quality import classifier_report  # noqa: E402
from physgen.images.train import LATENT_DEFAULTS, load_trained  # noqa: E402
from physgen.io import ensure_dir, write_json  # noqa: E402
from physgen.latent.data import latent_dataset  # noqa: E402
from physgen.latent.run import AutoencoderRunConfig, default_autoencoder_train, run_autoencoder_training  # noqa: E402
from physgen.latent.train import load_autoencoder  # noqa: E402
from physgen.runtime import resolve_device  # noqa: E402

HEADING = "## Latent space (issue 25)"
SUBHEADING = "### PFGM++ D=128 in the digits latent space vs pixel space, same wall budget, judged by the digit classifier"
D = 128


def build_parser():
    p = gpu_digits.build_parser()
    recipe = {k[6:]: v for k, v in LATENT_DEFAULTS.items() if k.startswith("train.")}
    p.set_defaults(resolution=16, arch="tiny", batch=recipe["batch"], lr=recipe["lr"], warmup_steps=recipe["warmup_steps"],
                   ema_halflife=500_000.0, n_samples=400, classifier_steps=600, checkpoint_every=10**6, log_every=500,
                   out="runs/latent_pfgmpp_digits", Ds="128")
    p.add_argument("--figure", type=Path, default=None, help="copy the figure here (docs/figures/latent_digits.png)")
    p.add_argument("--no-mlp-latent", action="store_true", help="skip row 4 (the mlp network on the latents)")
    p.add_argument("--latent-steps", type=int, default=None, help="smoke runs: --steps for the default latent run (default: its own)")
    p.add_argument("--ae-steps", type=int, default=None, help="smoke runs: autoencoder steps (default: train-autoencoder's)")
    return p


def train_autoencoder(args, device, log) -> Path:
    out = Path(args.out) / "ae"
    tcfg = default_autoencoder_train()
    tcfg.seed = args.seed
    tcfg.steps = args.ae_steps or tcfg.steps
    config = AutoencoderRunConfig(dataset="digits", preset="digits", out=str(out), device=str(device), train=tcfg)
    if not (out / "autoencoder.pt").is_file():
        run_autoencoder_training(config, resume=bool(checkpoints.list_checkpoints(out)), log_stream=log)
    return out


def train_cli(name: str, argv: list, args) -> dict:
    """``physgen train ARGV --out OUT/NAME`` through the CLI; its summary as a run record."""
    out = Path(args.out) / "".join(c if c.isalnum() else "-" for c in name).strip("-")
    if physgen_main(["train", *argv, "--out", str(out), "--log-every", str(args.log_every), "--device", args.device]) != 0:
        raise SystemExit(f"physgen train {' '.join(argv)} failed")
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    return {"D": name, "argv": argv, "steps": summary["step"], "images_seen": summary["step"] * config["train"]["batch"],
            "train_wall_s": summary["wall_s"], "final_loss": summary["final_loss"], "checkpoint": summary["checkpoint"],
            "arch": config["resolved"]["unet"]["arch"]}


def draw(info: dict, args, device) -> torch.Tensor:
    """Heun samples 0..n-1 (decoded for a latent run), in the run's space and as images; fills the
    NFE and the wall time per image (sampling plus decoding)."""
    model = load_trained(info["checkpoint"], device=device)
    t0 = time.perf_counter()
    raw, xs = [], []
    for _, x, stats in generate(model.process, model.field, range(args.n_samples), model.shape, steps=args.sample_steps, solver="heun",
                                batch=args.n_samples, device=device, seed=args.seed):
        raw.append(x)
        xs.append((model.decode(x) if model.decode else x).clamp(-1, 1).cpu())
        info["nfe"] = stats.nfe
    info["sample_ms_per_image"] = 1e3 * (time.perf_counter() - t0) / args.n_samples
    info["raw"] = torch.cat(raw).cpu()
    return torch.cat(xs)


def nn_ratio(samples: torch.Tensor, train: torch.Tensor) -> float:
    """median over samples of the distance to the nearest training point / median NN distance among training points."""
    s, t = samples.flatten(1).double(), train.flatten(1).double()
    among = torch.cdist(t, t)
    among.fill_diagonal_(float("inf"))
    return float(torch.cdist(s, t).min(1).values.median() / among.min(1).values.median())


def row(name, info, rep) -> str:
    cells = [name, str(info.get("steps", "")), "" if "train_wall_s" not in info else f"{info['train_wall_s']:.0f}",
             "" if info.get("final_loss") is None else f"{info['final_loss']:.3f}",
             f"{rep['confidence_mean']:.3f}", f"{rep['confident_fraction_0.9']:.3f}", f"{rep['class_entropy']:.3f}",
             " ".join(map(str, rep["class_counts"])), f"{rep['frechet_classifier']:.2f}",
             "" if "nn_ratio" not in info else f"{info['nn_ratio']:.2f}",
             "" if "sample_ms_per_image" not in info else f"{info['sample_ms_per_image']:.1f}"]
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    device, log = resolve_device(args.device), sys.stderr
    out = ensure_dir(args.out)
    load_start = os.getloadavg()
    clf, acc, data, held, real = gpu_digits.make_judge(args, device, log)
    ae_dir = train_autoencoder(args, device, log)
    smoke = ["--steps", str(args.latent_steps)] if args.latent_steps else []
    runs = [train_cli("latent, defaults (tiny U-Net)", ["--latent", str(ae_dir), "--dataset", "digits", *smoke], args)]
    minutes = f"{runs[0]['train_wall_s'] / 60:.4f}"
    if not args.no_mlp_latent:
        runs.append(train_cli("latent, --arch mlp", ["--latent", str(ae_dir), "--dataset", "digits", "--arch", "mlp", *smoke, "--max-minutes", minutes], args))
    pixel_recipe = ["--dataset", "digits", "--resolution", "16", "--process", "pfgmpp", "--D", str(D), "--arch", args.arch,
                    "--batch", str(args.batch), "--lr", str(args.lr), "--warmup-steps", str(args.warmup_steps), "--steps", "100000000",
                    "--max-minutes", minutes]
    runs.append(train_cli("pixels, tiny U-Net", pixel_recipe, args))
    latents = latent_dataset(ae_dir, "digits")[0].images
    pixels = load_image_dataset("digits", 16).images
    samples = {}
    for info in runs:
        samples[info["D"]] = x = draw(info, args, device)
        info["nn_ratio"] = nn_ratio(info.pop("raw"), latents if info["D"].startswith("latent") else pixels)
        gpu_digits.judge_run(info, x, clf, data, device, log)
    ae = load_autoencoder(ae_dir)
    with torch.no_grad():
        recon_all = ae(held.images, sample=False)[0].clamp(-1, 1)
    recon = classifier_report(clf, recon_all, data.images, num_classes=10, device=device)
    default = samples[runs[0]["D"]]
    figure = save_image_grid(torch.cat([held.images[:16], recon_all[:16], default[:32], samples[runs[-1]["D"]][:16]]), out / "latent_digits.png", nrow=16)
    if args.figure:
        shutil.copyfile(figure, args.figure)
    where = machine(device)
    load_end = os.getloadavg()
    write_json(out / "results.json", {"classifier_accuracy": acc, "real_heldout": real, "reconstructions": recon, "runs": runs,
                                      "machine": where, "loadavg_start": load_start, "loadavg_end": load_end})
    lines = [f"Machine: {where}; load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end (1-minute).  "
             f"Judge: the gpu_digits classifier ({args.classifier_steps} steps), held-out accuracy {acc:.3f}; {args.n_samples} Heun samples "
             f"of {args.sample_steps} steps per run.  Budget: the default latent run's wall time, {float(minutes):.2f} min, for every run.",
             "", "| set | steps | train wall s | final loss | mean confidence | confident (>0.9) | class entropy | class counts 0..9 | Fréchet | NN ratio | sample+decode ms/image |",
             "|---|---|---|---|---|---|---|---|---|---|---|",
             row(f"real held-out ({real['n']})", {}, real), row("reconstructions (default autoencoder)", {}, recon)]
    lines += [row(f"PFGM++ D=128, {r['D']}", r, r["report"]) for r in runs]
    lines += ["", "Commands (the script runs them through the CLI, the autoencoder through its library call):", ""]
    lines += ["    physgen train-autoencoder --dataset digits --out AE"] + [f"    physgen train {' '.join(r['argv']).replace(str(ae_dir), 'AE')} --out RUN" for r in runs]
    body = "\n".join(lines)
    print("\n" + body)
    if args.write:
        write_subsection(args.results, HEADING, SUBHEADING, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
