"""Speed-ups timed against their absence, interleaved in one process.

This shared machine drifts by ±15% between runs, more than some of the effects, so each
variant is timed right after the other on the same batch, six times, and the medians summed.

1. The IAF/SCF density loop (forward + backward, JSB batches of 5) with the time LSTM's weights
   multiplied through :class:`~pyro_lnf.nn.weight_bank.WeightBank` (gradients formed once after the
   loop) against plain products (a gradient product and accumulation per step).
2. A whole AF/AF training step with Adam's fused kernel against its default per-op update.

    python benchmarks/ablations.py             # CPU, 2 threads
    python benchmarks/ablations.py --quick     # 3 batches, 3 rounds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyro_lnf.datasets import load_dataset  # noqa: E402
from pyro_lnf.errors import LnfError  # noqa: E402
from pyro_lnf.app.config import default_config  # noqa: E402
from pyro_lnf.app.run import build_model  # noqa: E402


class PlainProduct:
    """What the LSTM stepper did before WeightBank: ``x @ weight.T``, autograd's own gradient."""

    def __init__(self, weight: Tensor) -> None:
        self.weight = weight

    def __call__(self, x: Tensor) -> Tensor:
        return x @ self.weight.T


def interleaved(batches, variants: dict[str, Callable], rounds: int) -> dict[str, float]:
    """Sum over batches of each variant's median time, the variants alternating per batch."""
    totals = dict.fromkeys(variants, 0.0)
    for batch in batches:
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, run in variants.items():
                start = time.perf_counter()
                run(batch)
                times[name].append(time.perf_counter() - start)
        for name in variants:
            totals[name] += statistics.median(times[name])
    return totals


def density_loop(jsb, batches, rounds: int) -> None:
    torch.manual_seed(0)
    module = build_model(default_config("iafscf"), jsb).train()

    def density(batch) -> None:
        z = torch.randn(len(batch), int(batch.lengths.max()), module.prior.dim,
                        requires_grad=True)
        module.prior.log_prob(z, batch.lengths).sum().backward()

    def plain(batch) -> None:
        with mock.patch("pyro_lnf.nn.lstm.WeightBank", PlainProduct):
            density(batch)

    density(batches[0])  # warm-up
    totals = interleaved(batches, {"plain products": plain, "WeightBank": density}, rounds)
    steps = sum(int(b.lengths.max()) for b in batches)
    print(f"IAF/SCF density loop, forward + backward, {steps} time steps:")
    for name, total in totals.items():
        print(f"  {name:16s} {1000 * total / steps:6.2f} ms per time step")


def adam_step(jsb, batches, rounds: int) -> None:
    torch.manual_seed(0)
    pyro.clear_param_store()
    module = build_model(default_config("afaf"), jsb).train()
    elbo = Trace_ELBO(num_particles=1, vectorize_particles=True, max_plate_nesting=1)
    # A tiny learning rate keeps the weights (and so the work) the same for both variants.
    optimizers = {
        "Adam, per-op": torch.optim.Adam(module.parameters(), lr=1e-9),
        "Adam, fused": torch.optim.Adam(module.parameters(), lr=1e-9, fused=True),
    }
    update_times: dict[str, list[float]] = {name: [] for name in optimizers}

    def step_with(name: str) -> Callable:
        def step(batch) -> None:
            loss = elbo.differentiable_loss(module.model, module.guide, batch, 1.0)
            optimizers[name].zero_grad(set_to_none=True)
            (loss / (batch.lengths + 1).sum()).backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 0.25)
            start = time.perf_counter()
            optimizers[name].step()
            update_times[name].append(time.perf_counter() - start)

        return step

    step_with("Adam, fused")(batches[0])  # warm-up
    totals = interleaved(batches, {name: step_with(name) for name in optimizers}, rounds)
    print(f"AF/AF training step ({len(batches)} JSB batches of 5):")
    for name, total in totals.items():
        update = statistics.median(update_times[name])
        print(f"  {name:16s} {1000 * total / len(batches):6.0f} ms per step, "
              f"the update {1000 * update:5.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    jsb = load_dataset("jsb_chorales", data_dir=args.data_dir)
    batches = list(jsb.batches("train", 5, seed=0))[2 : 5 if args.quick else 8]
    rounds = 3 if args.quick else 6
    density_loop(jsb, batches, rounds)
    adam_step(jsb, batches, rounds)


if __name__ == "__main__":
    try:
        main()
    except LnfError as error:  # e.g. the data directory is not set: one line, not a traceback
        sys.exit(f"error: {error}")
