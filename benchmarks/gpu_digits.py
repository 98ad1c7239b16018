"""PFGM++ on digits, D=2048 against D=inf, judged by a digit classifier (not a test).

For each D: train the U-Net on sklearn's digits (1797 images, resized to
``--resolution``) with ``physgen.images.train.run_training`` for at most ``--minutes``
(or ``--steps``), draw ``--n-samples`` samples from the EMA with Heun (``--sample-steps``
steps, seeds 0..n-1), and save a grid.  A small CNN trained on the real digits (held-out
accuracy reported) then judges the samples (:mod:`physgen.images.quality`): confidence
histogram, predicted-class histogram and its normalised entropy, and the Fréchet
distance between classifier features of samples and real digits.  The same numbers for
held-out real digits give the ceiling / floor.

    python benchmarks/gpu_digits.py --minutes 10 --resolution 32 --out runs/gpu_digits   # GPU
    python benchmarks/gpu_digits.py --minutes 0.3 --resolution 16 --arch tiny --batch 32 \\
        --n-samples 100 --sample-steps 8 --classifier-steps 150 --out /tmp/gd            # CPU smoke

Writes ``OUT/D<D>/`` (run dirs with checkpoints and grids), ``OUT/samples-D<D>.png``,
``OUT/quality.png``, ``OUT/results.json``; ``--write`` puts the table into the
``## Images (issue 7)`` section of ``benchmarks/RESULTS.md`` (sub-section "Digits").
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import report_subsection  # noqa: E402

HEADING = "## Images (issue 7)"
SUBHEADING = "### Digits: PFGM++ D=2048 vs D=inf, judged by a digit classifier"


def d_label(D) -> str:
    return "inf" if D == math.inf else str(int(D))


def train_one(D, args, device, log, root=None) -> dict:
    """Train PFGM++ with this ``D`` on digits into ``root/D<D>`` (default ``args.out``)."""
    from physgen.images.train import ImageTrainConfig, run_training
    from physgen.checkpoints import list_checkpoints
    from physgen.training import TrainConfig

    out = Path(root or args.out) / f"D{d_label(D)}"
    tcfg = TrainConfig(
        steps=args.steps or 10**8, batch=args.batch, lr=args.lr, warmup_steps=args.warmup_steps, ema_halflife=args.ema_halflife,
        ema_rampup=0.05, grad_clip=None, log_every=args.log_every, checkpoint_every=args.checkpoint_every, keep_checkpoints=2,
        seed=args.seed, precision=args.precision, channels_last=device.type == "cuda", compile=args.compile,
        max_minutes=None if args.steps else args.minutes,
    )
    cfg = ImageTrainConfig(dataset="digits", resolution=args.resolution, process="pfgmpp", D=D, arch=args.arch, device=str(device),
                           out=str(out), sample_every=args.sample_every, sample_n=64, sample_steps=args.sample_steps, train=tcfg)
    resume = bool(list_checkpoints(out)) and args.resume
    t0 = time.perf_counter()
    result = run_training(cfg, resume=resume, log_stream=log)
    wall = time.perf_counter() - t0
    tail = result.losses[-max(1, len(result.losses) // 10):]
    return {"D": d_label(D), "steps": result.step, "images_seen": result.step * args.batch, "train_wall_s": wall,
            "img_per_s": result.step * args.batch / wall if not resume else None, "final_loss": sum(tail) / len(tail),
            "checkpoint": str(result.checkpoint), "process": None}


def draw_samples(info: dict, args, device) -> torch.Tensor:
    """``args.n_samples`` Heun samples (seeds 0..n-1) from the EMA of ``info['checkpoint']``, in [-1, 1] on the CPU;
    fills ``info`` with the NFE, the sampling wall time and the process."""
    from physgen.images.generate import generate
    from physgen.images.train import load_trained

    model = load_trained(info["checkpoint"], device=device)
    t1 = time.perf_counter()
    xs, nfe = [], 0
    for _, x, stats in generate(model.process, model.field, range(args.n_samples), model.shape, steps=args.sample_steps,
                                solver="heun", batch=min(args.n_samples, 1000), device=device, seed=args.seed):
        xs.append(x.clamp(-1, 1).cpu())
        nfe = stats.nfe
    info.update(nfe=nfe, sample_wall_s=time.perf_counter() - t1,
                process={k: ("inf" if v == math.inf else v) for k, v in model.process.config().items()})
    return torch.cat(xs)


def make_judge(args, device, log):
    """The digit classifier and the real held-out report: ``(classifier, accuracy, data, held-out, report)``."""
    from physgen.images.data import load_image_dataset
    from physgen.images.quality import classifier_report, split_dataset, train_classifier

    data = load_image_dataset("digits", args.resolution)
    t0 = time.perf_counter()
    clf, acc = train_classifier(data, steps=args.classifier_steps, device=device, seed=args.seed)
    print(f"classifier: held-out accuracy {acc:.3f} ({args.classifier_steps} steps, {time.perf_counter() - t0:.0f}s)", file=log, flush=True)
    train_part, held = split_dataset(data, 0.2, args.seed)
    return clf, acc, data, held, classifier_report(clf, held.images, train_part.images, num_classes=10, device=device)


def judge_run(info: dict, x: torch.Tensor, clf, data, device, log) -> None:
    """The classifier's report on the samples ``x`` of one run, into ``info['report']``."""
    from physgen.images.quality import classifier_report

    info["report"] = r = classifier_report(clf, x, data.images, num_classes=10, device=device)
    print(f"D={info['D']}: {info['steps']} steps, loss {info['final_loss']:.4f}, conf {r['confidence_mean']:.3f}, "
          f">0.9 {r['confident_fraction_0.9']:.3f}, class entropy {r['class_entropy']:.3f}, FD {r['frechet_classifier']:.3f}", file=log, flush=True)


def quality_figure(rows, path: Path) -> None:
    """One row per set ``(name, images, report)``: sample grid, confidence histogram, class histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from physgen.images.data import to_uint8
    from physgen.io import save_figure

    fig, axes = plt.subplots(len(rows), 3, figsize=(12, 3.6 * len(rows)), squeeze=False)
    for (name, imgs, rep), ax in zip(rows, axes):
        arr = to_uint8(imgs)
        n = len(arr)
        k = int(math.ceil(math.sqrt(n)))
        h, w = arr.shape[1:3]
        tile = torch.zeros(k * h, k * w, dtype=torch.uint8)
        for i in range(n):
            rr, cc = divmod(i, k)
            tile[rr * h:(rr + 1) * h, cc * w:(cc + 1) * w] = torch.from_numpy(arr[i, :, :, 0])
        ax[0].imshow(tile.numpy(), cmap="gray", vmin=0, vmax=255)
        ax[0].set_axis_off()
        ax[0].set_title(name)
        edges = rep["confidence_edges"]
        ax[1].bar(edges[:-1], rep["confidence_hist"], width=edges[1] - edges[0], align="edge")
        ax[1].set_title(f"classifier confidence (mean {rep['confidence_mean']:.3f})")
        ax[1].set_xlabel("max_k p(k|x)")
        ax[2].bar(range(10), rep["class_counts"])
        ax[2].set_xticks(range(10))
        ax[2].set_title(f"predicted class (entropy {rep['class_entropy']:.3f}, FD {rep['frechet_classifier']:.2f})")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def results_table(args, machine: str, acc: float, real_report: dict, runs: list) -> str:
    lines = [
        f"Digits (1797, resized to {args.resolution}x{args.resolution}), `{args.arch}` U-Net, batch {args.batch}, lr {args.lr}, "
        + (f"{args.steps} steps" if args.steps else f"at most {args.minutes:g} min") + f" per D on {machine}; "
        f"{args.n_samples} samples each with Heun ({runs[0]['nfe'] if runs else '?'} NFE). Judge: small CNN, held-out accuracy {acc:.3f}.",
        "",
        "| set | steps | images seen | final loss | mean confidence | confident (>0.9) | class entropy | Fréchet (classifier features) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| real held-out ({real_report['n']}) | | | | {real_report['confidence_mean']:.3f} | {real_report['confident_fraction_0.9']:.3f} | "
        f"{real_report['class_entropy']:.3f} | {real_report['frechet_classifier']:.3f} |",
    ]
    for r in runs:
        rep = r["report"]
        lines.append(f"| PFGM++ D={r['D']} | {r['steps']} | {r['images_seen']} | {r['final_loss']:.4f} | {rep['confidence_mean']:.3f} | "
                     f"{rep['confident_fraction_0.9']:.3f} | {rep['class_entropy']:.3f} | {rep['frechet_classifier']:.3f} |")
    lines += ["", "The Fréchet distance is biased upward at small n (real held-out: 360 images vs the rest); compare rows of equal n."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="training budget per D (wall clock)")
    p.add_argument("--steps", type=int, default=None, help="train exactly this many steps instead of --minutes")
    p.add_argument("--Ds", default="2048,inf", help="comma-separated D values")
    p.add_argument("--resolution", type=int, default=32, choices=[8, 16, 32])
    p.add_argument("--arch", default="small", help="U-Net preset (tiny for CPU smoke runs)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--ema-halflife", type=float, default=200_000.0, help="in images")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--checkpoint-every", type=int, default=2000)
    p.add_argument("--sample-every", type=int, default=0)
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--sample-steps", type=int, default=18, help="Heun steps (2 steps - 1 NFE)")
    p.add_argument("--classifier-steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true", help="continue runs found in --out instead of refusing")
    p.add_argument("--out", default="runs/gpu_digits")
    p.add_argument("--write", action="store_true", help="put the table into benchmarks/RESULTS.md")
    p.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    return p


def parse_D(value: str):
    return math.inf if value.strip().lower() == "inf" else int(value)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    from physgen.images.data import save_image_grid
    from physgen.io import ensure_dir, write_json
    from physgen.processes import PROCESSES
    from physgen.runtime import resolve_device

    if "pfgmpp" not in PROCESSES:
        print("error: process 'pfgmpp' is not registered in physgen.processes; this script compares PFGM++ D values", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    out = ensure_dir(args.out)
    log = sys.stderr
    Ds = [parse_D(d) for d in args.Ds.split(",")]
    print(f"digits on {device}; D in {[d_label(d) for d in Ds]}; "
          f"{'%d steps' % args.steps if args.steps else '%.2g min' % args.minutes} each", file=log, flush=True)
    clf, acc, data, held, real_report = make_judge(args, device, log)

    runs = []
    samples = {}
    for D in Ds:
        info = train_one(D, args, device, log)
        x = draw_samples(info, args, device)
        save_image_grid(x[:100], out / f"samples-D{d_label(D)}.png", nrow=10)
        judge_run(info, x, clf, data, device, log)
        samples[info["D"]] = x
        runs.append(info)

    rows = [("real (held-out)", held.images[:100], real_report)] + [(f"PFGM++ D={r['D']}", samples[r["D"]][:100], r["report"]) for r in runs]
    quality_figure(rows, out / "quality.png")
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    results = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "classifier_accuracy": acc,
               "real_heldout": real_report, "runs": runs, "machine": machine, "torch": torch.__version__}
    write_json(out / "results.json", results)
    body = results_table(args, machine, acc, real_report, runs)
    print(f"wrote {out}/results.json, {out}/quality.png, {out}/samples-D*.png")
    return report_subsection(body, args.write, args.results, HEADING, SUBHEADING)


if __name__ == "__main__":
    sys.exit(main())
