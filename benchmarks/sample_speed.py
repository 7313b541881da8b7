"""Sampling speed at the paper's sizes: the LSTM baseline against AF/AF, AF/SCF and IAF/SCF.

Each cell is the wall time of :func:`pyro_lnf.sample.sample_sequences` drawing B piano rolls of
length T from an untrained JSB-sized model (88 binary outputs, latent 50, LSTMs 500, 5 flow
layers of 2x100 MADE or coupling networks; LSTM baseline 500 wide), in eval mode under
``no_grad``, decoded with the emission's mode (the authors' default), median of several runs
(fewer for the slow AF/AF cells), with CUDA synchronised around each run on a GPU. Models are
constructed directly, so no data is needed; lengths are given, so p(T) plays no part.

The table gives each flow's speed-up over the LSTM on the same cell and, where the authors'
implementation was timed (``shared/reference/authors-code-speed.md``: T = 50, 160 and
B = 1, 16, on a 2-core CPU, 2 threads), how many times faster this implementation is
(authors' seconds / ours). Those ratios only mean something on a comparable CPU.

Usage::

    python benchmarks/sample_speed.py                 # full grid, median of 3 (AF/AF: 1)
    python benchmarks/sample_speed.py --quick         # one run per cell
    python benchmarks/sample_speed.py --device cuda --repeats 5
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyro_lnf.models.baseline import LSTMBaseline  # noqa: E402
from pyro_lnf.models.lnf import LatentFlowModel  # noqa: E402
from pyro_lnf.nn.devices import resolve_device  # noqa: E402
from pyro_lnf.sample import sample_sequences  # noqa: E402

MODELS = ("lstm", "afaf", "afscf", "iafscf")
LABELS = {"lstm": "LSTM", "afaf": "AF/AF", "afscf": "AF/SCF", "iafscf": "IAF/SCF"}

#: The authors' code (harvardnlp/TextFlow), seconds per call, median of 3:
#: reference/authors-code-speed.md, "Sampling", keyed by (model, T, B).
AUTHORS_SECONDS: dict[tuple[str, int, int], float] = {
    ("afaf", 50, 1): 4.72, ("afaf", 50, 16): 6.15, ("afaf", 160, 1): 15.79,
    ("afaf", 160, 16): 17.32,
    ("afscf", 50, 1): 0.292, ("afscf", 50, 16): 0.404, ("afscf", 160, 1): 0.911,
    ("afscf", 160, 16): 1.171,
    ("iafscf", 50, 1): 0.031, ("iafscf", 50, 16): 0.096, ("iafscf", 160, 1): 0.054,
    ("iafscf", 160, 16): 0.296,
    ("lstm", 50, 1): 0.127, ("lstm", 50, 16): 0.171, ("lstm", 160, 1): 0.370,
    ("lstm", 160, 16): 0.496,
}


def build(name: str, max_length: int) -> torch.nn.Module:
    """An untrained model at the paper's JSB sizes."""
    common = dict(kind="binary", num_features=88, max_length=max_length, hidden_size=500,
                  embedding_dim=500, lstm_layers=2)
    if name == "lstm":
        return LSTMBaseline(**common, dropout=0.1)
    return LatentFlowModel(**common, prior=name, latent_dim=50, flow_layers=5,
                           flow_hidden=(100, 100), dropout=0.2)


def time_call(model: torch.nn.Module, batch: int, length: int, device: torch.device,
              decode: str, seed: int) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    sample_sequences(model, batch, length=length, decode=decode, seed=seed)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; the authors' times used 2)")
    parser.add_argument("--quick", action="store_true", help="one run per cell")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell (median)")
    parser.add_argument("--slow-repeats", type=int, default=1, help="runs per AF/AF cell")
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--lengths", default="50,160,288")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--decode", choices=["mode", "sample"], default="mode")
    args = parser.parse_args()

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    lengths = [int(t) for t in args.lengths.split(",")]
    models = args.models.split(",")
    if "lstm" not in models:
        models.insert(0, "lstm")  # every speed-up is relative to it
    unknown = set(models) - set(MODELS)
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from {','.join(MODELS)}")
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{platform.processor() or platform.machine()} CPU, "
                  f"{torch.get_num_threads()} thread(s)")
    print(f"# sampling speed on {device} ({where}), torch {torch.__version__}, "
          f"decode={args.decode}, {'quick' if args.quick else 'median of runs'}")

    # Feature tables cover the longest T (the authors' 1.25 margin), so nothing is clamped.
    max_length = math.ceil(1.25 * max(lengths))
    seconds: dict[tuple[str, int, int], float] = {}
    runs: dict[tuple[str, int, int], int] = {}
    for name in models:
        torch.manual_seed(0)
        model = build(name, max_length).to(device).eval()
        count = sum(p.numel() for p in model.parameters())
        time_call(model, 2, 3, device, args.decode, seed=0)  # warm-up: allocator, weight packing
        for length in lengths:
            for batch in batch_sizes:
                repeats = 1 if args.quick else (args.slow_repeats if name == "afaf"
                                                else args.repeats)
                times = [time_call(model, batch, length, device, args.decode, seed=r)
                         for r in range(repeats)]
                seconds[name, length, batch] = statistics.median(times)
                runs[name, length, batch] = repeats
                print(f"  {LABELS[name]:8s} T={length:4d} B={batch:3d}: "
                      f"{seconds[name, length, batch]:8.3f} s ({repeats} run(s), "
                      f"{count / 1e6:.1f} M parameters)", flush=True)

    print()
    print("| model | T | B | runs | seconds | speed-up over LSTM | authors' s | authors' / ours |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in models:
        for length in lengths:
            for batch in batch_sizes:
                key = (name, length, batch)
                ours = seconds[key]
                speedup = seconds["lstm", length, batch] / ours
                authors = AUTHORS_SECONDS.get(key)
                vs = "" if authors is None else f"{authors:.3f} | {authors / ours:.2f}x"
                print(f"| {LABELS[name]} | {length} | {batch} | {runs[key]} | {ours:.3f} | "
                      f"{speedup:.2f}x | {vs or ' | '} |")


if __name__ == "__main__":
    main()
