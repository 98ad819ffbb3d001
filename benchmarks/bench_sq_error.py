"""Which form of the squared reconstruction error is faster for which shapes? Times one training
step (forward, loss, backward) of a stacked SSAE with the expanded (Gram) form and with the
direct form of :meth:`ssae_core.model.StackedSSAE.codes_and_sq_error`, for the shapes the
pipeline trains (D embedding width, M latents, B batch rows, S members), checks that both give
the same errors, and prints which form ``uses_gram_form`` picks. Run from the project root on
idle cores:

    python benchmarks/bench_sq_error.py --threads 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from ssae_core.model import StackedSSAE, uses_gram_form

SHAPES = [  # (D, M, B, S): the study's small sets, cat, the synthetic sets, a wide model
    (576, 1, 64, 15),
    (576, 2, 64, 15),
    (576, 16, 64, 15),
    (576, 32, 64, 15),
    (576, 64, 64, 15),
    (576, 135, 64, 15),
    (576, 270, 64, 3),
    (64, 3, 256, 5),
    (64, 20, 256, 5),
    (64, 40, 256, 5),
    (64, 3, 64, 5),
    (128, 3, 256, 5),
    (256, 3, 256, 5),
    (256, 20, 256, 5),
    (576, 2, 256, 15),
    (576, 135, 256, 15),
    (4096, 16, 64, 15),
    (4096, 64, 256, 5),
    (4096, 256, 256, 5),
]


def _step_ms(step: Callable[[], None], seconds: float) -> float:
    for _ in range(3):
        step()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    return 1000 * (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per form and shape")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print("    D    M    B   S | gram ms | direct ms | gram/direct | picks  | max rel. diff")
    for dim, latent, batch, members in SHAPES:
        net = StackedSSAE(dim, latent, list(range(members)), x_rms=1.0)
        x_SBD = torch.randn(members, batch, dim)
        forms = {"gram": net._expanded_sq_error, "direct": net._direct_sq_error}
        times = {}
        for name, form in forms.items():

            def step(form: Callable = form, net: StackedSSAE = net, x_SBD=x_SBD) -> None:
                net.zero_grad()
                codes_SBM, sq_SB = form(x_SBD)
                (sq_SB.mean() + codes_SBM.abs().mean()).backward()

            times[name] = _step_ms(step, args.seconds)
        with torch.no_grad():
            gram_SB, direct_SB = forms["gram"](x_SBD)[1], forms["direct"](x_SBD)[1]
        diff = float(((gram_SB - direct_SB).abs() / direct_SB.abs().clamp_min(1e-6)).max())
        picks = "gram" if uses_gram_form(latent, batch, dim, members) else "direct"
        print(
            f"{dim:5d} {latent:4d} {batch:4d} {members:3d} | {times['gram']:7.2f} | "
            f"{times['direct']:9.2f} | {times['gram'] / times['direct']:11.2f} | {picks:6s} | "
            f"{diff:.1e}"
        )


if __name__ == "__main__":
    main()
