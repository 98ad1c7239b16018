"""physgen.pretrained: EDM / PFGM++ snapshots (written by tests/helpers/edm_snapshots.py in EDM's
persistence format) load as the right process with the right parameters, and their
denoiser equals physgen's own network with the same weights under EDM's Table 1
preconditioning (arXiv 2206.00364), in float64; the fields sample with physgen's solvers."""
from __future__ import annotations

import math

import pytest
import torch

import edm_snapshots as W
import physgen.pretrained as P
from physgen import checkpoints
from physgen.errors import UserError
from physgen.nets.adm import ADMUNet
from physgen.nets.unet import build_unet
from physgen.pretrained.convert import HEADER, save_model
from physgen.pretrained.precond import compute_dtype
from physgen.processes import EDM, VE, VP, PFGMpp
from physgen.sampling import sample

RES, CH = 8, 3
DDPMPP = dict(embedding="positional")
NCSNPP = dict(embedding="fourier", channel_mult_noise=2, resample_filter=(1, 3, 3, 1), encoder_type="residual")


def _randomise(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (a fresh U-Net's output layers are zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * (0.3 if p.ndim > 1 else 0.1) + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return net.eval()


def song(num_classes: int, arch: dict, seed: int = 0):
    return _randomise(build_unet("tiny", RES, CH, num_classes=num_classes, **arch).double(), seed)


def adm(num_classes: int, seed: int = 0) -> ADMUNet:
    net = _randomise(ADMUNet(RES, CH, CH, model_channels=64, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,),
                             num_classes=num_classes).double(), seed)
    if num_classes:
        with torch.no_grad():
            net.map_label.weight[-1] = 0  # EDM's ADM label layer has no bias: "no class" embeds as zero
    return net


def vp_time(sigma, beta_min, beta_d):
    """EDM's VP time of σ: ``t = (sqrt(β_min² + 2 β_d log(1+σ²)) - β_min)/β_d``."""
    return ((beta_min**2 + 2 * beta_d * torch.log1p(sigma**2)).sqrt() - beta_min) / beta_d


def one_hot(labels, L):
    """EDM's class input: one-hot rows, all-zero for "no class" (label -1)."""
    out = torch.zeros(len(labels), L, dtype=torch.float64)
    for i, k in enumerate(labels):
        if k >= 0:
            out[i, k] = 1
    return out


# Each case: (network, preconditioner class and settings, EDM-convention reference D(x̄, σ, labels), expected process)
def _edm_ref(net, sigma_data=0.5):
    def D(x, s, lab):
        sig = s.reshape(-1, 1, 1, 1)
        F = net((x / (sig**2 + sigma_data**2).sqrt()), s.log() / 4, lab)
        return sigma_data**2 / (sig**2 + sigma_data**2) * x + sig * sigma_data / (sig**2 + sigma_data**2).sqrt() * F
    return D


def _vp_ref(net, beta_min, beta_d, M):
    def D(x, s, lab):
        sig = s.reshape(-1, 1, 1, 1)
        return x - sig * net(x / (sig**2 + 1).sqrt(), (M - 1) * vp_time(s, beta_min, beta_d), lab)
    return D


def _ve_ref(net):
    def D(x, s, lab):
        return x + s.reshape(-1, 1, 1, 1) * net(x, (s / 2).log(), lab)
    return D


CASES = {
    "ddpmpp-vp-uncond.pkl": lambda: ("song", 0, DDPMPP, "VPPrecond", dict(beta_d=19.9, beta_min=0.1, M=1000, epsilon_t=1e-5)),
    "ddpmpp-vp-cond.pt": lambda: ("song", 4, DDPMPP, "VPPrecond", dict(beta_d=15.0, beta_min=0.2, M=500, epsilon_t=1e-4)),
    "ddpmpp-ve-uncond.pt": lambda: ("song", 0, DDPMPP, "VEPrecond", dict(sigma_min=0.02, sigma_max=100.0)),
    "ddpmpp-ve-cond.pkl": lambda: ("song", 4, DDPMPP, "VEPrecond", dict(sigma_min=0.01, sigma_max=50.0)),
    "ncsnpp-edm-uncond.pkl": lambda: ("song", 0, NCSNPP, "EDMPrecond", dict(sigma_min=0, sigma_max=math.inf, sigma_data=0.5)),
    "ncsnpp-edm-cond.pt": lambda: ("song", 4, NCSNPP, "EDMPrecond", dict(sigma_min=0.002, sigma_max=80.0, sigma_data=0.6)),
    "ncsnpp-pfgmpp128-uncond.pt": lambda: ("song", 0, NCSNPP, "EDMPrecond", dict(sigma_min=0, sigma_max=math.inf, sigma_data=0.5,
                                                                                   pfgmpp=True, D=128, N=CH * RES * RES)),
    "ncsnpp-pfgmpp128-cond.pkl": lambda: ("song", 4, NCSNPP, "EDMPrecond", dict(sigma_min=0, sigma_max=math.inf, sigma_data=0.5,
                                                                                  pfgmpp=True, D=128, N=CH * RES * RES)),
    "skip-skip-edm-cond.pkl": lambda: ("song", 3, dict(embedding="fourier", channel_mult_noise=2, resample_filter=(1, 3, 3, 1),
                                                       encoder_type="skip", decoder_type="skip"), "EDMPrecond",
                                       dict(sigma_min=0, sigma_max=math.inf, sigma_data=0.5)),
    "adm-edm-cond.pkl": lambda: ("adm", 5, None, "EDMPrecond", dict(sigma_min=0, sigma_max=math.inf, sigma_data=0.5)),
}


def _expected(name: str, settings: dict):
    if name.startswith("ddpmpp-vp"):
        return VP, dict(beta_min=settings["beta_min"], beta_max=settings["beta_min"] + settings["beta_d"], t_eps=settings["epsilon_t"], t_max=1.0)
    if "-ve-" in name:
        return VE, dict(sigma_min=settings["sigma_min"], sigma_max=settings["sigma_max"])
    sig = dict(sigma_min=settings["sigma_min"] or 0.002, sigma_max=80.0 if settings["sigma_max"] == math.inf else settings["sigma_max"],
               sigma_data=settings["sigma_data"])
    return (PFGMpp, dict(D=128, **sig)) if settings.get("pfgmpp") else (EDM, sig)


def _reference(name, net, settings):
    if name.startswith("ddpmpp-vp"):
        return _vp_ref(net, settings["beta_min"], settings["beta_d"], settings["M"])
    if "-ve-" in name:
        return _ve_ref(net)
    return _edm_ref(net, settings["sigma_data"])


def _write(tmp_path, name, dtype=torch.float64):
    arch, L, kw, cls, settings = CASES[name]()
    net = song(L, kw) if arch == "song" else adm(L)
    model = W.song_unet(net, dtype, augment_dim=9 if L == 0 else 0) if arch == "song" else W.dhariwal_unet(net, dtype)
    path = tmp_path / name
    W.write(path, W.precond(model, cls, RES, CH, L, **settings), loss=W.edm_loss(-1.1, 1.3))
    return path, net, L, settings


@pytest.mark.parametrize("name", list(CASES))
def test_snapshot_loads_as_the_right_process_and_denoiser(tmp_path, name):
    path, net, L, settings = _write(tmp_path, name)
    m = P.load(path, dtype=torch.float64)
    assert m.format == ("edm-torch" if name.endswith(".pt") else "edm-pickle")
    assert m.shape == (CH, RES, RES) and m.num_classes == L
    cls, params = _expected(name, settings)
    assert type(m.process) is cls
    config = m.process.config()
    for key, value in params.items():
        assert config[key] == pytest.approx(value, rel=1e-12), key
    if cls in (EDM, PFGMpp):  # the training law comes from the file's EDMLoss
        assert (config["p_mean"], config["p_std"]) == (-1.1, 1.3)
    ref = _reference(name, net, settings)
    gen = torch.Generator().manual_seed(1)
    labels = [(3 * i) % L for i in range(5)] + [-1] if L else None
    for sigma in (0.003, 0.05, 0.4, 2.0, 15.0, 79.0):
        x = torch.randn(6, CH, RES, RES, generator=gen, dtype=torch.float64) * (1 + sigma)
        s = torch.full((6,), sigma, dtype=torch.float64)
        with torch.no_grad():
            want = ref(x, s, None if labels is None else torch.tensor([k if k >= 0 else L for k in labels]))
            got = m.denoise(x, s, None if labels is None else one_hot(labels, L))
        assert float((got - want).abs().max() / want.abs().max()) <= 1e-6, sigma


def test_iddpm_snapshot_denoises_at_its_levels(tmp_path):
    """iDDPMPrecond + ADM: the network sees the index of the level nearest σ; its variance
    outputs are dropped; the process is EDM over its levels."""
    net = adm(0)
    M, C1, C2 = 100, 0.001, 0.008
    u = torch.zeros(M + 1)
    for j in range(M, 0, -1):  # iDDPM's levels as EDM derives them (Appendix C.3.4)
        ratio = math.sin(0.5 * math.pi * (j - 1) / M / (C2 + 1)) ** 2 / math.sin(0.5 * math.pi * j / M / (C2 + 1)) ** 2
        u[j - 1] = ((u[j] ** 2 + 1) / max(ratio, C1) - 1).sqrt()
    path = tmp_path / "iddpm.pkl"
    W.write(path, W.precond(W.dhariwal_unet(net, variance_outputs=True), "iDDPMPrecond", RES, CH, 0, buffers=dict(u=u), C_1=C1, C_2=C2, M=M))
    m = P.load(path, dtype=torch.float64)
    assert type(m.process) is EDM and m.process.s_max == pytest.approx(float(u[0])) and m.process.s_min == pytest.approx(float(u[-2]))
    x = torch.randn(4, CH, RES, RES, dtype=torch.float64)
    for sigma in (0.01, 0.3, 3.0, 40.0):
        j = int((u - sigma).abs().argmin())
        s = torch.full((4,), sigma, dtype=torch.float64)
        with torch.no_grad():
            want = x - sigma * net(x / math.sqrt(sigma**2 + 1), torch.full((4,), float(M - 1 - j), dtype=torch.float64))
            assert torch.allclose(m.denoise(x, s), want, rtol=0, atol=1e-9 * float(want.abs().max()))


def test_float32_snapshot_matches_in_float32(tmp_path):
    """A snapshot stored in float32, as EDM saves them, loads in float32 and agrees with the
    same network in float32 to float32 rounding."""
    path, net, L, settings = _write(tmp_path, "ncsnpp-edm-cond.pt", dtype=torch.float32)
    m = P.load(path)
    assert next(m.field.parameters()).dtype == torch.float32
    x, s = torch.randn(4, CH, RES, RES), torch.tensor([0.01, 0.5, 5.0, 50.0])
    want = _edm_ref(net, settings["sigma_data"])(x.double(), s.double(), torch.tensor([0, 1, 2, L]))
    got = m.denoise(x, s, one_hot([0, 1, 2, -1], L).float())
    assert float((got.double() - want).abs().max() / want.abs().max()) < 1e-5


SOLVERS = ["euler", "heun", "dpmpp-2m", "dpmpp-3m", "unipc-bh2", "ipndm"]


@pytest.mark.parametrize("name", ["ncsnpp-pfgmpp128-cond.pkl", "ddpmpp-vp-cond.pt", "ncsnpp-edm-uncond.pkl"])
@pytest.mark.parametrize("solver", SOLVERS)
def test_loaded_field_samples_like_the_reference(tmp_path, name, solver):
    """``physgen.sampling.sample(process, field, ...)`` on the loaded field equals the same
    solver on physgen's own network under the file's preconditioning (a field from the
    EDM-convention reference through :func:`physgen.pretrained.from_denoiser`)."""
    path, net, L, settings = _write(tmp_path, name)
    m = P.load(path, dtype=torch.float64)
    ref = P.from_denoiser(_reference(name, net, settings), m.process, num_classes=L)
    x0 = m.process.sample_prior((4, CH, RES, RES), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grid = m.process.grid(6)
    label = torch.tensor([0, 1, L, 2]) if L else None
    with torch.no_grad():
        got = sample(m.process, m.field, x0, grid, solver, label=label).x
        want = sample(m.process, ref, x0, grid, solver, label=label).x
    assert torch.isfinite(got).all()
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-6


def _tamper(tmp_path, edit):
    net = song(0, DDPMPP)
    model = W.song_unet(net)
    edit(model)
    path = tmp_path / "tampered.pkl"
    W.write(path, W.precond(model, "EDMPrecond", RES, CH, 0, sigma_min=0, sigma_max=math.inf, sigma_data=0.5))
    return path


def _block0(model):
    return model.meta["state"]["_modules"]["enc"].__dict__["_modules"]["8x8_block0"].meta["state"]


@pytest.mark.parametrize("edit, expect", [
    (lambda m: _block0(m)["_modules"]["conv0"].meta["state"]["_parameters"].__setitem__("weight", torch.nn.Parameter(torch.zeros(16, 16, 5, 5), requires_grad=False)),
     "'enc.8x8_block0.conv0.weight' has shape [16, 16, 5, 5]"),
    (lambda m: _block0(m)["_modules"]["conv0"].meta["state"]["_parameters"].pop("bias"), "lack the tensor 'enc.8x8_block0.conv0.bias'"),
    (lambda m: _block0(m)["_modules"]["conv0"].meta["state"]["_parameters"].__setitem__("extra", torch.nn.Parameter(torch.zeros(3), requires_grad=False)),
     "model.enc.8x8_block0.conv0.extra has no place"),
    (lambda m: _block0(m)["_modules"]["norm0"].meta["state"].__setitem__("eps", 1e-3), "module model.enc.8x8_block0.norm0 has groups/eps"),
    (lambda m: _block0(m).__setitem__("adaptive_scale", True), "module model.enc.8x8_block0 has heads/adaptive scale"),
    (lambda m: m.meta.__setitem__("class_name", "MyUNet"), "the U-Net is a 'MyUNet'"),
])
def test_a_mismatch_is_one_line_naming_the_tensor_or_module(tmp_path, edit, expect):
    with pytest.raises(UserError) as info:
        P.load(_tamper(tmp_path, edit))
    text = str(info.value)
    assert expect in text and "tampered.pkl" in text and "\n" not in text, text


def test_a_file_without_a_network_names_what_it_holds(tmp_path):
    path = tmp_path / "loss-only.pkl"
    W.write(path, W.edm_loss())
    with pytest.raises(UserError, match=r"holds no EDM/PFGM\+\+ network.*ema: EDMLoss"):
        P.load(path)


@pytest.mark.parametrize("labels, expect", [
    (torch.tensor([[0.5, 0.5, 0, 0]] * 2, dtype=torch.float64), "one-hot"),
    (torch.tensor([[1, 1, 0, 0]] * 2, dtype=torch.float64), "one-hot"),
    (torch.zeros(2, 3, dtype=torch.float64), r"\[B, 4\]"),
])
def test_denoise_takes_one_hot_rows_only(tmp_path, labels, expect):
    path, *_ = _write(tmp_path, "ddpmpp-ve-cond.pkl")
    m = P.load(path, dtype=torch.float64)
    with pytest.raises(UserError, match=expect):
        m.denoise(torch.zeros(2, CH, RES, RES, dtype=torch.float64), 1.0, labels)


def test_denoise_broadcasts_one_label_row_and_the_null_row_is_unconditional(tmp_path):
    path, *_ = _write(tmp_path, "ddpmpp-ve-cond.pkl")
    m = P.load(path, dtype=torch.float64)
    x = torch.randn(3, CH, RES, RES, dtype=torch.float64)
    row = one_hot([2], 4)
    assert torch.equal(m.denoise(x, 1.0, row), m.denoise(x, 1.0, row.expand(3, 4)))
    assert torch.equal(m.denoise(x, 1.0, torch.zeros(3, 4, dtype=torch.float64)), m.denoise(x, 1.0))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_use_fp16_network_runs_in_half_precision_on_cuda(tmp_path):
    """EDM's ``use_fp16``: the network runs in float16 on CUDA (float32 on the CPU), the
    preconditioning in float32: close to the float64 reference at float16 rounding, not at float32's."""
    net = song(4, NCSNPP)
    path = tmp_path / "fp16.pkl"
    W.write(path, W.precond(W.song_unet(net, torch.float32), "EDMPrecond", RES, CH, 4, use_fp16=True, sigma_min=0, sigma_max=math.inf,
                            sigma_data=0.5))
    x, s = torch.randn(4, CH, RES, RES), torch.tensor([0.01, 0.5, 5.0, 50.0])
    want = _edm_ref(net, 0.5)(x.double(), s.double(), torch.tensor([0, 1, 2, 4]))
    gpu = P.load(path, device="cuda")
    cpu = P.load(path)
    labels = one_hot([0, 1, 2, -1], 4).float()
    err_gpu = float((gpu.denoise(x.cuda(), s.cuda(), labels.cuda()).double().cpu() - want).abs().max() / want.abs().max())
    err_cpu = float((cpu.denoise(x, s, labels).double() - want).abs().max() / want.abs().max())
    assert err_cpu < 1e-5 < err_gpu < 1e-2


def _conv_output_dtypes(model, x, sigma) -> set:
    """The dtypes the network's convolutions produced in one denoiser call (autocast shows there)."""
    seen: set = set()
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
             for m in model.field.net.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        out = model.denoise(x, sigma)
    finally:
        for h in hooks:
            h.remove()
    assert out.dtype == x.dtype  # the preconditioning's arithmetic stays in the caller's dtype
    return seen


def _fp16_pair(tmp_path, kind):
    """A ``use_fp16`` snapshot of ``kind``, its imported model folder and its float32 twin (same weights)."""
    W.tiny(tmp_path / "half.pkl", kind, seed=3, use_fp16=True)
    W.tiny(tmp_path / "full.pkl", kind, seed=3)
    half = P.load(tmp_path / "half.pkl")
    save_model(half, tmp_path / "m")
    return half, P.load(tmp_path / "m"), P.load(tmp_path / "full.pkl")


@pytest.mark.parametrize("kind", ["edm", "vp", "ve"])
def test_the_fp16_plan_comes_from_the_header_and_the_device(tmp_path, kind):
    """EDM's rule: a ``use_fp16`` network runs in float16 on CUDA and in float32 on the CPU.  The
    flag survives import (in the header) and the plan (:func:`compute_dtype`) follows it and the
    device; on the CPU the fp16 model is its float32 twin bit for bit."""
    half, folder, full = _fp16_pair(tmp_path, kind)
    assert checkpoints.verify(tmp_path / "m" / HEADER).meta["preconditioning"]["use_fp16"] is True
    x, sigma = torch.randn(3, CH, RES, RES), torch.tensor([0.05, 1.0, 20.0])
    want = full.denoise(x, sigma)
    for m in (half, folder):
        flag = m.field.preconditioning.use_fp16
        assert flag and compute_dtype(flag, "cuda") == torch.float16 and compute_dtype(flag, "cpu") is None
        assert _conv_output_dtypes(m, x, sigma) == {torch.float32}
        assert torch.equal(m.denoise(x, sigma), want)
    assert compute_dtype(full.field.preconditioning.use_fp16, torch.device("cuda")) is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["edm", "vp"])
def test_an_imported_fp16_model_runs_in_half_precision_on_cuda(tmp_path, kind):
    """On CUDA the snapshot and its imported folder run their convolutions in float16, return the
    caller's float32, agree with each other bit for bit and with the CPU's float32 run to float16 rounding."""
    half, folder, full = _fp16_pair(tmp_path, kind)
    x, sigma = torch.randn(3, CH, RES, RES), torch.tensor([0.05, 1.0, 20.0])
    want = full.denoise(x, sigma)
    outs = []
    for m in (half.to("cuda"), folder.to("cuda")):
        assert torch.float16 in _conv_output_dtypes(m, x.cuda(), sigma.cuda())
        outs.append(m.denoise(x.cuda(), sigma.cuda()).cpu())
    assert torch.equal(outs[0], outs[1])
    err = float((outs[0] - want).abs().max() / want.abs().max())
    assert 0 < err < 1e-2


@pytest.mark.parametrize("name", ["ncsnpp-pfgmpp128-cond.pkl", "ddpmpp-vp-cond.pt"])
def test_classifier_free_guidance_on_a_loaded_conditional_snapshot(tmp_path, name):
    """EDM's one-hot labels become physgen's classes and its all-zero row the null class, so
    CFG on the loaded field is ``D(·|∅) + w (D(·|y) - D(·|∅))`` of the original network."""
    from physgen.guidance.wrappers import ClassifierFreeGuidance

    path, net, L, settings = _write(tmp_path, name)
    m = P.load(path, dtype=torch.float64)
    guided = ClassifierFreeGuidance(m.field, 2.5)
    guided_model = P.Pretrained(m.process, guided, m.shape, L, m.path, m.format)
    x = torch.randn(3, CH, RES, RES, dtype=torch.float64)
    s = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    labels = [0, 2, 3]
    cond, uncond = m.denoise(x, s, one_hot(labels, L)), m.denoise(x, s)
    want = uncond + 2.5 * (cond - uncond)
    assert torch.allclose(guided_model.denoise(x, s, one_hot(labels, L)), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["ncsnpp-pfgmpp128-cond.pkl", "ddpmpp-vp-cond.pt", "adm-edm-cond.pkl", "ddpmpp-ve-uncond.pt"])
def test_the_description_rebuilds_the_field(tmp_path, name):
    """``info`` names physgen's network spec and preconditioning: with the process's config
    they rebuild the same field from its weights (what a converted checkpoint stores)."""
    from physgen.nets.adm import ADMUNet as _ADM
    from physgen.nets.unet import UNet
    from physgen.processes import make_process
    from physgen.fields.neural import NeuralField

    path, *_ = _write(tmp_path, name)
    m = P.load(path, dtype=torch.float64)
    spec = dict(m.info["physgen_network"])
    net = {"UNet": UNet, "ADMUNet": _ADM}[spec.pop("class")](**spec).double()
    net.load_state_dict(m.field.net.state_dict())
    pre = dict(m.info["preconditioning"])
    field = NeuralField(net, P.PRECONDITIONINGS[pre.pop("name")](**pre)).eval()
    process = make_process(m.process.name, **m.process.config())
    x, s = torch.randn(2, CH, RES, RES, dtype=torch.float64), torch.tensor([0.3, 3.0], dtype=torch.float64)
    s = s if not isinstance(process, VP) else torch.tensor([0.2, 0.7], dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(process.denoise(field, x, s), m.process.denoise(m.field, x, s))
