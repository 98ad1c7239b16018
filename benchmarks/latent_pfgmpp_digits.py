"""PFGM++ D=128 in the digits autoencoder's latent space against the same budget in pixel space,
judged by the digit classifier of ``benchmarks/gpu_digits.py`` (issue 25's Done-when; not a test).

Trains the digit classifier (``gpu_digits.make_judge``: its report on the real held-out digits is
the reference), then the ``digits`` KL autoencoder (16x16 -> 4x4x4) with ``physgen
train-autoencoder``'s run (``physgen.latent.run``), then two PFGM++ D=128 runs of the same wall
budget, recipe and U-Net preset: one on the 16x16 pixels (``gpu_digits.train_one``), one with
``--latent`` on the scaled latents (N = 64).  Each draws ``--n-samples`` Heun samples (the latent
run's decoded), judged by the classifier; wall time per image covers sampling (and decoding).

    python benchmarks/latent_pfgmpp_digits.py --out /tmp/lpd --write                      # 3 min per run
    python benchmarks/latent_pfgmpp_digits.py --out /tmp/lpd --steps 300 --log-every 50 \
        --classifier-steps 300 --ae-steps 300 --n-samples 100 --write                       # same steps, any load

The CLI equivalent of the two runs (the script calls the same library functions)::

    physgen train-autoencoder --dataset digits --out AE
    physgen train --latent AE --dataset digits --process pfgmpp --D 128 --arch tiny --batch 64 --lr 2e-3 --max-minutes 3 --out LAT
    physgen sample --ckpt LAT --out samples/ --n 200 --steps 18

Writes ``OUT/results.json``, ``OUT/latent_digits.png`` (originals, reconstructions, latent and
pixel samples; ``--figure`` copies it) and with ``--write`` the table into the ``## Latent space
(issue 25)`` section of ``benchmarks/RESULTS.md``.
"""
from __future__ import annotations

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
from physgen.images.data import save_image_grid  # noqa: E402
from physgen.images.generate import generate  # noqa: E402
from physgen.images.train import ImageTrainConfig, load_trained, run_training  # noqa: E402
from physgen.io import ensure_dir, write_json  # noqa: E402
from physgen.latent.run import AutoencoderRunConfig, default_autoencoder_train, run_autoencoder_training  # noqa: E402
from physgen.latent.train import load_autoencoder  # noqa: E402
from physgen.runtime import resolve_device  # noqa: E402
from physgen.training import TrainConfig  # noqa: E402

HEADING = "## Latent space (issue 25)"
SUBHEADING = "### PFGM++ D=128 in the digits latent space vs pixel space, same budget, judged by the digit classifier"
D = 128


def build_parser():
    p = gpu_digits.build_parser()
    p.set_defaults(minutes=3.0, resolution=16, arch="tiny", batch=64, lr=2e-3, warmup_steps=100, ema_halflife=20_000.0,
                   n_samples=200, classifier_steps=600, checkpoint_every=10**6, out="runs/latent_pfgmpp_digits", Ds="128")
    p.add_argument("--ae-steps", type=int, default=1000, help="autoencoder steps (default: train-autoencoder's 1000)")
    p.add_argument("--ae-minutes", type=float, default=None,
                   help="stop the autoencoder early (default: never; a 3-minute cap under load stopped it at 100 steps, "
                        "and its reconstructions collapsed onto a few classes)")
    p.add_argument("--figure", type=Path, default=None, help="copy the figure here (docs/figures/latent_digits.png)")
    return p


def train_autoencoder(args, device, log) -> Path:
    out = Path(args.out) / "ae"
    tcfg = default_autoencoder_train()
    tcfg.steps, tcfg.max_minutes, tcfg.seed = args.ae_steps, args.ae_minutes, args.seed
    config = AutoencoderRunConfig(dataset="digits", preset="digits", out=str(out), device=str(device), train=tcfg)
    if not (out / "autoencoder.pt").is_file():
        run_autoencoder_training(config, resume=bool(checkpoints.list_checkpoints(out)), log_stream=log)
    return out


def train_latent(ae: Path, args, device, log) -> dict:
    out = Path(args.out) / "latent"
    tcfg = TrainConfig(steps=args.steps or 10**8, batch=args.batch, lr=args.lr, warmup_steps=args.warmup_steps, ema_halflife=args.ema_halflife,
                       ema_rampup=0.05, grad_clip=None, log_every=args.log_every, checkpoint_every=args.checkpoint_every, seed=args.seed,
                       max_minutes=None if args.steps else args.minutes)
    cfg = ImageTrainConfig(dataset="digits", process="pfgmpp", D=D, sigma_data=1.0, arch=args.arch, device=str(device), out=str(out),
                           sample_n=64, sample_steps=args.sample_steps, latent=str(ae), train=tcfg)
    t0 = time.perf_counter()
    result = run_training(cfg, log_stream=log)
    wall = time.perf_counter() - t0
    tail = result.losses[-max(1, len(result.losses) // 10):]
    return {"D": f"{D} (latent)", "steps": result.step, "images_seen": result.step * args.batch, "train_wall_s": wall,
            "final_loss": sum(tail) / len(tail), "checkpoint": str(result.checkpoint)}


def draw(info: dict, args, device) -> torch.Tensor:
    """Heun samples 0..n-1 (decoded for a latent run); fills the NFE and wall time per image."""
    model = load_trained(info["checkpoint"], device=device)
    t0 = time.perf_counter()
    xs = []
    for _, x, stats in generate(model.process, model.field, range(args.n_samples), model.shape, steps=args.sample_steps, solver="heun",
                                batch=args.n_samples, device=device, seed=args.seed, decode=model.decode):
        xs.append(x.clamp(-1, 1).cpu())
        info["nfe"] = stats.nfe
    info["sample_s_per_image"] = (time.perf_counter() - t0) / args.n_samples
    return torch.cat(xs)


def table(args, where, acc, real, runs) -> str:
    lines = [f"Machine: {where}.  `python benchmarks/latent_pfgmpp_digits.py {' '.join(sys.argv[1:])}` (digits 16x16, U-Net `{args.arch}`, "
             f"batch {args.batch}, lr {args.lr}, {f'{args.steps} steps' if args.steps else f'{args.minutes} min'} of training each, autoencoder {args.ae_steps} steps, {args.n_samples} Heun samples of {args.sample_steps} steps; "
             f"judge: the gpu_digits classifier, held-out accuracy {acc:.3f}).  Wall times on the shared 2-core machine under other helpers' load.",
             "", "| set | steps | images seen | train wall s | mean confidence | confident (>0.9) | class entropy | Fréchet (classifier features) | sample s/image |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| real held-out ({real['n']}) | | | | {real['confidence_mean']:.3f} | {real['confident_fraction_0.9']:.3f} | {real['class_entropy']:.3f} | {real['frechet_classifier']:.3f} | |"]
    for r in runs:
        rep = r["report"]
        lines.append(f"| PFGM++ D={r['D']} | {r['steps']} | {r['images_seen']} | {r['train_wall_s']:.0f} | {rep['confidence_mean']:.3f} | "
                     f"{rep['confident_fraction_0.9']:.3f} | {rep['class_entropy']:.3f} | {rep['frechet_classifier']:.3f} | {r['sample_s_per_image'] * 1e3:.1f} ms |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    device, log = resolve_device(args.device), sys.stderr
    out = ensure_dir(args.out)
    clf, acc, data, held, real = gpu_digits.make_judge(args, device, log)
    ae_dir = train_autoencoder(args, device, log)
    latent = train_latent(ae_dir, args, device, log)
    pixel = gpu_digits.train_one(D, args, device, log, root=out / "pixel")
    pixel["D"] = f"{D} (pixels)"
    samples = {}
    for info in (latent, pixel):
        samples[info["D"]] = x = draw(info, args, device)
        gpu_digits.judge_run(info, x, clf, data, device, log)
    ae = load_autoencoder(ae_dir)
    with torch.no_grad():
        recon = ae(held.images[:16], sample=False)[0].clamp(-1, 1)
    rows = [held.images[:16], recon, samples[latent["D"]][:16], samples[pixel["D"]][:16]]
    figure = save_image_grid(torch.cat(rows), out / "latent_digits.png", nrow=16)
    if args.figure:
        shutil.copyfile(figure, args.figure)
    where = machine(device)
    write_json(out / "results.json", {"classifier_accuracy": acc, "real_heldout": real, "runs": [latent, pixel], "machine": where})
    body = table(args, where, acc, real, [latent, pixel])
    print("\n" + body)
    if args.write:
        write_subsection(args.results, HEADING, SUBHEADING, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
