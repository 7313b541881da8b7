"""Reproduce the paper's results table for one dataset: train, evaluate, tabulate.

For each model it runs ``lnf train`` with the paper's protocol (the per-dataset presets: 100
epochs, their KL schedule), then ``lnf evaluate best.pt --split test --samples K --json``
(K = 100), and writes the table in the README's format (``OUT/results.md``, or ``--table``) with
``results.json`` beside it. Everything goes through the ``lnf`` command line, so this script
does not depend on the package's internal layout.

Resumable: rerunning the same command resumes a model from ``OUT/MODEL/last.pt``, skips a
finished one, and re-evaluates only a checkpoint that changed. The evaluation itself resumes
too (``lnf evaluate --partial OUT/MODEL/test.partial``: a stopped one goes on from its last
finished batch, with the figures of an uninterrupted one); the file is started afresh when the
checkpoint or the evaluation options change. ``--precision bf16`` evaluates in bfloat16 on
CPUs that have it (2-3x faster, the same figures to about 1e-5 nats on the README's runs).
``--budget`` gives each model an equal share of the training wall-clock (``lnf train
--max-time``, which counts a run's time over every rerun, so a stopped reproduction, e.g. at a
session's end, goes on to the same total, and a rerun without ``--budget`` keeps each run's);
a model ends after the epoch that spends its share, what checkpoint there is gets evaluated,
and the table says "budget-limited" with the epochs reached (a larger ``--budget`` goes on).
Evaluation time is not budgeted.

Usage::

    python benchmarks/reproduce.py --dataset nottingham --models afaf,afscf,iafscf,indep,lstm \\
        --out runs/repro-nottingham --device cuda
    python benchmarks/reproduce.py --dataset jsb_chorales --models afaf,lstm \\
        --out runs/repro-jsb --budget 2h                      # CPU: 1 h of training each
    python benchmarks/reproduce.py --dataset jsb_chorales --models afaf \\
        --out runs/jsb-short --epochs 30 --kl-initial-zero 5 --kl-rampup 10 \\
        --table results.md -- --nll-every 0                  # anything after -- goes to lnf train

Bad input ends with one line on stderr and exit status 2; a failed ``lnf`` command with one
line and status 1 (its log is ``OUT/MODEL/train.log``); SIGINT/SIGTERM stop the running
training, which saves, and exit 130/143.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: ``lnf`` from this checkout (an ``lnf`` on PATH may be another checkout's editable install).
LNF = [sys.executable, "-c", "import cli; cli.main()"]
DATASETS = ("jsb_chorales", "nottingham", "muse_data", "piano_midi", "ptb_char")
MODELS = ("afaf", "afscf", "iafscf", "indep", "lstm")
FLOWS = ("afaf", "afscf", "iafscf", "indep")
LABELS = {"afaf": "AF/AF", "afscf": "AF/SCF", "iafscf": "IAF/SCF", "indep": "independent",
          "lstm": "LSTM (exact)"}
#: The presets' epochs (passed explicitly so that "finished" can be read off metrics.jsonl).
PAPER_EPOCHS = 100
#: Test NLL in the paper (published-results.md §1a, §1b): nats per (T+1) for music, bits per
#: character for PTB. The music figures are recollections, unconfirmed against the PDF.
PAPER: dict[str, dict[str, float]] = {
    "nottingham": {"afaf": 2.39, "afscf": 2.56, "iafscf": 2.54, "lstm": 3.43},
    "piano_midi": {"afaf": 8.19, "afscf": 8.26, "iafscf": 8.25, "lstm": 7.77},
    "muse_data": {"afaf": 6.92, "afscf": 6.95, "iafscf": 7.06, "lstm": 7.23},
    "jsb_chorales": {"afaf": 6.53, "afscf": 6.64, "iafscf": 6.59, "lstm": 8.17},
    "ptb_char": {"afaf": 1.42, "afscf": 1.46, "iafscf": 1.63, "lstm": 1.41, "indep": 2.90},
}
#: The test evaluation's batches, kept as they finish (``lnf evaluate --partial``), in OUT/MODEL.
PARTIAL = "test.partial"
#: Options that this script sets itself and must not come after ``--``.
RESERVED = ("--model", "--dataset", "--out", "--resume", "--device", "--epochs")
#: ``lnf train`` options that only the flows take (the LSTM refuses them): dropped from the
#: options after ``--`` for the LSTM, so one size override serves every model.
FLOW_ONLY = ("--flow-layers", "--latent-dim", "--transform", "--kl-initial-zero", "--kl-rampup")


def for_model(extra: list[str], model: str) -> list[str]:
    """The options after ``--`` that apply to ``model`` (``--opt value`` or ``--opt=value``)."""
    if model in FLOWS:
        return list(extra)
    kept: list[str] = []
    skip = False
    for arg in extra:
        if skip:
            skip = False
        elif arg in FLOW_ONLY:
            skip = True  # and its value
        elif arg.split("=")[0] not in FLOW_ONLY:
            kept.append(arg)
    return kept


class Failure(Exception):
    """A one-line error; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class StalePartial(Failure):
    """``lnf evaluate`` refused the kept ``--partial`` file: it was begun under settings that
    :func:`fingerprint` does not see (another CPU thread count, library version or device).
    The message is what differs."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise Failure(f"{message} (see --help)", 2)


def parse_duration(text: str) -> float:
    """Seconds in ``2h``, ``90m``, ``1h30m``, ``45s`` or a plain number of seconds."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d*)?)h)?\s*(?:(\d+(?:\.\d*)?)m)?\s*(?:(\d+(?:\.\d*)?)s?)?\s*",
                         text.lower())
    if not text.strip() or match is None:
        raise Failure(f"--budget {text!r} is not a duration such as 2h, 90m, 1h30m or 600", 2)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if not 0 < total < 365 * 86400:
        raise Failure(f"--budget {text!r} must be positive and under a year", 2)
    return total


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and the ``lnf train`` options after ``--``."""
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = _Parser(description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="Anything after -- is passed to lnf train (e.g. --hidden-size 8).")
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated, from " + ",".join(MODELS))
    parser.add_argument("--out", required=True, type=Path, help="one run folder per model here")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--budget", type=parse_duration, default=None,
                        help="training wall-clock for all the models, split evenly, e.g. 2h "
                        "(default: none)")
    parser.add_argument("--epochs", type=int, default=PAPER_EPOCHS)
    parser.add_argument("--kl-initial-zero", type=int, default=None,
                        help="flows only (default: the preset's)")
    parser.add_argument("--kl-rampup", type=int, default=None,
                        help="flows only (default: the preset's)")
    parser.add_argument("--samples", type=int, default=100, help="importance samples K (test)")
    parser.add_argument("--eval-batch-size", type=int, default=8,
                        help="lnf evaluate --batch-size (its default, 8: the README's numbers)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="lnf evaluate --precision (bf16: faster on CPUs with AVX-512 BF16)")
    parser.add_argument("--table", type=Path, default=None, help="default: OUT/results.md")
    args = parser.parse_args(argv)
    models = list(dict.fromkeys(m.strip() for m in args.models.split(",") if m.strip()))
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise Failure(f"--models {args.models!r}: choose from {','.join(MODELS)}", 2)
    args.models = models
    for name in ("epochs", "samples", "eval_batch_size"):
        if getattr(args, name) < 1:
            raise Failure(f"--{name.replace('_', '-')} must be at least 1", 2)
    for name in ("kl_initial_zero", "kl_rampup"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise Failure(f"--{name.replace('_', '-')} must be at least 0", 2)
    reserved = [a for a in extra if a.split("=")[0] in RESERVED]
    if reserved:
        raise Failure(f"{reserved[0]} after -- is set by this script; use its own option", 2)
    args.out = args.out.resolve()  # lnf runs in the repository root
    args.table = (args.table or args.out / "results.md").resolve()
    return args, extra


class Signals:
    """SIGINT/SIGTERM to this script: forwarded to the running ``lnf`` (which saves), then we
    stop after it."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.signum: int | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def check(self) -> None:
        if self.signum is not None:
            raise Failure(f"stopped by {signal.Signals(self.signum).name}; rerun to resume",
                          128 + self.signum)


def git_commit() -> str:
    """Short HEAD, ``+dirty`` if tracked files differ from it (the code that ran)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, text=True, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty.strip() else "")


def run_commits(run: Path) -> list[str]:
    """The commits the run's own record names (``run.json``: the first training's, then each
    resume's), short and marked ``+dirty`` as :func:`git_commit` marks them; [] without one.
    A run begun by hand, or at another checkout and moved, is credited to all of its code."""
    try:
        record = json.loads((run / "run.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(record, dict):
        return []
    resumed = record.get("resumed")
    commits = []
    for part in [record, *(resumed if isinstance(resumed, list) else [])]:
        commit = part.get("git_commit") if isinstance(part, dict) else None
        if isinstance(commit, str) and commit:
            commits.append(commit[:7] + ("+dirty" if part.get("git_dirty") else ""))
    return list(dict.fromkeys(commits))


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """The run's per-epoch records (``metrics.jsonl``; none yet: [])."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_finished(records: list[dict[str, Any]], epochs: int) -> bool:
    """All epochs done, or stopped early by ``--min-lr``."""
    return bool(records) and (records[-1]["epoch"] + 1 >= epochs
                              or bool(records[-1].get("stopped_early")))


def train(args: argparse.Namespace, extra: list[str], model: str, run: Path,
          seconds: float | None, signals: Signals) -> tuple[str, float]:
    """Train or resume ``model``, with ``lnf train --max-time`` when ``seconds`` is given
    (its training wall-clock summed over every rerun); ("finished" | "budget-limited",
    wall-clock seconds of this call)."""
    command = [*LNF, "train", "--model", model, "--dataset", args.dataset, "--out", str(run),
               "--epochs", str(args.epochs), "--device", args.device,
               "--checkpoint-every", "10m", "--quiet"]
    if model in FLOWS:  # the LSTM has no KL term to anneal
        for name in ("kl_initial_zero", "kl_rampup"):
            if getattr(args, name) is not None:
                command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if seconds is not None:
        command += ["--max-time", f"{seconds:.3f}s"]
    if (run / "last.pt").exists():
        command.append("--resume")
    command += for_model(extra, model)
    run.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(run / "train.log", "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        signals.child = proc = subprocess.Popen(command, cwd=REPO, stdout=log,
                                                stderr=subprocess.STDOUT)
        signals.check()  # a signal between the check above and Popen
        try:
            proc.wait()
        finally:
            signals.child = None
    elapsed = time.monotonic() - start
    signals.check()
    if proc.returncode != 0:
        raise Failure(f"lnf train for {model} failed (exit {proc.returncode}): "
                      f"{last_line(run / 'train.log')} (log: {run / 'train.log'})")
    return ("finished" if is_finished(read_metrics(run), args.epochs) else "budget-limited"), elapsed


def last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def precision(args: argparse.Namespace, model: str) -> str:
    """``--precision`` for ``model``'s evaluation: bfloat16 is for the flows (lnf refuses it
    for the LSTM, whose exact likelihood is cheap in float32 anyway)."""
    return args.precision if model in FLOWS else "fp32"


def evaluate(args: argparse.Namespace, model: str, checkpoint: Path, partial: Path,
             signals: Signals) -> dict[str, Any]:
    """``lnf evaluate --json`` of ``checkpoint`` on the test split, kept batch by batch in
    ``partial`` (so a stopped evaluation resumes)."""
    command = [*LNF, "evaluate", str(checkpoint), "--split", "test", "--samples",
               str(args.samples), "--batch-size", str(args.eval_batch_size), "--device",
               args.device, "--precision", precision(args, model), "--partial", str(partial),
               "--json"]
    signals.child = proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate()
    finally:
        signals.child = None
    signals.check()
    if proc.returncode != 0:
        message = err.strip().splitlines()[-1] if err.strip() else "no output"
        # The wording of pyro_lnf.partial's refusal (its _check_header names this use).
        _, _, differs = message.partition("holds results of another evaluation: ")
        if differs:
            raise StalePartial(differs.split("; rerun with", 1)[0])
        raise Failure(f"lnf evaluate {checkpoint} failed (exit {proc.returncode}): {message}")
    objects = [line for line in out.splitlines() if line.startswith("{")]
    if not objects:
        raise Failure(f"lnf evaluate {checkpoint} printed no JSON")
    return json.loads(objects[-1])


def fingerprint(path: Path, args: argparse.Namespace, model: str) -> dict[str, Any]:
    """What an evaluation depends on: the checkpoint file and the evaluation options."""
    stat = path.stat()
    return {"checkpoint": path.name, "mtime_ns": stat.st_mtime_ns, "size": stat.st_size,
            "samples": args.samples, "batch_size": args.eval_batch_size,
            "precision": precision(args, model)}


def run_model(args: argparse.Namespace, extra: list[str], model: str, entry: dict[str, Any],
              seconds: float | None, signals: Signals) -> None:
    """Train (unless finished) and evaluate (unless done for this checkpoint), in ``entry``."""
    run = args.out / model
    records = read_metrics(run)
    if is_finished(records, args.epochs):
        entry["status"] = "finished"
        print(f"{model}: finished ({len(records)} epochs), not retrained", file=sys.stderr)
    else:
        resumed = (run / "last.pt").exists()
        print(f"{model}: {'resuming' if resumed else 'training'}"
              f"{'' if seconds is None else f' to a budget of {seconds:.0f} s'}", file=sys.stderr)
        # Recorded before training, for a training that ends before it writes run.json (whose
        # commits replace these below).
        entry["devices"] = sorted({*entry.get("devices", []), args.device})
        entry["commits"] = list(dict.fromkeys([*entry.get("commits", []), git_commit()]))
        entry["status"], elapsed = train(args, extra, model, run, seconds, signals)
        entry["train_s"] = entry.get("train_s", 0.0) + elapsed
        records = read_metrics(run)
    entry["commits"] = run_commits(run) or entry.get("commits", [])
    entry["epochs"] = len(records)
    entry["target_epochs"] = args.epochs
    entry["metrics_wall_s"] = records[-1]["wall_s"] if records else 0.0
    checkpoint = next((run / n for n in ("best.pt", "last.pt") if (run / n).exists()), None)
    if checkpoint is None:
        entry.pop("evaluation", None)
        return
    key = fingerprint(checkpoint, args, model)
    if entry.get("evaluation", {}).get("key") == key:
        print(f"{model}: {checkpoint.name} already evaluated", file=sys.stderr)
        return
    partial = run / PARTIAL
    if entry.get("partial_key") != key:  # kept for another checkpoint or other options
        partial.unlink(missing_ok=True)  # (main saves the state, even when stopped)
        entry.pop("partial_eval_s", None)
        entry["partial_key"] = key
    print(f"{model}: evaluating {checkpoint.name} (K = {args.samples}"
          f"{', resuming' if partial.exists() else ''})", file=sys.stderr)
    start = time.monotonic()
    try:
        try:
            results = evaluate(args, model, checkpoint, partial, signals)
        except StalePartial as err:  # not resumable here: set aside (hours of work), restart
            aside = partial.with_name(partial.name + ".stale")
            partial.replace(aside)
            print(f"{model}: the kept evaluation differs in {err}; moved to {aside.name}, "
                  "evaluating afresh", file=sys.stderr)
            entry.pop("partial_eval_s", None)
            start = time.monotonic()
            results = evaluate(args, model, checkpoint, partial, signals)
    finally:  # the time spent counts, over every resume
        entry["partial_eval_s"] = entry.get("partial_eval_s", 0.0) + time.monotonic() - start
    entry["evaluation"] = {"key": key, "results": results,
                           "eval_s": entry.pop("partial_eval_s")}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def table(state: dict[str, Any]) -> str:
    """The README's results table for ``state`` (results.json), with a heading and notes."""
    dataset, protocol = state["dataset"], state["protocol"]
    bits = dataset == "ptb_char"
    unit = "bits" if bits else "nats"
    scale = 1 / math.log(2) if bits else 1.0
    lines = [
        f"### {dataset}, test NLL ({'bits per character' if bits else 'nats per time step'}, "
        "the paper's accounting)",
        "",
        f"Importance-sampled with K = {protocol['samples']} (the LSTM's is exact), −log p(T) "
        f"included and divided by Σ(T + 1); per {'character' if bits else 'frame'}: ÷ ΣT.",
        "",
        "```bash",
        protocol["command"],
        "```",
        "",
        f"| model | test NLL, {unit} / (T+1) | per {'character' if bits else 'frame'} | "
        f"test −ELBO | epochs (best) | wall-clock | evaluation | device | commit | paper |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- | --- | ---: |",
    ]
    for model in protocol["models"]:
        entry = state["models"].get(model, {})
        evaluation = entry.get("evaluation")
        res = evaluation["results"] if evaluation else {}
        figures = ["–", "–", "–"]
        if res:
            figures = [f"{res['nll_nats_per_unit'] * scale:.3f}",
                       f"{res['nll_nats_per_frame'] * scale:.3f}",
                       f"{res['elbo_loss_nats_per_unit'] * scale:.3f}"]
        done, target = entry.get("epochs", 0), entry.get("target_epochs", protocol["epochs"])
        epochs = f"{done}" if entry.get("status") == "finished" else f"{done} of {target}"
        if entry.get("status") == "budget-limited":
            epochs += ", budget-limited"
        if evaluation and evaluation["key"]["checkpoint"] == "best.pt":
            epochs += f" (best {res.get('epochs_trained')})"
        elif evaluation:
            epochs += " (last.pt: no best.pt yet)"
        else:
            epochs += " (no checkpoint)"
        wall = max(entry.get("train_s", 0.0), entry.get("metrics_wall_s", 0.0))
        # Results of an older reproduce.py carry no time.
        spent = evaluation.get("eval_s") if evaluation else None
        paper = PAPER[dataset].get(model)
        lines.append(
            f"| {LABELS[model]} | {' | '.join(figures)} | {epochs} | {_duration(wall)} | "
            f"{'–' if spent is None else _duration(spent)} | "
            f"{', '.join(entry.get('devices', [])) or '–'} | "
            f"{', '.join(entry.get('commits', [])) or '–'} | "
            f"{'–' if paper is None else f'{paper:.2f}'} |"
        )
    lines += ["", "\"best N\": best.pt was saved after N epochs; wall-clock is training with its "
              "validation, over every resume; evaluation is the test NLL's, over every resume."]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    """Atomically, so an interrupted write never leaves half a results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def save(args: argparse.Namespace, state: dict[str, Any]) -> None:
    text = json.dumps(state, indent=2) + "\n"
    write(args.out / "results.json", text)
    write(args.table, table(state))
    beside = args.table.with_suffix(".json")
    if beside != args.out / "results.json":
        write(beside, text)


def main(argv: list[str] | None = None) -> None:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if state and state.get("dataset") != args.dataset:
        raise Failure(f"{args.out} holds {state.get('dataset')} runs, not {args.dataset}", 2)
    state["dataset"] = args.dataset
    state["protocol"] = {
        "models": args.models, "epochs": args.epochs, "samples": args.samples,
        "kl_initial_zero": args.kl_initial_zero, "kl_rampup": args.kl_rampup,
        "lnf_train_extra": extra, "budget_s": args.budget,
        "command": "python benchmarks/reproduce.py " + " ".join(sys.argv[1:] if argv is None
                                                                 else argv),
    }
    state.setdefault("models", {})
    signals = Signals()
    try:
        share = None if args.budget is None else args.budget / len(args.models)
        for model in args.models:
            run_model(args, extra, model, state["models"].setdefault(model, {}), share, signals)
            save(args, state)
    finally:
        save(args, state)
    print(f"wrote {args.table} and {path}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except Failure as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.status)
    except OSError as err:  # an unwritable --out, a full disk
        print(f"error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        sys.exit(1)
