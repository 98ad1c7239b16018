"""A small writer of EDM-format network snapshots, for the tests of physgen.pretrained.

EDM (arXiv 2206.00364) pickles every network module through its ``torch_utils.persistence``
as a call ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, ``meta`` holding
``type='class'``, ``version=6``, the source of the class's module (``module_src``), the
class name and the instance's ``__dict__`` (a ``torch.nn.Module`` state: ``training``,
``_parameters``, ``_buffers``, ``_modules``, the hook dictionaries, the constructor's
attributes, ``_init_args``, ``_init_kwargs``); ``torch.nn.ModuleDict`` containers pickle
as themselves.  This writer emits the same records from a physgen network, with its own
short class text as ``module_src`` (nothing here is EDM's code: the layout is the
published one, the names are the ones a real file carries), so the loader is tested on
files shaped like real ones without the real ones.

``write(path, net, precond=..., **settings)`` lays a physgen :class:`UNet` out as EDM's
``SongUNet`` (DDPM++ / NCSN++) or an :class:`ADMUNet` as ``DhariwalUNet`` under
``EDMPrecond`` / ``VPPrecond`` / ``VEPrecond`` / ``iDDPMPrecond``, in a dict
``{"ema": ..., "loss_fn": ..., "augment_pipe": None, "dataset_kwargs": {...}}`` pickled
(``.pkl``) or ``torch.save``d (``.pt``, PFGM++'s form).
"""
from __future__ import annotations

import contextlib
import math
import pickle
import sys
import types
from typing import Any, Dict, Optional

import numpy as np
import torch

from physgen.nets.adm import ADMUNet
from physgen.nets.unet import FourierEmbedding, UNet, build_unet

__all__ = ["write", "OWN_SOURCE", "Record", "persistence_module"]

OWN_SOURCE = '''"""Stand-in module text for test snapshots (physgen's tests): never executed by physgen."""
class EDMPrecond: pass
class SongUNet: pass
class DhariwalUNet: pass
class UNetBlock: pass
class Conv2d: pass
class Linear: pass
class GroupNorm: pass
'''


def _refuse(meta):
    raise RuntimeError("the test writer's stand-in reconstructor must never be called")


@contextlib.contextmanager
def persistence_module():
    """``torch_utils.persistence`` importable while pickling, so pickle writes its global."""
    pkg, mod = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    _refuse.__module__, _refuse.__qualname__ = "torch_utils.persistence", "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _refuse
    pkg.persistence = mod
    saved = {k: sys.modules.get(k) for k in (pkg.__name__, mod.__name__)}
    sys.modules.update({pkg.__name__: pkg, mod.__name__: mod})
    try:
        yield mod
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class Record:
    """One persistence record: pickles as ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, class_name: str, attrs: Dict[str, Any], params: Dict[str, Any], buffers: Dict[str, Any],
                 modules: Dict[str, Any], init_kwargs: Dict[str, Any], source: str = OWN_SOURCE):
        state = dict(torch.nn.Module().__dict__)  # training, _parameters, _buffers, hook dicts, _modules, ...
        state["training"] = False
        state["_parameters"] = {k: (None if v is None else torch.nn.Parameter(v.detach().clone(), requires_grad=False))
                                for k, v in params.items()}
        state["_buffers"] = dict(buffers)
        state["_modules"] = dict(modules)
        state.update(attrs)
        state["_init_args"] = ()
        state["_init_kwargs"] = init_kwargs
        self.meta = dict(type="class", version=6, module_src=source, class_name=class_name, state=state)

    def __reduce__(self):
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,))


def ModuleDict(modules: Dict[str, Any]) -> torch.nn.ModuleDict:
    """A real ``torch.nn.ModuleDict`` holding records (its state set directly: records are not
    modules), so it pickles exactly as torch pickles one (NEWOBJ, then BUILD of its state)."""
    md = torch.nn.ModuleDict.__new__(torch.nn.ModuleDict)
    state = dict(torch.nn.Module().__dict__)
    state.update(training=False, _modules=dict(modules))
    md.__dict__.update(state)
    return md


# --------------------------------------------------------------------------- layers


def _t(x: torch.Tensor, dtype) -> torch.Tensor:
    return x.detach().to(dtype).clone()


def _linear(weight, bias, dtype) -> Record:
    return Record("Linear", dict(in_features=weight.shape[1], out_features=weight.shape[0]),
                  dict(weight=_t(weight, dtype), bias=None if bias is None else _t(bias, dtype)), {}, {},
                  dict(in_features=weight.shape[1], out_features=weight.shape[0], bias=bias is not None))


def _conv(conv: Optional[torch.nn.Conv2d], dtype, cin=None, cout=None, *, up=False, down=False, taps=(1, 1), fused=False) -> Record:
    f = torch.as_tensor(taps, dtype=torch.float32)
    kernel = (torch.outer(f, f) / f.sum().square())[None, None] if up or down else None
    cin = conv.in_channels if conv is not None else cin
    cout = conv.out_channels if conv is not None else cout
    params = dict(weight=None, bias=None) if conv is None else dict(weight=_t(conv.weight, dtype), bias=_t(conv.bias, dtype))
    attrs = dict(in_channels=cin, out_channels=cout, up=up, down=down, fused_resample=fused)
    return Record("Conv2d", attrs, params, dict(resample_filter=kernel), {},
                  dict(in_channels=cin, out_channels=cout, kernel=0 if conv is None else conv.kernel_size[0], up=up, down=down,
                       resample_filter=list(taps), fused_resample=fused))


def _norm(gn: torch.nn.GroupNorm, dtype) -> Record:
    return Record("GroupNorm", dict(num_groups=gn.num_groups, eps=gn.eps), dict(weight=_t(gn.weight, dtype), bias=_t(gn.bias, dtype)),
                  {}, {}, dict(num_channels=gn.num_channels, eps=gn.eps))


def _qkv_rows(block) -> torch.Tensor:
    """EDM's qkv row of each of physgen's (physgen: q/k/v, head, channel; EDM: head, channel, q/k/v)."""
    n, c = block.num_heads, block.out_channels // block.num_heads
    order = torch.empty(3 * n * c, dtype=torch.long)
    for j in range(3):
        for h in range(n):
            for cc in range(c):
                order[h * 3 * c + cc * 3 + j] = j * n * c + h * c + cc
    return order


def _block(blk, dtype, taps, adm: bool) -> Record:
    """A physgen ResBlock as EDM's UNetBlock."""
    mods: Dict[str, Any] = dict(norm0=_norm(blk.norm0, dtype), conv0=_conv(blk.conv0, dtype, up=blk.up, down=blk.down, taps=taps),
                                affine=_linear(blk.affine.weight, blk.affine.bias, dtype), norm1=_norm(blk.norm1, dtype),
                                conv1=_conv(blk.conv1, dtype))
    if blk.skip is not None:
        mods["skip"] = _conv(blk.skip, dtype, up=blk.up, down=blk.down, taps=taps)
    elif blk.up or blk.down:  # ADM: resample only (a kernel-0 convolution)
        mods["skip"] = _conv(None, dtype, blk.in_channels, blk.out_channels, up=blk.up, down=blk.down, taps=taps)
    else:
        mods["skip"] = None
    if blk.num_heads:
        order = _qkv_rows(blk)
        qkv = torch.nn.Conv2d(blk.out_channels, 3 * blk.out_channels, 1).to(blk.qkv.weight.dtype)
        with torch.no_grad():
            qkv.weight.copy_(blk.qkv.weight[order])
            qkv.bias.copy_(blk.qkv.bias[order])
        mods.update(norm2=_norm(blk.norm2, dtype), qkv=_conv(qkv, dtype), proj=_conv(blk.proj, dtype))
    skip_scale = np.float64(1.0) if adm else np.sqrt(0.5)  # a NumPy scalar, as EDM's block arguments hold it
    attrs = dict(in_channels=blk.in_channels, out_channels=blk.out_channels, emb_channels=blk.affine.in_features,
                 num_heads=blk.num_heads, dropout=blk.dropout.p, skip_scale=skip_scale, adaptive_scale=blk.adaptive_scale)
    kwargs = dict(attrs, eps=blk.norm0.eps, resample_filter=list(taps), resample_proj=not adm, init=dict(init_mode="xavier_uniform"),
                  init_attn=dict(init_mode="xavier_uniform", init_weight=np.sqrt(0.2)), up=blk.up, down=blk.down)
    return Record("UNetBlock", attrs, {}, {}, mods, kwargs)


def _roll(w: torch.Tensor) -> torch.Tensor:
    """physgen's ``[sin, cos]`` feature columns back to EDM's order (a half-turn)."""
    half = w.shape[1] // 2
    return torch.cat([w[:, half:], w[:, :half]], 1)


def _label(net, dtype, sqrt_scaled: bool, fourier: bool):
    """physgen's label embedding (rows per class, null row last) as EDM's Linear on one-hot rows."""
    rows = net.map_label.weight.detach().double()
    if fourier:
        rows = _roll(rows)
    null, L = rows[-1], rows.shape[0] - 1
    w = ((rows[:-1] - null) / (math.sqrt(L) if sqrt_scaled else 1.0)).T
    if not sqrt_scaled and bool(null.abs().max() > 0):
        raise ValueError("an ADM network's null row must be zero: EDM's label layer has no bias")
    return _linear(w, null if sqrt_scaled else None, dtype)


def song_unet(net: UNet, dtype=torch.float64, augment_dim: int = 0) -> Record:
    """A physgen UNet as EDM's SongUNet record."""
    taps = net.resample_filter
    fourier = isinstance(net.map_noise, FourierEmbedding)
    noise_ch = net.map_layer0.in_features
    mods: Dict[str, Any] = {}
    if fourier:
        mods["map_noise"] = Record("FourierEmbedding", {}, {}, dict(freqs=_t(net.map_noise.freqs, dtype)), {},
                                   dict(num_channels=noise_ch))
    else:
        mods["map_noise"] = Record("PositionalEmbedding", dict(num_channels=noise_ch, max_positions=10000, endpoint=True), {}, {}, {},
                                   dict(num_channels=noise_ch, endpoint=True))
    mods["map_label"] = _label(net, dtype, True, fourier) if net.num_classes else None
    mods["map_augment"] = _linear(torch.randn(noise_ch, augment_dim), None, dtype) if augment_dim else None
    w0 = _roll(net.map_layer0.weight) if fourier else net.map_layer0.weight
    mods["map_layer0"] = _linear(w0, net.map_layer0.bias, dtype)
    mods["map_layer1"] = _linear(net.map_layer1.weight, net.map_layer1.bias, dtype)
    res0 = net.img_resolution
    enc: Dict[str, Any] = {f"{res0}x{res0}_conv": _conv(net.enc_conv, dtype)}
    for name, blk in net.enc.items():
        enc[name] = _block(blk, dtype, taps, adm=False)
        r = name.rsplit("_", 1)[0]
        if name.endswith("_down") and net.encoder_type == "residual":
            enc[f"{r}_aux_residual"] = _conv(net.aux[f"{r}_residual"], dtype, down=True, taps=taps, fused=True)
        elif name.endswith("_down") and net.encoder_type == "skip":
            enc[f"{r}_aux_down"] = _conv(None, dtype, net.in_channels, net.in_channels, down=True, taps=taps)
            enc[f"{r}_aux_skip"] = _conv(net.aux[f"{r}_skip"], dtype)
    dec: Dict[str, Any] = {}
    lowest = res0 >> (len(net.channel_mult) - 1)
    for name, blk in net.dec.items():
        dec[name] = _block(blk, dtype, taps, adm=False)
        r = name.rsplit("_", 1)[0]
        res = int(r.split("x")[0])
        if name.endswith(f"_block{net.num_blocks}") and (net.decoder_type == "skip" or res == res0):
            if net.decoder_type == "skip" and res != lowest:
                dec[f"{r}_aux_up"] = _conv(None, dtype, net.out_channels, net.out_channels, up=True, taps=taps)
            head = (net.out_norm, net.out_conv) if res == res0 else (net.aux[f"{r}_norm"], net.aux[f"{r}_conv"])
            dec[f"{r}_aux_norm"], dec[f"{r}_aux_conv"] = _norm(head[0], dtype), _conv(head[1], dtype)
    mods.update(enc=ModuleDict(enc), dec=ModuleDict(dec))
    kwargs = dict(img_resolution=net.img_resolution, in_channels=net.in_channels, out_channels=net.out_channels,
                  label_dim=net.num_classes, augment_dim=augment_dim, model_channels=net.enc_conv.out_channels,
                  channel_mult=list(net.channel_mult), num_blocks=net.num_blocks, attn_resolutions=list(net.attn_resolutions),
                  dropout=0.1, embedding_type="fourier" if fourier else "positional", channel_mult_noise=noise_ch // net.enc_conv.out_channels,
                  encoder_type=net.encoder_type, decoder_type=net.decoder_type, resample_filter=list(taps))
    return Record("SongUNet", dict(label_dropout=0), {}, {}, mods, kwargs)


def dhariwal_unet(net: ADMUNet, dtype=torch.float64, variance_outputs: bool = False) -> Record:
    """A physgen ADMUNet as EDM's DhariwalUNet record (``variance_outputs``: iDDPM's doubled output)."""
    mods: Dict[str, Any] = {"map_noise": Record("PositionalEmbedding", dict(num_channels=net.map_layer0.in_features,
                                                max_positions=10000, endpoint=False), {}, {}, {}, {})}
    mods["map_augment"] = None
    mods["map_layer0"] = _linear(_roll(net.map_layer0.weight), net.map_layer0.bias, dtype)
    mods["map_layer1"] = _linear(net.map_layer1.weight, net.map_layer1.bias, dtype)
    mods["map_label"] = _label(net, dtype, False, False) if net.num_classes else None
    res0 = net.img_resolution
    enc = {f"{res0}x{res0}_conv": _conv(net.enc_conv, dtype), **{k: _block(b, dtype, (1, 1), adm=True) for k, b in net.enc.items()}}
    dec = {k: _block(b, dtype, (1, 1), adm=True) for k, b in net.dec.items()}
    out_conv = net.out_conv
    if variance_outputs:
        out_conv = torch.nn.Conv2d(out_conv.in_channels, 2 * out_conv.out_channels, 3).to(out_conv.weight.dtype)
        with torch.no_grad():
            out_conv.weight[: net.out_channels] = net.out_conv.weight
            out_conv.bias[: net.out_channels] = net.out_conv.bias
    mods.update(enc=ModuleDict(enc), dec=ModuleDict(dec), out_norm=_norm(net.out_norm, dtype), out_conv=_conv(out_conv, dtype))
    model_channels = net.map_layer0.in_features
    mult = [int(b.out_channels) // model_channels for k, b in net.enc.items() if k.endswith("_block0")]
    kwargs = dict(img_resolution=res0, in_channels=net.in_channels, out_channels=out_conv.out_channels, label_dim=net.num_classes,
                  model_channels=model_channels, channel_mult=mult, num_blocks=sum(k.startswith(f"{res0}x{res0}_block") for k in net.enc),
                  attn_resolutions=sorted({int(k.split("x")[0]) for k, b in net.enc.items() if b.num_heads}, reverse=True), dropout=0.1)
    return Record("DhariwalUNet", dict(label_dropout=0), {}, {}, mods, kwargs)


def precond(model: Record, class_name: str, img_resolution: int, img_channels: int, label_dim: int, *,
            source: str = OWN_SOURCE, buffers: Optional[dict] = None, use_fp16: bool = False, **settings) -> Record:
    """A preconditioner record around ``model``; ``settings`` are its attributes and arguments."""
    attrs = dict(img_resolution=img_resolution, img_channels=img_channels, label_dim=label_dim, use_fp16=use_fp16, **settings)
    kwargs = dict(attrs, model_type=model.meta["class_name"])
    return Record(class_name, attrs, {}, dict(buffers or {}), {"model": model}, kwargs, source)


def write(path, top: Record, *, loss: Optional[Record] = None, torch_zip: Optional[bool] = None) -> None:
    """``{"ema": top, "loss_fn": loss, ...}`` pickled like EDM (``.pkl``) or ``torch.save``d (``.pt``)."""
    data = {"ema": top, "loss_fn": loss, "augment_pipe": None, "dataset_kwargs": {"class_name": "training.dataset.ImageFolderDataset",
                                                                                   "path": "datasets/x.zip", "use_labels": False}}
    zipped = str(path).endswith(".pt") if torch_zip is None else torch_zip
    with persistence_module():
        if zipped:
            torch.save({**data, "step": 1000}, path)
        else:
            with open(path, "wb") as f:
                pickle.dump(data, f)


def edm_loss(P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float = 0.5) -> Record:
    """EDM's loss object (not a module): its recorded attributes only."""
    rec = Record("EDMLoss", dict(P_mean=P_mean, P_std=P_std, sigma_data=sigma_data), {}, {}, {},
                 dict(P_mean=P_mean, P_std=P_std, sigma_data=sigma_data))
    for key in [k for k in rec.meta["state"] if k.startswith("_") and k not in ("_init_args", "_init_kwargs")] + ["training"]:
        rec.meta["state"].pop(key)
    return rec


TINY_SETTINGS = {  # the preconditioner of each kind of tiny snapshot (the CLI tests' inputs)
    "edm": ("EDMPrecond", dict(sigma_min=0, sigma_max=math.inf, sigma_data=0.5)),
    "pfgmpp": ("EDMPrecond", dict(sigma_min=0, sigma_max=math.inf, sigma_data=0.5, pfgmpp=True, D=128)),
    "vp": ("VPPrecond", dict(beta_d=19.9, beta_min=0.1, M=1000, epsilon_t=1e-5)),
    "ve": ("VEPrecond", dict(sigma_min=0.02, sigma_max=100.0)),
}


def tiny(path, kind: str = "edm", *, num_classes: int = 0, resolution: int = 8, channels: int = 3, seed: int = 0,
         use_fp16: bool = False) -> UNet:
    """A tiny NCSN++-style snapshot of ``kind`` (:data:`TINY_SETTINGS`) with small random
    weights in float32 at ``path`` (``.pkl`` or ``.pt``), EDM's ``use_fp16`` flag as given;
    returns the physgen network it holds."""
    net = build_unet("tiny", resolution, channels, num_classes=num_classes, embedding="fourier", channel_mult_noise=2,
                     resample_filter=(1, 3, 3, 1), encoder_type="residual")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.05 if p.ndim > 1 else 0.02) + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    cls, settings = TINY_SETTINGS[kind]
    if kind == "pfgmpp":
        settings = dict(settings, N=channels * resolution * resolution)
    write(path, precond(song_unet(net, torch.float32), cls, resolution, channels, num_classes, use_fp16=use_fp16, **settings),
          loss=edm_loss())
    return net.eval()
