"""Data-parallel scaling of training: JSB Chorales AF/AF at the paper's sizes (the preset).

Runs the real training loop (:func:`pyro_lnf.train.train`) over the same first ``--steps``
batches of epoch 0, and reports the loop's own frames per second (global frames over each
rank's time in its steps, so start-up and the process group are not counted):

* on CPU: 1 process with 2 threads against 2 gloo ranks with 1 thread each (same cores);
* with ``--device cuda``: 1..N GPUs, one rank per GPU (nccl).

Efficiency = frames/s / (units x frames/s per unit of the first configuration), where the
units are the cores (ranks x threads) on CPU and the GPUs on CUDA: below 1 when communication
or the smaller per-rank batches cost more than they save. On CPU both configurations use the
same two cores, so there it is simply their ratio. Each configuration runs ``--repeats``
times, alternating with the others so the machine's drift falls on all alike; the table gives
the median.

    LNF_DATA_DIR=... python benchmarks/ddp_scaling.py               # CPU table
    LNF_DATA_DIR=... python benchmarks/ddp_scaling.py --device cuda --gpus 4
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _worker(rank: int, world: int, port: int, threads: int, device: str, steps: int,
            batch_size: int, out: str) -> None:
    torch.set_num_threads(threads)
    if world > 1:
        import torch.distributed as tdist

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        if device == "cuda":
            torch.cuda.set_device(rank)
        tdist.init_process_group("nccl" if device == "cuda" else "gloo", rank=rank,
                                 world_size=world, timeout=datetime.timedelta(seconds=300))
    from pyro_lnf.datasets import load_dataset
    from pyro_lnf.app.run import build_model, dataset_batches
    from pyro_lnf.app.config import preset, with_overrides
    from pyro_lnf.train import train

    dataset = load_dataset("jsb_chorales")
    overrides = dict(epochs=1, quiet=True, nll_every=0, kl_initial_zero=0, kl_rampup=0,
                     device=f"cuda:{rank}" if device == "cuda" else "cpu")
    if batch_size:
        overrides["batch_size"] = batch_size
    model_config, config = with_overrides("afaf", preset("afaf", "jsb_chorales"), overrides)
    torch.manual_seed(config.seed)
    module = build_model(model_config, dataset)
    first = list(dataset_batches(dataset, "train", config, train=True)(0))[:steps]
    summary = train(module, lambda epoch: first, None, config)
    if rank == 0:
        Path(out).write_text(f"{summary.last_metrics['frames_per_s']}\n"
                             f"{sum(int(b.lengths.sum()) for b in first)}\n{config.batch_size}")


def run(world: int, threads: int, device: str, steps: int, batch_size: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "fps")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.start_processes(_worker, args=(world, port, threads, device, steps, batch_size, out),
                           nprocs=world, start_method="spawn")
        fps, frames, size = Path(out).read_text().split()
        return float(fps), int(frames), int(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--gpus", type=int, default=None, help="up to this many (default: all)")
    parser.add_argument("--steps", type=int, default=12, help="training batches timed")
    parser.add_argument("--batch-size", type=int, default=0, help="default: the preset's (5)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration")
    args = parser.parse_args()
    if args.device == "cpu":
        configs = [(1, 2, "1 process x 2 threads"), (2, 1, "2 gloo ranks x 1 thread")]
    else:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            sys.exit("no CUDA device here; run without --device cuda for the CPU table")
        top = min(count, args.gpus or count)
        configs = [(w, 1, f"{w} GPU(s), nccl") for w in range(1, top + 1)]
    measured: dict[str, list[float]] = {label: [] for _, _, label in configs}
    for i in range(args.repeats):
        for world, threads, label in configs if i % 2 == 0 else configs[::-1]:
            fps, frames, size = run(world, threads, args.device, args.steps, args.batch_size)
            measured[label].append(fps)
            print(f"  measured {label}: {fps:.0f} frames/s ({args.steps} batches of {size}, "
                  f"{frames} frames)", file=sys.stderr)
    units = {label: world * threads for world, threads, label in configs}
    median = {label: statistics.median(values) for label, values in measured.items()}
    first = configs[0][2]
    base = median[first] / units[first]
    print("| config | frames/s (median) | runs | efficiency |")
    print("| --- | ---: | --- | ---: |")
    for _, _, label in configs:
        runs = ", ".join(f"{v:.0f}" for v in measured[label])
        print(f"| {label} | {median[label]:.0f} | {runs} | "
              f"{median[label] / (units[label] * base):.2f} |")


if __name__ == "__main__":
    main()
