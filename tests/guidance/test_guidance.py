"""Guidance against the exact conditional field: CFG, classifier guidance (exact for Gaussian
kernels, O(1/D) for PFGM++), the scale-mixture identity behind it, NFE counting, labels, CLI."""
import json
import math

import numpy as np
import pytest
import torch

from physgen.cli.main import main
from physgen.data import load_toy
from physgen.errors import UserError
from physgen.fields.kinds import convert_gaussian
from physgen.guidance import (
    BayesClassifier,
    ClassifierFreeGuidance,
    ClassifierGuidance,
    MixtureBayesClassifier,
    bayes_classifier,
    load_classifier,
    make_classifier,
    sample_guided,
    save_classifier,
)
from physgen.metrics import mode_weights
from physgen.noise import SeededNoise
from physgen.processes import EDM, VE, VP
from physgen.processes.pfgmpp import PFGMpp
from physgen.sampling import sample
from physgen.toy import class_fraction

F64 = torch.float64


def labelled_points(n=600, seed=0, name="8gaussians"):
    g = torch.Generator().manual_seed(seed)
    return load_toy(name).sample_labelled(n, g, dtype=F64)


def queries(proc, pts, n=200, seed=1, s_range=(0.1, 4.0), labels=None):
    """x ~ p_s(x | y_j) for random points j and log-uniform scales; target classes random, or
    with ``labels`` the class of point j (x ~ p_s(x | y): where a guided sampler should be)."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(proc, VP):
        s = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=F64)
    else:
        lo, hi = (math.log(v) for v in s_range)
        s = torch.exp(lo + (hi - lo) * torch.rand(n, generator=g, dtype=F64))
    j = torch.randint(0, pts.shape[0], (n,), generator=g)
    x = proc.perturb(pts[j], s, generator=g)
    y = torch.randint(0, 8, (n,), generator=g) if labels is None else labels[j]
    return x, s, y


def relative_error(guided, exact_cond, exact_uncond):
    return float((guided - exact_cond).norm(dim=1).mean() / (exact_cond - exact_uncond).norm(dim=1).mean())


# ------------------------------------------------------------------ classifier-free guidance
@pytest.mark.parametrize("proc", [EDM(), VP(), PFGMpp(D=8)], ids=["edm", "vp", "pfgmpp8"])
def test_cfg_at_w1_is_the_exact_conditional_field_and_w_is_the_affine_combination(proc):
    pts, lab = labelled_points()
    field = proc.exact_field(pts, lab)
    x, s, y = queries(proc, pts)
    cond, uncond = field(x, s, y), field(x, s)
    assert torch.equal(ClassifierFreeGuidance(field, 1.0)(x, s, y), cond)
    for batched in (True, False):
        got = ClassifierFreeGuidance(field, 2.5, batched=batched)(x, s, y)
        assert torch.allclose(got, uncond + 2.5 * (cond - uncond), atol=1e-12, rtol=0)
    assert torch.allclose(ClassifierFreeGuidance(field, 0.0)(x, s, y), uncond, atol=1e-12, rtol=0)


def test_cfg_is_kind_independent_for_gaussian_processes():
    """Combining eps (or scores) gives the same guided denoiser: the kinds are affine in D."""
    proc = VP()
    pts, lab = labelled_points()
    den = proc.exact_field(pts, lab)

    class EpsField:
        kind, num_classes = "eps", den.num_classes

        def __call__(self, x, s, label=None):
            a, b = proc.coefficients(s)
            return convert_gaussian(den(x, s, label), "denoiser", "eps", x, a, b)

    x, s, y = queries(proc, pts)
    a, b = proc.coefficients(s)
    via_eps = convert_gaussian(ClassifierFreeGuidance(EpsField(), 3.0)(x, s, y), "eps", "denoiser", x, a, b)
    assert torch.allclose(via_eps, ClassifierFreeGuidance(den, 3.0)(x, s, y), atol=1e-9, rtol=0)


def test_cfg_interval_guides_only_inside_and_counts_honestly():
    proc = EDM(sigma_max=6.0)
    pts, lab = labelled_points()
    field = proc.exact_field(pts, lab)
    x, s, y = queries(proc, pts, s_range=(0.05, 5.0))
    lo, hi = 0.3, 1.5
    cfg = ClassifierFreeGuidance(field, 3.0, interval=(lo, hi))
    got = cfg(x, s, y)
    inside = (s >= lo) & (s <= hi)
    cond, uncond = field(x, s, y), field(x, s)
    assert torch.allclose(got[inside], (uncond + 3 * (cond - uncond))[inside], atol=1e-12, rtol=0)
    assert torch.equal(got[~inside], cond[~inside])
    assert cfg.evaluations == 2 and cfg.calls == 1


def test_cfg_batched_null_labels_on_a_neural_field_match_two_calls():
    from physgen.nets.mlp import MLP

    torch.manual_seed(0)
    proc = EDM()
    net = MLP(2, hidden=32, depth=2, num_classes=8)
    for p in net.parameters():  # the output layer starts at zero: give it weights
        torch.nn.init.normal_(p, std=0.3)
    field = proc.precondition(net)
    x, s, y = torch.randn(16, 2), torch.rand(16) + 0.1, torch.randint(0, 8, (16,))
    a = ClassifierFreeGuidance(field, 2.0, batched=True)(x, s, y)
    b = ClassifierFreeGuidance(field, 2.0, batched=False)(x, s, y)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(field(x, s, torch.full((16,), 8)), field(x, s, None))  # null row == unconditional


# ------------------------------------------------------------------ classifier guidance
@pytest.mark.parametrize("proc", [EDM(), VE(), VP()], ids=["edm", "ve", "vp"])
def test_classifier_guidance_with_the_bayes_classifier_is_the_exact_conditional_field(proc):
    pts, lab = labelled_points()
    field = proc.exact_field(pts, lab)
    x, s, y = queries(proc, pts)
    guided = ClassifierGuidance(field, proc, BayesClassifier.from_field(field), 1.0)
    assert guided.exact
    assert torch.allclose(guided(x, s, y), field(x, s, y), atol=1e-9, rtol=0)
    # and at any w it is CFG of the exact field: both are D + w (D(.|y) - D)
    strong = ClassifierGuidance(field, proc, BayesClassifier.from_field(field), 3.5)
    assert torch.allclose(strong(x, s, y), ClassifierFreeGuidance(field, 3.5)(x, s, y), atol=1e-8, rtol=0)


def test_bayes_classifier_closed_form_gradient_equals_autograd():
    proc = PFGMpp(D=16)
    pts, lab = labelled_points(200)
    clf = BayesClassifier.from_field(proc.exact_field(pts, lab))
    x, s, y = queries(proc, pts, n=40)
    xr = x.clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(clf(xr, s).gather(1, y[:, None]).sum(), xr)
    assert torch.allclose(clf.grad_log_prob(x, s, y), g_auto, atol=1e-9)
    assert torch.allclose(clf(x, s).exp().sum(1), torch.ones(40, dtype=F64))


@pytest.mark.parametrize("proc", [EDM(), VP()], ids=["edm", "vp"])
def test_mixture_bayes_classifier_makes_the_analytic_field_conditional(proc):
    mix = load_toy("8gaussians").mixture
    field = proc.analytic_field(mix)
    x, s, y = queries(proc, mix.means.repeat(20, 1))
    guided = ClassifierGuidance(field, proc, bayes_classifier(field), 1.0)
    assert isinstance(guided.classifier, MixtureBayesClassifier)
    assert torch.allclose(guided(x.float(), s.float(), y), field(x.float(), s.float(), y), atol=2e-4)


def pfgmpp_shift_error(D, pts, lab, on_class):
    proc = PFGMpp(D=D)
    field = proc.exact_field(pts, lab)
    x, s, y = queries(proc, pts, n=300, labels=lab if on_class else None)
    guided = ClassifierGuidance(field, proc, BayesClassifier.from_field(field), 1.0)
    assert not guided.exact
    return relative_error(guided(x, s, y), field(x, s, y), field(x, s))


@pytest.mark.parametrize("on_class", [True, False], ids=["x~p(x|y)", "x~p(x)"])
def test_pfgmpp_classifier_guidance_error_shrinks_as_D_grows(on_class):
    """σ²∇log p(y|x,σ) is exact only as D → ∞ (r = σ√D): the error must fall with D, like 1/D
    where the guided sampler goes (x ~ p_σ(x|y)); slower for x far from the class, where
    ‖x - y_i‖²/σ² is large."""
    pts, lab = labelled_points(400)
    errs = [pfgmpp_shift_error(D, pts, lab, on_class) for D in (4, 32, 256, 2048)]
    factor = 0.7 if on_class else 0.8  # off the class the decay starts later (see the docstring)
    assert all(b < factor * a for a, b in zip(errs, errs[1:])), errs
    assert errs[0] > 0.2, errs
    assert errs[-1] < (0.02 if on_class else 0.1), errs


def test_yukawa_classifier_guidance_error_shrinks_as_mz_grows():
    """Yukawa's NIG kernel is Gaussian (variance z/m) as m z → ∞; the aligned shift σ(z)² ∇log p
    with σ(z)² = z²/(1 + m z) → z/m becomes exact there."""
    from physgen.processes.yukawa import Yukawa

    pts, lab = labelled_points(300)
    errs = []
    for m in (0.3, 3.0, 30.0):
        proc = Yukawa(m=m)
        field = proc.exact_field(pts, lab)
        z = proc.z_of_sigma(torch.full((150,), 1.0, dtype=F64))
        g = torch.Generator().manual_seed(3)
        j = torch.randint(0, pts.shape[0], (150,), generator=g)
        x = proc.perturb(pts[j], z, generator=g)
        guided = ClassifierGuidance(field, proc, BayesClassifier.from_field(field), 1.0)
        errs.append(relative_error(guided(x, z, lab[j]), field(x, z, lab[j]), field(x, z)))
    assert errs[0] > 0.2 and errs[1] < 0.5 * errs[0] and errs[2] < 0.01, errs


def test_yukawa_cfg_guides_the_transport_flow():
    """CFG also combines Yukawa's transport denoiser (the default birth-free flow) and counts it."""
    from physgen.processes.yukawa import Yukawa

    proc = Yukawa(m=1.0, sigma_max=6.0, sigma_data=2.0)
    sol, weights = eight_gaussians_run(proc, "cfg", 2.0, label=2, n=150, steps=12)
    assert float(weights[2]) >= 0.98, weights
    assert sol.stats.extra["birth_death"] == "transport"
    assert sol.stats.nfe == 2 * sol.stats.extra["flow_evaluations"]


def test_scale_mixture_identity_behind_the_pfgmpp_shift():
    """D(x,σ|y) = E_{u|x,y}[D_G(x,τ_u) + τ_u ∇log p_τu(y|x)] with τ_u = σ²D/u, u ~ χ²_D (quadrature)."""
    D, sigma = 4, 0.8
    pts, lab = labelled_points(300)
    n = pts.shape[1]
    pf, edm = PFGMpp(D=D), EDM()
    x, _, y = queries(pf, pts, n=5, s_range=(sigma, sigma * 1.0000001))
    exact = pf.exact_field(pts, lab)(x, torch.full((5,), sigma, dtype=F64), y)
    gauss = edm.exact_field(pts, lab)
    bayes = BayesClassifier.from_field(gauss)
    v = torch.linspace(math.log(1e-6), math.log(1e4), 3000, dtype=F64)  # v = log u
    u = v.exp()
    tau = sigma**2 * D / u
    for q in range(5):
        xq = x[q].expand(len(v), n)
        d2 = torch.cdist(xq[:1], pts[lab == y[q]]).pow(2)[0]  # [P_y]
        loglik = torch.logsumexp(-d2[None, :] / (2 * tau[:, None]), 1) - 0.5 * n * torch.log(2 * math.pi * tau)
        logq = (D / 2) * v - u / 2 + loglik  # χ²_D density × u (Jacobian of v = log u) × p_τ(x | y)
        wq = torch.softmax(logq, 0)
        st = tau.sqrt()
        lab_q = torch.full((len(v),), int(y[q]))
        per_u = gauss(xq, st) + tau[:, None] * bayes.grad_log_prob(xq, st, lab_q)
        assert torch.allclose((wq[:, None] * per_u).sum(0), exact[q], atol=1e-6), q


# --------------------------------------------------------------------------- sampling
def eight_gaussians_run(proc, guidance=None, w=1.0, label=3, n=300, steps=18):
    ds = load_toy("8gaussians")
    g = torch.Generator().manual_seed(0)
    data, lab = ds.sample_labelled(1000, g)
    field = proc.exact_field(data, lab)
    if guidance == "cfg":
        field = ClassifierFreeGuidance(field, w)
    elif guidance == "classifier":
        field = ClassifierGuidance(field, proc, bayes_classifier(field), w)
    noise = SeededNoise(0, range(n))
    x0 = proc.sample_prior((n, 2), noise=noise)
    sol = sample_guided(proc, field, x0, proc.grid(steps), "heun", noise=noise, label=torch.full((n,), label))
    return sol, mode_weights(sol.x, ds.mixture.means)


@pytest.mark.parametrize("guidance,w", [(None, 1.0), ("cfg", 3.0), ("classifier", 1.0), pytest.param("cfg", 1.0, marks=pytest.mark.slow),
                                        pytest.param("classifier", 3.0, marks=pytest.mark.slow)])
def test_conditional_sampler_hits_the_requested_mode(guidance, w):
    sol, weights = eight_gaussians_run(EDM(sigma_max=6.0, sigma_data=2.0), guidance, w, label=3)
    assert float(weights[3]) >= 0.98, weights


@pytest.mark.slow
def test_guided_pfgmpp_sampler_hits_the_requested_mode():
    _, weights = eight_gaussians_run(PFGMpp(D=16, sigma_max=6.0, sigma_data=2.0), "classifier", 2.0, label=5)
    assert float(weights[5]) >= 0.98, weights
    _, weights = eight_gaussians_run(PFGMpp(D=16, sigma_max=6.0, sigma_data=2.0), "cfg", 2.0, label=5)
    assert float(weights[5]) >= 0.98, weights


def test_nfe_counts_field_evaluations():
    proc = EDM(sigma_max=6.0, sigma_data=2.0)
    sol, _ = eight_gaussians_run(proc, None, n=50)
    flow = sol.stats.nfe
    assert flow == 35  # heun, 18 steps, last step Euler
    sol, _ = eight_gaussians_run(proc, "cfg", 2.0, n=50)
    assert (sol.stats.nfe, sol.stats.extra["flow_evaluations"]) == (2 * flow, flow)
    sol, _ = eight_gaussians_run(proc, "cfg", 1.0, n=50)  # w = 1 is the conditional field: one evaluation
    assert sol.stats.nfe == flow
    sol, _ = eight_gaussians_run(proc, "classifier", 2.0, n=50)
    assert (sol.stats.nfe, sol.stats.extra["classifier_evaluations"]) == (flow, flow)

    # an interval: 2 evaluations only for the calls inside it
    data, lab = labelled_points(500)
    seen = []

    class Spy:
        kind, num_classes = "denoiser", 8
        inner = proc.exact_field(data, lab)

        def __call__(self, x, s, label=None):
            seen.append(float(s[0]))
            return self.inner(x, s, label)

    cfg = ClassifierFreeGuidance(Spy(), 2.0, interval=(0.5, 2.0), batched=True)
    noise = SeededNoise(0, range(20))
    sol = sample_guided(proc, cfg, proc.sample_prior((20, 2), noise=noise), proc.grid(18), "heun", label=torch.full((20,), 1))
    assert sol.stats.extra["flow_evaluations"] == len(seen) == 35
    inside = _calls_inside(proc, (0.5, 2.0))
    assert 0 < inside < 35
    assert sol.stats.nfe == sum(2 if 0.5 <= v <= 2.0 else 1 for v in seen) == 35 + inside


def _calls_inside(proc, interval):
    """Heun on the EDM schedule: 2 flow calls at each s_i (i < K-1: one at s_i, one at s_{i+1} > 0)."""
    sched = proc.grid(18).tolist()
    calls = []
    for i in range(len(sched) - 1):
        calls.append(sched[i])
        if sched[i + 1] > 0:
            calls.append(sched[i + 1])
    return sum(1 for v in calls if interval[0] <= v <= interval[1])


def test_plain_sample_and_guided_sample_agree_on_unguided_fields():
    proc = EDM(sigma_max=6.0, sigma_data=2.0)
    data, lab = labelled_points(500)
    field = proc.exact_field(data, lab)
    noise = SeededNoise(0, range(30))
    x0 = proc.sample_prior((30, 2), noise=noise)
    a = sample(proc, field, x0, proc.grid(10), "heun", label=torch.full((30,), 2))
    b = sample_guided(proc, field, x0, proc.grid(10), "heun", label=torch.full((30,), 2))
    assert torch.equal(a.x, b.x) and a.stats.nfe == b.stats.nfe


# ----------------------------------------------------------------------------- labels
def bad_label_cases(k, b):
    return [
        (k + 1, str(k + 1)),
        (-2, "-2"),
        (2.0, "2.0"),
        (torch.tensor([0.5] * b), "float"),
        (torch.tensor([True] * b), "bool"),
        (torch.arange(b + 1), f"[{b}]"),
        ("three", "three"),
    ]


def _fields():
    from physgen.nets.mlp import MLP

    pts, lab = labelled_points(100)
    proc = EDM()
    return {
        "exact": proc.exact_field(pts.float(), lab),
        "analytic": proc.analytic_field(load_toy("8gaussians").mixture),
        "neural": proc.precondition(MLP(2, hidden=16, depth=1, num_classes=8)),
        "cfg": ClassifierFreeGuidance(proc.exact_field(pts.float(), lab), 2.0),
        "classifier": ClassifierGuidance(proc.exact_field(pts.float(), lab), proc, bayes_classifier(proc.exact_field(pts.float(), lab)), 2.0),
    }


@pytest.mark.parametrize("name", ["exact", "analytic", "neural", "cfg", "classifier"])
def test_bad_labels_raise_user_errors_naming_the_value(name):
    field = _fields()[name]
    x, s = torch.randn(4, 2), torch.full((4,), 0.5)
    for bad, needle in bad_label_cases(8, 4):
        with pytest.raises(UserError, match=None) as err:
            field(x, s, bad)
        assert needle in str(err.value), (bad, str(err.value))
    for ok in (None, 0, 7, torch.tensor([0, 1, 2, 3]), "null", torch.tensor([8, 8, 0, -1])):
        assert field(x, s, ok).shape == (4, 2)


def test_labels_on_unconditional_fields_and_networks_are_refused():
    from physgen.nets.mlp import MLP

    proc = EDM()
    x, s = torch.randn(3, 2), torch.full((3,), 0.5)
    for field in (proc.exact_field(torch.randn(10, 2)), proc.precondition(MLP(2, hidden=16, depth=1))):
        with pytest.raises(UserError, match="unconditional"):
            field(x, s, 1)
        assert torch.equal(field(x, s, "null"), field(x, s))
    with pytest.raises(UserError, match="conditional field"):
        ClassifierFreeGuidance(proc.exact_field(torch.randn(10, 2)), 2.0)


def test_bad_guidance_arguments():
    proc = EDM()
    pts, lab = labelled_points(50)
    field = proc.exact_field(pts, lab)
    for w in (float("nan"), float("inf"), "2", True):
        with pytest.raises(UserError, match="w must be"):
            ClassifierFreeGuidance(field, w)
    for interval in ((2.0, 1.0), (-1.0, 1.0), "1", "a,b"):
        with pytest.raises(UserError, match="interval"):
            ClassifierFreeGuidance(field, 2.0, interval=interval)


# ------------------------------------------------------------------- trained classifiers
def test_classifier_checkpoint_round_trip_and_kernel_check(tmp_path):
    proc = PFGMpp(D=8)
    clf = make_classifier(proc, (2,), 8, hidden=16, depth=1)
    for p in clf.parameters():
        torch.nn.init.normal_(p, std=0.2)
    save_classifier(tmp_path / "c.pt", clf)
    back = load_classifier(tmp_path / "c.pt", PFGMpp(D=8, sigma_max=3.0))
    x, s = torch.randn(5, 2), torch.full((5,), 0.7)
    assert torch.allclose(back(x, s), clf(x, s))
    with pytest.raises(UserError, match="trained on"):
        load_classifier(tmp_path / "c.pt", PFGMpp(D=64))
    with pytest.raises(UserError, match="trained on"):
        ClassifierGuidance(proc.exact_field(torch.randn(10, 2), torch.arange(10) % 8), EDM(), clf, 1.0)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="classifier checkpoint"):
        load_classifier(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_classifier(tmp_path / "missing.pt")


def test_conv_classifier_on_images_gives_logits_and_gradients():
    torch.manual_seed(0)
    proc = EDM()
    clf = make_classifier(proc, (1, 8, 8), 10, width=8)
    x, s = torch.randn(3, 1, 8, 8), torch.full((3,), 0.5)
    logits = clf(x, s)
    assert logits.shape == (3, 10)
    torch.testing.assert_close(clf(x[2:], s[2:])[0], logits[2], rtol=1e-5, atol=1e-6)  # each row from its own image
    from physgen.guidance import classifier_gradient

    label = torch.tensor([1, 2, 3])
    g = classifier_gradient(clf, x, s, label)
    assert g.shape == x.shape and torch.isfinite(g).all()
    assert (classifier_gradient(clf, x, s, torch.tensor([4, 5, 6])) - g).abs().max() > 1e-6  # another label, another gradient
    # it is the gradient of log p(label | x, s): in float64, a central difference along it is |g|² per unit step
    clf64, x64, s64 = clf.double(), x.double(), s.double()  # (the module in place: the float checks are done)
    g64 = classifier_gradient(clf64, x64, s64, label)
    logp = lambda z: torch.log_softmax(clf64(z, s64), 1).gather(1, label[:, None])[:, 0]
    with torch.no_grad():
        slope = (logp(x64 + 1e-4 * g64) - logp(x64 - 1e-4 * g64)) / 2e-4
    torch.testing.assert_close(slope, g64.flatten(1).square().sum(1), rtol=1e-5, atol=0)  # measured: 7e-8 over 30 seeds
    torch.testing.assert_close(g64.float(), g, rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------------------------- CLI
def test_cli_toy_cfg_hits_mode_3(tmp_path):
    out = tmp_path / "run"
    rc = main(["toy", "--label", "3", "--guidance", "cfg", "--w", "2", "--field", "exact", "--dataset", "8gaussians",
               "--n-data", "1000", "--n-samples", "400", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    for f in ("config.json", "samples.npy", "metrics.json", "samples.png", "trajectories.png"):
        assert (out / f).is_file(), f
    x = torch.from_numpy(np.load(out / "samples.npy"))
    assert float(mode_weights(x, load_toy("8gaussians").mixture.means)[3]) >= 0.98
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label_fraction"] >= 0.98 and metrics["nfe"] == 2 * metrics["flow_evaluations"]
    assert json.loads((out / "config.json").read_text())["guidance"] == "cfg"


def test_cli_train_classifier_checkpoint_guides_toy(tmp_path, capsys):
    ckpt_dir = tmp_path / "clf"
    assert main(["train-classifier", "--dataset", "8gaussians", "--steps", "100", "--batch", "256", "--hidden", "64", "--depth", "2",
                 "--n-data", "2000", "--device", "cpu", "--out", str(ckpt_dir)]) == 0
    assert (ckpt_dir / "classifier.pt").is_file() and (ckpt_dir / "metrics.json").is_file()
    out = tmp_path / "run"
    assert main(["toy", "--label", "3", "--guidance", "classifier", "--w", "3", "--classifier-ckpt", str(ckpt_dir / "classifier.pt"),
                 "--field", "exact", "--dataset", "8gaussians", "--n-data", "1000", "--n-samples", "300", "--device", "cpu",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label_fraction"] >= 0.9, metrics
    assert metrics["classifier_evaluations"] == metrics["flow_evaluations"]
    # a classifier trained on another kernel is refused, in one line
    capsys.readouterr()
    assert main(["toy", "--label", "3", "--guidance", "classifier", "--classifier-ckpt", str(ckpt_dir / "classifier.pt"),
                 "--process", "vp", "--field", "exact", "--dataset", "8gaussians", "--n-data", "500", "--n-samples", "50",
                 "--device", "cpu", "--out", str(tmp_path / "bad")]) == 2
    assert "trained on" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["--guidance", "cfg"], "needs --label"),
    (["--label", "9", "--guidance", "cfg"], "label 9"),
    (["--label", "2", "--guidance", "cfg", "--guidance-interval", "3,1"], "interval"),
    (["--label", "2", "--guidance", "cfg", "--classifier-ckpt", "x.pt"], "classifier-ckpt"),
])
def test_cli_toy_guidance_mistakes_are_one_line_errors(tmp_path, capsys, argv, needle):
    rc = main(["toy", "--field", "exact", "--dataset", "8gaussians", "--n-data", "200", "--n-samples", "20", "--device", "cpu",
               "--out", str(tmp_path / "r"), *argv])
    assert rc == 2
    assert needle in capsys.readouterr().err


def test_class_fraction_is_a_nearest_neighbour_vote():
    data = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    labels = torch.tensor([0, 1])
    x = torch.tensor([[1.0, 0.0], [9.0, 0.0], [float("nan"), 0.0]])
    assert class_fraction(x, data, labels, 0) == pytest.approx(1 / 3)
    assert class_fraction(x, data, labels, 1) == pytest.approx(1 / 3)
