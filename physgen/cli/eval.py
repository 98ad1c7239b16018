"""``physgen eval``: image metrics.

``physgen eval fid --samples DIR --ref cifar10:PATH|stats.npz --inception WEIGHTS`` prints
FID, KID and Inception Score (``--out FILE.json`` also writes them).  Without Inception
weights, ``--feature-net module:callable`` (your own importable function returning the network;
network files are not loaded, since a .pt2 or TorchScript file can run code when loaded) gives the
same Fréchet distance on that network's features (not comparable with papers).
Reference statistics of a dataset are cached as ``.npz`` (``--ref-cache``).
``physgen eval ref-stats`` writes such a statistics file; ``physgen eval ssim --a DIR
--b DIR`` compares images of the same name (reconstructions).
"""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import UserError
from ..runfolder import add_overwrite_argument, prepare_file
from .flags import BATCH, RESOLUTION, SAMPLES
from ..images.evaluate import load_feature_net, evaluate_fid, _is_stats_file, reference_features, evaluate_ssim
from ..runtime import resolve_device
from ..io import write_json


def _add_net(p) -> None:
    p.add_argument("--inception", default=None, metavar="WEIGHTS", help="local Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth for the standard FID)")
    p.add_argument("--feature-net", default=None, metavar="module:callable", help="any feature network instead: an importable callable returning an nn.Module (load a network file you trust inside it; files are not read here, they can run code)")
    p.add_argument("--ref-split", default="train", choices=["train", "test"], help="CIFAR-10 split of the reference (default train, the usual protocol)")
    p.add_argument("--resolution", type=RESOLUTION, default=None, help="resize samples and reference to this side first")
    p.add_argument("--batch", type=BATCH, default=250, help="images per feature batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")


def register(sub) -> None:
    p = sub.add_parser("eval", help="image metrics: FID / KID / IS against a reference, SSIM between pairs")
    evsub = p.add_subparsers(dest="metric", metavar="METRIC")
    evsub.required = True

    f = evsub.add_parser("fid", help="FID (+ KID, IS) of a folder of samples against a dataset or a statistics .npz")
    f.add_argument("--samples", required=True, help="directory of PNGs, an .npz, or a dataset spec")
    f.add_argument("--ref", required=True, help="cifar10:PATH | folder:PATH | npz:PATH | digits | STATS.npz")
    _add_net(f)
    f.add_argument("--ref-cache", default=None, metavar="FILE.npz", help="where to cache the reference statistics (default: $PHYSGEN_CACHE/fid/...)")
    f.add_argument("--no-ref-cache", action="store_true", help="do not read or write cached reference statistics")
    f.add_argument("--no-kid", action="store_true", help="skip KID")
    f.add_argument("--no-is", action="store_true", help="skip the Inception Score")
    f.add_argument("--kid-subsets", type=SAMPLES, default=100)
    f.add_argument("--kid-subset-size", type=SAMPLES, default=1000)
    f.add_argument("--n", type=SAMPLES, default=None, help="use only the first N samples (sorted by name)")
    f.add_argument("--out", default=None, metavar="FILE.json", help="write the numbers as JSON")
    f.set_defaults(func=run_fid)

    r = evsub.add_parser("ref-stats", help="write reference statistics (mu, sigma, KID features) of a dataset to an .npz")
    r.add_argument("--ref", required=True, help="cifar10:PATH | folder:PATH | npz:PATH | digits")
    _add_net(r)
    r.add_argument("--out", required=True, metavar="FILE.npz")
    add_overwrite_argument(r)
    r.set_defaults(func=run_ref_stats)

    s = evsub.add_parser("ssim", help="SSIM between images of the same name in two directories")
    s.add_argument("--a", required=True, help="directory of images (e.g. reconstructions)")
    s.add_argument("--b", required=True, help="directory of images with the same names (e.g. originals)")
    s.add_argument("--batch", type=BATCH, default=256)
    s.add_argument("--out", default=None, metavar="FILE.json")
    s.set_defaults(func=run_ssim)


def _net(args):
    device = resolve_device(args.device)
    net, net_id = load_feature_net(args.feature_net, args.inception, device=device)
    return net, net_id, device


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.5g}"


def run_fid(args) -> int:
    net, net_id, device = _net(args)
    cache = False if args.no_ref_cache else (args.ref_cache or True)
    res = evaluate_fid(args.samples, args.ref, net, net_id, split=args.ref_split, resolution=args.resolution, cache=cache,
                       compute_kid=not args.no_kid, compute_is=not args.no_is, kid_subsets=args.kid_subsets,
                       kid_subset_size=args.kid_subset_size, limit=args.n, batch=args.batch, device=device)
    print(f"fid {_fmt(res['fid'])}  kid {_fmt(res['kid_mean'])} ± {_fmt(res['kid_std'])}  is {_fmt(res['is_mean'])} ± {_fmt(res['is_std'])}"
          f"  ({res['n_samples']} samples vs {res['ref']})")
    for note in res["notes"]:
        print(f"note: {note}")
    if args.out:
        write_json(args.out, res)
        print(f"wrote {args.out}")
    return 0


def run_ref_stats(args) -> int:
    if _is_stats_file(args.ref):
        raise UserError("--ref must be a dataset here (this command writes the statistics file)")
    if not args.out.lower().endswith(".npz"):
        raise UserError(f"--out must end in .npz, got {args.out!r}")

    prepare_file(args.out, "eval ref-stats", overwrite=args.overwrite)
    net, net_id, device = _net(args)
    Path(args.out).unlink(missing_ok=True)  # --overwrite: recompute, do not read it back as a cache
    res = reference_features(args.ref, net, net_id, split=args.ref_split, resolution=args.resolution, cache=args.out, batch=args.batch, device=device)
    print(f"wrote {args.out}: statistics of {res['n']} images of {args.ref} ({net_id})")
    return 0


def run_ssim(args) -> int:
    res = evaluate_ssim(args.a, args.b, batch=args.batch)
    print(f"ssim {res['ssim_mean']:.5f} ± {res['ssim_std']:.5f} (min {res['ssim_min']:.4f}) over {res['n']} pairs")
    if args.out:
        write_json(args.out, res)
        print(f"wrote {args.out}")
    return 0
