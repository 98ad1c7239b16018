"""What ``physgen compare-solvers`` solves, built by the library: :class:`ProblemConfig` (the
command's problem flags, one to one) -> :func:`build_problem` -> a :class:`~physgen.compare.Problem`,
and :func:`compare_solvers`, the command's one library call (build, compare, write the outputs).

The problem is a toy problem built exactly as ``physgen toy`` builds it (:class:`ToyProblem`, from
a :class:`physgen.toy.ToyConfig`), or, with ``ckpt``, the network of a toy checkpoint or of an image
checkpoint of ``physgen train`` (:class:`ImageProblem`); the process and its options then come from
the checkpoint, and giving them again is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .. import checkpoints
from ..errors import UserError, unknown_name
from ..runtime import resolve_device
from ..pretrained import detect_format
from ..toy import FIELDS, ToyConfig
from .problems import ImageProblem, Problem, ToyProblem, check_field_header
from .run import Comparison, compare, write_outputs

__all__ = ["ProblemConfig", "build_problem", "compare_solvers"]


@dataclass
class ProblemConfig:
    """The problem ``physgen compare-solvers`` solves (its flags of the same names; ``None``: the
    default, or the checkpoint's).  ``out`` is the run folder (``--schedule optimal`` caches its grids
    there; a toy MLP trained here is checkpointed there)."""

    process: Optional[str] = None
    process_options: dict = field(default_factory=dict)
    dataset: Optional[str] = None
    field: str = "exact"
    ckpt: Optional[str] = None
    n_data: int = 5000
    n_samples: int = 1000
    seed: int = 0
    device: str = "auto"
    label: Optional[int] = None
    train_steps: int = 2000
    batch: int = 512
    lr: float = 2e-3
    hidden: int = 256
    depth: int = 3
    schedule: Optional[str] = None
    solve_batch: Optional[int] = None
    inception: Optional[str] = None
    fid_ref: Optional[str] = None
    out: str = "runs/compare-solvers"


def build_problem(config: ProblemConfig, log_stream=None) -> Problem:
    """The :class:`~physgen.compare.Problem` ``config`` describes (module docstring); every bad value
    one line naming its flag (:class:`~physgen.errors.UserError`)."""
    if config.field not in FIELDS:
        raise unknown_name("field", config.field, FIELDS)
    for name in ("n_samples", "n_data"):
        if getattr(config, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {getattr(config, name)}")
    if config.solve_batch is not None and config.solve_batch <= 0:
        raise UserError(f"--solve-batch must be > 0, got {config.solve_batch}")
    process, dataset = config.process, config.dataset
    if config.ckpt is not None:
        if any(v is not None for v in config.process_options.values()):
            raise UserError("process options (--D, --sigma-*, --m, --process-opt) come from the checkpoint; drop them with --ckpt")
        foreign = detect_format(config.ckpt) != "physgen"  # an EDM / PFGM++ snapshot or a diffusers folder (physgen.pretrained)
        meta = {"image": True} if foreign else checkpoints.find(config.ckpt, kind=("train", "toy-mlp"), check=check_field_header).header.meta
        stored = (meta.get("process") or {}).get("name")
        if process is not None and stored is not None and process != stored:
            raise UserError(f"--process {process} does not match the checkpoint's process {stored!r}")
        if meta.get("image"):
            problem = ImageProblem(config.ckpt, n_samples=config.n_samples, seed=config.seed, device=resolve_device(config.device),
                                   dataset=dataset, inception=config.inception, label=config.label, schedule_name=config.schedule,
                                   batch=config.solve_batch, fid_ref=config.fid_ref)
            if process is not None and problem.process.name != process:
                raise UserError(f"--process {process} does not match the checkpoint's process {problem.process.name!r}")
            problem.cache_dir = config.out  # --schedule optimal caches its grids here
            return problem
        process = process or stored
        dataset = dataset or (meta.get("toy") or {}).get("dataset")
    if config.fid_ref is not None:
        raise UserError("--fid-ref applies to image checkpoints (--ckpt of an image model)")
    toy = ToyConfig(
        process=process or "edm", dataset=dataset or "moons", field="mlp" if config.ckpt else config.field, n_data=config.n_data,
        train_steps=config.train_steps, batch=config.batch, lr=config.lr, hidden=config.hidden, depth=config.depth,
        schedule=config.schedule, n_samples=config.n_samples, seed=config.seed, device=config.device,
        process_options=config.process_options, label=config.label,
    )
    problem = ToyProblem.from_config(toy, ckpt=config.ckpt, out=config.out, log_stream=log_stream)
    problem.batch = config.solve_batch
    return problem


def compare_solvers(config: ProblemConfig, solvers: Optional[Sequence[str]], steps: Sequence[int], *, ref_rtol: float = 1e-9,
                    ref_atol: float = 1e-9, check_reference: bool = True, options: Optional[dict] = None,
                    log: Optional[Callable[[str], None]] = None, log_stream=None) -> tuple[Problem, Comparison, list[Path]]:
    """``physgen compare-solvers`` as one call: the problem of ``config`` (:func:`build_problem`),
    every solver at every budget on it (:func:`physgen.compare.run.compare`) and its table and figures
    written into ``config.out`` (:func:`physgen.compare.run.write_outputs`)."""
    problem = build_problem(config, log_stream=log_stream)
    result = compare(problem, solvers, steps, ref_rtol=ref_rtol, ref_atol=ref_atol, check_reference=check_reference,
                     options=options, log=log)
    return problem, result, write_outputs(result, config.out, problem.title)
