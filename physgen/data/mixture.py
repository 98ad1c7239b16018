"""Isotropic Gaussian mixtures: sampling, exact log-density and score, a JSON file format.

A mixture of ``K`` isotropic components in ``N`` dimensions,

    p(x) = sum_k w_k N(x; m_k, s_k^2 I_N),

    log N(x; m, s^2 I) = -|x - m|^2 / (2 s^2) - N log s - (N/2) log(2 pi).

``log_prob`` evaluates ``log p`` with a log-sum-exp over components; ``score`` is the closed
form

    grad log p(x) = sum_k r_k(x) (m_k - x) / s_k^2,   r_k(x) = w_k N(x; m_k, s_k^2 I) / p(x),

(``r`` are the posterior responsibilities, :meth:`GaussianMixture.responsibilities`).

Gaussian processes keep a mixture a mixture: if ``y ~ p`` and ``x = a y + b eps`` with
``eps ~ N(0, I)``, then ``x`` is the mixture with means ``a m_k`` and stds
``sqrt(a^2 s_k^2 + b^2)`` (:meth:`GaussianMixture.perturbed`), which gives the analytic
diffusion score of a mixture at every noise level.

File format (``from_json`` / ``to_json``)::

    {"means": [[x, y], ...], "stds": [s, ...], "weights": [w, ...]}

``weights`` may be omitted (equal weights); they are normalised to sum to one.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..config import read_json
from ..io import write_json

__all__ = ["GaussianMixture", "two_mode_mixture", "ncsn_mixture"]

PathLike = Union[str, os.PathLike]

# Rows of x per block when forming the [B, K, N] differences: keeps memory bounded.
_ELEMENTS_PER_CHUNK = 1 << 22


def _as_float64(value: Any, name: str) -> Tensor:
    if isinstance(value, Tensor):
        t = value.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise UserError(f"Gaussian mixture {name} must be numbers, got {value!r}") from exc
        t = torch.from_numpy(arr.copy())
    return t


@dataclass(eq=False)
class GaussianMixture:
    """``p(x) = sum_k weights[k] N(x; means[k], stds[k]^2 I)``.

    Attributes are float64 CPU tensors: ``means [K, N]``, ``stds [K]``, ``weights [K]``
    (normalised on construction).  Construction validates shapes (``stds`` and ``weights``
    have one entry per row of ``means``), finiteness, ``stds > 0``, ``weights >= 0`` with a
    positive sum, and raises :class:`~physgen.errors.UserError` naming the offending value.
    ``weights=None`` means equal weights.
    """

    means: Tensor
    stds: Tensor
    weights: Optional[Tensor] = None

    def __post_init__(self) -> None:
        means = _as_float64(self.means, "means")
        stds = _as_float64(self.stds, "stds")
        if means.ndim != 2 or means.shape[0] == 0 or means.shape[1] == 0:
            raise UserError(
                f"Gaussian mixture means must be a non-empty [K, N] array, got shape {tuple(means.shape)}"
            )
        k = means.shape[0]
        if stds.ndim == 0:
            stds = stds.expand(k).clone()
        if stds.shape != (k,):
            raise UserError(
                f"Gaussian mixture stds must have one entry per component (K={k}), got shape {tuple(stds.shape)}"
            )
        if self.weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
        else:
            weights = _as_float64(self.weights, "weights")
            if weights.shape != (k,):
                raise UserError(
                    f"Gaussian mixture weights must have one entry per component (K={k}), "
                    f"got shape {tuple(weights.shape)}"
                )
        if not torch.isfinite(means).all():
            raise UserError(f"Gaussian mixture means must be finite, got {means.tolist()}")
        bad = [s for s in stds.tolist() if not (math.isfinite(s) and s > 0)]
        if bad:
            raise UserError(f"Gaussian mixture stds must be finite and > 0, got {bad[0]!r}")
        bad = [w for w in weights.tolist() if not (math.isfinite(w) and w >= 0)]
        if bad:
            raise UserError(f"Gaussian mixture weights must be finite and >= 0, got {bad[0]!r}")
        total = float(weights.sum())
        if not total > 0:
            raise UserError(f"Gaussian mixture weights must not all be zero, got {weights.tolist()}")
        self.means = means
        self.stds = stds
        self.weights = weights / total

    # ------------------------------------------------------------------ shape
    @property
    def dim(self) -> int:
        """``N``, the dimension of a sample."""
        return int(self.means.shape[1])

    @property
    def num_components(self) -> int:
        """``K``."""
        return int(self.means.shape[0])

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.num_components}, N={self.dim})"

    # --------------------------------------------------------------- sampling
    def sample(
        self,
        n: int,
        generator: torch.Generator,
        device: Optional[Union[str, torch.device]] = None,
        dtype: torch.dtype = torch.float32,
        return_labels: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Draw ``n`` samples ``[n, N]`` (and the component index of each, ``long [n]``).

        The component is drawn by inverse CDF, ``k = #{j : c_j <= u}`` with ``u ~ U[0, 1)``
        and ``c`` the cumulative weights, then ``x = m_k + s_k eps``, ``eps ~ N(0, I)``.
        Draws happen in float64 on the generator's device, so the result does not depend on
        ``device`` or ``dtype``; ``device=None`` returns it on the generator's device.
        """
        n = _check_count(n)
        gdev = generator.device
        u = torch.rand(n, generator=generator, device=gdev, dtype=torch.float64)
        eps = torch.randn(n, self.dim, generator=generator, device=gdev, dtype=torch.float64)
        cdf = torch.cumsum(self.weights, 0).to(gdev)
        labels = torch.searchsorted(cdf, u, right=True).clamp_(max=self.num_components - 1)
        # A zero-weight component can only be hit through rounding at the top of the CDF.
        x = self.means.to(gdev)[labels] + self.stds.to(gdev)[labels, None] * eps
        out_dev = gdev if device is None else torch.device(device)
        x = x.to(device=out_dev, dtype=dtype)
        if return_labels:
            return x, labels.to(out_dev)
        return x

    # --------------------------------------------------------------- density
    def _log_joint(self, x: Tensor) -> Tensor:
        """``log w_k + log N(x; m_k, s_k^2 I)``, shaped ``[B, K]``, in ``x``'s dtype."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise UserError(f"expected points shaped [B, {self.dim}], got {tuple(x.shape)}")
        dtype = x.dtype if x.is_floating_point() else torch.float64
        x = x.to(dtype)
        means = self.means.to(x.device, dtype)
        stds = self.stds.to(x.device, dtype)
        const = torch.log(self.weights.to(x.device, dtype)) - self.dim * torch.log(stds) \
            - 0.5 * self.dim * math.log(2 * math.pi)
        rows = max(1, _ELEMENTS_PER_CHUNK // (self.num_components * self.dim))
        parts = []
        for start in range(0, x.shape[0], rows):
            xb = x[start:start + rows]
            sq = ((xb[:, None, :] - means[None]) ** 2).sum(-1)
            parts.append(const - 0.5 * sq / stds ** 2)
        if not parts:
            return x.new_zeros(0, self.num_components)
        return torch.cat(parts)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` for ``x [B, N]`` -> ``[B]`` (log-sum-exp over components).

        Computed in ``x``'s floating dtype (float64 for integer input) and differentiable.
        """
        return torch.logsumexp(self._log_joint(x), dim=-1)

    def responsibilities(self, x: Tensor) -> Tensor:
        """Posterior component probabilities ``r_k(x)``, ``[B, K]`` (rows sum to one)."""
        return torch.softmax(self._log_joint(x), dim=-1)

    def score(self, x: Tensor) -> Tensor:
        """``grad_x log p(x) = sum_k r_k(x) (m_k - x) / s_k^2``, shaped like ``x``."""
        r = self.responsibilities(x)
        x = x.to(r.dtype)
        means = self.means.to(x.device, x.dtype)
        inv_var = self.stds.to(x.device, x.dtype) ** -2
        # sum_k r_k (m_k - x)/s_k^2 = (r/s^2) @ m - x * sum_k r_k/s_k^2
        rw = r * inv_var
        return rw @ means - x * rw.sum(-1, keepdim=True)

    def perturbed(self, sigma: float, alpha: float = 1.0) -> "GaussianMixture":
        """The law of ``alpha * y + sigma * eps`` for ``y ~ self``, ``eps ~ N(0, I)``.

        Means ``alpha m_k``, stds ``sqrt(alpha^2 s_k^2 + sigma^2)``, same weights.
        """
        return GaussianMixture(
            self.means * alpha,
            torch.sqrt(alpha ** 2 * self.stds ** 2 + float(sigma) ** 2),
            self.weights.clone(),
        )

    # ------------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        return {
            "means": self.means.tolist(),
            "stds": self.stds.tolist(),
            "weights": self.weights.tolist(),
        }

    @classmethod
    def from_dict(cls, obj: Any, source: str = "Gaussian mixture") -> "GaussianMixture":
        """Build from ``{"means": [[...], ...], "stds": [...], "weights": [...]}``.

        Errors are :class:`UserError` naming ``source`` (usually the file path) and the key.
        """
        if not isinstance(obj, dict):
            raise UserError(f"{source}: expected a JSON object with keys 'means', 'stds', 'weights', "
                            f"got {type(obj).__name__}")
        unknown = sorted(set(obj) - {"means", "stds", "weights"})
        if unknown:
            raise UserError(f"{source}: unknown key {unknown[0]!r}; valid: means, stds, weights")
        for key in ("means", "stds"):
            if key not in obj:
                raise UserError(f"{source}: missing key {key!r}")
        means = _json_array(obj["means"], "means", source, ndim=2)
        k = means.shape[0]
        stds = _json_array(obj["stds"], "stds", source, ndim=1, length=k)
        weights = None
        if obj.get("weights") is not None:
            weights = _json_array(obj["weights"], "weights", source, ndim=1, length=k)
        try:
            return cls(means, stds, weights)
        except UserError as exc:
            raise UserError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, path: PathLike) -> "GaussianMixture":
        """Read the JSON file format of the module docstring."""
        path = Path(path)
        # one strict JSON reader: overflowing numbers (1e400), NaN and absurd nesting are one line naming the file
        return cls.from_dict(read_json(path, what="mixture file"), f"mixture file {str(path)!r}")

    def to_json(self, path: PathLike) -> None:
        """Write the JSON file format (atomically)."""
        write_json(path, self.to_dict())


def _numeric_leaves(value: Any) -> bool:
    if isinstance(value, list):
        return all(_numeric_leaves(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_array(value: Any, key: str, source: str, ndim: int, length: Optional[int] = None) -> np.ndarray:
    try:
        if not _numeric_leaves(value):
            raise TypeError
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{source}: key {key!r} must be a {'list of lists' if ndim == 2 else 'list'} "
                        f"of numbers, got {value!r}") from None
    if arr.ndim != ndim or (ndim == 2 and (arr.shape[0] == 0 or arr.shape[1] == 0)) or arr.size == 0:
        want = "[K, N] list of lists" if ndim == 2 else "list of K numbers"
        raise UserError(f"{source}: key {key!r} must be a non-empty {want}, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise UserError(f"{source}: key {key!r} has {arr.shape[0]} entries but 'means' has {length} components")
    return arr


def _check_count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise UserError(f"number of samples must be a non-negative integer, got {n!r}")
    return int(n)


def two_mode_mixture() -> GaussianMixture:
    """``0.2 N((-2, 0), 0.3^2 I) + 0.8 N((2, 0), 0.3^2 I)``: the two-mode test mixture."""
    return GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), torch.tensor([0.3, 0.3]),
                           torch.tensor([0.2, 0.8]))


def ncsn_mixture() -> GaussianMixture:
    """``0.8 N((5, 5), I) + 0.2 N((-5, -5), I)``: NCSN's toy (Song & Ermon 2019, §3.2)."""
    return GaussianMixture(torch.tensor([[5.0, 5.0], [-5.0, -5.0]]), torch.tensor([1.0, 1.0]),
                           torch.tensor([0.8, 0.2]))
