"""Blend's bias under PFGM++ at finite D (issue 23): no analytic field exists for a Student-t
kernel, so the field is the exact one of 20000 draws of the two-mode mixture (the same
points for every D, and for EDM = D inf as the reference on the same field); 2000 samples
observed at x0 = 0, 3 seeds, against the closed-form conditional 0.3 N(-1.5, 0.25) + 0.7 N(1.5, 0.25).

    python benchmarks/editing_bias.py      (about 4 minutes per row on one CPU thread)
"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "editing"))
from editing_cases import CONDITIONAL, MASK, MIXTURE, left_weight, mode_stds, observed, toy_process  # noqa: E402

from physgen.editing import inpaint, ks_statistic  # noqa: E402


def main() -> None:
    points = MIXTURE.sample(20000, generator=torch.Generator().manual_seed(1))
    for name, options in (("pfgmpp", {"D": 4}), ("pfgmpp", {"D": 128}), ("edm", {})):
        process = toy_process(name, **options)
        field = process.exact_field(points)
        rows, t0 = [], time.perf_counter()
        for seed in range(3):
            sol = inpaint(process, field, observed(2000), MASK, seed=seed)
            rows.append((ks_statistic(sol.x[:, 1], CONDITIONAL), left_weight(sol.x), sum(mode_stds(sol.x)) / 2))
        cols = list(zip(*rows))
        print(name, options, f"blend, {sol.stats.nfe} NFE:",
              " | ".join(f"{k} {statistics.mean(c):.4f} (sd {statistics.stdev(c):.4f})" for k, c in zip(("KS", "left weight", "mode spread"), cols)),
              f"({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
