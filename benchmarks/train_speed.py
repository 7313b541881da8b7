"""Training speed of the latent-flow priors at the paper's sizes, against plain PyTorch.

For each prior, on real batches: the median time of one training step (ELBO forward, backward,
global-norm clipping, Adam), frames per second, peak memory, and the same ELBO written by hand
in plain PyTorch (no Pyro), timed step for step beside it, whose ratio is the Pyro overhead.
Also: cost per frame against length (Nottingham batches up to T = 1788), and the
importance-sampled NLL time per JSB validation sequence. Compare with
../shared/reference/authors-code-speed.md (same machine kind).

    python benchmarks/train_speed.py                 # everything, CPU
    python benchmarks/train_speed.py --quick         # fewer repeats
    python benchmarks/train_speed.py --device cuda
    python benchmarks/train_speed.py --memory muse_data   # one step on the 4 longest pieces
    python benchmarks/train_speed.py --nll-only           # the IS NLL timing alone
    python benchmarks/train_speed.py --nll-only --checkpoint runs/jsb-afaf/best.pt
    python benchmarks/train_speed.py --iaf-budget         # where IAF/SCF's step time goes
    python benchmarks/train_speed.py --batch-sizes 5,15,32,64 [--dataset nottingham]
                                                          # AF/AF frames/s against batch size
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyro_lnf.checkpoint import load_model  # noqa: E402
from pyro_lnf.datasets import collate, load_dataset  # noqa: E402
from pyro_lnf.errors import LnfError  # noqa: E402
from pyro_lnf.evaluate import evaluate, importance_sample  # noqa: E402
from pyro_lnf.app.config import default_config  # noqa: E402
from pyro_lnf.app.run import build_model  # noqa: E402
from pyro_lnf.nn.precision import PRECISIONS, bulk_precision  # noqa: E402
from pyro_lnf.nn.runtime import keep_freed_memory  # noqa: E402
from pyro_lnf.train import TrainConfig, make_optimizer  # noqa: E402

AUTHORS_FPS_JSB = {"afaf": 378, "afscf": 384, "iafscf": 197, "lstm": 2724}


def hand_loss(module, batch) -> torch.Tensor:
    """−ELBO of the latent-flow model in plain PyTorch (one sample), the same terms as Pyro's."""
    mask = batch.mask
    loc, scale = module.encoder(batch.x, batch.lengths)
    z = loc + scale * torch.randn_like(loc)
    log_q = (dist.Normal(loc, scale).log_prob(z).sum(-1) * mask).sum()
    log_prior = (module.prior.log_prob(z, batch.lengths) * mask).sum()
    logits = module.emission(z, batch.lengths)
    log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits, batch.x, reduction="none"
    ).sum(-1)
    log_length = module.length_model.distribution().log_prob(batch.lengths).sum()
    return -(log_length + (log_lik * mask).sum() + log_prior - log_q)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_check(device: torch.device) -> str:
    """Two probes of the machine's state right now, since shared machines vary from run to
    run: a large float32 product (compute bound) and batch-5 products with three 2000 × 500
    weights in turn (memory bound, like an LSTM stepped one time step at a time)."""

    def best_of(fn, repeats: int) -> float:
        fn()
        sync(device)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync(device)
            best = min(best, time.perf_counter() - start)
        return best

    a = torch.randn(600, 500, device=device)
    b = torch.randn(500, 2000, device=device)
    gflops = 2 * 600 * 500 * 2000 / best_of(lambda: a @ b, 20) / 1e9
    x = torch.randn(5, 500, device=device)
    weights = [torch.randn(2000, 500, device=device) for _ in range(3)]
    thin = best_of(lambda: [x @ w.T for _ in range(10) for w in weights], 10) / 30
    return f"machine now: {gflops:.0f} GFLOP/s on a 600x500x2000 product, {1e6 * thin:.0f} us " \
        "per 5x500x2000 product"


def time_steps(module, batches, loss_fn, device, repeats: int) -> list[float]:
    """Seconds per training step (loss, backward, clipping, Adam) on ``repeats`` batches."""
    return time_interleaved(module, batches, {"": loss_fn}, device, repeats)[""]


def time_interleaved(module, batches, loss_fns: dict, device, repeats: int) -> dict:
    """Like :func:`time_steps` for several losses at once, each step of one loss next to the
    same batch's step of the others, in alternating order: a ratio of their times is then
    free of the machine's drift, which separately timed loops are not."""
    optimizer = make_optimizer(module, TrainConfig())  # what `lnf train` uses: Adam, lr 1e-3
    times = {name: [] for name in loss_fns}
    for i in range(repeats + 2):  # two warm-up steps (lazy imports, allocator, oneDNN plans)
        batch = batches[i % len(batches)]
        order = list(loss_fns) if i % 2 else list(reversed(loss_fns))
        for name in order:
            seconds = timed_step(module, optimizer, loss_fns[name], batch, device)
            if i >= 2:
                times[name].append(seconds)
    return times


def timed_step(module, optimizer, loss_fn, batch, device) -> float:
    """Seconds of one training step: loss per unit, backward, clipping at 0.25, the update."""
    sync(device)
    start = time.perf_counter()
    loss = loss_fn(batch) / (batch.lengths + 1).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 0.25)
    optimizer.step()
    sync(device)
    return time.perf_counter() - start


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--memory",
        metavar="DATASET",
        default=None,
        help="only: peak memory of one AF/AF step on the 4 longest pieces",
    )
    parser.add_argument("--nll-only", action="store_true", help="only: the IS NLL timing")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="with --nll-only: time this trained JSB model, and its NLL's shift in bf16",
    )
    parser.add_argument(
        "--iaf-budget",
        action="store_true",
        help="only: IAF/SCF's sequential density loop against the time the 3x target leaves it",
    )
    parser.add_argument(
        "--batch-sizes",
        default=None,
        help="only: AF/AF frames per second at these batch sizes (e.g. 5,15,32,64), interleaved",
    )
    parser.add_argument("--dataset", default="jsb_chorales", help="with --batch-sizes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.memory:
        longest_batch_memory(args.memory, device, args.data_dir)
        return
    if args.nll_only:
        jsb = load_dataset("jsb_chorales", data_dir=args.data_dir)
        importance_sampling_time(jsb, device, args.checkpoint)
        return
    if args.batch_sizes:
        sizes = [int(size) for size in args.batch_sizes.split(",")]
        batch_size_speed(load_dataset(args.dataset, data_dir=args.data_dir), sizes, device,
                         4 if args.quick else 8)
        return
    if args.iaf_budget:
        iaf_budget(load_dataset("jsb_chorales", data_dir=args.data_dir), device, args.quick)
        return
    repeats = 4 if args.quick else 12
    console = Console(width=150)
    console.print(
        f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}; "
        + machine_check(device)
    )

    jsb = load_dataset("jsb_chorales", data_dir=args.data_dir)
    jsb_batches = [b.to(device) for b in jsb.batches("train", 5, seed=0)][: repeats + 2]
    table = Table(title="JSB Chorales training step, batch 5, paper sizes")
    for col in (
        "model",
        "params (M)",
        "s/step",
        "frames/s",
        "vs authors",
        "hand s/step",
        "Pyro overhead",
        "peak MiB",
    ):
        table.add_column(col, justify="right")
    for name in ("afaf", "afscf", "iafscf", "lstm"):
        torch.manual_seed(0)
        pyro.clear_param_store()
        module = build_model(default_config(name), jsb).to(device).train()
        elbo = Trace_ELBO(num_particles=1, vectorize_particles=True, max_plate_nesting=1)
        losses = {"pyro": lambda b: elbo.differentiable_loss(module.model, module.guide, b, 1.0)}
        if name != "lstm":
            losses["hand"] = lambda b: hand_loss(module, b)
        times = time_interleaved(module, jsb_batches, losses, device, repeats)
        pyro_times = times["pyro"]
        frames = [int(b.lengths.sum()) for b in jsb_batches]
        used = [frames[(i + 2) % len(frames)] for i in range(repeats)]
        fps = sum(used) / sum(pyro_times)
        hand = "-"
        overhead = "-"
        if name != "lstm":
            hand = f"{statistics.median(times['hand']):.3f}"
            overhead = f"{sum(pyro_times) / sum(times['hand']):.2f}x"
        table.add_row(
            name,
            f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f}",
            f"{statistics.median(pyro_times):.3f}",
            f"{fps:.0f}",
            f"{fps / AUTHORS_FPS_JSB[name]:.2f}x",
            hand,
            overhead,
            f"{peak_memory_mib(device):.0f}",
        )
    console.print(table)

    notts = load_dataset("nottingham", data_dir=args.data_dir)
    by_length = sorted(
        range(len(notts.splits["train"])), key=lambda i: len(notts.splits["train"][i])
    )
    picks = [by_length[len(by_length) // 2], by_length[int(len(by_length) * 0.95)], by_length[-1]]
    table = Table(title="Nottingham, cost against length (AF/AF, one sequence per step)")
    for col in ("T", "s/step", "ms/frame", "authors ms/frame"):
        table.add_column(col, justify="right")
    torch.manual_seed(0)
    pyro.clear_param_store()
    module = build_model(default_config("afaf"), notts).to(device).train()
    elbo = Trace_ELBO(num_particles=1, vectorize_particles=True, max_plate_nesting=1)
    authors = {1788: "61"}
    for index in picks:
        batch = collate(notts.splits["train"], [index]).to(device)
        times = time_steps(
            module,
            [batch],
            lambda b: elbo.differentiable_loss(module.model, module.guide, b, 1.0),
            device,
            1 if args.quick else 3,
        )
        length = int(batch.lengths[0])
        step = statistics.median(times)
        table.add_row(
            str(length), f"{step:.2f}", f"{1000 * step / length:.2f}", authors.get(length, "-")
        )
    console.print(table)

    importance_sampling_time(jsb, device)


def importance_sampling_time(jsb, device: torch.device, checkpoint: str | None = None) -> None:
    """IS NLL with K = 30 over the WHOLE validation split (batches are sorted by length, so a
    prefix of them would time only the shortest sequences), in float32 and with the LSTMs in
    bfloat16 (``lnf evaluate --precision bf16``), at ``lnf evaluate``'s default batch of 8
    sequences and at the JSB preset's validation batch of 64. Smaller batches are faster per
    sequence on CPU: less padding, and a working set that stays in cache.

    With a checkpoint (a trained JSB latent-flow model) instead of an untrained AF/AF, it also
    scores the same importance samples in both precisions, and reports the shift next to the
    Monte Carlo spread between two seeds in float32."""
    keep_freed_memory()  # as lnf evaluate does (so it is set for the rest of the process)
    torch.manual_seed(0)
    pyro.clear_param_store()
    if checkpoint is None:
        module, what = build_model(default_config("afaf"), jsb).to(device).eval(), "untrained AF/AF"
    else:
        module, what = load_model(checkpoint, map_location=device), checkpoint
    table = Table(title=f"IS NLL, K = 30, {what}, all JSB valid sequences")
    for col in ("batch", "precision", "s per sequence", "authors", "peak MiB"):
        table.add_column(col, justify="right")
    precisions = ("fp32", "bf16") if device.type == "cpu" else ("fp32",)
    for batch_size, chunk_size in ((8, 32), (64, 15)):
        valid = list(jsb.batches("valid", batch_size, shuffle=False, device=device))
        for precision in precisions:
            with bulk_precision(PRECISIONS[precision]):
                evaluate(module, valid[:1], num_samples=2)  # warm-up
                sync(device)
                start = time.perf_counter()
                evaluate(module, valid, num_samples=30, chunk_size=chunk_size)
                sync(device)
            per_seq = (time.perf_counter() - start) / sum(len(b) for b in valid)
            table.add_row(str(batch_size), precision, f"{per_seq:.3f}", "0.51",
                          f"{peak_memory_mib(device):.0f}")
    Console(width=150).print(table)
    if checkpoint is not None and "bf16" in precisions:
        precision_shift(module, list(jsb.batches("valid", 8, shuffle=False, device=device)))


def precision_shift(module, batches) -> None:
    """NLL per frame of the same K = 30 draws in float32 and bfloat16, per sequence and over
    the split, against float32 under another seed (the estimator's own noise)."""

    def per_sequence(dtype, seed: int) -> torch.Tensor:
        pyro.set_rng_seed(seed)
        nll = []
        with torch.no_grad(), bulk_precision(dtype):
            for batch in batches:
                est = importance_sample(module.model, module.guide, batch, 1.0, num_samples=30)
                nll.append(-est.log_likelihood.double().cpu())
        return torch.cat(nll)

    def split(nll: torch.Tensor) -> float:
        return float(nll.sum() / frames.sum())

    frames = torch.cat([b.lengths.double().cpu() for b in batches])
    full = per_sequence(None, 0)
    reduced = per_sequence(torch.bfloat16, 0)
    reseeded = per_sequence(None, 1)
    print(
        f"NLL per frame over the split: fp32 {split(full):.4f}, bf16 {split(reduced):.4f} "
        f"(same draws), fp32 under another seed {split(reseeded):.4f}\n"
        f"largest per-sequence shift (nats per frame): bf16 vs fp32 "
        f"{float(((reduced - full) / frames).abs().max()):.5f}; another seed vs fp32 "
        f"{float(((reseeded - full) / frames).abs().max()):.5f}"
    )


def _prior_and_lstm_times(module, batches, device, rounds: int) -> tuple[float, float]:
    """Seconds per time step (forward + backward, best of ``rounds``) of the prior's density
    on z ~ N(0, I), and of its time LSTM alone stepped over the same steps."""
    prior_time = lstm_time = 0.0
    steps = 0
    for batch in batches:
        T = int(batch.lengths.max())
        z = torch.randn(len(batch), T, module.prior.dim, device=device, requires_grad=True)
        best_prior = best_lstm = float("inf")
        for _ in range(rounds):
            sync(device)
            start = time.perf_counter()
            module.prior.log_prob(z, batch.lengths).sum().backward()
            sync(device)
            best_prior = min(best_prior, time.perf_counter() - start)
            start = time.perf_counter()
            features = module.prior.length_features(batch.lengths, T + 1)
            stepper, h, state = module.prior._stepper(features)
            total = h.sum()
            for t in range(T - 1):
                h, state = stepper.step(t, z[:, t], state)
                total = total + h.sum()
            total.backward()
            sync(device)
            best_lstm = min(best_lstm, time.perf_counter() - start)
        prior_time += best_prior
        lstm_time += best_lstm
        steps += T
    return prior_time / steps, lstm_time / steps


def iaf_budget(jsb, device: torch.device, quick: bool) -> None:
    """Where an IAF/SCF training step goes, against the 3x-the-authors target.

    The encoder, emission and length model are the same networks in AF/SCF and IAF/SCF, so
    (AF/SCF step) - (AF/SCF's parallel prior) is what an IAF/SCF step costs besides its prior.
    What the target's step time leaves over is the budget of the sequential density loop,
    printed per time step next to that loop and next to its time LSTM alone.
    """
    repeats = 4 if quick else 12
    batches = [b.to(device) for b in jsb.batches("train", 5, seed=0)][: repeats + 2]
    used = batches[2:]
    frames = sum(int(b.lengths.sum()) for b in used)
    time_steps_total = sum(int(b.lengths.max()) for b in used)
    elbo = Trace_ELBO(num_particles=1, vectorize_particles=True, max_plate_nesting=1)
    measured = {}
    for name in ("afscf", "iafscf"):
        torch.manual_seed(0)
        pyro.clear_param_store()
        module = build_model(default_config(name), jsb).to(device).train()
        step = sum(
            time_steps(
                module,
                batches,
                lambda b: elbo.differentiable_loss(module.model, module.guide, b, 1.0),
                device,
                repeats,
            )
        )
        prior, lstm = _prior_and_lstm_times(module, used, device, 2)
        measured[name] = (step, prior, lstm)
    af_step, af_prior, _ = measured["afscf"]
    iaf_step, iaf_prior, iaf_lstm = measured["iafscf"]
    target_total = frames / (3 * AUTHORS_FPS_JSB["iafscf"])
    rest = af_step - af_prior * time_steps_total
    budget = (target_total - rest) / time_steps_total
    table = Table(title=f"IAF/SCF on {len(used)} JSB batches of 5 ({time_steps_total} time steps)")
    table.add_column("")
    table.add_column("ms per time step", justify="right")
    table.add_row("IAF/SCF step, all of it", f"{1000 * iaf_step / time_steps_total:.2f}")
    table.add_row("  its sequential density loop (fwd + bwd)", f"{1000 * iaf_prior:.2f}")
    table.add_row("  its time LSTM alone, stepped (fwd + bwd)", f"{1000 * iaf_lstm:.2f}")
    table.add_row("everything else (AF/SCF step - its parallel prior)",
                  f"{1000 * rest / time_steps_total:.2f}")
    table.add_row("3x the authors: the whole step", f"{1000 * target_total / time_steps_total:.2f}")
    table.add_row("  which leaves the density loop", f"{1000 * budget:.2f}")
    Console(width=150).print(table)


def batch_size_speed(dataset, sizes: list[int], device: torch.device, repeats: int) -> None:
    """AF/AF training throughput against batch size, on the shuffled training batches that
    ``lnf train`` would draw (padding included in the cost, only real frames counted).

    One model, one optimizer; each round takes one step at every batch size, in alternating
    order, so the machine's drift falls on all sizes alike and their ratios can be trusted.
    """
    torch.manual_seed(0)
    pyro.clear_param_store()
    module = build_model(default_config("afaf"), dataset).to(device).train()
    elbo = Trace_ELBO(num_particles=1, vectorize_particles=True, max_plate_nesting=1)
    loss = lambda b: elbo.differentiable_loss(module.model, module.guide, b, 1.0)  # noqa: E731
    pools = {size: [b.to(device) for b in dataset.batches("train", size, seed=0)][: repeats + 2]
             for size in sizes}
    optimizer = make_optimizer(module, TrainConfig())
    spent = dict.fromkeys(sizes, 0.0)
    frames = dict.fromkeys(sizes, 0)
    for i in range(repeats + 1):  # round 0 warms up every shape
        for size in sizes if i % 2 else list(reversed(sizes)):
            batch = pools[size][i % len(pools[size])]
            seconds = timed_step(module, optimizer, loss, batch, device)
            if i:
                spent[size] += seconds
                frames[size] += int(batch.lengths.sum())
    table = Table(title=f"AF/AF on {dataset.name}, paper sizes: training throughput against "
                        f"batch size ({repeats} steps each, interleaved)")
    for col in ("batch", "frames/step", "s/step", "frames/s", "vs batch " + str(sizes[0])):
        table.add_column(col, justify="right")
    base = frames[sizes[0]] / spent[sizes[0]]
    for size in sizes:
        fps = frames[size] / spent[size]
        table.add_row(str(size), f"{frames[size] / repeats:.0f}", f"{spent[size] / repeats:.2f}",
                      f"{fps:.0f}", f"{fps / base:.2f}x")
    Console(width=150).print(table)


def longest_batch_memory(name: str, device: torch.device, data_dir: str | None) -> None:
    """One AF/AF training step on a batch of the 4 longest training pieces; run it in a fresh
    process so that the peak resident memory belongs to this step alone."""
    dataset = load_dataset(name, data_dir=data_dir)
    lengths = dataset.lengths("train")
    batch = collate(dataset.splits["train"], lengths.argsort(descending=True)[:4].tolist())
    batch = batch.to(device)
    torch.manual_seed(0)
    module = build_model(default_config("afaf"), dataset).to(device).train()
    elbo = Trace_ELBO(num_particles=1, vectorize_particles=True, max_plate_nesting=1)
    start = time.perf_counter()
    time_steps(
        module,
        [batch],
        lambda b: elbo.differentiable_loss(module.model, module.guide, b, 1.0),
        device,
        0,
    )
    print(
        f"{name}: AF/AF step on 4 x {int(batch.lengths[0])} frames (batch {len(batch)}): "
        f"{time.perf_counter() - start:.1f} s for 2 steps, peak memory "
        f"{peak_memory_mib(device) / 1024:.2f} GiB"
    )


if __name__ == "__main__":
    try:
        main()
    except LnfError as error:  # e.g. the data directory is not set: one line, not a traceback
        sys.exit(f"error: {error}")
