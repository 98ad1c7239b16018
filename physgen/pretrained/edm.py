"""EDM and PFGM++ snapshots as a physgen process and field (the file's code never runs).

A snapshot (``network-snapshot-*.pkl`` of NVlabs/edm, arXiv 2206.00364, or of
Newbeeer/pfgmpp, arXiv 2302.04265; PFGM++'s ``training-state-*.pt``) is read by
:func:`physgen.pretrained.reader.read_snapshot` into records.  Its network is ``ema`` (the
exponential moving average EDM samples with; ``net`` when a file has no ``ema``): a
preconditioner record holding the U-Net record ``model``.

* The preconditioner decides the process and the preconditioning
  (:mod:`physgen.pretrained.precond`): ``EDMPrecond`` -> ``edm`` (``σ_min``, ``σ_max``,
  ``σ_data`` of the file; EDM's sampling range 0.002..80 where the file says 0 / inf);
  ``EDMPrecond`` with ``pfgmpp=True`` (PFGM++) -> ``pfgmpp`` with the file's ``D``: PFGM++
  trains EDM's preconditioned denoiser at ``σ`` and draws the kernel at ``r = σ √D``, which
  is physgen's PFGM++ scale; ``VPPrecond`` -> ``vp`` with ``β_min``, ``β_max = β_min + β_d``,
  ``t_eps = ε_t`` (EDM's ``σ(t) = sqrt(exp(β_d t²/2 + β_min t) - 1)`` is physgen's linear
  VP); ``VEPrecond`` -> ``ve``; ``iDDPMPrecond`` -> ``edm`` over its levels
  ``u_{M-1}..u_0`` with the iDDPM preconditioning (the network knows only those levels).
  EDM's ``EDMLoss`` in the file gives the training law (``P_mean``, ``P_std``).
* The U-Net: ``SongUNet`` (DDPM++ / NCSN++, arXiv 2011.13456) -> :class:`physgen.nets.unet.UNet`,
  ``DhariwalUNet`` (ADM, arXiv 2105.05233) -> :class:`physgen.nets.adm.ADMUNet`, built from
  the recorded constructor arguments over EDM's defaults, then every tensor mapped by name
  and checked by shape (one line naming a missing, unexpected or mis-shaped tensor), and
  the recorded attributes that decide the function (group counts and eps, heads, skip
  scale, adaptive scale, embedding form, fused resampling) checked against the network.
  Three re-parameterisations are exact: EDM's label layer ``Linear(one_hot(k) √L)`` (SongUNet)
  or ``Linear(one_hot(k))`` (ADM) becomes an embedding row per class plus a null row
  (the all-zero vector EDM feeds when there is no label); the attention's ``qkv`` rows are
  reordered from EDM's per-head interleaved layout to physgen's ``[q | k | v]`` by head;
  the first mapping layer's columns follow physgen's ``[sin, cos]`` order of the noise
  features.  ``map_augment`` (EDM's augmentation labels, unused when sampling) and the
  learned-variance half of an iDDPM network's output (unused by EDM's denoiser) are dropped.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

from ..checkpoints import load_state
from ..errors import UserError
from ..nets.adm import ADMUNet
from ..nets.unet import BOX_FILTER, FourierEmbedding, ResBlock, UNet, fir_filter
from ..processes import EDM, VE, VP, PFGMpp
from ..processes.base import Process
from .precond import EDMPreconditioning, IDDPMPreconditioning, VEPreconditioning, VPPreconditioning
from .reader import Recorded, find_records

__all__ = ["network_record", "convert", "SONGUNET_DEFAULTS", "DHARIWAL_DEFAULTS", "PRECOND_DEFAULTS"]

SONGUNET_DEFAULTS: Dict[str, Any] = dict(
    label_dim=0, augment_dim=0, model_channels=128, channel_mult=[1, 2, 2, 2], channel_mult_emb=4, num_blocks=4,
    attn_resolutions=[16], dropout=0.10, label_dropout=0, embedding_type="positional", channel_mult_noise=1,
    encoder_type="standard", decoder_type="standard", resample_filter=[1, 1])
"""EDM's ``SongUNet`` defaults (its constructor records only the arguments it was given)."""
DHARIWAL_DEFAULTS: Dict[str, Any] = dict(
    label_dim=0, augment_dim=0, model_channels=192, channel_mult=[1, 2, 3, 4], channel_mult_emb=4, num_blocks=3,
    attn_resolutions=[32, 16, 8], dropout=0.10, label_dropout=0)
"""EDM's ``DhariwalUNet`` defaults."""
PRECOND_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "EDMPrecond": dict(label_dim=0, use_fp16=False, sigma_min=0.0, sigma_max=math.inf, sigma_data=0.5, pfgmpp=False, D=128),
    "VPPrecond": dict(label_dim=0, use_fp16=False, beta_d=19.9, beta_min=0.1, M=1000, epsilon_t=1e-5),
    "VEPrecond": dict(label_dim=0, use_fp16=False, sigma_min=0.02, sigma_max=100.0),
    "iDDPMPrecond": dict(label_dim=0, use_fp16=False, C_1=0.001, C_2=0.008, M=1000),
}
"""The preconditioners EDM and PFGM++ save, with their defaults."""
EDM_SAMPLING_RANGE = (0.002, 80.0)
"""EDM's sampler's σ range (arXiv 2206.00364, Table 1), used where the file says 0 / inf."""
UNUSED = re.compile(r"^map_augment\.")


def network_record(obj: Any, where: str) -> Tuple[str, Recorded, Optional[Recorded]]:
    """``(key, preconditioner record, loss record)`` of a loaded snapshot: ``ema`` first, then ``net``."""
    records = dict(find_records(obj))
    for key in ("ema", "net", ""):
        rec = records.get(key)
        if rec is not None and rec.class_name in PRECOND_DEFAULTS:
            loss = records.get("loss_fn")
            return key, rec, loss
    found = ", ".join(f"{k or '(top)'}: {r.class_name}" for k, r in records.items()) or "none"
    raise UserError(f"{where} holds no EDM/PFGM++ network (a {' / '.join(PRECOND_DEFAULTS)} under 'ema' or 'net'); "
                    f"its records: {found}")


def _number(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where}: {name} is {value!r}, not a number")
    return float(value)


def _settings(precond: Recorded) -> Dict[str, Any]:
    """The preconditioner's settings: its recorded attributes over its arguments over EDM's defaults."""
    out = {**PRECOND_DEFAULTS[precond.class_name], **precond.init_kwargs}
    out.update({k: precond.state[k] for k in out if k in precond.state})
    return out


def _process(precond: Recorded, loss: Optional[Recorded], where: str) -> Tuple[Process, Any]:
    """The physgen process and preconditioning of a preconditioner record (module docstring)."""
    kind, st = precond.class_name, _settings(precond)
    fp16 = bool(st["use_fp16"])
    if kind == "VPPrecond":
        beta_min, beta_d = _number(st["beta_min"], "beta_min", where), _number(st["beta_d"], "beta_d", where)
        process = VP("linear", beta_min=beta_min, beta_max=beta_min + beta_d, t_eps=_number(st["epsilon_t"], "epsilon_t", where))
        return process, VPPreconditioning(int(st["M"]), fp16)
    if kind == "VEPrecond":
        return VE(_number(st["sigma_min"], "sigma_min", where), _number(st["sigma_max"], "sigma_max", where)), VEPreconditioning(fp16)
    if kind == "iDDPMPrecond":
        u = precond.state.get("_buffers", {}).get("u")
        if not isinstance(u, Tensor) or u.ndim != 1 or u.numel() != int(st["M"]) + 1:
            raise UserError(f"{where}: the iDDPMPrecond has no level buffer 'u' of {int(st['M']) + 1} values")
        precond_ = IDDPMPreconditioning(u, int(st["M"]), fp16)
        return EDM(sigma_min=float(u[-2]), sigma_max=float(u[0])), precond_
    sigma_min = _number(st["sigma_min"], "sigma_min", where) or EDM_SAMPLING_RANGE[0]
    sigma_max = _number(st["sigma_max"], "sigma_max", where)
    sigma_max = sigma_max if math.isfinite(sigma_max) else EDM_SAMPLING_RANGE[1]
    law = {}
    if loss is not None and loss.class_name == "EDMLoss":
        law = {"p_mean": _number(loss.state.get("P_mean", -1.2), "P_mean", where), "p_std": _number(loss.state.get("P_std", 1.2), "P_std", where)}
    sigma_data = _number(st["sigma_data"], "sigma_data", where)
    if st.get("pfgmpp"):
        process: Process = PFGMpp(D=st["D"], sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=sigma_data, **law)
    else:
        process = EDM(sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=sigma_data, **law)
    return process, EDMPreconditioning(sigma_data, fp16)


def _network(model: Recorded, where: str) -> Tuple[nn.Module, Dict[str, Any], Dict[str, Any]]:
    """A physgen network of the U-Net record's configuration, the record's arguments over
    EDM's defaults, and the physgen spec (``{"class": ..., **keywords}``) that rebuilds it."""
    kw = model.init_kwargs
    if not kw:
        raise UserError(f"{where}: the {model.class_name} record has no constructor arguments (_init_kwargs); its layout is unknown")
    if model.class_name not in ("SongUNet", "DhariwalUNet"):
        raise UserError(f"{where}: the U-Net is a {model.class_name!r}; physgen reads SongUNet (DDPM++/NCSN++) and DhariwalUNet (ADM)")
    song = model.class_name == "SongUNet"
    kw = {**(SONGUNET_DEFAULTS if song else DHARIWAL_DEFAULTS), **kw}
    try:
        spec: Dict[str, Any] = dict(
            img_resolution=int(kw["img_resolution"]), in_channels=int(kw["in_channels"]), out_channels=int(kw["out_channels"]),
            model_channels=int(kw["model_channels"]), channel_mult=[int(m) for m in kw["channel_mult"]], num_blocks=int(kw["num_blocks"]),
            attn_resolutions=[int(r) for r in kw["attn_resolutions"]], dropout=float(kw["dropout"]), num_classes=int(kw["label_dim"]),
            channel_mult_emb=int(kw["channel_mult_emb"]))
        if song:
            spec.update(embedding=str(kw["embedding_type"]), channel_mult_noise=int(kw["channel_mult_noise"]),
                        resample_filter=[int(t) for t in kw["resample_filter"]], encoder_type=str(kw["encoder_type"]),
                        decoder_type=str(kw["decoder_type"]))
        net: nn.Module = (UNet if song else ADMUNet)(**spec)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where}: the {model.class_name} arguments are incomplete or malformed ({exc!r})") from None
    return net, kw, {"class": type(net).__name__, **spec}


_LEVEL_HEAD = re.compile(r"^dec\.(\d+)x\d+_aux_(norm|conv)\.(weight|bias)$")
_SAME = re.compile(r"^(enc|dec)\.(\d+x\d+_(?:down|up|in0|in1|block\d+))\.(.+)$")
_FILTER = re.compile(r"(^|\.)resample_filter$")


def _target(name: str, net: nn.Module) -> Optional[str]:
    """physgen's name of the U-Net tensor ``name`` (EDM's, without ``model.``); ``None``: not a
    network tensor (a resampling filter or an unused layer, handled by the caller)."""
    if name.startswith(("map_noise.", "map_layer0.", "map_layer1.", "map_label.")):
        return name
    if re.match(r"^enc\.\d+x\d+_conv\.(weight|bias)$", name):
        return "enc_conv." + name.rsplit(".", 1)[1]
    m = re.match(r"^enc\.(\d+x\d+)_aux_(residual|skip)\.(weight|bias)$", name)
    if m:
        return f"aux.{m[1]}_{m[2]}.{m[3]}"
    m = _LEVEL_HEAD.match(name)
    if m:
        res = int(m[1])
        return f"out_{m[2]}.{m[3]}" if res == net.img_resolution else f"aux.{res}x{res}_{m[2]}.{m[3]}"
    m = _SAME.match(name)
    if m:
        return f"{m[1]}.{m[2]}.{m[3]}"
    m = re.match(r"^(out_norm|out_conv)\.(weight|bias)$", name)  # ADM
    return name if m else None


def _qkv_order(channels: int, heads: int) -> Tensor:
    """Rows of EDM's ``qkv`` (head-major, then channel, then q/k/v) in physgen's order (q/k/v, head, channel)."""
    c = channels // heads
    j, h, cc = torch.meshgrid(torch.arange(3), torch.arange(heads), torch.arange(c), indexing="ij")
    return (h * 3 * c + cc * 3 + j).flatten()


def _walk(rec: Recorded, prefix: str = "") -> Iterator[Tuple[str, Recorded]]:
    yield prefix, rec
    for name, child in rec.modules().items():
        if isinstance(child, Recorded):
            yield from _walk(child, f"{prefix}.{name}" if prefix else name)


def _check_attributes(model: Recorded, net: nn.Module, where: str) -> None:
    """The recorded attributes that decide the function agree with the physgen network."""
    modules = dict(net.named_modules())

    def mismatch(path: str, what: str, theirs: Any, ours: Any) -> UserError:
        return UserError(f"{where}: module model.{path} has {what} {theirs!r}; physgen's network has {ours!r} (a different architecture?)")

    for path, rec in _walk(model):
        target = _target(path + ".weight", net) if path else None
        own = modules.get(target.rsplit(".", 1)[0]) if target else None
        if rec.class_name == "GroupNorm" and isinstance(own, nn.GroupNorm):
            if rec.attribute("num_groups") != own.num_groups or not math.isclose(float(rec.attribute("eps", -1)), own.eps):
                raise mismatch(path, "groups/eps", (rec.attribute("num_groups"), rec.attribute("eps")), (own.num_groups, own.eps))
        elif rec.class_name == "UNetBlock" and isinstance(own, ResBlock):
            theirs = (rec.attribute("num_heads"), bool(rec.attribute("adaptive_scale")), float(rec.attribute("skip_scale", 0)))
            if theirs[:2] != (own.num_heads, own.adaptive_scale) or not math.isclose(theirs[2], own.skip_scale, rel_tol=1e-12):
                raise mismatch(path, "heads/adaptive scale/skip scale", theirs, (own.num_heads, own.adaptive_scale, own.skip_scale))
        elif rec.class_name == "Conv2d" and rec.attribute("fused_resample") and "aux_residual" not in path:
            raise mismatch(path, "fused resampling", True, False)
        elif rec.class_name == "PositionalEmbedding":
            endpoint = isinstance(net, UNet)
            if bool(rec.attribute("endpoint")) != endpoint or rec.attribute("max_positions") != 10000:
                raise mismatch(path, "endpoint/max_positions", (rec.attribute("endpoint"), rec.attribute("max_positions")), (endpoint, 10000))


def _converted(tensors: Dict[str, Tensor], net: nn.Module, kw: Dict[str, Any], where: str) -> Dict[str, Tensor]:
    """The file's U-Net tensors as physgen's state dict (exact re-parameterisations, module docstring);
    :func:`physgen.checkpoints.load_state` then checks them tensor by tensor."""
    own = net.state_dict()
    taps = tuple(kw.get("resample_filter", BOX_FILTER))
    out: Dict[str, Tensor] = {}
    for name, value in tensors.items():
        if _FILTER.search(name):
            if not torch.equal(value.float().cpu(), fir_filter(taps)):
                raise UserError(f"{where}: tensor model.{name} is not the resampling filter {list(taps)} its arguments name")
            continue
        if UNUSED.match(name):
            continue
        target = _target(name, net)
        if target is None or target not in own and not target.startswith("map_label."):
            raise UserError(f"{where}: tensor model.{name} has no place in physgen's {type(net).__name__} (a different architecture?)")
        out[target] = value
    _reparameterise(out, net, kw, where)
    return out


def _reparameterise(out: Dict[str, Tensor], net: nn.Module, kw: Dict[str, Any], where: str) -> None:
    """Label layer -> embedding rows; ``qkv`` rows -> physgen's order; noise-feature columns ->
    ``[sin, cos]``; an iDDPM network's variance outputs dropped."""
    adm = isinstance(net, ADMUNet)
    if "map_label.weight" in out:
        w = out.pop("map_label.weight").double()  # [channels, L]
        b = out.pop("map_label.bias").double() if "map_label.bias" in out else torch.zeros(w.shape[0], dtype=torch.float64)
        scale = 1.0 if adm else math.sqrt(w.shape[1])
        rows = torch.cat([w.T * scale + b, b[None]], 0)  # rows k: W e_k scale + b; null: b
        if isinstance(net.map_noise, FourierEmbedding) and not adm:  # added to the [sin, cos] features: follow them
            rows = torch.cat([rows[:, rows.shape[1] // 2:], rows[:, : rows.shape[1] // 2]], 1)
        out["map_label.weight"] = rows
    for name in [n for n in out if n.endswith(("qkv.weight", "qkv.bias"))]:
        block = net.get_submodule(name.rsplit(".", 2)[0])
        out[name] = out[name][_qkv_order(block.out_channels, block.num_heads)]
    if adm or isinstance(net.map_noise, FourierEmbedding):  # EDM feeds [cos, sin] features here
        w = out["map_layer0.weight"]
        out["map_layer0.weight"] = torch.cat([w[:, w.shape[1] // 2:], w[:, : w.shape[1] // 2]], 1)
    conv = out.get("out_conv.weight")
    if conv is not None and conv.shape[0] == 2 * net.out_channels:  # iDDPM: mean and variance outputs
        out["out_conv.weight"], out["out_conv.bias"] = conv[: net.out_channels], out["out_conv.bias"][: net.out_channels]


def convert(precond: Recorded, loss: Optional[Recorded], path, dtype: torch.dtype = torch.float32) -> Tuple[Process, nn.Module, Any, Dict[str, Any]]:
    """``(process, network with the file's weights in ``dtype``, preconditioning, description)`` of a
    preconditioner record from the file ``path`` (float64 keeps the re-parameterised label rows exact)."""
    where = f"{str(path)!r}"
    model = precond.modules().get("model")
    if not isinstance(model, Recorded):
        raise UserError(f"{where}: the {precond.class_name} has no U-Net record 'model'")
    process, preconditioning = _process(precond, loss, where)
    kw_model = dict(model.init_kwargs)
    if precond.class_name == "iDDPMPrecond":  # the learned variance outputs are dropped: a mean-only network
        kw_model["out_channels"] = int(kw_model.get("out_channels", 0)) // 2
    model = Recorded(model.class_name, {**model.state, "_init_kwargs": kw_model}, model.source, model.version)
    net, kw, spec = _network(model, where)
    net = net.to(dtype)
    _check_attributes(model, net, where)
    state = _converted(model.tensors(), net, kw, where)
    load_state(net, state, path=path, what="U-Net weights (in physgen's names)")
    settings = _settings(precond)
    info = {"preconditioner": precond.class_name, "network": model.class_name, "settings": settings, "network_arguments": kw,
            "physgen_network": spec, "preconditioning": preconditioning.config(), "module_src_sha256": precond.source_sha256}
    return process, net, preconditioning, info
