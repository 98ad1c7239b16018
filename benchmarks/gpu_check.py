"""One command that tests, measures and proves the CUDA path on one GPU (issue 13; not a test).

    python3 -m pip install --no-deps --no-build-isolation . && python3 benchmarks/gpu_check.py --out $OUT/gpu
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check     # the same code on CPU, toy sizes, < 1 min

Sections (each in its own process with its own time limit, so that a crash, a CUDA error
or a hang is recorded in ``summary.json`` and the rest still runs):

* ``tests``          ``pytest -m cuda`` (the tests that skip without CUDA), log in ``pytest_cuda.log``;
* ``digits_train``   PFGM++ D=2048 and D=inf on sklearn's digits at 32x32, the ``small`` U-Net,
                     ``--digits-minutes`` of wall clock each, both at once on the one GPU,
                     then Heun samples of each (``benchmarks/gpu_digits.py``'s machinery);
* ``train``          training throughput of the DDPM++ CIFAR-10 U-Net (55.7M, 3x32x32, PFGM++
                     D=2048) through ``physgen.training.train`` in fp32 (TF32 off, and torch's
                     defaults) and bf16 autocast + channels_last, and the official-style
                     reference loop (fp32, TF32 off) on the same network, init and data:
                     img/s, peak memory, warm-up, the loss of every step;
* ``train_compile``  bf16 + channels_last under ``torch.compile``: it compiles while the
                     digits train (its warm-up is therefore an upper bound), then waits for
                     the GPU to be free before its timed steps;
* ``sample``         Heun at 35 NFE, fp32 and bf16, against an ``edm_sampler``-style loop
                     (float64 state, a host sync per step);
* ``solvers``        solve time / (NFE x field time) and the solver's own time with a free
                     field, for euler, heun, dpmpp-2m and the per-sample adaptive dopri5;
* ``exact``          the exact field's rate against the equivalent matmul at 1e5 x 1e5
                     (default blocks, larger blocks, and the attention-kernel formulation);
* ``digits_judge``   the digit classifier's verdict on both sample sets, and the figures.

Everything lands in ``--out`` (at most 8 files): ``summary.json`` (every number, each
section's status, the verdicts against the issue's targets), ``gpu_check.log``,
``pytest_cuda.log``, ``training.png``, ``digits_quality.png``, ``samples-D2048.png``,
``samples-Dinf.png``.  Scratch (checkpoints, samples) goes to a temporary folder.
``summary.json`` is rewritten after every section, so a run cut short still reports
what it did.  Only the public API is used: ``solvers.solve(flow, x, schedule, method=NAME)``,
``physgen.processes.make_process``, ``process.flow / precondition`` (grids: ``solvers.edm_schedule``),
``physgen.training.train / TrainConfig`` and ``physgen.nets.unet``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

MAX_FILES = 8
SOLVER_METHODS = ("euler", "heun", "dpmpp-2m", "dopri5")


@dataclass(frozen=True)
class Sizes:
    """Problem sizes and time limits (seconds) of one run."""

    arch: str = "ddpmpp-cifar10"
    resolution: int = 32
    batch: int = 512
    micro_batch: int = 256
    warmup: int = 3
    steps_fp32: int = 12
    steps_fast: int = 30
    sample_batch: int = 256
    sample_repeats: int = 2
    solver_batch: int = 64
    solver_repeats: int = 3
    own_repeats: int = 5
    paired_warmup: int = 1
    exact_n: int = 100_000
    exact_repeats: int = 3
    digits_resolution: int = 32
    digits_arch: str = "small"
    digits_batch: int = 256
    digits_steps: Optional[int] = None  # None: train for digits_minutes
    digits_samples: int = 1000
    digits_sample_steps: int = 18
    classifier_steps: int = 1500
    compile: bool = True
    budget_s: float = 465.0  # the whole run; 8 minutes less a margin for the install
    limits: tuple = (("tests", 240), ("digits_train", 120), ("train", 170), ("sample", 60), ("solvers", 70), ("exact", 60),
                     ("digits_judge", 90), ("train_compile", 420))


FULL = Sizes()
SMOKE = Sizes(arch="tiny", resolution=8, batch=8, micro_batch=4, warmup=1, steps_fp32=2, steps_fast=2, sample_batch=4,
              sample_repeats=1, solver_batch=4, solver_repeats=1, own_repeats=1, paired_warmup=0, exact_n=2000, exact_repeats=1, digits_resolution=8,
              digits_arch="tiny", digits_batch=16, digits_steps=3, digits_samples=24, digits_sample_steps=3, classifier_steps=20,
              compile=False, budget_s=240.0,
              limits=(("tests", 120), ("digits_train", 90), ("train", 90), ("sample", 60), ("solvers", 60), ("exact", 60),
                      ("digits_judge", 90), ("train_compile", 120)))


def d_tag(D) -> str:
    return "inf" if D == math.inf else str(int(D))


# --------------------------------------------------------------------------- sections (run in child processes)


def _device():
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def section_train(sizes: Sizes, save: Callable[[dict], None], configs=("reference", "fp32-notf32", "fp32", "bf16+cl"),
                  before_timing: Optional[Callable[[], None]] = None, keys: Optional[tuple] = None) -> dict:
    """Training throughput and loss per step, one configuration after the other (partial results saved
    under ``keys``, default the configuration names)."""
    from bench_images import measure_train

    device = _device()
    result: dict = {"configs": {}}
    for name, key in zip(configs, keys or configs):
        fast = name.startswith("bf16")
        try:
            r = measure_train(name, arch=sizes.arch, resolution=sizes.resolution, batch=sizes.batch, micro_batch=sizes.micro_batch,
                              steps=sizes.steps_fast if fast else sizes.steps_fp32, warmup=sizes.warmup, device=device,
                              before_timing=before_timing)
            r["warmup_steps"] = sizes.warmup
        except Exception as exc:  # e.g. out of memory, compile failure: report, keep going
            r = {"config": name, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        result["configs"][key] = r
        print(key, {k: v for k, v in r.items() if k != "losses"}, flush=True)
        save(result)
    return result


def section_train_compile(sizes: Sizes, save: Callable[[dict], None], work: Path) -> dict:
    """bf16+cl(+compile): compile during the digits phase, time the steps once the parent says go."""
    ready, go = work / "compile.ready", work / "compile.go"

    def wait_for_go() -> None:
        ready.touch()
        while not go.exists():
            time.sleep(0.2)

    if sizes.compile:
        return section_train(sizes, save, configs=("bf16+cl+compile",), before_timing=wait_for_go)
    # smoke: the same scheduling and code path, without compiling (inductor on a CPU takes minutes)
    return section_train(sizes, save, configs=("bf16+cl",), before_timing=wait_for_go, keys=("bf16+cl (compile slot, eager in --smoke)",))


def section_sample(sizes: Sizes, save) -> dict:
    """Sampling against the reference loop; then the U-Net attention layout before / after issue 13
    (one block of the CIFAR-10 net: 256 channels at 16x16, fp32 and bf16)."""
    from bench_images import measure_sampling
    from bench_parity import measure_attention

    device = _device()
    result = measure_sampling(arch=sizes.arch, resolution=sizes.resolution, batch=sizes.sample_batch, repeats=sizes.sample_repeats,
                              device=device)
    save(result)
    channels = 256 if sizes.arch == "ddpmpp-cifar10" else 32
    try:
        result["attention_layout"] = {precision: measure_attention(device, batch=sizes.sample_batch, channels=channels, resolution=16,
                                                                   repeats=max(sizes.sample_repeats, 5), bf16=precision == "bf16")
                                      for precision in ("fp32", "bf16")}
    except Exception as exc:
        result["attention_layout"] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
    return result


def section_solvers(sizes: Sizes, save) -> dict:
    """Per method: NFE, solve time / (NFE x field time) measured pairwise, and the estimate
    1 + (own time per NFE with a free field) / field time."""
    import torch

    import solvers
    from bench_images import sampling_field
    from benchlib import FreeDenoiser, edm_grid, paired_ratio, timeit

    device = _device()
    process, field = sampling_field(sizes.arch, sizes.resolution, 3, device)
    sched = edm_grid(process, 18)
    g = torch.Generator(device=device).manual_seed(0)
    x0 = torch.randn(sizes.solver_batch, 3, sizes.resolution, sizes.resolution, device=device, generator=g) * float(sched[0])
    s_b = torch.ones(sizes.solver_batch, device=device)
    flow, free = process.flow(field), process.flow(FreeDenoiser(x0))
    rows = {}
    with torch.no_grad():
        for method in SOLVER_METHODS:
            opts = {"rtol": 1e-3, "atol": 1e-3} if method == "dopri5" else {}
            try:
                nfe = solvers.solve(flow, x0, sched, method=method, **opts).stats.nfe
                ratio, t_solve, t_field = paired_ratio(lambda: solvers.solve(flow, x0, sched, method=method, **opts),
                                                       lambda: field(x0, s_b), nfe, device, sizes.solver_repeats, sizes.paired_warmup)
                nfe_free = solvers.solve(free, x0, sched, method=method, **opts).stats.nfe
                own = timeit(lambda: solvers.solve(free, x0, sched, method=method, **opts), device, sizes.own_repeats)
                rows[method] = {"nfe": nfe, "solve_s": t_solve, "field_s": t_field, "ratio_measured": ratio, "own_s": own,
                                "nfe_free_field": nfe_free, "ratio_own_estimate": 1 + own / max(nfe_free, 1) / t_field}
            except Exception as exc:
                rows[method] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
            print(method, rows[method], flush=True)
            save({"batch": sizes.solver_batch, "methods": rows})
    return {"batch": sizes.solver_batch, "methods": rows}


def section_exact(sizes: Sizes, save) -> dict:
    """Rate of the exact EDM field (2-D, sigma = 0.5) at n x n against ``X @ Y.T`` of the same operands."""
    import torch
    import torch.nn.functional as F

    from benchlib import timeit
    from physgen.processes import make_process

    device = _device()
    n = sizes.exact_n
    g = torch.Generator(device=device).manual_seed(0)
    pts, x = torch.randn(n, 2, device=device, generator=g), torch.randn(n, 2, device=device, generator=g)
    s = torch.full((n,), 0.5, device=device)
    process = make_process("edm")
    field = process.exact_field(pts)
    out: dict = {"n": n, "pairs": n * n, "variants": {}}
    ref = field(x, s)

    def sdpa():
        # the Gaussian posterior mean is softmax(q k^T) v with q = [a x/b², -a²/2b²], k = [y, ‖y‖²], v = y: an
        # attention call (fused kernel, no [Q, P] matrix), zero-padded to 8 channels for the kernels' alignment
        prof = field.log_profile
        q = F.pad(prof.augment(x, s), (0, 5))[None, None]
        k = F.pad(torch.cat([pts, (pts * pts).sum(1, keepdim=True)], 1), (0, 5))[None, None]
        v = F.pad(pts, (0, 6))[None, None]
        return F.scaled_dot_product_attention(q, k, v, scale=1.0)[0, 0, :, :2]

    def big_blocks():
        wide = process.exact_field(pts)
        wide.chunk_elems = 1 << 26
        return wide(x, s)

    variants = {"exact field (default blocks)": lambda: field(x, s), "exact field (2^26-pair blocks)": big_blocks,
                "attention-kernel formulation (candidate)": sdpa}
    for name, fn in variants.items():
        try:
            t = timeit(fn, device, sizes.exact_repeats, warmup=1)
            err = (fn() - ref).abs().max().item()
            out["variants"][name] = {"s": t, "pairs_per_s": n * n / t, "max_abs_diff_vs_default": err}
        except Exception as exc:  # out of memory on a smaller GPU, no fused kernel: report, keep going
            out["variants"][name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(name, out["variants"][name], flush=True)
        save(out)
    buf = torch.empty(n, n, device=device)
    t_mm = timeit(lambda: torch.matmul(x, pts.T, out=buf), device, sizes.exact_repeats, warmup=1)
    del buf
    out["matmul"] = {"s": t_mm, "pairs_per_s": n * n / t_mm}
    for v in out["variants"].values():
        if "s" in v:
            v["rate_ratio_to_matmul"] = t_mm / v["s"]
    return out


def _digits_args(sizes: Sizes, work: Path, minutes: float):
    import gpu_digits

    argv = ["--resolution", str(sizes.digits_resolution), "--arch", sizes.digits_arch, "--batch", str(sizes.digits_batch),
            "--n-samples", str(sizes.digits_samples), "--sample-steps", str(sizes.digits_sample_steps),
            "--classifier-steps", str(sizes.classifier_steps), "--out", str(work / "digits"), "--log-every", "50",
            "--checkpoint-every", "0"]
    argv += ["--steps", str(sizes.digits_steps), "--warmup-steps", "1"] if sizes.digits_steps else ["--minutes", str(minutes)]
    return gpu_digits.build_parser().parse_args(argv)


def section_digits_train(sizes: Sizes, save, work: Path, D, minutes: float) -> dict:
    """Train one D for the time budget, then draw its samples into the scratch folder."""
    import torch

    import gpu_digits

    device = _device()
    args = _digits_args(sizes, work, minutes)
    info = gpu_digits.train_one(D, args, device, sys.stderr)
    x = gpu_digits.draw_samples(info, args, device)
    torch.save(x, work / f"samples-D{d_tag(D)}.pt")
    return info


def section_digits_judge(sizes: Sizes, save, work: Path, out: Path, runs: dict, minutes: float) -> dict:
    """The classifier's verdict on each D's samples (from ``digits_train``), grids and the quality figure."""
    import torch

    import gpu_digits
    from physgen.images.data import save_image_grid

    device = _device()
    args = _digits_args(sizes, work, minutes)
    clf, acc, data, held, real = gpu_digits.make_judge(args, device, sys.stderr)
    judged, rows = [], [("real (held-out)", held.images[:100], real)]
    for tag, info in runs.items():
        path = work / f"samples-D{tag}.pt"
        if "error" in info or not path.is_file():
            continue
        x = torch.load(path, weights_only=True)
        gpu_digits.judge_run(info, x, clf, data, device, sys.stderr)
        save_image_grid(x[:100], out / f"samples-D{tag}.png", nrow=10)
        rows.append((f"PFGM++ D={tag}", x[:100], info["report"]))
        judged.append(info)
    if judged:
        gpu_digits.quality_figure(rows, out / "digits_quality.png")
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    return {"classifier_accuracy": acc, "real_heldout": real, "runs": judged,
            "table": gpu_digits.results_table(args, machine, acc, real, judged) if judged else None}


# --------------------------------------------------------------------------- the parent: scheduling, summary, figures


class Run:
    """Starts sections as child processes, enforces the time limits, keeps ``summary.json`` current."""

    def __init__(self, out: Path, sizes: Sizes, smoke: bool, minutes: float, sections: list[str]):
        self.out, self.sizes, self.smoke, self.minutes, self.sections = out, sizes, smoke, minutes, sections
        self.work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.t0 = time.perf_counter()
        self.limits = dict(sizes.limits)
        self.log_path = out / "gpu_check.log"
        self.summary: dict = {"smoke": smoke, "sizes": asdict(sizes), "digits_minutes": minutes, "sections": {}, "status": {},
                              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version()}

    # -- bookkeeping
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def log(self, text: str) -> None:
        line = f"[gpu_check {self.elapsed():6.1f}s] {text}"
        print(line, flush=True)
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def write_summary(self) -> None:
        from physgen.io import write_json

        self.summary["elapsed_s"] = self.elapsed()
        write_json(self.out / "summary.json", self.summary)

    def limit(self, name: str) -> float:
        return max(0.0, min(self.limits[name], self.sizes.budget_s - self.elapsed() - 5.0))

    # -- children
    def start(self, key: str, section: str, extra: list[str] = ()) -> Optional[subprocess.Popen]:
        if section not in self.sections:
            return None
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", section, "--key", key, "--work", str(self.work),
               "--out", str(self.out), "--digits-minutes", str(self.minutes)] + (["--smoke"] if self.smoke else []) + list(extra)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        if self.smoke:  # several children share the CPU at once: one thread each, not cores x children threads
            env.setdefault("OMP_NUM_THREADS", "1")
        logf = open(self.work / f"{key}.log", "w")
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        proc.key, proc.section, proc.started, proc.logf = key, section, time.perf_counter(), logf  # type: ignore[attr-defined]
        self.summary["status"][key] = {"state": "running"}
        self.log(f"started {key}")
        return proc

    def finish(self, proc: Optional[subprocess.Popen], deadline_s: float) -> None:
        """Wait for ``proc`` until ``deadline_s`` (seconds from now), kill it after; record its fragment."""
        if proc is None:
            return
        key = proc.key  # type: ignore[attr-defined]
        try:
            rc = proc.wait(timeout=max(deadline_s, 0.1))
            state = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc, state = None, f"timeout after {time.perf_counter() - proc.started:.0f} s"  # type: ignore[attr-defined]
        proc.logf.close()  # type: ignore[attr-defined]
        frag = self.work / f"{key}.json"
        if frag.is_file():
            self.summary["sections"][key] = json.loads(frag.read_text())
        self.summary["status"][key] = {"state": state, "wall_s": round(time.perf_counter() - proc.started, 1)}  # type: ignore[attr-defined]
        text = (self.work / f"{key}.log").read_text(errors="replace")
        with open(self.log_path, "a") as f:
            f.write(f"\n===== {key}: {state} =====\n{text[-20000:]}\n")
        self.log(f"{key}: {state}")
        self.write_summary()

    def skip(self, key: str, why: str) -> None:
        self.summary["status"][key] = {"state": f"not run: {why}"}
        self.log(f"{key}: not run ({why})")

    def run_one(self, key: str) -> None:
        if key not in self.sections:
            return
        limit = self.limit(key)
        if limit < 5:
            self.skip(key, "out of time")
            return
        self.finish(self.start(key, key), limit)

    # -- the schedule
    def tests(self) -> Optional[subprocess.Popen]:
        if "tests" not in self.sections:
            return None
        # the files that use the marker (collecting all ~800 tests would only cost time), then -m cuda
        files = sorted(str(f) for f in (ROOT / "tests").rglob("test_*.py") if "pytest.mark.cuda" in f.read_text())
        cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rA", "-p", "no:cacheprovider", *files]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        logf = open(self.out / "pytest_cuda.log", "w")
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        proc.key, proc.section, proc.started, proc.logf = "tests", "tests", time.perf_counter(), logf  # type: ignore[attr-defined]
        self.log("started tests: " + " ".join(cmd[1:]))
        return proc

    def finish_tests(self, proc, deadline_s: float) -> None:
        if proc is None:
            return
        try:
            rc = proc.wait(timeout=max(deadline_s, 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        proc.logf.close()
        text = (self.out / "pytest_cuda.log").read_text(errors="replace")
        last = text.strip().splitlines()[-1] if text.strip() else ""
        counts = {k: int(v) for v, k in (w.split(" ", 1) for w in _count_words(last))}
        self.summary["sections"]["tests"] = {"returncode": rc, "summary_line": last, "counts": counts}
        self.summary["status"]["tests"] = {"state": "ok" if rc == 0 else ("timeout" if rc is None else f"failed (exit {rc})"),
                                           "wall_s": round(time.perf_counter() - proc.started, 1)}
        self.log(f"tests: {last}")
        self.write_summary()

    def compile_turn(self, proc, wait: bool) -> Optional[subprocess.Popen]:
        """Let the compiling child run its timed steps (alone on the GPU) once it has compiled."""
        if proc is None:
            return None
        ready = self.work / "compile.ready"
        while wait and not ready.exists() and proc.poll() is None and self.elapsed() < self.sizes.budget_s - 10:
            time.sleep(0.5)
        if ready.exists() or proc.poll() is not None or wait:
            (self.work / "compile.go").touch()
            self.finish(proc, max(self.sizes.budget_s - self.elapsed() - 3.0, 0.1) if ready.exists() or proc.poll() is not None else 0.1)
            return None
        return proc

    def go(self) -> None:
        self.log(f"out {self.out}, scratch {self.work}, sections {','.join(self.sections)}")
        self.write_summary()
        # phase 1, side by side: the CUDA tests, the two digits trainings, the compile warm-up
        tests = self.tests()
        digits = [self.start(f"digits_train_D{d_tag(D)}", "digits_train", ["--D", d_tag(D)]) for D in (2048, math.inf)]
        compiling = self.start("train_compile", "train_compile")
        digits_limit = self.minutes * 60 + self.limits["digits_train"] if not self.sizes.digits_steps else self.limits["digits_train"]
        for proc in digits:
            self.finish(proc, min(digits_limit, self.sizes.budget_s - 5) - (time.perf_counter() - proc.started) if proc else 0)
        self.finish_tests(tests, self.limits["tests"] - (time.perf_counter() - tests.started) if tests else 0)
        # phase 2, one at a time; the compiled run takes its turn as soon as it is ready
        for key in ("train", "sample", "solvers", "exact", "digits_judge"):
            compiling = self.compile_turn(compiling, wait=False)
            self.run_one(key)
        self.compile_turn(compiling, wait=True)
        self.summary["verdicts"] = verdicts(self.summary["sections"])
        self.summary["machine"] = _machine_line()
        self.write_summary()
        training_figure(self.summary["sections"], self.out / "training.png")
        files = sorted(p.name for p in self.out.iterdir())
        self.summary["files"] = files
        self.write_summary()
        self.log(f"done in {self.elapsed():.0f} s; files: {', '.join(files)}")
        for v in self.summary["verdicts"]:
            self.log(f"target {v['target']}: {v['value']} -> {v['verdict']}")


def _count_words(line: str) -> list[str]:
    """``"3 passed, 2 skipped in 4.1s"`` -> ``["3 passed", "2 skipped"]``."""
    import re

    return re.findall(r"(\d+ (?:passed|failed|skipped|deselected|errors?|xfailed|xpassed))", line)


def _machine_line() -> str:
    import torch

    from benchlib import machine

    return machine("cuda" if torch.cuda.is_available() else "cpu")


def verdicts(sections: dict) -> list[dict]:
    """Each of the issue's targets with the measured value and pass / miss / not measured."""
    out = []

    def add(target: str, value, ok: Optional[bool]) -> None:
        out.append({"target": target, "value": value, "verdict": "not measured" if ok is None else ("meets" if ok else "misses")})

    configs = {**sections.get("train", {}).get("configs", {}), **sections.get("train_compile", {}).get("configs", {})}
    ref = configs.get("reference", {})
    fast = [c for k, c in configs.items() if k.startswith("bf16") and "img_per_s" in c]
    if "img_per_s" in ref and fast:
        best = max(fast, key=lambda c: c["img_per_s"])
        ratio = best["img_per_s"] / ref["img_per_s"]
        add("bf16 + channels_last (+ compile) training >= 2x the fp32 reference loop's img/s", f"{ratio:.2f} ({best['config']})", ratio >= 2)
    else:
        add("bf16 + channels_last (+ compile) training >= 2x the fp32 reference loop's img/s", None, None)
    same = configs.get("fp32-notf32", {})
    if "losses" in ref and "losses" in same:
        a, b = ref["losses"], same["losses"]
        n = min(len(a), len(b))
        diff = [x - y for x, y in zip(a[:n], b[:n])]
        mean = sum(diff) / n
        sd = (sum((d - mean) ** 2 for d in diff) / max(n - 1, 1)) ** 0.5
        add("same loss curve over the first steps (physgen fp32 vs reference): |mean difference| <= 3 standard errors",
            f"mean difference {mean:+.4f}, standard error {sd / n ** 0.5:.4f} over {n} steps", abs(mean) <= 3 * sd / n ** 0.5 + 1e-12)
    samp = sections.get("sample", {})
    if "ratio_to_reference" in samp:
        best = max(samp["ratio_to_reference"].values())
        add("sampling >= 1.5x the float64 / host-sync reference loop at equal NFE", f"{best:.2f} (fp32 {samp['ratio_to_reference']['fp32']:.2f})", best >= 1.5)
    else:
        add("sampling >= 1.5x the float64 / host-sync reference loop at equal NFE", None, None)
    methods = sections.get("solvers", {}).get("methods", {})
    for m in SOLVER_METHODS:
        r = methods.get(m, {})
        value = None if "ratio_measured" not in r else f"measured {r['ratio_measured']:.3f}, own-time estimate {r['ratio_own_estimate']:.4f}"
        add(f"solver overhead <= 1.05 x NFE x forward ({m})", value, None if value is None else r["ratio_own_estimate"] <= 1.05)
    exact = sections.get("exact", {})
    ex = exact.get("variants", {}).get("exact field (default blocks)", {})
    add(f"exact field >= 50% of the matmul rate ({exact.get('n', '?')} x {exact.get('n', '?')})",
        None if "rate_ratio_to_matmul" not in ex else f"{ex['rate_ratio_to_matmul']:.2f}",
        None if "rate_ratio_to_matmul" not in ex else ex["rate_ratio_to_matmul"] >= 0.5)
    judge = sections.get("digits_judge", {})
    real = judge.get("real_heldout", {}).get("confidence_mean")
    for run in judge.get("runs", []):
        conf = run["report"]["confidence_mean"]
        add(f"digits after the training budget, D={run['D']}: mean confidence within 0.1 of real held-out digits",
            f"{conf:.3f} vs real {real:.3f}", abs(conf - real) <= 0.1)
    if not judge.get("runs"):
        add("digits after the training budget: mean confidence within 0.1 of real held-out digits", None, None)
    return out


def training_figure(sections: dict, path: Path) -> None:
    """Loss per step of every training configuration, and their img/s."""
    configs = {**sections.get("train", {}).get("configs", {}), **sections.get("train_compile", {}).get("configs", {})}
    ok = {k: v for k, v in configs.items() if "losses" in v}
    if not ok:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from physgen.io import save_figure

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, r in ok.items():
        a.plot(range(1, len(r["losses"]) + 1), r["losses"], marker=".", label=name)
    a.set_xlabel("step")
    a.set_ylabel("loss (mean per element)")
    a.set_yscale("log")
    a.set_title("loss over the first steps (same init and data)")
    a.legend()
    names = list(ok)
    b.barh(names, [ok[k]["img_per_s"] for k in names])
    b.set_xlabel("img/s")
    b.set_title("training throughput")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


# --------------------------------------------------------------------------- entry points


def child(args) -> int:
    """Run one section and write its result (and partial results) to ``work/key.json``."""
    from physgen.io import write_json

    sizes = SMOKE if args.smoke else FULL
    work, out = Path(args.work), Path(args.out)
    frag = work / f"{args.key}.json"

    def save(result: dict) -> None:
        write_json(frag, result)

    section = args.child
    if section == "train":
        result = section_train(sizes, save)
    elif section == "train_compile":
        result = section_train_compile(sizes, save, work)
    elif section == "sample":
        result = section_sample(sizes, save)
    elif section == "solvers":
        result = section_solvers(sizes, save)
    elif section == "exact":
        result = section_exact(sizes, save)
    elif section == "digits_train":
        import gpu_digits

        result = section_digits_train(sizes, save, work, gpu_digits.parse_D(args.D), args.digits_minutes)
    elif section == "digits_judge":
        runs = {}
        for D in (2048, math.inf):
            f = work / f"digits_train_D{d_tag(D)}.json"
            if f.is_file():
                runs[d_tag(D)] = json.loads(f.read_text())
        result = section_digits_judge(sizes, save, work, out, runs, args.digits_minutes)
    else:
        raise SystemExit(f"unknown section {section!r}")
    save(result)
    return 0


SECTIONS = ("tests", "digits_train", "train", "train_compile", "sample", "solvers", "exact", "digits_judge")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the results (at most 8 files)")
    p.add_argument("--smoke", action="store_true", help="the same code on CPU at toy sizes (under a minute)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"subset of {','.join(SECTIONS)} (e.g. to rerun one)")
    p.add_argument("--digits-minutes", type=float, default=3.0, help="wall-clock training per D (both D at once)")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="multiply the run's time budget and every section's limit (a slower or shared machine)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--key", default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--D", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = sorted(set(sections) - set(SECTIONS))
    if bad:
        p.error(f"unknown section(s) {bad}; valid: {', '.join(SECTIONS)}")
    if not (args.digits_minutes > 0 and math.isfinite(args.digits_minutes)):
        p.error(f"--digits-minutes must be a positive number, got {args.digits_minutes}")
    if not (args.time_scale > 0 and math.isfinite(args.time_scale)):
        p.error(f"--time-scale must be a positive number, got {args.time_scale}")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        p.error(f"--out {str(out)!r} is not empty; give a new folder (this run writes up to {MAX_FILES} files there)")
    out.mkdir(parents=True, exist_ok=True)
    sizes = SMOKE if args.smoke else FULL
    sizes = replace(sizes, budget_s=sizes.budget_s * args.time_scale,
                    limits=tuple((name, limit * args.time_scale) for name, limit in sizes.limits))
    run = Run(out, sizes, args.smoke, args.digits_minutes, sections)
    run.go()
    failed = [k for k, v in run.summary["status"].items() if v.get("state") != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
