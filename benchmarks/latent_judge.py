"""Where latent samples lose digit classes (issue 25; not a test): judge an autoencoder and latent
runs with the digit classifier of ``benchmarks/gpu_digits.py``.

For the autoencoder ``AE`` (a ``physgen train-autoencoder`` run folder or file) it reports, each
as the classifier's mean confidence, class entropy (normalised, 1 = uniform over the 10 digits),
Fréchet distance in its features and class counts:

* the real held-out digits (the classifier's 20 % split),
* their reconstructions (posterior means decoded): what the autoencoder can express at all,
* decoded draws of a Gaussian fitted to the scaled latents of all digits (mean and full
  covariance): what a process that learned only the latents' first two moments would give,
* decoded draws of N(0, I) in the scaled latent space: the decoder's reading of the prior alone;

and for each latent run ``RUN`` (``physgen train --latent``), ``--n`` Heun samples of 18 steps
(35 NFE), decoded, with the time per image.  So a collapse can be placed: in the autoencoder
(reconstructions already collapse), or in the latent process (its samples cover fewer classes
than the Gaussian fit)::

    python benchmarks/latent_judge.py AE [RUN ...] [--n 200] [--figure OUT.png]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from physgen.images.data import load_image_dataset, save_image_grid  # noqa: E402
from physgen.images.generate import generate  # noqa: E402
from physgen.images.quality import classifier_report, split_dataset, train_classifier  # noqa: E402
from physgen.images.train import load_trained  # noqa: E402
from physgen.latent.data import latent_dataset  # noqa: E402
from physgen.latent.encode import decode_latents  # noqa: E402
from physgen.latent.train import load_autoencoder  # noqa: E402


def gaussian_fit(z: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws of N(mean, cov) fitted to the latents ``z [N, c, h, w]`` (float64 fit)."""
    flat = z.flatten(1).double()
    mu, cov = flat.mean(0), torch.cov(flat.T) + 1e-6 * torch.eye(flat.shape[1], dtype=torch.float64)
    eps = torch.randn(n, flat.shape[1], generator=generator, dtype=torch.float64)
    return (mu + eps @ torch.linalg.cholesky(cov).T).float().reshape(n, *z.shape[1:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ae")
    p.add_argument("runs", nargs="*")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--classifier-steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure", type=Path, default=None, help="originals, reconstructions, then 16 samples of each run (rows)")
    args = p.parse_args(argv)
    data = load_image_dataset("digits", 16)
    clf, acc = train_classifier(data, steps=args.classifier_steps, seed=args.seed)
    _, held = split_dataset(data, 0.2, args.seed)
    print(f"classifier held-out accuracy {acc:.3f}")
    print("| set | mean confidence | class entropy | Fréchet | class counts | ms/image |\n|---|---|---|---|---|---|")

    def row(name, x, ms=None):
        r = classifier_report(clf, x, data.images, num_classes=10)
        print(f"| {name} | {r['confidence_mean']:.3f} | {r['class_entropy']:.3f} | {r['frechet_classifier']:.2f} | "
              f"{' '.join(map(str, r['class_counts']))} | {'' if ms is None else f'{ms:.1f}'} |", flush=True)

    ae = load_autoencoder(args.ae)
    latents, record = latent_dataset(args.ae, "digits")
    gen = torch.Generator().manual_seed(args.seed)
    row("real held-out", held.images)
    with torch.no_grad():
        recon = ae(held.images, sample=False)[0].clamp(-1, 1)
    row("reconstructions", recon)
    row("Gaussian fit to the latents, decoded", decode_latents(ae, gaussian_fit(latents.images, args.n, gen), record["scale_factor"]))
    row("N(0, I) latents, decoded", decode_latents(ae, torch.randn(args.n, *latents.images.shape[1:], generator=gen), record["scale_factor"]))
    grid = [held.images[:16], recon[:16]]
    for run in args.runs:
        model = load_trained(run)
        t0 = time.perf_counter()
        x = torch.cat([x.clamp(-1, 1) for _, x, _ in generate(model.process, model.field, range(args.n), model.shape, steps=18,
                                                               solver="heun", batch=args.n, seed=args.seed, decode=model.decode)])
        row(f"{run} (step {model.step})", x, 1e3 * (time.perf_counter() - t0) / args.n)
        grid.append(x[:16])
    if args.figure:
        save_image_grid(torch.cat(grid), args.figure, nrow=16)
    return 0


if __name__ == "__main__":
    sys.exit(main())
