"""Issue 19: what VP's ``c_noise`` should look like to the toy MLP's embedding (its far tail in the demo).

Runs the demo's VP configuration (``physgen demo``'s ``ToyConfig``: toy training defaults, Heun 18
steps, 10,000 samples) for each seed, with the MLP's embedding fed

* ``base``: DDPM's ``999 t`` as it is (``c_noise_unit = 1``, physgen before this change);
* ``t4``:   ``999 t / (999/4) = 4 t`` (``EpsPreconditioning.c_noise_unit``, physgen now);
* ``logsig``: EDM's ``ln(σ)/4`` at VP's ``σ = b/a``,

and prints sliced W2 against fresh data, the fraction of samples farther than 0.6 from both moons'
centre arcs, the counts beyond 1 and 1.5, and the largest distance (tests/end_to_end/test_demo.py's measure).

    python benchmarks/vp_noise_input.py base 0,1,2   (and t4, logsig)
"""
import io
import json
import sys
import time

import numpy as np
import torch

from physgen.fields import neural
from physgen.fields.kinds import expand_as_batch
from physgen.toy import ToyConfig, run_toy

ARCS = (((-1.0, -0.2), 1.0), ((1.0, 0.8), -1.0))  # moons' centre arcs (as tests/end_to_end/test_demo.py)


def nearest_arc(p: np.ndarray) -> np.ndarray:
    out = []
    for centre, side in ARCS:
        c = np.asarray(centre)
        v = p - c
        ends = np.stack([c + (2.0, 0.0), c - (2.0, 0.0)])
        to_end = np.linalg.norm(p[:, None, :] - ends[None], axis=2).min(1)
        out.append(np.where(side * v[:, 1] >= 0, np.abs(np.hypot(v[:, 0], v[:, 1]) - 2.0), to_end))
    return np.stack(out, 1).min(1)


def log_sigma_input(self, net, x, s, label):  # the "logsig" variant's preconditioning
    a, b = self.coefficients(s)
    c_in = expand_as_batch(1.0 / (a**2 * self.sigma_data**2 + b**2).sqrt(), x)
    return net(c_in * x, ((b / a).log() / 4).to(x.dtype), label)


def main(variant: str, seeds: list[int], out_root: str = "/tmp/vp_noise_input") -> None:
    torch.set_num_threads(1)
    neural.EpsPreconditioning.c_noise_unit = {"base": 1.0, "t4": 999.0 / 4, "logsig": 1.0}[variant]
    if variant == "logsig":
        neural.EpsPreconditioning.__call__ = log_sigma_input
    for seed in seeds:
        t0 = time.process_time()
        out = f"{out_root}/{variant}-{seed}"
        cfg = ToyConfig(process="vp", dataset="moons", field="mlp", n_data=10_000, solver="heun", steps=18, n_samples=10_000,
                        seed=seed, device="cpu", out=out)
        m = run_toy(cfg, log_stream=io.StringIO())
        d = nearest_arc(np.load(out + "/samples.npy"))
        print(json.dumps({"variant": variant, "seed": seed, "sw2": round(m["sliced_w2"], 4), "gap": round(float(np.mean(d > 0.6)), 4),
                          "far1": int((d > 1.0).sum()), "far15": int((d > 1.5).sum()), "dmax": round(float(d.max()), 2),
                          "cpu_s": round(time.process_time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], [int(s) for s in sys.argv[2].split(",")])
