"""Speed of the hidden-dimension flows and accuracy of the NLSq cubic inverse.

For every flow (NLSq/affine x AF/IAF/SCF, conditional, K = 1 and a stack of K = 5) prints the
median time of ``_call`` (noise to sample), ``_inverse`` (sample to noise) and the log-det on a
cache miss (recomputed along the parallel direction), at the LNF sizes B x T x H = 16 x 288 x 50
with a 500-dim context, under ``torch.no_grad``. Then the worst round-trip error of the NLSq
inverse over many random raw parameters, next to the authors' general-cubic formulation.

    python benchmarks/transforms.py [--device cuda] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro_lnf.transforms as T  # noqa: E402
from pyro_lnf.transforms.nlsq import _NLSQ_A  # noqa: E402


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up: allocator, kernels, lazy initialisation
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_ops(
    transform: T.ConditionedHiddenFlow, x: torch.Tensor, repeats: int, device: torch.device
) -> tuple[float, float, float]:
    """Median seconds of ``_call``, ``_inverse`` and the log-det on a cache miss (fresh tensors
    each time, so it is recomputed along the parallel direction)."""
    y = transform._call(x)
    return (
        median_seconds(lambda: transform._call(x), repeats, device),
        median_seconds(lambda: transform._inverse(x), repeats, device),
        median_seconds(lambda: transform.log_abs_det_jacobian(x.clone(), y.clone()), repeats,
                       device),
    )


def bench_flows(args: argparse.Namespace, device: torch.device) -> None:
    b, t, h, c = args.batch, args.length, args.hidden, args.context
    x = torch.randn(b, t, h, device=device)
    context = torch.randn(b, t, c, device=device)
    print(f"flows: B x T x H = {b} x {t} x {h}, context {c}, {device}, {x.dtype}, "
          f"median of {args.repeats}, no_grad; times in ms")
    header = f"{'flow':<22}{'K':>3}{'_call':>11}{'_inverse':>11}{'log-det':>10}   parallel"
    print(header)
    print("-" * len(header))
    for transform in ("nlsq", "affine"):
        for structure in ("af", "iaf", "scf"):
            for num_layers in (1, 5):
                flow = T.conditional_hidden_flow(
                    h, c, num_layers=num_layers, coupling=structure == "scf",
                    transform=transform, direction="iaf" if structure == "iaf" else "af",
                ).to(device)
                with torch.no_grad():
                    call, inverse, ladj = time_ops(flow.condition(context), x, args.repeats,
                                                   device)
                parallel = {"af": "_inverse", "iaf": "_call", "scf": "both"}[structure]
                print(f"{transform + ' ' + structure.upper():<22}{num_layers:>3}"
                      f"{1e3 * call:>11.1f}{1e3 * inverse:>11.1f}{1e3 * ladj:>10.1f}   {parallel}")


def authors_cubic_inverse(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """The authors' formulation (TextFlow NLSq.standard): the general cubic a·x³+…, its
    depressed form, sinh/cosh roots with the |r-1|+1 reflection, no polishing; torch's
    asinh/acosh stand in for their hand-written logs."""
    a, b = o[..., 0], torch.exp(0.4 * o[..., 1])
    d, f = torch.exp(0.4 * o[..., 3]), o[..., 4]
    c = torch.tanh(0.3 * o[..., 2]) * _NLSQ_A * b / d
    r = y - a
    alpha = -b * d * d
    beta = r * d * d - 2 * b * d * f
    gamma = 2 * d * f * r - b * (1 + f * f)
    delta = r * (1 + f * f) - c
    p = (3 * alpha * gamma - beta**2) / (3 * alpha**2)
    q = (2 * beta**3 - 9 * alpha * beta * gamma + 27 * alpha**2 * delta) / (27 * alpha**3)
    sinh_arg = 1.5 * q / p * torch.sqrt(3 / p)
    sinh_root = -2 * torch.sqrt(p / 3) * torch.sinh(torch.asinh(sinh_arg) / 3)
    ratio = -1.5 * q.abs() / p * torch.sqrt(3 / p.abs())
    cosh_root = (-2 * torch.sign(q) * torch.sqrt(p.abs() / 3)
                 * torch.cosh(torch.acosh((ratio - 1).abs() + 1) / 3))
    return torch.where(p > 0, sinh_root, cosh_root) - beta / (3 * alpha)


def bench_cubic(args: argparse.Namespace, device: torch.device) -> None:
    phi = T.NLSqMap()
    eps = torch.finfo(torch.float64).eps
    n = args.cubic_samples
    print(f"\nNLSq inverse, float64, {n:,} random (raw params, noise) per row: y ~ N(0, 3²), "
          "raw o ~ N(0, σ²)")
    print("  |g(g⁻¹(y)) − y| max: absolute, and in units of eps·(|a|+|bx|+|c/(1+u²)|) (the "
          "rounding of g itself);\n  'authors' = general cubic with |r−1|+1, no Newton step")
    header = (f"{'σ':>5}{'ours abs':>12}{'ours /ulp':>11}{'> 1e-10':>10}{'NaN':>6}"
              f"{'authors abs':>14}{'authors /ulp':>14}{'NaN':>6}")
    print(header)
    print("-" * len(header))
    g = torch.Generator(device=device).manual_seed(0)
    for sigma in (1.0, 3.0, 5.0, 10.0):
        o = sigma * torch.randn(n, 5, dtype=torch.float64, device=device, generator=g)
        y = 3.0 * torch.randn(n, dtype=torch.float64, device=device, generator=g)
        row = f"{sigma:>5.0f}"
        for which, inverse in (("ours", phi.inverse), ("authors", authors_cubic_inverse)):
            with torch.no_grad():
                x = inverse(y, o)
                a, log_b, s, log_d, f = phi._unpack(o)
                u = torch.exp(log_d) * x + f
                terms = a.abs() + (torch.exp(log_b) * x).abs() + (
                    s * torch.exp(log_b - log_d) / (1 + u * u)).abs()
                err = (phi.forward(x, o)[0] - y).abs()
            finite = torch.isfinite(err)
            nan = int((~finite).sum())
            worst = err[finite].max().item() if finite.any() else math.nan
            worst_ulp = (err[finite] / (eps * terms[finite])).max().item()
            if which == "ours":
                frac = (err > 1e-10).double().mean().item()
                row += f"{worst:>12.1e}{worst_ulp:>11.1f}{frac:>10.1e}{nan:>6d}"
            else:
                row += f"{worst:>14.1e}{worst_ulp:>14.1f}{nan:>6d}"
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=288)
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--context", type=int, default=500)
    parser.add_argument("--cubic-samples", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    bench_flows(args, device)
    bench_cubic(args, device)


if __name__ == "__main__":
    main()
