"""The bad-input audit's cases for the surfaces added after issue 14 (issue 19, item 5).

Generators of hostile values, one per class of input, each walking its surface (every solver
option of the table, every schedule keyword, every key of a checkpoint header, every command
that reads the optimal-schedule cache) instead of listing cases:

* ``solver options``: every option of every solver (two torchdiffeq rows stand for the
  adapter) with values of the wrong type, out of any sane range and at the float64 limits;
* ``collisions``: sampler options named like the arguments a command passes itself, and
  options given twice (a dedicated flag and ``--sampler-opt``/``--process-opt``);
* ``schedules``: every schedule keyword at hostile values, unknown and repeated keywords;
* ``optimal cache``: ``optimal_schedules.json`` damaged per entry (a grid that is not the
  process's) and per file (not JSON, truncated, nested, the wrong top-level type, a folder),
  through every command that fits a grid;
* ``headers``: checkpoint headers with a recomputed checksum whose fields have the wrong
  type, a NaN, a negative or an absurd size, through every command that reads that kind; and
  a run folder whose newest checkpoint has such a header (the older one must be used);
* ``others``: the likelihood of every process and field, empty output paths, guidance flags
  without ``--guidance``, learning rates and tolerances at absurd values, ``--resume`` with
  ``--overwrite``, process names from a checkpoint, image checkpoints given to ``nll``.

A value may be refused (one line naming it: "clear") or accepted with a sane result ("ok"):
cases marked ``legit`` accept either; the others must be refused.  :func:`cases` returns
``(area, argv, needles, keywords)`` tuples for :class:`audit_cli.Case`;
:func:`fixtures` makes the runs they refer to.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

SIZE = ["--dataset", "8gaussians", "--n-data", "200", "--n-samples", "128", "--device", "cpu"]
TOY = ["toy", *SIZE, "--steps", "8"]
CMP = ["compare-solvers", "--n-data", "40", "--n-samples", "8", "--solvers", "euler", "--steps", "2", "--no-ref-check", "--device", "cpu"]
NLL = ["nll", "--dataset", "8gaussians", "--n", "16", "--n-data", "40", "--batch", "16", "--device", "cpu"]
CLF = ["train-classifier", "--n-data", "60", "--steps", "2", "--batch", "16", "--hidden", "8", "--depth", "1", "--device", "cpu"]
SAMPLE = ["sample", "--n", "2", "--steps", "2", "--device", "cpu"]
O = ["--out", "{W}/o"]
OPTIMAL = "optimal:n_pilot=16,max_evals=5"
CACHE = "optimal_schedules.json"
MAGIC = b"PHYSGEN-CKPT\n"

FLOAT_VALUES = ("abc", "nan", "-1e300", "-1", "0", "1e-300", "1e300")
INT_VALUES = ("abc", "2.5", "-1", "0", "99999999999")
SANE_SLICED_W2 = 1.0  # 128 samples of 8gaussians at 8 steps: 0.29-0.53 for every solver at its defaults


def _case(area: str, argv: list, needles=(), **kw) -> tuple:
    return (area, argv, tuple(needles), kw)


# --------------------------------------------------------------------------- checks


def toy_sane(w: Path, baseline: float = 0.0) -> bool:
    """Finite samples with the data's distribution at this budget: sliced W2 against fresh data
    below :data:`SANE_SLICED_W2`, or below 1.5x ``baseline`` (the same run at the solver's defaults)."""
    import numpy as np

    path, metrics = w / "o" / "samples.npy", w / "o" / "metrics.json"
    if not (path.exists() and metrics.exists()):
        return False
    x = np.load(path)
    w2 = json.loads(metrics.read_text()).get("sliced_w2")
    return bool(np.isfinite(x).all() and isinstance(w2, float) and w2 <= max(SANE_SLICED_W2, 1.5 * baseline))


def _near_default(solver: str) -> Callable[[Path], bool]:
    """:func:`toy_sane` against the solver's own default run (measured by :func:`fixtures`)."""
    return lambda w: toy_sane(w, json.loads(os.environ.get("AUDIT_BASELINES", "{}")).get(solver, 0.0))


def toy_finite(w: Path) -> bool:
    """Finite samples written (a guided run's distribution depends on its classifier)."""
    import numpy as np

    path = w / "o" / "samples.npy"
    return path.exists() and bool(np.isfinite(np.load(path)).all())


def _stderr_names(w: Path, text: str) -> bool:
    err = (w / ".stderr").read_text(errors="replace") if (w / ".stderr").exists() else ""
    return text in err


def _all(*checks: Callable[[Path], bool]) -> Callable[[Path], bool]:
    return lambda w: all(c(w) for c in checks)


def wrote(*names: str) -> Callable[[Path], bool]:
    return lambda w: all((w / n).exists() for n in names)


def nll_sane(w: Path) -> bool:
    path = w / "o" / "nll.json"
    if not path.exists():
        return False
    v = json.loads(path.read_text()).get("nll_nats", json.loads(path.read_text()).get("nll"))
    return isinstance(v, float) and math.isfinite(v)


# --------------------------------------------------------------------------- solver options


def _process_for(spec) -> Optional[list]:
    """The toy flags of a process that offers what ``spec`` needs (None: none does)."""
    from physgen.processes import make_process

    for name, flags, modes in (("edm", [], {}), ("vp", [], {}), ("ncsn", [], {}), ("yukawa", ["--birth-death", "smc"], {"birth_death": "smc"})):
        caps = make_process(name).capabilities(**modes)
        if all(n in caps for n in spec.needs):
            return ["--process", name, *flags]
    return None


def _values(option) -> tuple:
    if option.kind is float:
        return FLOAT_VALUES
    if option.kind is int:
        return INT_VALUES
    if option.kind is bool:
        return ("maybe", "2")
    return ("nope", "1")


def solver_option_cases() -> Iterator[tuple]:
    """Every option of every solver at hostile values: refused by name, or a sane result."""
    import solvers

    check_every_seen: set = set()
    for name, spec in solvers.SOLVERS.items():
        if name.startswith(solvers.TORCHDIFFEQ_PREFIX) and name not in ("torchdiffeq:dopri5", "torchdiffeq:rk4"):
            continue  # one adaptive and one fixed-grid method stand for the adapter's shared options
        flags = _process_for(spec)
        if flags is None:
            continue
        base = [*TOY, *flags, "--solver", name]
        yield _case("solver options", base + O, (name,), legit=True, check=_near_default(name), owner="sampler", note="defaults")
        for option in spec.options:
            if option.name == "return_trajectory":
                continue  # a collision (the command records trajectories itself): see collision_cases
            if option.name == "check_every":
                kind = (spec.stochastic, spec.adaptive)
                if kind in check_every_seen:
                    continue
                check_every_seen.add(kind)
            for value in _values(option):
                yield _case("solver options", base + ["--sampler-opt", f"{option.name}={value}"] + O, (option.name,),
                            legit=True, check=_near_default(name), owner="sampler")


# --------------------------------------------------------------------------- collisions


COMMAND_KEYS = ("noise", "generator", "label", "return_trajectory", "method", "schedule", "x", "x0", "target", "process", "field", "mode")
"""Names of arguments the sampling commands pass to the dispatcher (or it to a solver) themselves."""
SAMPLER_FLAGS = {"rtol": "--rtol", "atol": "--atol", "eps": "--eps", "snr": "--snr", "steps_per_level": "--steps-per-level",
                 "birth_death": "--birth-death"}
PROCESS_FLAGS = {"sigma_min": ("--sigma-min", "0.01", "0.02"), "sigma_max": ("--sigma-max", "20", "30"), "D": ("--D", "4", "8"),
                 "m": ("--m", "1", "2"), "a": ("--a", "2", "3"), "c": ("--c", "1", "2")}
PROCESS_OF = {"D": "pfgmpp", "m": "yukawa", "a": "telegrapher", "c": "telegrapher"}


def collision_cases() -> Iterator[tuple]:
    """Sampler options that are the commands' own arguments, and options given twice."""
    commands = {"toy": [*TOY, "--solver", "euler-ancestral"], "compare-solvers": CMP, "sample": [*SAMPLE, "--ckpt", "{IMG}"]}
    for cmd, base in commands.items():
        out = ["--out", "{W}/s"] if cmd == "sample" else O
        for key in COMMAND_KEYS:
            for value in ("1", "true", "abc"):
                yield _case("collisions", base + ["--sampler-opt", f"{key}={value}"] + out, (key,))
    for key, flag in SAMPLER_FLAGS.items():
        solver = {"rtol": "dopri5", "atol": "dopri5", "eps": "ald", "snr": "pc", "steps_per_level": "ald", "birth_death": "heun"}[key]
        process = {"ald": "ncsn", "pc": "vp"}.get(solver, "yukawa" if key == "birth_death" else "edm")
        value = {"birth_death": ("smc", "weights"), "steps_per_level": ("3", "4")}.get(key, ("0.01", "0.02"))
        yield _case("collisions", [*TOY, "--process", process, "--solver", solver, flag, value[0], "--sampler-opt", f"{key}={value[1]}"] + O,
                    (key, flag))
    for key, (flag, a, b) in PROCESS_FLAGS.items():
        process = PROCESS_OF.get(key, "edm")
        for cmd in ([*TOY], [*CMP], [*NLL, "--field", "exact"]):
            yield _case("collisions", cmd + ["--process", process, flag, a, "--process-opt", f"{key}={b}"] + O, (key, flag))


# --------------------------------------------------------------------------- schedules


def schedule_cases() -> Iterator[tuple]:
    """Every keyword of every schedule at hostile values; unknown and repeated keywords."""
    import inspect

    from solvers.schedules import SCHEDULES

    for name, fn in SCHEDULES.items():
        keys = [n for n, p in inspect.signature(fn).parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in ("steps", "s_min", "s_max", "append_zero")]
        yield _case("schedules", TOY + ["--schedule", f"{name}:nope=1"] + O, ("nope",))
        for key in keys:
            for value in (*FLOAT_VALUES, "inf", ""):
                yield _case("schedules", TOY + ["--schedule", f"{name}:{key}={value}"] + O, (key,), legit=True, check=toy_sane)
            yield _case("schedules", TOY + ["--schedule", f"{name}:{key}=2,{key}=3"] + O, (key,))
            for cmd in (CMP, [*NLL, "--field", "exact", "--solver", "heun", "--steps", "4"]):
                yield _case("schedules", cmd + ["--schedule", f"{name}:{key}=1e-300"] + O, (key,), legit=True,
                            check=wrote("o/results.json") if cmd is CMP else nll_sane)


# --------------------------------------------------------------------------- the optimal-schedule cache


CACHE_COMMANDS = {
    "toy": [*TOY[:-2], "--steps", "4", "--schedule", OPTIMAL],
    "compare-solvers": ["compare-solvers", "--n-data", "40", "--n-samples", "8", "--solvers", "heun", "--steps", "4", "--no-ref-check",
                        "--device", "cpu", "--schedule", OPTIMAL],
    "nll": [*NLL, "--field", "exact", "--solver", "heun", "--steps", "4", "--schedule", OPTIMAL],
}
CACHE_CHECKS = {"toy": toy_sane, "compare-solvers": wrote("o/results.json"), "nll": nll_sane}

GRID_DAMAGE = {  # an entry's grid -> a damaged one (what a hand edit or another tool could leave)
    "negative end": lambda g: [*g[:-1], -1.0],
    "start 1e6": lambda g: [1e6, *g[1:]],
    "repeated start": lambda g: [g[0], g[0], *g[2:]],
    "booleans": lambda g: [True, *g[1:-1], False],
    "strings": lambda g: [str(v) for v in g],
    "nulls": lambda g: [None] * len(g),
    "too short": lambda g: g[:-2],
    "too long": lambda g: [*g, 0.0],
    "increasing": lambda g: g[::-1],
    "nested": lambda g: [[v] for v in g],
    "empty": lambda g: [],
    "not a list": lambda g: 3.0,
    "1e308 start": lambda g: [1e308, *g[1:]],
    "shifted inside": lambda g: [g[0], *(v * 0.5 for v in g[1:-1]), g[-1]] if len(g) > 2 else g,
}
FILE_DAMAGE = {  # the whole file -> damaged bytes
    "a list": lambda raw: b"[1, 2]",
    "a number": lambda raw: b"3",
    "null": lambda raw: b"null",
    "truncated 50%": lambda raw: raw[: len(raw) // 2],
    "truncated 99%": lambda raw: raw[: int(len(raw) * 0.99)],
    "empty": lambda raw: b"",
    "nested 100000": lambda raw: b"[" * 100000 + b"]" * 100000,
    "nested objects": lambda raw: b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "not UTF-8": lambda raw: b"\xff\xfe" + raw,
    "NaN literal": lambda raw: json.dumps({k: {**v, "grid": [*v["grid"][:-1], float("nan")]} for k, v in json.loads(raw).items()}).encode(),
    "entry not a dict": lambda raw: json.dumps({k: [1] for k in json.loads(raw)}).encode(),
    "entry without grid": lambda raw: json.dumps({k: {"solver": "heun"} for k in json.loads(raw)}).encode(),
}


def _cache_setup(mutate_entry=None, mutate_file=None, folder: bool = False) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        (w / "o").mkdir(exist_ok=True)
        target = w / "o" / CACHE
        if folder:
            target.mkdir()
            return
        raw = Path(os.environ["AUDIT_CACHE"]).read_bytes()
        if mutate_entry is not None:
            data = json.loads(raw)
            for entry in data.values():
                entry["grid"] = mutate_entry(entry["grid"])
            raw = json.dumps(data).encode()
        if mutate_file is not None:
            raw = mutate_file(raw)
        target.write_bytes(raw)
    return setup


def cache_cases() -> Iterator[tuple]:
    """A damaged cache through every command that fits a grid: refitted with a warning naming
    the file (then the file holds a valid entry again), or refused naming the file."""
    def refitted(cmd: str) -> Callable[[Path], bool]:  # (the fit's own progress line names the file too: the warning is asked for)
        return _all(CACHE_CHECKS[cmd], lambda w: _stderr_names(w, f"warning: optimal-schedule cache '{w / 'o' / CACHE}'"),
                    lambda w: _refit_is_the_fit(w, cmd))

    for cmd, argv in CACHE_COMMANDS.items():
        for what, damage in GRID_DAMAGE.items():
            yield _case("optimal cache", argv + O, (CACHE,), setup=_cache_setup(mutate_entry=damage), legit=True, check=refitted(cmd), note=what)
        for what, damage in FILE_DAMAGE.items():
            yield _case("optimal cache", argv + O, (CACHE,), setup=_cache_setup(mutate_file=damage), legit=True, check=refitted(cmd), note=what)
        yield _case("optimal cache", argv + O, (CACHE,), setup=_cache_setup(folder=True), note="folder")
        yield _case("optimal cache", argv + O, (), setup=_cache_setup(), legit=True, check=CACHE_CHECKS[cmd], note="intact")  # calibration


GRID_OF = {"toy": lambda o: json.loads((o / "metrics.json").read_text())["grid"],
           "compare-solvers": lambda o: json.loads((o / "results.json").read_text())["settings"]["grids"]["4"],
           "nll": lambda o: json.loads((o / "nll.json").read_text())["grid"]}
"""Where each cache command records the grid it integrated on."""


def _refit_is_the_fit(w: Path, cmd: str) -> bool:
    """The grid used is the one the clean fit gave (the fit is reproducible), and the rewritten
    cache holds it: the damage was neither used nor kept."""
    try:
        used = GRID_OF[cmd](w / "o")
        cached = [e.get("grid") for e in json.loads((w / "o" / CACHE).read_text()).values() if isinstance(e, dict)]
    except (OSError, ValueError, KeyError, AttributeError):
        return False
    return used == json.loads(os.environ["AUDIT_GRIDS"])[cmd] and used in cached


# --------------------------------------------------------------------------- checkpoint headers


def rehead(raw: bytes, mutate: Callable[[dict], None]) -> bytes:
    """A checkpoint's bytes with its header mutated and the checksum recomputed (anyone can)."""
    (n,) = struct.unpack("<Q", raw[len(MAGIC): len(MAGIC) + 8])
    header = json.loads(raw[len(MAGIC) + 8: len(MAGIC) + 8 + n])
    payload = raw[len(MAGIC) + 8 + n:]
    header.pop("checksum", None)
    mutate(header)
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()  # NaN stays NaN
    header["checksum"] = "sha256:" + hashlib.sha256(canonical + payload).hexdigest()
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return MAGIC + struct.pack("<Q", len(text)) + text + payload


def _paths(obj: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path of a JSON value (containers and leaves)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _set(header: dict, path: tuple, value: Any) -> None:
    node = header
    for k in path[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value


_DELETE = object()


def _mutations(old: Any) -> dict:
    """Values of the wrong type, a NaN, a negative and an absurd size for one header field."""
    wrong = "x" if isinstance(old, (dict, list)) else [1]
    out = {"wrong type": wrong, "NaN": float("nan"), "null": None}
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        out.update({"negative": -1, "huge": 10**12, "float": 2.5})
    if isinstance(old, dict):
        out["list"] = [old]
    return out


HEADER_READERS = {  # fixture env var -> (kind, the commands that read it; "{C}" is the damaged checkpoint)
    "AUDIT_IMG": [[*SAMPLE, "--ckpt", "{C}", "--out", "{W}/s"], [*NLL[:1], "--ckpt", "{C}", "--dataset", "digits", "--n", "2", "--device", "cpu", *O],
                  ["compare-solvers", "--ckpt", "{C}", "--n-samples", "2", "--solvers", "euler", "--steps", "2", "--no-ref-check", "--device", "cpu", *O],
                  ["train", "--resume", "{W}/run", "--steps", "2"]],
    "AUDIT_TOY": [[*NLL, "--ckpt", "{C}", *O], ["compare-solvers", "--ckpt", "{C}", "--n-samples", "4", "--solvers", "euler", "--steps", "2",
                                                   "--no-ref-check", "--device", "cpu", *O]],
    "AUDIT_CLF": [[*TOY, "--label", "0", "--guidance", "classifier", "--classifier-ckpt", "{C}", *O]],
}
HEADER_SANE = {"sample": wrote("s/sampling.json"), "nll": nll_sane, "compare-solvers": wrote("o/results.json"), "train": wrote("run/summary.json"),
               "toy": toy_finite}  # toy reads a classifier here: two training steps of it guide nowhere in particular


def _header_setup(fixture: str, path: tuple, value: Any, resume: bool) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        run = Path(os.environ[fixture])
        newest = sorted((run / "checkpoints").glob("ckpt-*.pt"))[-1] if run.is_dir() else run
        raw = rehead(newest.read_bytes(), lambda h: _set(h, path, value))
        if resume:
            shutil.copytree(run, w / "run")
            (w / "run" / "checkpoints" / newest.name).write_bytes(raw)
        else:
            (w / "h.pt").write_bytes(raw)
    return setup


SCHEMA_PATHS = {("meta",), ("meta", "image"), ("meta", "image", "unet"), ("meta", "image", "shape"), ("meta", "process"),
                ("meta", "process", "name"), ("meta", "toy"), ("meta", "toy", "net"), ("meta", "toy", "net", "dim"), ("kind",), ("step",),
                ("version",), ("meta", "arch")}
"""The fields every reader of a kind relies on: damaged, they go through every command (the rest through the first)."""


def _header_paths(header: dict) -> Iterator[tuple]:
    """The fields of a header worth damaging: all but the checksum, the training config (the
    configs class audits it: ``train --resume`` reads it like a config file) and list items
    of class names."""
    for path in _paths(header):
        if not path or path[0] == "checksum" or path[:3] == ("meta", "image", "config") and len(path) > 3:
            continue
        if "class_names" in path[:-1]:
            continue
        yield path


def header_cases() -> Iterator[tuple]:
    """Every field of every checkpoint kind's header, damaged, through the commands that read
    the kind: refused naming the file, or a sane result.  Also the run-folder fallback."""
    for fixture, commands in HEADER_READERS.items():
        header = json.loads(os.environ.get(f"{fixture}_HEADER", "{}"))
        for path in _header_paths(header):
            old = header
            for k in path:
                old = old[k]
            for what, value in {**_mutations(old), "deleted": _DELETE}.items():
                for argv in commands if path in SCHEMA_PATHS else commands[:1]:
                    resume = argv[0] == "train"
                    filled = [a.replace("{C}", "{W}/h.pt") for a in argv]
                    yield _case("headers", filled, ("h.pt", "ckpt-"), setup=_header_setup(fixture, path, value, resume), legit=True,
                                check=HEADER_SANE[argv[0]], note=f"{fixture[6:].lower()} {'.'.join(map(str, path))} {what}")
    for path, value in ((("meta",), [1]), (("meta", "image"), "x"), (("meta", "image", "shape"), [1, 10**6, 10**6]), (("step",), float("nan"))):
        yield _case("headers", [*SAMPLE, "--ckpt", "{W}/run", "--out", "{W}/s"], (), setup=_fallback_setup(path, value), legit=True,
                    check=_all(wrote("s/sampling.json"), lambda w: _stderr_names(w, "skipped")), note=f"fallback {'.'.join(path)}")


def _fallback_setup(path: tuple, value: Any) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        run = Path(os.environ["AUDIT_IMG2"])
        shutil.copytree(run, w / "run")
        newest = sorted((w / "run" / "checkpoints").glob("ckpt-*.pt"))[-1]
        newest.write_bytes(rehead(newest.read_bytes(), lambda h: _set(h, path, value)))
    return setup


# --------------------------------------------------------------------------- others


def other_cases() -> Iterator[tuple]:
    from physgen.processes import PROCESSES

    for process in sorted(PROCESSES):  # the likelihood of every process and field: a value, or one line why not
        for field in ("exact", "analytic", "mlp"):
            # the exact field's ODE is stiff near s_min: 4 points of VE take ~1000 dopri5 steps, EDM's (s_min 0.002) more than
            # its 10 000 and a clear SolverError after ~90 s under load; known slow like the nll case of the sampling class
            extra = ["--train-steps", "2", "--hidden", "8", "--depth", "1"] if field == "mlp" else []
            yield _case("others", [*NLL, "--process", process, "--field", field, "--n", "4", "--batch", "4", *extra] + O,
                        (process, field, "--s-min"), legit=True, check=nll_sane, timeout=180.0 if field == "exact" else 60.0)
    for argv in (TOY, CMP, NLL, CLF, ["train", "--steps", "1", "--arch", "tiny", "--resolution", "8"], [*SAMPLE, "--ckpt", "{IMG}"],
                 ["demo", "--train-steps", "1"], ["experiment", "langevin-mixture"], ["eval", "ref-stats", "--ref", "digits", "--inception", "w"]):
        for empty in ("", " "):
            yield _case("others", [*argv, "--out", empty], ("--out",))
    for flag, value in (("--classifier-ckpt", "{CLF}"), ("--w", "3"), ("--guidance-interval", "0.1,1")):
        yield _case("others", [*SAMPLE, "--ckpt", "{IMG}", flag, value, "--out", "{W}/s"], (flag, "--guidance"))
        yield _case("others", [*TOY, "--label", "0", flag, value] + O, (flag, "--guidance"))
    for argv in ([*CLF], [*TOY, "--field", "mlp", "--train-steps", "2", "--hidden", "8", "--depth", "1"], [*NLL, "--field", "mlp", "--train-steps", "2"],
                 ["train", "--dump-config", "{W}/c.toml"], ["compare-solvers", *CMP[1:], "--field", "mlp", "--train-steps", "2"]):
        for lr in ("1e24", "1e6", "10"):
            yield _case("others", argv + ["--lr", lr] + (O if argv[0] != "train" else []), ("--lr", lr))
    for argv, flags in (([*NLL, "--field", "exact"], ("--rtol", "--atol")), ([*TOY, "--solver", "dopri5"], ("--rtol", "--atol")),
                        ([*SAMPLE, "--ckpt", "{IMG}", "--solver", "dopri5"], ("--rtol", "--atol")), (CMP, ("--ref-rtol", "--ref-atol"))):
        for flag in flags:
            for value in ("1e38", "10", "1e-30", "1e-20"):
                out = ["--out", "{W}/s"] if argv[0] == "sample" else O
                yield _case("others", argv + [flag, value] + out, (flag, value))
    yield _case("others", [*CMP[:-2], "--solvers", "dopri5", "--sampler-opt", "max_steps=10000000", "--ref-rtol", "1e-14", "--ref-atol", "1e-14"] + O,
                ("max_steps", "--ref-rtol"), legit=True, check=wrote("o/results.json"))
    yield _case("others", [*CMP[:-2], "--solvers", "dopri5", "--sampler-opt", "first_step=1e-300"] + O, ("first_step",), legit=True,
                check=wrote("o/results.json"))
    for extra in (["--overwrite"], ["--overwrite", "--steps", "3"]):
        yield _case("others", ["train", "--resume", "{W}/run", *extra], ("--overwrite", "--resume"), setup=_copy_run("AUDIT_IMG"))
    for fixture, argv in (("AUDIT_TOY", [*NLL, "--ckpt", "{W}/h.pt"] + O), ("AUDIT_TOY", [*CMP, "--ckpt", "{W}/h.pt"] + O),
                          ("AUDIT_IMG", [*SAMPLE, "--ckpt", "{W}/h.pt", "--out", "{W}/s"]), ("AUDIT_CLF", [*TOY, "--label", "0", "--guidance", "classifier",
                                                                                                 "--classifier-ckpt", "{W}/h.pt"] + O)):
        for where in (("meta", "process", "name"),):
            yield _case("others", argv, ("h.pt",), setup=_header_setup(fixture, where, "nope", False), legit=True,
                        check=HEADER_SANE[argv[0]], note=f"{fixture} process nope")
    yield _case("others", [*NLL[:1], "--ckpt", "{IMG}", "--n", "2", "--device", "cpu"] + O, ("moons", "image"), legit=True, check=nll_sane)
    yield _case("others", [*NLL[:1], "--ckpt", "{IMG}", "--dataset", "8gaussians", "--n", "2", "--device", "cpu"] + O, ("8gaussians",))


def _copy_run(fixture: str) -> Callable[[Path], None]:
    return lambda w: shutil.copytree(os.environ[fixture], w / "run")


# --------------------------------------------------------------------------- entry points


def cases() -> list[tuple]:
    out: list[tuple] = []
    for gen in (solver_option_cases, collision_cases, schedule_cases, cache_cases, header_cases, other_cases):
        out += list(gen())
    return out


def fixtures(base: Path, main: Callable, image_train: list) -> None:
    """A classifier, an image run with two checkpoints, the optimal-schedule cache of every
    cache command, and the headers of the runs the header cases damage (env ``AUDIT_*``)."""
    clf, img2, cache = base / "clf", base / "img2", base / "cache"
    main([*CLF, "--out", str(clf)])
    main([*image_train, "--steps", "2", "--checkpoint-every", "1", "--keep-checkpoints", "2", "--out", str(img2)])
    grids = {}
    for cmd, argv in CACHE_COMMANDS.items():
        main([*argv, "--out", str(cache), "--overwrite"])
        grids[cmd] = GRID_OF[cmd](cache)
    baselines = {}
    for area, argv, _, kw in solver_option_cases():
        if kw.get("note") == "defaults":
            out = base / "baseline"
            main([a.replace("{W}/o", str(out)) for a in argv] + ["--overwrite"])
            baselines[argv[argv.index("--solver") + 1]] = json.loads((out / "metrics.json").read_text())["sliced_w2"]
    os.environ.update(AUDIT_CLF=str(clf / "classifier.pt"), AUDIT_IMG2=str(img2), AUDIT_CACHE=str(cache / CACHE),
                      AUDIT_GRIDS=json.dumps(grids), AUDIT_BASELINES=json.dumps(baselines))
    for fixture in ("AUDIT_IMG", "AUDIT_TOY", "AUDIT_CLF"):
        run = Path(os.environ[fixture])
        newest = sorted((run / "checkpoints").glob("ckpt-*.pt"))[-1] if run.is_dir() else run
        raw = newest.read_bytes()
        if raw.startswith(MAGIC):
            (n,) = struct.unpack("<Q", raw[len(MAGIC): len(MAGIC) + 8])
            os.environ[f"{fixture}_HEADER"] = raw[len(MAGIC) + 8: len(MAGIC) + 8 + n].decode()
