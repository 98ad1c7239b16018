"""The bad-input audit of the CLI (issue 14) as a reusable harness.

Re-runs the audit's classes of input -- names, numbers, files, checkpoints, configs, conflicts,
sizes, outputs, crafted files (pickles whose unpickling creates a marker file) and NaN/Inf
sampling cases -- against ``physgen.cli.main.main(argv)``.  Each case runs in a forked child
of this process (the CLI is called in-process there, after the imports are paid once), in a
fresh working directory, with a per-case timeout, and is classified as one of

    clear       exit 2, one line, naming the bad value (or its flag)
    ok          a legitimate input (sampling cases) that ran and wrote sane, finite outputs
    vague       exit 2 with one line that does not name the bad value or flag
    nonsense    a bad input accepted (exit 0), or garbage written silently
    traceback   an exception escaped ``main`` (or a message of several lines)
    hang        still running after the timeout
    crash       the process died (signal, OpenMP abort)
    payload     a crafted file ran its payload

Usage (the numbers in benchmarks/RESULTS.md came from these)::

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/audit_cli.py --out audit.json
    PYTHONPATH=/path/to/other/checkout python benchmarks/audit_cli.py --out before.json

Cases owned by the sampling core (sampler options such as ``--levels`` for a solver that does
not take them) are marked ``owner = "sampler"`` and counted apart.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # crafted_files: the same crafted files the tests use
sys.path.insert(0, str(Path(__file__).resolve().parent))  # audit_surfaces: the cases of the surfaces added since

CLASSES = ("clear", "ok", "vague", "nonsense", "traceback", "hang", "crash", "payload")
MARKER = "PAYLOAD-RAN"

TOY = ["toy", "--n-data", "60", "--n-samples", "16", "--steps", "2", "--device", "cpu"]
CMP = ["compare-solvers", "--n-data", "40", "--n-samples", "8", "--solvers", "euler", "--steps", "2", "--no-ref-check", "--device", "cpu"]
NLL = ["nll", "--dataset", "8gaussians", "--n", "16", "--n-data", "40", "--batch", "16", "--device", "cpu"]
CLF = ["train-classifier", "--n-data", "60", "--steps", "2", "--batch", "16", "--hidden", "8", "--depth", "1", "--device", "cpu"]
IMG = ["--process", "edm", "--dataset", "digits", "--resolution", "8", "--arch", "tiny", "--batch", "8", "--warmup-steps", "0",
       "--log-every", "1", "--sample-n", "2", "--sample-steps", "2", "--precision", "fp32", "--device", "cpu"]
TRAIN = ["train", *IMG, "--steps", "1"]


@dataclass
class Case:
    area: str
    argv: list  # "{W}" is the case's working directory, "{IMG}" a trained image run, "{TOYCKPT}" a toy MLP run
    needles: tuple = ()  # the message must contain one of these (the bad value, its flag)
    setup: Optional[Callable[[Path], None]] = None
    legit: bool = False  # a legitimate input: exit 0 with sane outputs (or a clear exit 2) is right
    check: Optional[Callable[[Path], bool]] = None  # legit and exit 0: are the outputs sane?
    owner: str = "infra"
    id: str = ""
    timeout: float = 60.0
    note: str = ""  # what the case damages, where the argv does not say it (a cache file, a header field)
    result: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- the cases


def _write(name: str, data) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        path = w / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        elif isinstance(data, str):
            path.write_text(data)
        else:
            data(path)
    return setup


def _npy(array_fn) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        import numpy as np

        np.save(path, array_fn(np))
    return make


def _crafted(kind: str, name: str, **kw) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        import crafted_files

        (w / name).parent.mkdir(parents=True, exist_ok=True)
        crafted_files.CRAFTED[kind](w / name, w / MARKER, **kw)
        (w / "featnet_audit.py").write_text("import torch\n\ndef make():\n    return torch.nn.Flatten()\n")  # --feature-net featnet_audit:make
    return setup


def _ckpt_bytes(mutate: Callable[[bytes], bytes], source: str = "{IMG}") -> Callable[[Path], None]:
    """A copy of the newest checkpoint of a trained run, mutated (flipped bit, truncation)."""
    def setup(w: Path) -> None:
        run = Path(source.format(IMG=os.environ["AUDIT_IMG"], TOYCKPT=os.environ["AUDIT_TOY"]))
        newest = sorted((run / "checkpoints").glob("ckpt-*.pt"))[-1]
        (w / "c.pt").write_bytes(mutate(newest.read_bytes()))
    return setup


def _flip(raw: bytes, at: float) -> bytes:
    b = bytearray(raw)
    b[int(at * (len(b) - 1))] ^= 0x04
    return bytes(b)


def _samples_sane(w: Path) -> bool:
    """Sampling outputs that are finite and on the data's scale (toy sets live in |x| < 10)."""
    import numpy as np

    path = w / "o" / "samples.npy"
    if not path.exists():
        return False
    x = np.load(path)
    return bool(np.isfinite(x).all() and np.median(np.linalg.norm(x.reshape(len(x), -1), axis=1)) < 20)


def cases() -> list[Case]:
    out: list[Case] = []
    o = ["--out", "{W}/o"]

    # names --------------------------------------------------------------------------------
    for cmd in (TOY, CMP, NLL, CLF):
        out.append(Case("names", cmd + ["--process", "nope"] + o, ("nope",)))
    for flag, cmds in {"--dataset": (TOY, CMP, NLL, CLF), "--field": (TOY, CMP, NLL), "--solver": (TOY,), "--schedule": (TOY, CMP),
                       "--device": (TOY, CMP, NLL, CLF)}.items():
        for cmd in cmds:
            out.append(Case("names", cmd + [flag, "nope"] + o, ("nope",)))
    out += [Case("names", TOY + ["--device", v] + o, (v,)) for v in ("gpu", "cuda:x", "cuda:99")]
    out += [Case("names", CMP + ["--solvers", "euler,nope"] + o, ("nope",)),
            Case("names", CLF + ["--scales", "nope"] + o, ("nope",)), Case("names", CLF + ["--arch", "nope"] + o, ("nope",)),
            Case("names", TRAIN + ["--arch", "nope"] + o, ("nope",)), Case("names", TRAIN + ["--precision", "fp16"] + o, ("fp16",)),
            Case("names", TRAIN + ["--dataset", "nope:x"] + o, ("nope",)), Case("names", ["genphys", "check", "--pde", "nope"], ("nope",)),
            Case("names", ["experiment", "nope"], ("nope",)), Case("names", ["nope"], ("nope",)),
            Case("names", TOY + ["--birth-death", "nope", "--process", "yukawa"] + o, ("nope",), owner="sampler"),
            Case("names", TOY + ["--guidance", "nope"] + o, ("nope",)), Case("names", NLL + ["--weights", "nope"] + o, ("nope",)),
            Case("names", TOY + ["--nope", "1"] + o, ("--nope",))]

    # numbers ------------------------------------------------------------------------------
    ints = ["0", "-1", "abc", "2.5", "nan", "1e400"]
    pos = ["0", "-1", "abc", "nan", "inf", "1e308", "1e400", "1e-50"]
    numeric = {
        "toy": (TOY, {"--n-data": ints, "--train-steps": ints, "--batch": ints, "--hidden": ints, "--depth": ints, "--steps": ints,
                      "--n-samples": ints, "--lr": pos, "--rtol": pos, "--atol": pos, "--sigma-min": pos, "--sigma-max": pos,
                      "--seed": ["-1", "abc", "2.5", "1e23"], "--threads": ["-1", "abc"], "--label": ["-1", "abc"],
                      "--cond-drop": ["-0.1", "1.5", "nan", "abc"], "--w": ["nan", "inf", "abc", "1e39"], "--m": ["nan", "abc", "1e39"],
                      "--D": ["0", "-3", "2.5", "abc", "1e400", "nan", "-inf"]}),
        "compare": (CMP, {"--n-data": ints, "--n-samples": ints, "--ref-rtol": pos, "--ref-atol": pos, "--solve-batch": ints,
                          "--steps": ["0", "4,-2", "four", "4,2.5"]}),
        "nll": (NLL, {"--n": ints, "--batch": ints, "--rtol": pos, "--atol": pos, "--s-min": pos, "--dequantize": pos}),
        "clf": (CLF, {"--steps": ints, "--width": ints, "--resolution": ints, "--lr": pos}),
        "train": (["train", "--dump-config", "{W}/c.toml"], {"--steps": ints, "--batch": ints, "--lr": pos, "--label-dropout": ["-0.1", "1", "nan"],
                   "--ema-halflife": pos, "--grad-clip": ["0", "-1", "nan", "abc"], "--seed": ["-1", "1e23"], "--sample-every": ["-1", "abc"],
                   "--sigma-data": pos, "--D": ["0", "1e400", "abc"], "--micro-batch": ["0", "3"], "--resolution": ["0", "abc"]}),
    }
    for name, (base, flags) in numeric.items():
        for flag, values in flags.items():
            for v in values:
                extra = ["--process", "pfgmpp"] if flag == "--D" else []
                out.append(Case("numbers", base + extra + [flag, v] + (o if name != "train" else []), (flag, v)))
    out += [Case("numbers", ["genphys", "check", "--dim", v], ("--dim", v)) for v in ("0", "9", "abc")]
    out += [Case("numbers", ["genphys", "check", "--pde", "yukawa", "--param", v], ("--param", v.split("=")[0])) for v in ("m=abc", "m", "m=-1")]
    out += [Case("numbers", TOY + ["--process-opt", v] + o, tuple(v.split("=")[:1]) + ("--process-opt",)) for v in
            ("rho=abc", "rho=[1,2]", "rho=1e400", "rho=NaN", "sigma_data=-1", "nope=1", "=3", "rho")]
    out += [Case("numbers", ["train", "--unet-opt", v, "--dump-config", "{W}/c.toml"], ("dropout", "nope", "--unet-opt")) for v in
            ("dropout=abc", "nope=1", "dropout=[1]", "dropout")]

    # files --------------------------------------------------------------------------------
    out += [Case("files", TOY + ["--dataset", "{W}/missing.npy"] + o, ("missing.npy",)),
            Case("files", TOY + ["--dataset", "{W}/d.npy"] + o, ("d.npy",), setup=_write("d.npy", b"")),
            Case("files", TOY + ["--dataset", "{W}/d.npy"] + o, ("d.npy",), setup=_write("d.npy", b"\x93NUMPY garbage")),
            Case("files", TOY + ["--dataset", "{W}/d.npy"] + o, ("d.npy",), setup=_write("d.npy", _npy(lambda np: np.zeros(10)))),
            Case("files", TOY + ["--dataset", "{W}/d.npy"] + o, ("d.npy",), setup=_write("d.npy", _npy(lambda np: np.zeros((4, 2, 2))))),
            Case("files", TOY + ["--dataset", "{W}/d.npy"] + o, ("d.npy",), setup=_write("d.npy", _npy(lambda np: np.full((50, 2), np.nan)))),
            Case("files", TOY + ["--dataset", "{W}/d.npy"] + o, ("d.npy",), setup=_write("d.npy", _npy(lambda np: np.zeros((0, 2))))),
            Case("files", TOY + ["--dataset", "{W}/d.npy"] + o, ("d.npy",), setup=_write("d.npy", _npy(lambda np: np.full((50, 2), 1e39)))),
            Case("files", TOY + ["--dataset", "{W}/d.npy"] + o, ("d.npy",), setup=_write("d.npy", _npy(lambda np: np.array([["a", "b"]])))),
            Case("files", TOY + ["--dataset", "{W}/m1.npy"] + o, ("m1.npy",), setup=_write("m1.npy", _npy(lambda np: np.random.randn(50, 1))),
                 legit=True, check=_samples_sane),  # 1-D data: legitimate (a figure on the line y = 0)
            Case("files", TOY + ["--dataset", "{W}/m.json"] + o, ("m.json",), setup=_write("m.json", "{not json")),
            Case("files", TOY + ["--dataset", "{W}/m.json"] + o, ("m.json", "weight"), setup=_write("m.json", '{"weights": [-1, 2], "means": [[0, 0], [1, 1]], "stds": [1, 1]}')),
            Case("files", TOY + ["--dataset", "{W}/m.json"] + o, ("m.json",), setup=_write("m.json", '{"weights": [1], "means": [[0]], "stds": [1]}'),
                 legit=True, check=_samples_sane),
            Case("files", TOY + ["--dataset", "{W}/m.json"] + o, ("m.json",), setup=_write("m.json", "[" * 100000 + "]" * 100000)),
            Case("files", TOY + ["--dataset", "{W}/m.json"] + o, ("m.json",), setup=_write("m.json", '{"weights": [1], "means": [[1e400, 0]], "stds": [1]}')),
            Case("files", TOY + ["--dataset", "{W}"] + o, ("{W}",)),
            Case("files", TRAIN + ["--config", "{W}/missing.toml"] + o, ("missing.toml",)),
            Case("files", TRAIN + ["--config", "{W}/c.yaml"] + o, ("c.yaml",), setup=_write("c.yaml", "a: 1")),
            Case("files", ["sample", "--ckpt", "{W}/missing.pt", "--out", "{W}/s"], ("missing.pt",)),
            Case("files", ["sample", "--ckpt", "{W}/empty", "--out", "{W}/s"], ("empty",), setup=lambda w: (w / "empty").mkdir()),
            Case("files", ["sample", "--ckpt", "{W}/t.pt", "--out", "{W}/s"], ("t.pt",), setup=_write("t.pt", "hello")),
            Case("files", NLL + ["--ckpt", "{W}/missing.pt"] + o, ("missing.pt",)),
            Case("files", CMP + ["--ckpt", "{W}/t.pt"] + o, ("t.pt",), setup=_write("t.pt", b"PK\x03\x04junk")),
            Case("files", ["eval", "fid", "--samples", "{W}/none", "--ref", "digits", "--inception", "{W}/w.pth"], ("w.pth", "none")),
            Case("files", ["eval", "fid", "--samples", "digits", "--ref", "digits", "--inception", "{W}/w.pth"], ("w.pth",), setup=_write("w.pth", "x")),
            Case("files", ["eval", "fid", "--samples", "digits", "--ref", "{W}/r.npz", "--inception", "{W}/w.pth"], ("r.npz", "w.pth")),
            Case("files", ["eval", "ssim", "--a", "{W}/a", "--b", "{W}/b"], ("{W}/a", "{W}/b")),
            Case("files", TOY + ["--dataset", "8gaussians", "--label", "0", "--guidance", "classifier", "--classifier-ckpt", "{W}/c.pt"] + o,
                 ("c.pt",), setup=_write("c.pt", "junk")),
            Case("files", TOY + ["--dataset", "8gaussians", "--label", "0", "--guidance", "classifier", "--classifier-ckpt", "{W}/none.pt"] + o,
                 ("none.pt",))]

    # checkpoints --------------------------------------------------------------------------
    for at in (0.0, 0.003, 0.01, 0.5, 0.999):
        out.append(Case("checkpoints", ["sample", "--ckpt", "{W}/c.pt", "--n", "2", "--steps", "2", "--out", "{W}/s"], ("c.pt",),
                        setup=_ckpt_bytes(lambda raw, at=at: _flip(raw, at))))
    for cut in (0.0, 0.3, 0.9):
        out.append(Case("checkpoints", ["sample", "--ckpt", "{W}/c.pt", "--n", "2", "--steps", "2", "--out", "{W}/s"], ("c.pt",),
                        setup=_ckpt_bytes(lambda raw, cut=cut: raw[: int(cut * len(raw))])))
    out += [Case("checkpoints", NLL + ["--ckpt", "{W}/c.pt"] + o, ("c.pt",), setup=_ckpt_bytes(lambda raw: _flip(raw, 0.7), "{TOYCKPT}")),
            Case("checkpoints", CMP + ["--ckpt", "{W}/c.pt"] + o, ("c.pt",), setup=_ckpt_bytes(lambda raw: raw[:100], "{TOYCKPT}")),
            Case("checkpoints", ["sample", "--ckpt", "{TOYCKPT}", "--n", "2", "--out", "{W}/s"], ("{TOYCKPT}", "image")),
            Case("checkpoints", CMP + ["--ckpt", "{TOYCKPT}", "--process", "ve"] + o, ("ve",)),
            Case("checkpoints", NLL + ["--ckpt", "{TOYCKPT}", "--dataset", "{W}/d3.npy"] + o, ("d3.npy", "3"),
                 setup=_write("d3.npy", _npy(lambda np: np.random.randn(50, 3)))),
            Case("checkpoints", NLL + ["--ckpt", "{W}/bad.pt"] + o, ("bad.pt", "net.out"), setup=_bad_shape_checkpoint),
            Case("checkpoints", NLL + ["--ckpt", "{W}/bad.pt"] + o, ("bad.pt",), setup=_bad_type_checkpoint),
            Case("checkpoints", ["sample", "--ckpt", "{W}/old.pt", "--out", "{W}/s"], ("old.pt",), setup=_legacy_incomplete),
            Case("checkpoints", TOY + ["--dataset", "8gaussians", "--label", "0", "--guidance", "classifier", "--classifier-ckpt", "{TOYCKPT}"] + o,
                 ("classifier",)),
            Case("checkpoints", ["train", "--resume", "{W}/nothing"], ("nothing",), setup=lambda w: (w / "nothing").mkdir())]

    # configs ------------------------------------------------------------------------------
    configs = {"unknown.toml": ('nope = 1\n', "nope"), "nested.toml": ('[train]\nnope = 1\n', "nope"), "type.toml": ('[train]\nsteps = "many"\n', "steps"),
               "misplaced.toml": ("steps = 3\n", "steps"), "d.json": ('{"D": 1e400}', "1e400"), "seed.json": ('{"train": {"seed": 1e23}}', "seed"),
               "nan.json": ('{"train": {"lr": NaN}}', "NaN"), "list.json": ("[1, 2]", "table"), "parse.toml": ("a = [", "parse"),
               "train.toml": ('train = 3\n', "train"), "unet.toml": ('[unet]\ndropout = "x"\n', "dropout"),
               "popt.toml": ('[process_options]\nrho = "x"\n', "rho"), "lr.toml": ("[train]\nlr = 1e39\n", "lr"),
               "bool.toml": ('xflip = "yes"\n', "xflip"), "res.toml": ("resolution = 0\n", "resolution"), "D0.toml": ("D = 0\n", "D"),
               "big.toml": ("[train]\nbatch = 100000000000\n", "batch"), "arch.toml": ('arch = "nope"\n', "nope")}
    for name, (text, needle) in configs.items():
        out.append(Case("configs", ["train", "--config", "{W}/" + name, "--dump-config", "{W}/out.toml"], (needle, name), setup=_write(name, text)))

    # conflicts ----------------------------------------------------------------------------
    out += [Case("conflicts", ["train", "--resume", "{IMG}", "--config", "{W}/c.toml"], ("--config",), setup=_write("c.toml", "")),
            Case("conflicts", ["train", "--resume", "{IMG}", "--arch", "small"], ("--arch",)),
            Case("conflicts", ["train", "--resume", "{IMG}", "--out", "{W}/elsewhere"], ("--out",)),
            Case("conflicts", NLL + ["--ckpt", "{TOYCKPT}", "--D", "4"] + o, ("D",)),
            Case("conflicts", NLL + ["--ckpt", "{TOYCKPT}", "--field", "exact"] + o, ("--field",)),
            Case("conflicts", TOY + ["--field", "analytic", "--dataset", "moons"] + o, ("analytic",)),
            Case("conflicts", TOY + ["--guidance", "cfg"] + o, ("--label",)),
            Case("conflicts", TOY + ["--classifier-ckpt", "{W}/c.pt"] + o, ("--classifier-ckpt",)),
            Case("conflicts", TOY + ["--process", "ve", "--D", "4"] + o, ("D",)),
            Case("conflicts", TOY + ["--sigma-min", "5", "--sigma-max", "1"] + o, ("sigma_min",)),
            Case("conflicts", TOY + ["--dataset", "8gaussians", "--label", "99", "--guidance", "cfg"] + o, ("99", "label")),
            Case("conflicts", ["sample", "--ckpt", "{IMG}", "--n", "2", "--start", "3", "--out", "{W}/g.png"], ("--start",)),
            Case("conflicts", ["sample", "--ckpt", "{IMG}", "--n", "2", "--label", "3", "--out", "{W}/s"], ("--label", "conditional")),
            Case("conflicts", ["sample", "--ckpt", "{IMG}", "--n", "2", "--guidance", "cfg", "--out", "{W}/s"], ("--label",)),
            Case("conflicts", TRAIN + ["--batch", "8", "--micro-batch", "3"] + o, ("micro_batch", "--micro-batch", "3")),
            Case("conflicts", TRAIN + ["--cond"] + ["--dataset", "npz:{W}/u.npz"] + o, ("--cond", "labels", "u.npz"), setup=_unlabelled_npz),
            Case("conflicts", ["genphys", "check", "--param", "m=1"], ("--param",)),
            Case("conflicts", CMP + ["--process", "pfgm", "--solvers", "dpmpp-2m"] + o, ("dpmpp-2m",), owner="sampler"),
            Case("conflicts", TOY + ["--process", "pfgmpp", "--D", "4", "--solver", "euler-maruyama"] + o, ("pfgmpp", "SDE"), owner="sampler")]

    # sizes --------------------------------------------------------------------------------
    for flag, v in (("--steps", "1000000000000"), ("--n-samples", "1000000000000"), ("--threads", "1000000"), ("--batch", "1000000000"),
                    ("--hidden", "1000000000"), ("--n-data", "1000000000000"), ("--train-steps", "1000000000000"), ("--depth", "100000000")):
        out.append(Case("sizes", TOY + [flag, v] + o, (flag, v)))
    out += [Case("sizes", TOY + ["--levels", "1000000000", "--solver", "ald", "--process", "ncsn"] + o, ("--levels",)),
            Case("sizes", CMP + ["--steps", "4,1000000000000"] + o, ("--steps",)),
            Case("sizes", ["sample", "--ckpt", "{IMG}", "--n", "1000000000000", "--out", "{W}/s"], ("--n",)),
            Case("sizes", ["sample", "--ckpt", "{IMG}", "--n", "2", "--steps", "1000000000000", "--out", "{W}/s"], ("--steps",)),
            Case("sizes", TRAIN[:-2] + ["--steps", "1000000000000", "--dump-config", "{W}/c.toml"], ("--steps",)),
            Case("sizes", TRAIN[:-2] + ["--duration-mimg", "1e30", "--dump-config", "{W}/c.toml"], ("duration_mimg", "--duration-mimg")),
            Case("sizes", ["eval", "fid", "--samples", "digits", "--ref", "digits", "--kid-subsets", "1000000000000", "--inception", "w"], ("--kid-subsets",)),
            Case("sizes", TRAIN + ["--resolution", "1000000"] + o, ("--resolution",)),
            Case("sizes", ["demo", "--threads", "1000000", "--out", "{W}/o"], ("--threads",))]

    # outputs ------------------------------------------------------------------------------
    sub = ["--out", "{W}/FILE/sub"]
    file_setup = _write("FILE", "x")
    for cmd in (TOY, CMP, NLL, CLF, TRAIN, ["demo", "--train-steps", "1", "--n-samples", "8"], ["experiment", "langevin-mixture"]):
        out.append(Case("outputs", cmd + sub, ("FILE",), setup=file_setup))
        out.append(Case("outputs", cmd + ["--out", "{W}/FILE"], ("FILE",), setup=file_setup))
    out += [Case("outputs", ["sample", "--ckpt", "{IMG}", "--n", "2", "--steps", "2"] + sub, ("FILE",), setup=file_setup),
            Case("outputs", ["sample", "--ckpt", "{IMG}", "--n", "2", "--steps", "2", "--out", "{W}/FILE/g.png"], ("FILE",), setup=file_setup),
            Case("outputs", ["eval", "ref-stats", "--ref", "digits", "--inception", "w", "--out", "{W}/FILE/s.npz"], ("FILE",), setup=file_setup),
            Case("outputs", ["eval", "ref-stats", "--ref", "digits", "--inception", "w", "--out", "{W}/s.txt"], ("s.txt", ".npz")),
            Case("outputs", ["train", "--dump-config", "{W}/c.yaml"], ("c.yaml",)),
            Case("outputs", ["train", "--dump-config", "{W}/FILE/c.toml"], ("FILE",), setup=file_setup),
            Case("outputs", TOY + ["--out", "{W}/o"], ("config.json", "--overwrite"), setup=_previous_toy_run),
            Case("outputs", ["sample", "--ckpt", "{IMG}", "--n", "2", "--steps", "2", "--out", "{W}/s"], ("000000.png", "--overwrite"),
                 setup=_write("s/000000.png", b"x")),
            Case("outputs", ["sample", "--ckpt", "{IMG}", "--n", "2", "--steps", "2", "--out", "{W}/g.png"], ("g.png",), setup=_write("g.png", b"x")),
            Case("outputs", CLF + ["--out", "{W}/o"], ("classifier.pt", "--overwrite"), setup=_write("o/classifier.pt", b"x")),
            Case("outputs", NLL + ["--out", "{W}/o"], ("nll.json", "--overwrite"), setup=_write("o/nll.json", "{}")),
            Case("outputs", TRAIN + ["--out", "{W}/o"], ("lock", "in use"), setup=_held_lock)]

    # crafted files ------------------------------------------------------------------------
    crafted = [("torch", "e.pt", ["sample", "--ckpt", "{W}/e.pt", "--out", "{W}/s"]),
               ("checkpoint", "e.pt", ["sample", "--ckpt", "{W}/e.pt", "--out", "{W}/s"]),
               ("torch", "e.pt", ["sample", "--ckpt", "{IMG}", "--n", "2", "--steps", "2", "--label", "0", "--guidance", "classifier",
                                  "--classifier-ckpt", "{W}/e.pt", "--out", "{W}/s"]),
               ("torch", "e.pt", TOY + ["--dataset", "8gaussians", "--label", "0", "--guidance", "classifier", "--classifier-ckpt", "{W}/e.pt"] + o),
               ("checkpoint", "e.pt", TOY + ["--dataset", "8gaussians", "--label", "0", "--guidance", "classifier", "--classifier-ckpt", "{W}/e.pt"] + o),
               ("torch", "e.pt", CMP + ["--ckpt", "{W}/e.pt"] + o), ("checkpoint", "e.pt", CMP + ["--ckpt", "{W}/e.pt"] + o),
               ("torch", "e.pt", NLL + ["--ckpt", "{W}/e.pt"] + o), ("checkpoint", "e.pt", NLL + ["--ckpt", "{W}/e.pt"] + o),
               ("torch", "e.pt", ["train", "--resume", "{W}/e.pt"]), ("torch", "run/checkpoints/ckpt-00000001.pt", ["train", "--resume", "{W}/run"]),
               ("torch", "e.pth", ["eval", "fid", "--samples", "digits", "--ref", "digits", "--inception", "{W}/e.pth"]),
               ("torch", "e.pth", ["eval", "ref-stats", "--ref", "digits", "--inception", "{W}/e.pth", "--out", "{W}/s.npz"]),
               ("pt2", "e.pt2", ["eval", "fid", "--samples", "digits", "--ref", "digits", "--feature-net", "{W}/e.pt2"]),
               ("torch", "e.ts", ["eval", "fid", "--samples", "digits", "--ref", "digits", "--feature-net", "{W}/e.ts"]),
               ("npz", "e.npz", ["eval", "fid", "--samples", "digits", "--ref", "{W}/e.npz", "--feature-net", "featnet_audit:make"]),
               ("npz", "e.npz", ["eval", "fid", "--samples", "{W}/e.npz", "--ref", "digits", "--feature-net", "featnet_audit:make"]),
               ("npy", "e.npy", TOY + ["--dataset", "{W}/e.npy"] + o), ("npz", "e.npz", TOY + ["--dataset", "{W}/e.npz"] + o),
               ("npy", "e.npy", NLL[:1] + ["--dataset", "{W}/e.npy"] + NLL[3:] + o), ("npz", "e.npz", CLF + ["--dataset", "{W}/e.npz"] + o),
               ("npz", "e.npz", TRAIN + ["--dataset", "npz:{W}/e.npz"] + o), ("npz", "e.npz", CMP + ["--dataset", "{W}/e.npz"] + o)]
    for kind, name, argv in crafted:
        out.append(Case("crafted", argv, (name.split("/")[-1], "module:callable"), setup=_crafted(kind, name)))

    # NaN/Inf sampling: legitimate inputs; right = sane samples, or a clear stop naming the solver
    for process, solver, steps, extra in (("pfgm", "euler", "2", []), ("pfgm", "heun", "2", []), ("pfgm", "euler", "1", []),
                                          ("ve", "euler", "1", []), ("vp", "euler", "1", []), ("edm", "euler", "1", []),
                                          ("pfgmpp", "euler", "1", ["--D", "1"]), ("pfgmpp", "heun", "2", ["--D", "1"]),
                                          ("yukawa", "euler", "1", []), ("ncsn", "ald", "2", []), ("edm", "euler-maruyama", "1", []),
                                          ("vp", "ddpm", "1", []), ("edm", "dpmpp-2m", "1", []), ("edm", "dopri5", "2", ["--rtol", "1e-12", "--atol", "1e-12"]),
                                          ("edm", "heun", "2", ["--sigma-max", "1e30"]), ("ve", "heun", "3", ["--sigma-min", "1e-30"]),
                                          ("edm", "pc", "1", []), ("edm", "edm-sde", "1", [])):
        out.append(Case("sampling", ["toy", "--process", process, "--field", "exact", "--solver", solver, "--steps", steps, "--n-data", "200",
                                     "--n-samples", "64", "--device", "cpu", *extra] + o, (solver, "step", "diverg", *extra[:1]), legit=True, check=_samples_sane,
                        owner="sampler"))
    # the exact field of 40 points is stiff: at 1e-12 two samples honestly need more than dopri5's 10000
    # steps (h/s stays above 3e-7, no step-size underflow) and the clear SolverError comes after ~70 s
    out += [Case("sampling", NLL + ["--field", "exact", "--rtol", "1e-12", "--atol", "1e-12"] + o, ("step", "rtol", "atol"), legit=True,
                 check=lambda w: (w / "o" / "nll.json").exists(), owner="sampler", timeout=180.0)]

    # sampler options (the sampling core's option table; refusals expected once it lands)
    for argv, needle in ((TOY + ["--levels", "5"], "--levels"), (TOY + ["--steps-per-level", "5"], "--steps-per-level"), (TOY + ["--eps", "0.1"], "--eps"),
                         (TOY + ["--snr", "0.1"], "--snr"), (TOY + ["--sampler-opt", "nope=1"], "nope"),
                         (TOY + ["--sampler-opt", "eps=abc", "--process", "ncsn", "--solver", "ald"], "eps"),
                         (TOY + ["--sampler-opt", "eps=-1", "--process", "ncsn", "--solver", "ald"], "eps"),
                         (TOY + ["--birth-death", "smc"], "--birth-death"), (CMP + ["--sampler-opt", "nope=1"], "nope")):
        out.append(Case("sampler options", argv + o, (needle,), owner="sampler"))

    # the surfaces added since (issue 19): solver options, collisions, schedules, the optimal-schedule cache, headers, ...
    import audit_surfaces

    out += [Case(area, argv, needles, **kw) for area, argv, needles, kw in audit_surfaces.cases()]
    for i, case in enumerate(out):
        case.id = f"{case.area}-{i:03d}"
    return out


def _previous_toy_run(w: Path) -> None:
    (w / "o").mkdir()
    for name in ("config.json", "samples.npy", "metrics.json"):
        (w / "o" / name).write_text("{}")


def _held_lock(w: Path) -> None:
    """A ``physgen train`` already running into ``w/o`` (the case starts a second one there)."""
    import subprocess

    argv = [sys.executable, "-m", "physgen.cli.main", *TRAIN[:-1], "100000", "--checkpoint-every", "1", "--out", str(w / "o")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    _HOLDERS.append(proc)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (w / "o" / "config.json").exists() and proc.poll() is None:
        time.sleep(0.05)


_HOLDERS: list = []


def _toy_checkpoint_payload(w: Path) -> dict:
    import torch

    ckpt = sorted((Path(os.environ["AUDIT_TOY"]) / "checkpoints").glob("ckpt-*.pt"))[-1]
    try:
        from physgen.checkpoints import read

        return dict(read(ckpt, log=None).payload)
    except ImportError:
        return dict(torch.load(ckpt, weights_only=True))


def _save_like_toy(w: Path, payload: dict) -> None:
    try:
        from physgen.checkpoints import write

        write(w / "bad.pt", payload, kind="toy-mlp", step=1, meta={"process": payload.get("process"), **(payload.get("meta") or {})})
    except ImportError:
        import torch

        torch.save(payload, w / "bad.pt")


def _bad_shape_checkpoint(w: Path) -> None:
    import torch

    p = _toy_checkpoint_payload(w)
    for key in ("model", "ema"):
        p[key] = {**p[key], "net.out.1.weight": torch.zeros(3, 5)}
    _save_like_toy(w, p)


def _bad_type_checkpoint(w: Path) -> None:
    p = _toy_checkpoint_payload(w)
    for key in ("model", "ema"):
        p[key] = {k: "not a tensor" for k in p[key]}
    _save_like_toy(w, p)


def _legacy_incomplete(w: Path) -> None:
    import torch

    torch.save({"format": "physgen-train/2", "step": 3, "model": {}, "meta": {"image": {"unet": {"arch": "tiny"}}}}, w / "old.pt")


def _unlabelled_npz(w: Path) -> None:
    import numpy as np

    np.savez(w / "u.npz", images=np.zeros((10, 8, 8, 1), dtype=np.uint8))


# --------------------------------------------------------------------------- running


def _fixtures(base: Path) -> None:
    """A trained image run and a toy-MLP run (compare-solvers) that cases refer to."""
    from physgen.cli.main import main

    img, toy = base / "img", base / "toymlp"
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        main([*TRAIN, "--out", str(img)])
        main([*CMP, "--field", "mlp", "--train-steps", "3", "--batch", "16", "--hidden", "8", "--depth", "1", "--out", str(toy)])
        os.environ["AUDIT_IMG"], os.environ["AUDIT_TOY"] = str(img), str(toy)
        import audit_surfaces

        audit_surfaces.fixtures(base, main, ["train", *IMG])


def _child(case: Case, w: Path, argv: list, result_path: Path) -> None:
    """In the forked child: run main(argv) with fds 1/2 into files, write the outcome."""
    os.chdir(w)
    sys.path.insert(0, str(w))  # a case's own plug-in modules (--feature-net featnet_audit:make)
    import resource

    limit = int(float(os.environ.get("AUDIT_MEMORY_GB", "6")) * 2**30)  # an unbounded size must not take the machine down
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out_fd, err_fd = os.open(w / ".stdout", os.O_WRONLY | os.O_CREAT), os.open(w / ".stderr", os.O_WRONLY | os.O_CREAT)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    sys.stdout, sys.stderr = os.fdopen(1, "w", buffering=1), os.fdopen(2, "w", buffering=1)
    outcome = {"rc": None, "exception": None}
    try:
        from physgen.cli.main import main

        outcome["rc"] = int(main(argv) or 0)
    except SystemExit as exc:
        outcome["rc"] = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - what escapes main is the finding
        import traceback

        outcome["exception"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    result_path.write_text(json.dumps(outcome))
    os._exit(0)


def _message_lines(err: str) -> list[str]:
    """stderr without argparse's usage block and without progress/notes lines."""
    lines, in_usage = [], False
    for line in err.splitlines():
        if line.startswith("usage:"):
            in_usage = True
            continue
        if in_usage and (line.startswith(" ") or not line.strip()):
            continue
        in_usage = False
        progress = line.startswith(("note:", "step ", "physgen train: ", "rank ", "compare-solvers: [", "[demo]", "[d-sweep]"))
        if line.strip() and (not progress or ": error:" in line):
            lines.append(line)
    return lines


def run_case(case: Case, base: Path) -> dict:
    w = Path(tempfile.mkdtemp(prefix=case.id + "-", dir=base))
    subst = {"{W}": str(w), "{IMG}": os.environ.get("AUDIT_IMG", ""), "{TOYCKPT}": os.environ.get("AUDIT_TOY", ""), "{CLF}": os.environ.get("AUDIT_CLF", "")}

    def fill(text: str) -> str:
        for k, v in subst.items():
            text = text.replace(k, v)
        return text

    argv = [fill(a) for a in case.argv]
    needles = [fill(n) for n in case.needles]
    try:
        if case.setup is not None:
            case.setup(w)
    except Exception as exc:  # this checkout cannot make the file (e.g. no checkpoint module): not applicable
        return {"id": case.id, "area": case.area, "owner": case.owner, "argv": argv, "note": case.note, "class": "n/a", "detail": f"setup: {exc}"}
    result_path = w / ".result.json"
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        _child(case, w, argv, result_path)
    status, deadline = None, time.monotonic() + case.timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        status = "hang"
    wall = time.perf_counter() - t0
    while _HOLDERS:  # a run the case raced against
        _HOLDERS.pop().kill()
    err = (w / ".stderr").read_text(errors="replace") if (w / ".stderr").exists() else ""
    outcome = json.loads(result_path.read_text()) if result_path.exists() else None
    lines = _message_lines(err)
    if (w / MARKER).exists():
        cls = "payload"
    elif status == "hang":
        cls = "hang"
    elif outcome is None or (isinstance(status, int) and os.WIFSIGNALED(status)):
        cls = "crash"
    elif outcome["exception"] is not None or "Traceback (most recent call last)" in err:
        cls = "traceback"
    elif outcome["rc"] == 0:
        cls = "ok" if case.legit and (case.check is None or case.check(w)) else "nonsense"
    elif outcome["rc"] == 2 and len(lines) == 1:
        cls = "clear" if any(n and n in lines[0] for n in needles) else "vague"
    elif outcome["rc"] == 2:
        cls = "traceback" if len(lines) > 1 else "vague"
    else:
        cls = "crash"
    detail = outcome["exception"] if outcome and outcome["exception"] else (lines[-1] if lines else "")
    return {"id": case.id, "area": case.area, "owner": case.owner, "argv": argv, "note": case.note, "class": cls, "rc": outcome and outcome["rc"],
            "seconds": round(wall, 2), "detail": detail[:400].replace(str(w), "{W}")}


def table(results: list[dict]) -> str:
    areas = list(dict.fromkeys(r["area"] for r in results))
    cols = [c for c in (*CLASSES, "n/a") if any(r["class"] == c for r in results)]
    rows = ["| area | cases | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for area in [*areas, "all"]:
        sel = [r for r in results if area == "all" or r["area"] == area]
        counts = Counter(r["class"] for r in sel)
        rows.append(f"| {area} | {len(sel)} | " + " | ".join(str(counts.get(c, 0)) for c in cols) + " |")
    for owner in ("infra", "sampler"):
        sel = [r for r in results if r["owner"] == owner]
        counts = Counter(r["class"] for r in sel)
        rows.append(f"| owner: {owner} | {len(sel)} | " + " | ".join(str(counts.get(c, 0)) for c in cols) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="audit_cli.json", help="JSON of every case and its outcome")
    parser.add_argument("--only", default=None, help="run only cases whose id contains this text (several: comma-separated)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-case limit in seconds (a case past it is a hang; a case known to be slow gets the same multiple of its own)")
    parser.add_argument("--memory-gb", type=float, default=6.0, help="address-space limit of each case (a case past it fails or crashes)")
    args = parser.parse_args(argv)
    os.environ["AUDIT_MEMORY_GB"] = str(args.memory_gb)
    import torch

    torch.set_num_threads(1)  # forked children must not inherit a running thread pool
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="physgen-audit-") as tmp:
        base = Path(tmp)
        _fixtures(base)  # first: some cases are generated from the fixtures (the fields of their checkpoint headers)
        selected = [c for c in cases() if args.only is None or any(part in c.id for part in args.only.split(","))]
        results = []
        for case in selected:
            case.timeout = case.timeout * args.timeout / 60.0  # --timeout scales every case's own limit
            results.append(run_case(case, base))
            r = results[-1]
            what = f"{r['note']}: " if r.get("note") else ""
            print(f"{r['id']:<20} {r['class']:<9} {' '.join(r['argv'][:6])[:70]:<70} {what}{r.get('detail', '')[:110]}", file=sys.stderr, flush=True)
    summary = {"cases": len(results), "wall_s": round(time.perf_counter() - t0, 1), "counts": dict(Counter(r["class"] for r in results)),
               "python": sys.version.split()[0], "torch": torch.__version__, "results": results}
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(table(results))
    print(f"\n{len(results)} cases in {summary['wall_s']} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
