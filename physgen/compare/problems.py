"""Problems for the solver comparison: what is integrated, from where, and how samples are scored.

A :class:`Problem` hands the comparison engine (:mod:`physgen.compare.run`) everything it
needs and nothing about solvers:

* ``process`` and ``field`` (float32; :meth:`Problem.reference_field` gives the same field
  evaluated in float64 for the reference solve),
* ``x0`` (the prior draws at ``schedule[0]``, one per sample) and ``noise`` (the per-sample
  :class:`~physgen.noise.SeededNoise` that stochastic samplers draw from), ``label``,
* :meth:`Problem.schedule` (the process's schedule for a step budget),
* :meth:`Problem.metrics` (sample quality against held-out reference data) and
  :meth:`Problem.metric_floor` (the same metrics between two independent reference sets:
  the noise floor of the metric at this sample size, or ``None``).

:class:`ToyProblem` builds a 2-D toy problem exactly as ``physgen toy`` does (same data
seeds, same process defaults from the data, same exact / analytic / MLP fields through
:func:`physgen.toy.build_field`), or loads a trained toy MLP from a checkpoint.
:class:`ImageProblem` rebuilds an image field from a ``physgen train`` checkpoint, or any
file :func:`physgen.pretrained.load` reads (an EDM / PFGM++ snapshot, a diffusers folder), lazily
(nothing is read until the comparison asks for the field) and scores samples with the
sliced W2 and MMD of the flattened pixels (plus FID when an Inception weights file is given).
:func:`load_problem_from_checkpoint` picks the right one from the checkpoint's contents.
"""
from __future__ import annotations

import copy
import math
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from .. import checkpoints
from ..config import jsonable
from ..errors import UserError
from ..metrics import default_bandwidths, mmd, sample_metrics, sliced_w2
from ..noise import SeededNoise
from ..sampling import grid

__all__ = [
    "Problem",
    "ToyProblem",
    "ImageProblem",
    "cast_field",
    "load_toy_checkpoint",
    "check_toy_header",
    "check_field_header",
    "save_toy_checkpoint",
    "load_problem_from_checkpoint",
    "REFERENCE_SEED_OFFSET",
]

from ..toy import REFERENCE_SEED_OFFSET, build_field, toy_checkpoint_meta, toy_data, toy_process
from ..nets.mlp import mlp_weight_floor, MLP
from ..processes import process_from_record
from ..images.train import check_image_header
from ..pretrained import detect_format, load as load_pretrained
from ..data import load_toy
from ..runtime import resolve_device
from ..training import rebuild_field
from ..images.data import load_image_dataset
from ..nets.inception import load_inception
from ..images.metrics import extract_features, feature_statistics, compute_fid, load_statistics
FLOOR_SEED_OFFSET = 2_000_029  # a second held-out set, for the metric's noise floor


def cast_field(field: Any, dtype: torch.dtype) -> Any:
    """The same field evaluated in ``dtype``.

    A network (``nn.Module``) is deep-copied and cast; closed-form fields (exact, analytic)
    already compute in the dtype of the query ``x`` (their data are cast per call), so they
    are returned as they are.
    """
    if isinstance(field, torch.nn.Module):
        return copy.deepcopy(field).to(dtype)
    return field


class Problem:
    """The base class: subclasses set the attributes below (or provide them as properties)."""

    kind: str = "problem"
    metric_names: tuple[str, ...] = ("sliced_w2", "mmd")
    process: Any
    field: Any
    x0: Tensor
    noise: SeededNoise
    label: Optional[Tensor] = None
    schedule_name: Optional[str] = None
    batch: Optional[int] = None  # solve in chunks of this many samples (None: all at once)
    cache_dir: Optional[str] = None  # where --schedule optimal caches its grids (the run folder)

    @property
    def device(self) -> torch.device:
        return self.x0.device

    @property
    def n_samples(self) -> int:
        return int(self.x0.shape[0])

    def schedule(self, steps: int, method: str = "heun", options: Optional[dict] = None) -> Tensor:
        """The grid of a ``steps`` budget for ``method`` (with its ``options``):
        :func:`physgen.sampling.grid`, the same discretisation as ``physgen toy`` and
        ``physgen sample`` (``schedule_name`` or the process's own; ``optimal`` is fitted to
        this problem's field and cached in ``cache_dir``)."""
        label = None if self.label is None else self.label[:1]
        return grid(self.process, int(steps), self.schedule_name, method=method, dim=int(self.x0[0].numel()), field=self.field,
                    cache_dir=self.cache_dir, shape=tuple(self.x0.shape[1:]), options=options, label=label)

    def schedule_description(self) -> str:
        return self.schedule_name or f"{self.process.default_schedule_name} (the process's default)"

    def reference_field(self) -> Any:
        """The field for the reference solve: the same field in float64."""
        return cast_field(self.field, torch.float64)

    def metrics(self, samples: Tensor) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def metric_floor(self) -> Optional[dict[str, float]]:
        return None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "process": {"name": self.process.name, **jsonable(self.process.config())}, "n_samples": self.n_samples,
                "device": str(self.device), "schedule": self.schedule_description()}

    @property
    def title(self) -> str:
        return self.process.name


# --------------------------------------------------------------------------- toy


class ToyProblem(Problem):
    """A 2-D (or any ``[n, d]``) toy problem: metrics are :func:`physgen.metrics.sample_metrics`
    of the samples against held-out data (sliced W2, MMD, energy distance, exact W2 when small)."""

    kind = "toy"
    metric_names = ("sliced_w2", "mmd", "energy", "exact_w2")

    def __init__(self, process, field, x0: Tensor, reference: Tensor, *, noise: Optional[SeededNoise] = None,
                 label: Optional[Tensor] = None, schedule_name: Optional[str] = None, floor_reference: Optional[Tensor] = None,
                 info: Optional[dict] = None):
        self.process, self.field, self.x0, self.reference = process, field, x0, reference
        self.noise = noise if noise is not None else SeededNoise(0, range(x0.shape[0]))
        if len(self.noise) != x0.shape[0]:
            raise ValueError(f"noise indexes {len(self.noise)} samples but x0 has {x0.shape[0]}")
        self.label, self.schedule_name, self.floor_reference = label, schedule_name, floor_reference
        self.info = dict(info or {})

    @classmethod
    def from_config(cls, config, *, ckpt: Optional[str] = None, out: Optional[str] = None, log_stream=None) -> "ToyProblem":
        """The problem ``physgen toy`` would sample for ``config`` (a :class:`physgen.toy.ToyConfig`).

        Data: ``n_data`` points drawn with ``seed`` (the exact field's charges and the MLP's
        training set), ``n_samples`` held-out points with ``seed + 1000003`` for the metrics
        (as ``physgen toy``), and a second held-out set for the metric floor.  ``ckpt``: a toy
        checkpoint (file or run dir) whose MLP is used instead of building ``config.field``.
        With ``field = "mlp"``, no ``ckpt`` and an ``out`` dir, the trained MLP is saved to
        ``out/checkpoints/ckpt-<step>.pt`` (reusable with ``--ckpt out``).
        """
        device = resolve_device(config.device)
        dataset = load_toy(config.dataset)
        data, labels, reference = toy_data(dataset, config, device)
        g_floor = torch.Generator(device=device).manual_seed(config.seed + FLOOR_SEED_OFFSET)
        floor = dataset.sample(config.n_samples, g_floor, device=device)
        info: dict[str, Any] = {"dataset": dataset.name, "field": config.field, "n_data": config.n_data, "seed": config.seed}
        if ckpt is not None:
            loaded = load_toy_checkpoint(ckpt, device)
            process, field = loaded["process"], loaded["field"]
            if process.name != config.process:
                raise UserError(f"--process {config.process} does not match the checkpoint's process {process.name!r} ({loaded['path']})")
            if loaded["dim"] != data.shape[1]:
                raise UserError(f"the checkpoint's network takes {loaded['dim']}-D points but dataset {dataset.name!r} is {data.shape[1]}-D")
            info.update(field="mlp", checkpoint=str(loaded["path"]), step=loaded["step"])
        else:
            process = toy_process(config, data)
            field, training = build_field(process, config.field, dataset, data, labels, config, device, log_stream)
            if training is not None:
                tail = training.losses[-50:]
                info["final_loss"] = float(sum(tail) / max(1, len(tail)))
                if out is not None:
                    info["checkpoint"] = str(save_toy_checkpoint(out, process, training, config))
        noise = SeededNoise(config.seed, range(config.n_samples))
        x0 = process.sample_prior((config.n_samples, data.shape[1]), noise=noise, device=device)
        label = None if config.label is None else torch.full((config.n_samples,), int(config.label), device=device, dtype=torch.long)
        problem = cls(process, field, x0, reference, noise=noise, label=label, schedule_name=config.schedule, floor_reference=floor, info=info)
        problem.data, problem.cache_dir = data, out
        return problem

    def metrics(self, samples: Tensor) -> dict[str, float]:
        return sample_metrics(samples, self.reference)

    def metric_floor(self) -> Optional[dict[str, float]]:
        if self.floor_reference is None:
            return None
        return sample_metrics(self.floor_reference, self.reference)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.info, "n_reference": int(self.reference.shape[0])}

    @property
    def title(self) -> str:
        extra = f" D={self.process.config()['D']}" if "D" in self.process.config() else ""
        return f"{self.process.name}{extra} / {self.info.get('field', '?')} field / {self.info.get('dataset', '?')}"


# --------------------------------------------------------------------------- checkpoints


def _mlp_spec_from_state(state: dict, path) -> dict:
    """The toy MLP's sizes read off its state dict (for checkpoints that do not record them)."""
    try:
        hidden, dim = state["net.inp.weight"].shape
        depth = len({k.split(".")[2] for k in state if k.startswith("net.blocks.")})
        embed_dim = int(state["net.embed.1.weight"].shape[1])
        out_dim = int(state["net.out.1.weight"].shape[0])
    except KeyError:
        raise UserError(f"checkpoint {str(path)!r}: its network is not a toy MLP (no net.inp / net.blocks weights)") from None
    label = state.get("net.label_embed.weight")
    return {"kind": "mlp", "dim": int(dim), "hidden": int(hidden), "depth": depth, "embed_dim": embed_dim,
            "num_classes": 0 if label is None else int(label.shape[0]) - 1, "out_dim": out_dim}


def check_toy_header(header: checkpoints.Header) -> None:
    """UserError naming the file unless its header can describe a toy MLP in this file: not an
    image network, a known process where it records one, and an MLP spec (where it records
    one) of no more weights than the file has room for.  Given to :func:`checkpoints.find`, so a
    run folder falls back past a checkpoint that fails it."""
    where = f"checkpoint {str(header.path)!r}"
    if header.meta.get("image"):
        raise UserError(f"{str(header.path)!r} holds an image network (physgen train), not a toy MLP")
    if "process" in header.meta:
        process_from_record(header.meta["process"], where)
    spec = (header.meta.get("toy") or {}).get("net")
    if spec:
        try:
            floor = mlp_weight_floor(spec["dim"], spec["hidden"], spec["depth"], spec.get("embed_dim", 64), spec.get("num_classes", 0),
                                     spec.get("out_dim"))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where}: its MLP spec {spec} is incomplete ({exc})") from None
        checkpoints.check_weights_fit(header.path, floor, "an MLP")


def check_field_header(header: checkpoints.Header) -> None:
    """:func:`physgen.images.train.check_image_header` for an image checkpoint, else :func:`check_toy_header`."""
    (check_image_header if header.meta.get("image") else check_toy_header)(header)


def load_toy_checkpoint(path, device=None, ema: bool = True) -> dict:
    """Rebuild a toy MLP field from a checkpoint: ``{process, field, dim, step, path, meta}``.

    ``path``: a file or a run dir (its newest checkpoint whose header passes
    :func:`check_toy_header` and that verifies).  The MLP's sizes come from ``meta["toy"]["net"]``
    when recorded (compare-solvers writes it), else from the shapes in the state dict; the
    process from the checkpoint's ``process`` entry.  The EMA weights are loaded unless ``ema=False``.
    """
    found = checkpoints.find(path, kind=("train", "toy-mlp"), check=check_toy_header)
    ckpt = checkpoints.read(found.path)
    weights = "ema" if ema and "ema" in ckpt.payload else "model"
    state = ckpt.payload.get(weights)
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {str(found.path)!r} has no {weights!r} weights")
    spec = (ckpt.meta.get("toy") or {}).get("net") or _mlp_spec_from_state(state, found.path)
    try:
        net = MLP(int(spec["dim"]), hidden=int(spec["hidden"]), depth=int(spec["depth"]), embed_dim=int(spec.get("embed_dim", 64)),
                  num_classes=int(spec.get("num_classes", 0)), out_dim=spec.get("out_dim"),
                  c_noise_unit=float(spec.get("c_noise_unit", 1.0)))  # older checkpoints: 1, as they were trained
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"checkpoint {str(found.path)!r}: its MLP spec {spec} is incomplete ({exc})") from None
    process, field = rebuild_field(ckpt, net, weights=weights, device=device or "cpu")
    return {"process": process, "field": field, "dim": int(spec["dim"]), "step": ckpt.step, "path": found.path, "meta": ckpt.meta}


def save_toy_checkpoint(out, process, training, config) -> Path:
    """Write the trained toy MLP as ``out/checkpoints/ckpt-<step>.pt`` (kind ``toy-mlp``: the
    weights a reload needs, the loss history, and its sizes in the header)."""
    meta = toy_checkpoint_meta(training.ema.net, config)
    process_spec = {"name": process.name, **jsonable(process.config())}
    state = {
        "step": int(training.step),
        "model": training.field.state_dict(),
        "ema": training.ema.state_dict(),
        "process": process_spec,
        "losses": [float(v) for v in training.losses],
        "meta": meta,
    }
    return checkpoints.save(out, state, kind="toy-mlp", step=int(training.step), meta={"process": process_spec, **meta})


# --------------------------------------------------------------------------- images


class ImageProblem(Problem):
    """An image field from a ``physgen train`` checkpoint, loaded on first use.

    Samples start from the process's prior at the checkpoint's image shape.  Metrics: the
    sliced W2 and MMD of the flattened pixels (``[-1, 1]``) against ``n_reference`` images
    of the dataset recorded in the checkpoint (CIFAR-10: the test split; datasets with no
    split: a random subset of the training images, drawn with ``seed + 1000003``), and
    ``fid`` when ``inception`` names a local Inception-v3 weights file (against the same
    reference images, or against the statistics file ``fid_ref``, e.g. of the 50k CIFAR-10
    training images, as the papers report FID).  A latent run (``train --latent``) integrates
    in the latent space (the reference-solution error is the latents'), and its samples are
    decoded before these metrics, against images at the autoencoder's resolution.
    """

    kind = "image"

    def __init__(self, ckpt, *, n_samples: int, seed: int = 0, device=None, dataset: Optional[str] = None,
                 n_reference: Optional[int] = None, inception: Optional[str] = None, label: Optional[int] = None,
                 schedule_name: Optional[str] = None, batch: Optional[int] = None, fid_ref: Optional[str] = None):
        foreign = detect_format(ckpt) != "physgen"  # an EDM / PFGM++ snapshot or a diffusers folder: read as it is
        self.path = Path(ckpt) if foreign else checkpoints.find(ckpt, kind="train").path
        self.seed, self._device, self.dataset_spec = int(seed), torch.device(device or "cpu"), dataset
        self._n_samples = int(n_samples)
        self.n_reference = int(n_reference or n_samples)
        self.inception, self.label_value, self.schedule_name, self.batch = inception, label, schedule_name, batch
        self.fid_ref = fid_ref  # reference statistics (.npz of physgen eval ref-stats): FID against them, not the held-out images
        if fid_ref is not None and not inception:
            raise UserError("--fid-ref needs --inception (the statistics are of Inception features)")
        self.noise = SeededNoise(self.seed, range(self._n_samples))

    @property
    def metric_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("sliced_w2", "mmd") + (("fid",) if self.inception else ())

    @cached_property
    def model(self):
        """The rebuilt field (:func:`physgen.pretrained.load`); read on first use."""
        return load_pretrained(self.path, device=self._device)

    @property
    def process(self):  # type: ignore[override]
        return self.model.process

    @property
    def field(self):  # type: ignore[override]
        return self.model.field

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def n_samples(self) -> int:
        return self._n_samples

    @cached_property
    def x0(self) -> Tensor:  # type: ignore[override]
        return self.process.sample_prior((self._n_samples, *self.model.shape), noise=self.noise, device=self._device)

    @cached_property
    def label(self) -> Optional[Tensor]:  # type: ignore[override]
        if self.label_value is None:
            return None
        if not self.model.num_classes:
            raise UserError(f"--label needs a class-conditional checkpoint; {str(self.path)!r} is unconditional")
        return torch.full((self._n_samples,), int(self.label_value), device=self._device, dtype=torch.long)

    @cached_property
    def reference(self) -> Tensor:
        """Held-out images, flattened ``[n_reference, C*H*W]``."""
        cfg = self.model.meta.get("config") or {}
        spec = self.dataset_spec or cfg.get("dataset")
        if not spec:
            raise UserError(f"{str(self.path)!r} does not record its dataset; pass --dataset (e.g. cifar10:PATH)")
        resolution = self.image_shape[-1]
        split = {"split": "test"} if str(spec).startswith("cifar10:") else {}
        data = load_image_dataset(spec, resolution, **split)
        g = torch.Generator().manual_seed(self.seed + REFERENCE_SEED_OFFSET)
        idx = torch.randperm(len(data), generator=g)[: self.n_reference]
        images = data.images[idx]
        if self.label_value is not None and data.labels is not None:
            keep = data.labels == int(self.label_value)
            images = data.images[keep][: self.n_reference]
        return images.reshape(images.shape[0], -1).to(torch.float64)

    @property
    def image_shape(self) -> tuple:
        """The shape of one image: the sample shape, or a latent run's decoded images'."""
        latent = self.model.latent
        return tuple(latent["image_shape"]) if latent else tuple(self.model.shape)

    @cached_property
    def _feature_net(self):
        return load_inception(self.inception, device=self._device)

    @cached_property
    def _reference_fid_stats(self):
        if self.fid_ref is not None:  # e.g. the 50k CIFAR-10 training images, the papers' protocol
            return load_statistics(self.fid_ref)
        images = self.reference.reshape(-1, *self.image_shape).float()
        return feature_statistics(extract_features(images, self._feature_net, device=self._device))

    def metrics(self, samples: Tensor) -> dict[str, float]:
        if self.model.decode is not None:  # a latent run: judge the decoded images (non-finite latents stay non-finite)
            bad = ~torch.isfinite(samples.reshape(samples.shape[0], -1)).all(1)
            samples = self.model.decode(samples.float().nan_to_num(0.0, 0.0, 0.0))
            samples[bad.to(samples.device)] = math.nan
        flat = samples.reshape(samples.shape[0], -1).to(torch.float64).cpu()
        ref = self.reference
        finite = torch.isfinite(flat).all(1)
        out = {"nonfinite": float((~finite).sum())}
        flat = flat[finite]
        if flat.shape[0] < 2:
            return {**out, "sliced_w2": math.nan, "mmd": math.nan}
        out["sliced_w2"] = sliced_w2(flat, ref)
        out["mmd"] = mmd(flat, ref, bandwidths=default_bandwidths(ref))
        if self.inception:
            out["fid"] = compute_fid(samples[finite].float().clamp(-1, 1), self._reference_fid_stats, self._feature_net, device=self._device)
        return out

    def describe(self) -> dict[str, Any]:
        cfg = self.model.meta.get("config") or {}
        return {**super().describe(), "checkpoint": str(self.model.path), "step": self.model.step, "shape": list(self.model.shape),
                "dataset": self.dataset_spec or cfg.get("dataset"), "n_reference": int(self.reference.shape[0]),
                "inception": self.inception, "fid_ref": self.fid_ref}

    @property
    def title(self) -> str:
        cfg = self.process.config()
        extra = f" D={cfg['D']}" if "D" in cfg else ""
        origin = f"U-Net step {self.model.step}" if self.model.step is not None else self.model.path.name
        return f"{self.process.name}{extra} / {origin} / {self.describe()['dataset']}"


def load_problem_from_checkpoint(ckpt, *, toy_config=None, out=None, log_stream=None, **image_options) -> Problem:
    """A :class:`ToyProblem` or an :class:`ImageProblem`, by what the checkpoint holds
    (``meta.image`` from ``physgen train``: an image problem; anything else: a toy MLP)."""
    if detect_format(ckpt) != "physgen" or checkpoints.find(ckpt, kind=("train", "toy-mlp")).header.meta.get("image"):
        return ImageProblem(ckpt, **image_options)
    if toy_config is None:
        raise UserError(f"{str(ckpt)!r} holds a toy network; toy options are needed to build its problem")
    return ToyProblem.from_config(toy_config, ckpt=ckpt, out=out, log_stream=log_stream)
