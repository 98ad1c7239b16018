"""Yukawa: the screened-Poisson member of GenPhys (Liu et al., arXiv 2304.02637).

Data ``y ∈ R^N`` is a charge sheet at ``z = 0`` in ``N+1`` dims and the field solves
``∂_z²φ + ∇²φ − m²φ = 0`` (dispersion ``ω = −i√(k² + m²)``).  As a density flow in ``z``,
``p = −2∂_zφ``, ``v = E_x/E_z``, ``R = −2m²φ = −κ p`` (deaths).  Everything below is
derived in GENPHYS.md and :mod:`physgen.kernels.nig`:

* **Kernel.**  The normalised density at height ``z`` around a charge is the
  Normal-Inverse-Gaussian law (α = m, β = 0, δ = z): ``x = y + √W ε``,
  ``W ~ IG(z/m, z²)``; its unnormalised mass is ``e^{−mz}``.  ``m → 0`` is PFGM's
  Cauchy kernel, ``m z → ∞`` a Gaussian of variance ``z/m`` (diffusion).
* **ODE.**  ``v = E_x/E_z = E[(x − y)/z | x, z]``: ``dx/dz = (x − D(x, z))/z`` with the
  denoiser ``D`` (a :class:`DenoiserProcess` with ``s = z``).
* **Noise level.**  Departure from GENPHYS.md's ``σ_eff = √(z/m)`` (the kernel's
  per-dimension std): this process uses ``σ(z) = z/√(1 + m z)``, which equals ``√(z/m)``
  when ``m z ≫ 1`` and ``z`` (PFGM++'s ``r = σ√D`` at D = 1) when ``m z ≪ 1``.  Reason: for
  small ``m z`` the variance ``z/m`` comes from rare tail draws, while the bulk has width
  ``~z`` (measured in 2-D: median radius / σ(z) stays in [1.17, 1.72] for m z from 1e-3 to
  1e3, median radius / √(z/m) falls to 0.05); ``√(z/m)`` would then pick ``z_max = m σ_max²`` far too
  small for the prior to forget the data and train at useless ``z``.  ``σ`` drives the EDM
  preconditioning, the loss weight, the training law (``ln σ ~ N(P_mean, P_std²)``, then
  ``z = z(σ) = σ(mσ + √(m²σ² + 4))/2``) and the schedule (EDM's ρ-schedule in σ mapped to z).
* **Prior.**  The NIG kernel at ``z_max = z(σ_max)`` around ``prior_mean`` (default the
  origin; set it to the data mean, GENPHYS.md).
* **Deaths.**  ``κ(x, z) = 2m²φ/p = (m/z) E[r K_ν(m r)/K_{ν+1}(m r) | x, z]``,
  ``ν = (N−1)/2``, ``r = √(‖x−y‖² + z²)``; exact for a point set
  (:class:`YukawaExactField`), learned by a second output for a network.
* **Sampling** (:meth:`Yukawa.offers`, sampling option ``birth_death``, ``--birth-death``):
  ``transport`` (default) integrates the birth-free radial-quantile transport flow, which
  follows the same normalised marginals ``q_z = p_data * k_z`` exactly (no weights, any ODE
  solver); ``smc`` and ``weights`` integrate the physical flow with births
  (the ``births`` row of the solver table, :func:`solvers.births`, Heun or Euler); ``off`` the physical flow alone.  Why transport is
  the default: the physical flow moves mass away from where the normalised density goes and
  the importance weights that correct it degenerate as ``m z_max`` grows (ESS/n 8e-4 at
  m = 0.1, z_max = 40 in 2-D, GENPHYS.md, reproduced in tests/test_yukawa_sampling.py;
  ``physgen experiment yukawa`` measures it across m).  Births stop at the last positive
  scale ``z_min = z(σ_min)`` and the last step is the denoising step ``x ← D(x, z_min)``:
  κ ≈ m r/z diverges as z → 0 for particles that have not reached the data.

Neural fields (:class:`YukawaNeuralField`) have up to three heads from one network call,
chosen by ``objective``: ``denoiser`` (D), ``births`` (D and the rate), ``transport`` (the
transport denoiser ``T = x − z u``), ``both`` (all three; default, so every sampling mode
works).  Loss per sample: ``λ(σ)‖D − y‖²`` (EDM), ``λ(σ)/h_0² ‖T − (x − h (x − y))‖²`` with the
radial speed ``h`` (regression on the conditional velocity: flow matching; the transport head
is ``T = (1 − h_0) x + h_0 D̃`` with ``D̃`` EDM-preconditioned and ``h_0 = h(0, m z)``
(:func:`physgen.kernels.nig.centre_speed`), so ``D̃`` stays denoiser-like at every z), and
``rate_weight · ((g − c)/s_c)²`` for the rate head ``g = κ/m`` against the per-pair target
``c = (r/z) K_ν/K_{ν+1}`` (``E_k[c] = 1``, ``s_c² ≈ Var_k(c)``, see
:func:`physgen.kernels.nig.rate_scale`).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..errors import UserError, unknown_name
from ..fields.exact import DEFAULT_CHUNK_ELEMS, ExactField, posterior_mean
from ..fields.kinds import expand_as_batch
from solvers.offers import BIRTH_MODES, BirthsOffer
from solvers.spec import Option

from ..kernels.nig import (
    NIGKernel,
    centre_speed,
    death_rate_pair,
    inverse_radial_speed,
    nig_log_profile,
    radial_speed,
    rate_scale,
    transport_log_profile,
)
from .base import DenoiserFlow, check_scale_range
from .gaussian import DenoiserProcess

__all__ = [
    "Yukawa",
    "YukawaExactField",
    "BirthFlow",
    "YukawaNeuralField",
    "TransportFlow",
    "TransportField",
    "BIRTH_DEATH_MODES",
    "OBJECTIVES",
]

BIRTH_DEATH_MODES = ("transport", "smc", "weights", "off")
OBJECTIVES = ("both", "births", "transport", "denoiser")
_HEADS = {"both": ("denoiser", "transport", "rate"), "births": ("denoiser", "rate"), "transport": ("transport",), "denoiser": ("denoiser",)}
_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_ONE) = 1


class Yukawa(DenoiserProcess):
    """Yukawa's GenPhys process with mass ``m`` (``--process yukawa --m M``); see the module doc."""

    name = "yukawa"
    network_kind = "denoiser"
    default_steps = 40  # the transport flow converges like 0.3/K in the left-mode weight of the 0.2/0.8 toy: 0.177 at 18 steps, 0.193 at 40
    sampling_options = (Option("birth_death", str, "transport", "transport (birth-free), smc, weights or off",
                               choices=BIRTH_DEATH_MODES),)

    def __init__(
        self,
        m: float = 1.0,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        rho: float = 7.0,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        prior_mean=None,
        objective: str = "both",
        rate_weight: float = 1.0,
    ):
        m = float(m)
        if not (m > 0 and math.isfinite(m)):
            raise UserError(f"Yukawa mass m must be a positive number, got m={m} (m -> 0 is PFGM: use a small m such as 1e-3)")
        check_scale_range("sigma_min", sigma_min, "sigma_max", sigma_max)
        if objective not in OBJECTIVES:
            raise unknown_name("Yukawa objective", objective, OBJECTIVES)
        if not rate_weight >= 0:
            raise UserError(f"rate_weight must be >= 0, got {rate_weight}")
        self.m = m
        self.kernel = NIGKernel(m)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        super().__init__(self.z_of_sigma(self.sigma_min), self.z_of_sigma(self.sigma_max), sigma_data, rho, prior_mean)
        self.set_training_law(p_mean, p_std)
        self.objective = objective
        self.rate_weight = float(rate_weight)

    # --- the z <-> σ map -----------------------------------------------------------
    def sigma_of_scale(self, z: Tensor) -> Tensor:
        """``σ(z) = z/√(1 + m z)`` (the module doc says why not ``√(z/m)``)."""
        return z / torch.sqrt(1.0 + self.m * z)

    def z_of_sigma(self, sigma):
        """Inverse of :meth:`sigma_of_scale`: ``z = σ(mσ + √(m²σ² + 4))/2`` (floats or tensors)."""
        m = self.m
        if isinstance(sigma, Tensor):
            return 0.5 * sigma * (m * sigma + torch.sqrt((m * sigma) ** 2 + 4.0))
        return 0.5 * sigma * (m * sigma + math.sqrt((m * sigma) ** 2 + 4.0))

    # --- training -------------------------------------------------------------------
    def sample_scales(self, n, *, generator=None, device=None) -> Tensor:
        sigma = self.draw_training_sigma(n, generator=generator, device=device, dtype=torch.float64)
        return self.z_of_sigma(sigma).float()

    def loss(self, field, y, *, generator=None, label=None) -> Tensor:
        # duck-typed: the trainer hands over a view of the field (DDP / compiled), not the field
        if getattr(field, "heads", None) is None:
            return super().loss(field, y, generator=generator, label=label)
        z = self.sample_scales(y.shape[0], generator=generator, device=y.device).to(y.dtype)
        x = self.perturb(y, z, generator=generator)
        out = field(x, z, label, outputs=True)  # through the module's forward: every head from one call
        lam = self.loss_weight(self.sigma_of_scale(z))
        b = y.shape[0]
        total = torch.zeros(b, device=y.device, dtype=y.dtype)
        diff = (x - y).reshape(b, -1)
        sq = diff.pow(2).sum(1)
        if "denoiser" in out:
            total = total + lam * (out["denoiser"] - y).reshape(b, -1).pow(2).mean(1)
        if "transport" in out:
            h = radial_speed(sq, z, self.m, diff.shape[1]).to(y.dtype)
            target = x - expand_as_batch(h, x) * (x - y)
            h0 = centre_speed(self.m * z, diff.shape[1])
            total = total + lam / h0**2 * (out["transport"] - target).reshape(b, -1).pow(2).mean(1)
        if "rate" in out:
            c = death_rate_pair(sq, z, self.m, diff.shape[1]) / self.m
            scale = rate_scale(self.m * z.double(), diff.shape[1]).to(y.dtype)
            total = total + self.rate_weight * ((out["rate"] / self.m - c) / scale).pow(2)
        return total

    # --- sampling -------------------------------------------------------------------
    def schedule_bounds(self) -> tuple[float, float]:
        """Schedules are laid out in the noise level ``σ(z)`` (EDM's ρ-schedule by default), then mapped to ``z``."""
        return self.sigma_min, self.sigma_max

    def from_schedule_space(self, sigma: Tensor) -> Tensor:
        return self.z_of_sigma(sigma)

    def exact_field(self, points: Tensor, labels: Optional[Tensor] = None) -> "YukawaExactField":
        return YukawaExactField(points, self.m, point_labels=labels)

    def precondition(self, net: nn.Module, sigma_data: Optional[float] = None) -> "YukawaNeuralField":
        """Wrap ``net`` with the heads of ``objective``.

        The network must output ``network_out_dim(N)`` numbers per sample (build it so:
        ``MLP(N, out_dim=process.network_out_dim(N))``, as ``physgen toy`` does); a network
        that declares another ``out_dim`` is refused.  The network is not altered here.
        """
        sd = self.sigma_data if sigma_data is None else sigma_data
        heads = _HEADS[self.objective]
        dim, out_dim = getattr(net, "dim", None), getattr(net, "out_dim", None)
        if dim is not None and out_dim is not None and out_dim != self.network_out_dim(int(dim)):
            raise UserError(f"Yukawa objective {self.objective!r} needs a network with out_dim={self.network_out_dim(int(dim))} "
                            f"(heads: {', '.join(heads)}), got out_dim={out_dim}")
        return YukawaNeuralField(net, self.m, sd, self.sigma_of_scale, heads)

    def network_out_dim(self, n_dim: int) -> int:
        """Outputs per sample the network needs for ``objective`` in ``n_dim`` dimensions."""
        heads = _HEADS[self.objective]
        return n_dim * sum(h != "rate" for h in heads) + ("rate" in heads)

    # the field's two answers: the physical flow with its death rate, and the transport flow
    def velocity_and_rate(self, field, x: Tensor, z: Tensor, label: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """``(dx/dz, κ)`` from one field evaluation (``κ`` shaped ``[B]``)."""
        fn = getattr(field, "denoise_and_rate", None)
        if fn is None:
            raise UserError(
                "births need a field that gives the death rate κ: the exact field, or an MLP trained with "
                f"objective 'both' or 'births' (this field is {type(field).__name__}, kind {getattr(field, 'kind', '?')!r})"
            )
        d, kappa = fn(x, z, label)
        return (x - d) / expand_as_batch(z, x), kappa

    def transport_flow(self, field, label: Optional[Tensor] = None) -> "TransportFlow":
        """The birth-free flow ``dx/dz = (x − T(x, z))/z`` (a denoiser-form flow)."""
        if getattr(field, "kind", None) != "transport" and not callable(getattr(field, "transport_denoise", None)):
            raise UserError(
                "--birth-death transport needs a field that gives the transport velocity: the exact field, or an MLP "
                f"trained with objective 'both' or 'transport' (this one is a {getattr(field, 'kind', '?')!r} field); "
                "or use --birth-death smc, weights or off"
            )
        return TransportFlow(field, label)

    def capabilities(self, birth_death: str = "transport", **modes) -> frozenset:
        return frozenset({"births"}) if birth_death in BIRTH_MODES[:2] else frozenset({"flow", "denoiser"})

    def offers(self, field, label=None, birth_death: str = "transport", **modes) -> dict:
        """By ``birth_death`` mode (module docstring): ``transport`` offers the birth-free
        transport flow to every ODE solver, ``off`` the physical flow alone, ``smc`` and
        ``weights`` the physical flow with its death rate to the ``births`` sampler."""
        if birth_death in BIRTH_MODES[:2]:
            return {"births": BirthFlow(self, field, label, birth_death)}
        flow = self.transport_flow(field, label) if birth_death == "transport" else self.flow(field, label)
        return {"flow": flow, "denoiser": flow}

    def config(self) -> dict:
        return {
            "m": self.m, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "sigma_data": self.sigma_data,
            "rho": self.rho, "p_mean": self.p_mean, "p_std": self.p_std, "prior_mean": self.prior_mean,
            "objective": self.objective, "rate_weight": self.rate_weight,
        }


class BirthFlow(BirthsOffer):
    """The births offer (:class:`solvers.offers.BirthsOffer`): ``(dx/dz, κ)`` from one field
    evaluation, with the mean rate ``m`` as the log-weight offset and the mode to sample in;
    the births sampler runs it, stepped by Heun (``--solver heun``, its default) or Euler."""

    def __init__(self, process: "Yukawa", field, label, mode: str):
        self.process, self.field, self.label, self.mode = process, field, label, mode
        self.rate_offset = process.m

    def __call__(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.process.velocity_and_rate(self.field, x, z, self.label)


class YukawaExactField(ExactField):
    """Exact Yukawa fields of a point set: the denoiser, the death rate and the transport denoiser.

    * ``field(x, z)`` = ``D = E[y | x, z]`` (posterior weights ``∝ k_z(x − y_i)``);
    * ``denoise_and_rate(x, z)`` = ``(D, κ)`` in one pass (``posterior_mean``'s ``pair_value``);
    * ``transport_denoise(x, z)`` = ``T = x − z u`` with the marginal transport velocity
      ``u = Σ w_i h_i (x − y_i)/z``, from one pass with weights ``w h`` and pair value
      ``1/h``: ``E_w[h] = 1/E_{wh}[1/h]`` and ``E_w[h y] = E_w[h] E_{wh}[y]``.
    """

    kind = "denoiser"

    def __init__(self, points: Tensor, m: float, *, point_labels: Optional[Tensor] = None, chunk_elems: int = DEFAULT_CHUNK_ELEMS):
        self.m = float(m)
        self.n_dim = int(points[0].numel())
        super().__init__(points, partial(nig_log_profile, m=self.m, n_dim=self.n_dim), point_labels=point_labels, chunk_elems=chunk_elems)

    def _mean(self, x, z, label, log_profile, pair_value):
        points = self.points.to(device=x.device, dtype=x.dtype)
        labels = None if self.point_labels is None else self.point_labels.to(x.device)
        if label is not None:
            label = torch.as_tensor(label, device=x.device)
            if label.ndim == 0:
                label = label.expand(x.shape[0])
        return posterior_mean(x, points, z, log_profile, point_labels=labels, label=label, pair_value=pair_value, chunk_elems=self.chunk_elems)

    def denoise_and_rate(self, x: Tensor, z: Tensor, label: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._mean(x, z, label, self.log_profile, partial(death_rate_pair, m=self.m, n_dim=self.n_dim))

    def death_rate(self, x: Tensor, z: Tensor, label: Optional[Tensor] = None) -> Tensor:
        return self.denoise_and_rate(x, z, label)[1]

    def transport_denoise(self, x: Tensor, z: Tensor, label: Optional[Tensor] = None) -> Tensor:
        mean_wh, inv_h = self._mean(
            x, z, label, partial(transport_log_profile, m=self.m, n_dim=self.n_dim), partial(inverse_radial_speed, m=self.m, n_dim=self.n_dim)
        )
        h_bar = expand_as_batch(1.0 / inv_h, x)
        return x - h_bar * (x - mean_wh)


class TransportField:
    """A field of kind ``transport``: ``T(x, z) = x − z u(x, z)`` from a field that offers it."""

    kind = "transport"

    def __init__(self, field):
        if not callable(getattr(field, "transport_denoise", None)):
            raise UserError(f"{type(field).__name__} gives no transport velocity")
        self.field = field

    def __call__(self, x: Tensor, z: Tensor, label: Optional[Tensor] = None) -> Tensor:
        return self.field.transport_denoise(x, z, label)

    def transport_denoise(self, x: Tensor, z: Tensor, label: Optional[Tensor] = None) -> Tensor:
        return self.field.transport_denoise(x, z, label)


class TransportFlow(DenoiserFlow):
    """``dx/dz = (x − T(x, z))/z``: the birth-free transport of Yukawa's normalised marginals."""

    def __init__(self, field, label: Optional[Tensor] = None):
        self.field, self.label = field, label
        fn = getattr(field, "transport_denoise", None)
        self._t = fn if callable(fn) else field

    def denoise(self, x: Tensor, s: Tensor) -> Tensor:
        return self._t(x, s, self.label)

    def __call__(self, x: Tensor, s: Tensor) -> Tensor:
        return (x - self.denoise(x, s)) / expand_as_batch(s, x)


class YukawaNeuralField(nn.Module):
    """A network with up to three heads from one call: ``D``, ``T`` (EDM-preconditioned at
    ``σ(z)``) and the rate ``κ = m g``, ``g = softplus(log(e−1) + s_c(mz) F_g)`` (``g = 1``, the
    kernel mean of the target, at a zero output; ``s_c`` from :func:`rate_scale`).  Its
    ``kind`` is ``denoiser`` when it has a D head, else ``transport``."""

    def __init__(self, net: nn.Module, m: float, sigma_data: float, sigma_of_scale, heads: Sequence[str]):
        super().__init__()
        self.net = net
        self.m, self.sigma_data = float(m), float(sigma_data)
        self.sigma_of_scale = sigma_of_scale
        self.heads = tuple(heads)

    @property
    def kind(self) -> str:
        return "denoiser" if "denoiser" in self.heads else "transport"

    @property
    def num_classes(self) -> int:
        return int(getattr(self.net, "num_classes", 0))

    def outputs(self, x: Tensor, z: Tensor, label: Optional[Tensor] = None) -> dict:
        if z.ndim != 1 or z.shape[0] != x.shape[0]:
            raise ValueError(f"scale must be shaped [B] = [{x.shape[0]}], got {tuple(z.shape)}")
        z = z.to(x.dtype)
        sigma = self.sigma_of_scale(z)
        sd2 = self.sigma_data**2
        sig = expand_as_batch(sigma, x)
        c_skip = sd2 / (sig**2 + sd2)
        c_out = sig * self.sigma_data / (sig**2 + sd2).sqrt()
        c_in = 1.0 / (sig**2 + sd2).sqrt()
        raw = self.net(c_in * x, (sigma.log() / 4).to(x.dtype), label).reshape(x.shape[0], -1)
        n = x[0].numel()
        out, col = {}, 0
        for head in self.heads:
            if head == "rate":
                scale = rate_scale(self.m * z.double(), n).to(x.dtype)
                out["rate"] = self.m * nn.functional.softplus(_SOFTPLUS_ONE + scale * raw[:, col])
                col += 1
            else:
                d = c_skip * x + c_out * raw[:, col : col + n].reshape(x.shape)
                if head == "transport":  # T = (1 − h0) x + h0 D̃: D̃ is denoiser-like, bounded
                    h0 = expand_as_batch(centre_speed(self.m * z, n), x)
                    d = (1.0 - h0) * x + h0 * d
                out[head] = d
                col += n
        return out

    def forward(self, x: Tensor, z: Tensor, label: Optional[Tensor] = None, outputs: bool = False):
        """The main head (``D``, or ``T`` for a transport-only network); ``outputs=True``: all heads (a dict)."""
        out = self.outputs(x, z, label)
        return out if outputs else out["denoiser" if "denoiser" in self.heads else "transport"]

    def denoise_and_rate(self, x: Tensor, z: Tensor, label: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if "rate" not in self.heads:
            raise UserError("this Yukawa network has no rate head: train it with objective 'both' or 'births' for births")
        out = self.outputs(x, z, label)
        return out["denoiser"], out["rate"]

    def transport_denoise(self, x: Tensor, z: Tensor, label: Optional[Tensor] = None) -> Tensor:
        if "transport" not in self.heads:
            raise UserError("this Yukawa network has no transport head: train it with objective 'both' or 'transport'")
        return self.outputs(x, z, label)["transport"]
