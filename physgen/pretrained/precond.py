"""The preconditionings of networks trained elsewhere: EDM's Table 1 rows (arXiv 2206.00364).

A foreign network ``F`` is only meaningful with the preconditioning it was trained under.
EDM writes every one as ``D(x̄; σ) = c_skip(σ) x̄ + c_out(σ) F(c_in(σ) x̄; c_noise(σ))`` with
``x̄ = y + σ n`` in the data scale (Table 1):

============  ==========  ==================  ======================  ==========================================
preconditioner  c_skip      c_out               c_in                    c_noise
============  ==========  ==================  ======================  ==========================================
VP            1           -σ                  1/√(σ²+1)               (M-1) t(σ), ``t`` the VP time of σ
VE            1           σ                   1                       ln(σ/2)
iDDPM         1           -σ                  1/√(σ²+1)               M-1-j(σ), ``j`` the nearest level ``u_j``
EDM           σ_d²/(σ²+σ_d²)  σσ_d/√(σ²+σ_d²)  1/√(σ²+σ_d²)         ln(σ)/4
============  ==========  ==================  ======================  ==========================================

PFGM++ (arXiv 2302.04265) trains EDM's row at ``σ = r/√D`` (its ``EDMPrecond`` with
``pfgmpp=True``), so it is the EDM row on the σ scale of :class:`physgen.processes.PFGMpp`.

Each class here is a physgen preconditioning (:mod:`physgen.fields.neural`): it maps the
process's scale ``s`` to the row above and declares the ``kind`` it returns.  VP lives in
physgen's ``x = a x̄`` at time ``t``: there ``c_in x̄ = a x̄ = x`` and ``D = x̄ - σ F`` means
``F`` *is* the noise prediction ``ε(x, t)``, so :class:`VPPreconditioning` is an ``eps``
field ``F(x, (M-1) t)``.  ``use_fp16`` (EDM's option, recorded in the preconditioning and so
in an imported folder's header) runs ``F`` under float16 autocast on CUDA, as the original
runs it in float16 there (:func:`compute_dtype` is the plan); elsewhere (the CPU) ``F`` runs
in the input's dtype, float32 by default, as EDM does.  EDM casts the input and every
convolution's weights to float16 but keeps the noise embedding in float32 and the attention
softmax in float32; autocast also keeps group norms in float32 and runs the embedding's
linear layers in float16, so the two agree to float16 rounding, not bit for bit.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..fields.kinds import expand_as_batch
from ..fields.neural import DenoiserPreconditioning

__all__ = ["compute_dtype", "EDMPreconditioning", "VEPreconditioning", "VPPreconditioning", "IDDPMPreconditioning", "PRECONDITIONINGS"]


def compute_dtype(use_fp16: bool, device) -> Optional[torch.dtype]:
    """The dtype a foreign network ``F`` runs in: float16 for a ``use_fp16`` network on CUDA (EDM's
    rule), else ``None``: the input's own dtype (float32 on the CPU, whatever the flag)."""
    return torch.float16 if use_fp16 and torch.device(device).type == "cuda" else None


def _run(net: nn.Module, x_in: Tensor, c_noise: Tensor, label: Optional[Tensor], use_fp16: bool) -> Tensor:
    """``F(x_in, c_noise, label)``: float16 autocast where :func:`compute_dtype` says so, result in ``x_in``'s dtype."""
    if compute_dtype(use_fp16, x_in.device) == torch.float16:
        with torch.autocast("cuda", dtype=torch.float16):
            return net(x_in, c_noise, label).to(x_in.dtype)
    return net(x_in, c_noise, label)


class _Half:
    """``net`` seen through :func:`_run` (so :class:`DenoiserPreconditioning` runs it in float16 on CUDA)."""

    def __init__(self, net: nn.Module, use_fp16: bool):
        self.net, self.use_fp16 = net, use_fp16

    def __call__(self, x: Tensor, c_noise: Tensor, label: Optional[Tensor]) -> Tensor:
        return _run(self.net, x, c_noise, label, self.use_fp16)


class EDMPreconditioning(DenoiserPreconditioning):
    """EDM's row (and PFGM++'s at ``σ = r/√D``): physgen's own :class:`DenoiserPreconditioning`
    with EDM's float16 option."""

    name = "edm"

    def __init__(self, sigma_data: float = 0.5, use_fp16: bool = False):
        super().__init__(sigma_data)
        self.use_fp16 = bool(use_fp16)

    def __call__(self, net: nn.Module, x: Tensor, s: Tensor, label: Optional[Tensor]) -> Tensor:
        return super().__call__(_Half(net, self.use_fp16) if self.use_fp16 else net, x, s, label)

    def config(self) -> dict:
        return {"name": self.name, "sigma_data": self.sigma_data, "use_fp16": self.use_fp16}


class VEPreconditioning:
    """VE's row (score SDE's NCSN++ / DDPM++ "VE", arXiv 2011.13456, as EDM retrains it):
    ``D(x, σ) = x + σ F(x, ln(σ/2))``."""

    kind = "denoiser"
    name = "ve"

    def __init__(self, use_fp16: bool = False):
        self.use_fp16 = bool(use_fp16)

    def __call__(self, net: nn.Module, x: Tensor, s: Tensor, label: Optional[Tensor]) -> Tensor:
        return x + expand_as_batch(s, x) * _run(net, x, (0.5 * s).log().to(x.dtype), label, self.use_fp16)

    def config(self) -> dict:
        return {"name": self.name, "use_fp16": self.use_fp16}


class VPPreconditioning:
    """VP's row on physgen's VP scale: ``ε(x, t) = F(x, (M-1) t)`` (``M`` DDPM's number of
    timesteps: the network sees DDPM's timestep index, as in score SDE's DDPM++ VP)."""

    kind = "eps"
    name = "vp"

    def __init__(self, M: int = 1000, use_fp16: bool = False):
        self.M = int(M)
        self.use_fp16 = bool(use_fp16)

    def __call__(self, net: nn.Module, x: Tensor, s: Tensor, label: Optional[Tensor]) -> Tensor:
        return _run(net, x, ((self.M - 1) * s).to(x.dtype), label, self.use_fp16)

    def config(self) -> dict:
        return {"name": self.name, "M": self.M, "use_fp16": self.use_fp16}


class IDDPMPreconditioning:
    """iDDPM's row (Nichol & Dhariwal, arXiv 2102.09672, as EDM reads it): the network knows
    only the ``M`` levels ``u_j``; at any σ it sees the index of the nearest one,
    ``D(x, σ) = x - σ F(x/√(σ²+1), M-1-j(σ))``, ``j(σ) = argmin_j |σ - u_j|`` (in float32, as EDM)."""

    kind = "denoiser"
    name = "iddpm"

    def __init__(self, u: Tensor, M: int = 1000, use_fp16: bool = False):
        self.u = torch.as_tensor(u, dtype=torch.float32).flatten()
        self.M = int(M)
        self.use_fp16 = bool(use_fp16)

    def index(self, sigma: Tensor) -> Tensor:
        u = self.u.to(sigma.device)
        return (sigma.to(torch.float32)[:, None] - u[None, :]).abs().argmin(1)

    def __call__(self, net: nn.Module, x: Tensor, s: Tensor, label: Optional[Tensor]) -> Tensor:
        sig = expand_as_batch(s, x)
        c_noise = (self.M - 1 - self.index(s)).to(x.dtype)
        return x - sig * _run(net, x / (sig**2 + 1).sqrt(), c_noise, label, self.use_fp16)

    def config(self) -> dict:
        return {"name": self.name, "M": self.M, "use_fp16": self.use_fp16, "u": self.u.tolist()}


PRECONDITIONINGS = {cls.name: cls for cls in (EDMPreconditioning, VEPreconditioning, VPPreconditioning, IDDPMPreconditioning)}
"""name -> class: how a converted checkpoint names the preconditioning it rebuilds (``config()["name"]``)."""
