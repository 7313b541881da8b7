"""The ``lnf`` command line: thin wrappers that parse options and call :mod:`pyro_lnf`."""

from __future__ import annotations

import math
import re
import sys

import click

# Only light modules at the top: `pyro_lnf` imports its names lazily and `errors` and `nn.checks`
# import nothing, so `lnf --help` and a usage error do not wait for torch and Pyro (seconds);
# each command imports what it runs.
from pyro_lnf.errors import Interrupted, LnfError

# --model's and --dataset's choices: the presets' model names and the dataset registry's names,
# each kept where it imports nothing heavy (the registry checks that it agrees).
from pyro_lnf.app.config import MODELS

# The bounds of evaluate's and sample's options: the click ranges below and the library's
# checks read the same constants.
from pyro_lnf.nn.checks import (
    DATASET_NAMES,
    MAX_BATCH_SIZE,
    MAX_CHUNK_SIZE,
    MAX_FRAMES,
    MAX_FRAMES_PER_BEAT,
    MAX_LENGTH,
    MAX_NUM,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_STEPS,
    MAX_TEMPERATURE,
    MAX_TEMPO,
    MAX_VELOCITY,
    MIN_TEMPERATURE,
    MIN_TEMPO,
    MIN_VELOCITY,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pyro-lnf")
def lnf() -> None:
    """Latent normalizing flows for discrete sequences, on Pyro."""


@lnf.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Data directory (default: $LNF_DATA_DIR, else ./data).",
)
@click.option(
    "--fetch", "fetch", metavar="NAME", default=None, help="Download and cache dataset NAME first."
)
def datasets(data_dir: str | None, fetch: str | None) -> None:
    """List every dataset: kind, sizes per split, and whether it is in the data directory."""
    from rich.console import Console

    from pyro_lnf.datasets import fetch_dataset, get_spec, resolve_data_dir
    from pyro_lnf.datasets.report import datasets_table
    from pyro_lnf.errors import DatasetError

    root = resolve_data_dir(data_dir)
    if fetch is not None:
        already = not get_spec(fetch).missing(root)
        fetch_dataset(fetch, root)
        click.echo(f"{fetch}: {'already present' if already else 'fetched'} in {root}", err=True)
    table, errors = datasets_table(root)
    Console().print(table)  # the terminal's width, else 80 columns (the table fits either)
    if errors:
        raise DatasetError(f"{len(errors)} dataset(s) present but invalid; {errors[0]}")


class CheckpointInterval(click.ParamType):
    """``N`` optimizer steps or ``Nm`` minutes, as ``(N, "every")`` or ``(N, "minutes")``."""

    name = "N|Nm"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).strip().lower()
        try:
            if text.endswith(("m", "min")):
                minutes = float(text.rstrip("min"))
                if not 0 < minutes <= 7 * 24 * 60:  # also refuses nan and inf
                    raise ValueError
                return minutes, "minutes"
            steps = int(text)
            if not 0 < steps <= 10**9:
                raise ValueError
            return steps, "every"
        except ValueError:
            self.fail(
                f"{value!r} is neither a number of steps (1 to 10^9) nor of minutes "
                "(e.g. 10m; at most a week)", param, ctx
            )


class Duration(click.ParamType):
    """A wall-clock duration such as ``2h``, ``90m``, ``1h30m`` or ``45s``, in minutes."""

    name = "DURATION"
    _PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([hms])")
    _UNIT_MINUTES = {"h": 60.0, "m": 1.0, "s": 1 / 60}

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        text = str(value).strip().lower()
        parts = self._PART.findall(text)
        minutes = sum(float(number) * self._UNIT_MINUTES[unit] for number, unit in parts)
        if "".join(n + u for n, u in parts) != text or not 0 < minutes <= 365 * 24 * 60:
            self.fail(f"{value!r} is not a duration such as 2h, 90m or 1h30m (at most a year)",
                      param, ctx)
        return minutes


_DIST_TIMEOUT = click.option(
    "--dist-timeout",
    type=click.FloatRange(1, 7 * 24 * 3600),
    default=300.0,
    show_default=True,
    help="Under torchrun: seconds a rank waits for the others before it exits with an error.",
)


def _read_config_file(ctx: click.Context, param: click.Parameter, value: str | None):
    """``--config FILE``: the file's options become the defaults of ``lnf train``'s options
    (so the command line wins), each checked as if given there; options that ``lnf train``
    has no flag for (a preset's patience, lr_decay, grad_clip, ...) are returned, to pass on
    as overrides. Any problem is a one-line :class:`ConfigError` naming the file."""
    if value is None:
        return {}
    from pyro_lnf.errors import ConfigError
    from pyro_lnf.app.config import MODEL_OPTIONS
    from pyro_lnf.records import read_config
    from pyro_lnf.train import TrainConfig

    options = read_config(value)
    flags = {p.name: p for p in ctx.command.params if isinstance(p, click.Option)}
    train_fields = set(TrainConfig.__dataclass_fields__) | set(MODEL_OPTIONS)
    defaults, extras = {}, {}
    for key, item in options.items():
        if key in ("out", "resume", "config", "data_dir"):
            raise ConfigError(f"{value}: {key!r} is given on the command line, not in a config file")
        if key in ("checkpoint_every", "checkpoint_minutes", "log_every", "log_minutes"):
            # Not the flags' N|Nm form: the two keys each; a flag given sets both, and wins.
            extras[key] = _checked_number(value, key, item)
            continue
        if key in flags:
            defaults[key] = _checked_flag(ctx, value, flags[key], item)
        elif key in train_fields:
            extras[key] = item  # TrainConfig.validate checks these
        else:
            raise ConfigError(f"{value}: unknown option {key!r}")
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return extras


def _checked_number(path: str, key: str, item):
    from pyro_lnf.errors import ConfigError

    if isinstance(item, bool) or not isinstance(item, (int, float)):
        raise ConfigError(f"{path}: {key} must be a number, not {item!r}")
    return item


def _checked_flag(ctx: click.Context, path: str, param: click.Option, item):
    """A file's value for ``param``, of the JSON type its flag takes and within its range."""
    from pyro_lnf.errors import ConfigError

    kind = param.type
    if param.is_flag or isinstance(kind, click.types.BoolParamType):
        ok = isinstance(item, bool)
    elif isinstance(kind, click.types.IntParamType):
        ok = isinstance(item, int) and not isinstance(item, bool)
    elif isinstance(kind, click.types.FloatParamType):
        ok = isinstance(item, (int, float)) and not isinstance(item, bool)
    else:
        ok = isinstance(item, str)
    if not ok:
        raise ConfigError(f"{path}: {param.name} must be {kind.name}, not {item!r}")
    try:
        return param.type_cast_value(ctx, item)
    except click.BadParameter as err:
        raise ConfigError(f"{path}: {param.name}: {err.format_message()}") from None


_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Data directory (default: $LNF_DATA_DIR, else ./data).",
)


@lnf.command()
@click.option(
    "--model",
    "model",
    required=True,
    type=click.Choice(MODELS),
    help="Latent-flow prior (AF/AF, AF/SCF, IAF/SCF, independent ablation), the LSTM "
    "baseline, or a Xu & Durrett VAE (svae on ptb_words, nvdm on 20news).",
)
@click.option(
    "--dataset",
    required=True,
    type=click.Choice(DATASET_NAMES),
)
@click.option("--epochs", type=int, help="Epochs to train (preset: 100 for sequence models).")
@click.option("--batch-size", type=int, help="Training sequences per batch (preset per dataset).")
@click.option("--eval-batch-size", type=int, help="Validation sequences per batch.")
@click.option("--lr", type=float, help="Learning rate (preset: 1e-3).")
@click.option(
    "--min-lr",
    type=float,
    help="End the run when a plateau would drop the learning rate below this (default: never).",
)
@click.option(
    "--patience",
    type=int,
    help="Epochs without a better validation loss before the learning rate drops (preset: "
    "1 on PTB; on music 2 for the flows, 4 for the LSTM).",
)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), help="Preset: adam.")
@click.option("--particles", type=int, help="ELBO samples per sequence, vectorised.")
@click.option("--grad-accum", type=int, help="Batches per optimizer step.")
@click.option("--kl-initial-zero", type=int, help="Epochs at β = 1e-5 before the ramp.")
@click.option("--kl-rampup", type=int, help="Epochs of the linear β ramp to 1.")
@click.option("--max-frames", type=int, help="Cap on padded frames per batch (long pieces).")
@click.option("--nll-every", type=int, help="Validation IS NLL every N epochs (0: never).")
@click.option("--nll-samples", type=int, help="Importance samples for the validation NLL.")
@click.option(
    "--transform", type=click.Choice(["nlsq", "affine"]), help="Elementwise map of the flows."
)
# Model sizes are bounded far above the papers' so that a typo fails here, not in an
# allocation of terabytes (or a 100,000-layer flow that fills the memory).
@click.option(
    "--flow-layers", type=click.IntRange(1, 64), help="Flow layers over the latent dimension (K)."
)
@click.option("--latent-dim", type=click.IntRange(1, 4096), help="Size of each z_t (paper: 50).")
@click.option("--hidden-size", type=click.IntRange(1, 8192), help="LSTM width (paper: 500).")
@click.option("--dropout", type=float, help="Dropout (flows: on the prior LSTM context).")
@click.option("--latent", type=click.Choice(["gaussian", "vmf"]), help="VAE latent family.")
@click.option(
    "--kappa",
    type=click.FloatRange(0, 1e4, min_open=True),
    help="Fixed vMF concentration (preset: Xu & Durrett's).",
)
@click.option("--decoder", type=click.Choice(["standard", "inputless"]), help="svae decoder.")
@click.option("--jit/--no-jit", default=None, help="Compile the ELBO with JitTrace_ELBO.")
@click.option("--seed", type=int, help="Seed of the initial weights and every draw (default 0).")
@click.option("--device", help="cpu (default), cuda, cuda:1, ...")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Run directory: checkpoints (best.pt, last.pt) and metrics.jsonl.",
)
@click.option(
    "--resume",
    is_flag=True,
    default=None,
    help="Continue the run in --out from last.pt; options left out are the run's.",
)
@click.option(
    "--checkpoint-every",
    "checkpoint_every",
    type=CheckpointInterval(),
    help="Also write last.pt every N optimizer steps, or every N minutes with 'Nm' (e.g. 10m).",
)
@click.option(
    "--max-time",
    "max_minutes",
    type=Duration(),
    help="Wall-clock budget (e.g. 2h, 90m), summed over resumes: the run ends after the epoch "
    "that reaches it.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_DIST_TIMEOUT
@click.option(
    "--limit-batches",
    type=click.IntRange(1, 10**9),
    help="Only the first N batches of each (shuffled) epoch, and N batches spread over the "
         "length-sorted validation split (quick checks, short epochs).",
)
@click.option(
    "--tensorboard",
    is_flag=True,
    default=None,
    help="Also log scalars to --out/tensorboard (needs pyro-lnf[tensorboard]).",
)
@click.option(
    "--log-every",
    "log_every",
    type=CheckpointInterval(),
    help="Off a terminal: a progress line every N steps, or N minutes with 'Nm' (default 1m).",
)
@click.option(
    "--config",
    "config_extras",
    type=click.Path(dir_okay=False),
    is_eager=True,
    callback=_read_config_file,
    help="Options from a JSON file, e.g. a run's run.json (the command line wins).",
)
@_DATA_DIR
def train(model: str, dataset: str, data_dir: str | None, config_extras: dict, **options) -> None:
    """Train a model with the papers' per-dataset preset; any option overrides it.

    Ctrl-C or SIGTERM saves the exact position to last.pt and exits 130 / 143; --resume goes on.

    Examples: lnf train --model afaf --dataset jsb_chorales --out runs/jsb-afaf;
    lnf train --model nvdm --latent vmf --dataset 20news --out runs/nvdm-vmf;
    lnf train --config runs/jsb-afaf/run.json --out runs/jsb-afaf-again
    """
    from pyro_lnf.distributed import process_group
    from pyro_lnf.app.run import run_training

    for name in ("checkpoint", "log"):
        every = options.pop(f"{name}_every")
        if every is not None:  # steps or minutes: the other is off
            options.update({f"{name}_every": 0, f"{name}_minutes": 0.0})
            options[f"{name}_" + every[1]] = every[0]
    timeout = options.pop("dist_timeout")
    options = {**config_extras, **{k: v for k, v in options.items() if v is not None}}
    with process_group(options.get("device"), timeout) as (group, device):
        if group is not None:  # torchrun: this rank's device (cuda:LOCAL_RANK or cpu)
            options["device"] = device
        summary = run_training(model, dataset, data_dir=data_dir, overrides=options,
                               command=["lnf", *sys.argv[1:]])
    if group is not None and not group.main:
        return
    best = "n/a" if summary.best_valid_loss is None else f"{summary.best_valid_loss:.4f}"
    ended = (" (stopped early: the learning rate reached --min-lr)" if summary.stopped_early
             else " (stopped: --max-time spent; --resume with a larger one goes on)"
             if summary.out_of_time else "")
    click.echo(
        f"done: {summary.epochs} epochs{ended}, {summary.steps} steps, {summary.wall_s:.0f} s; "
        f"best valid -ELBO {best} nats/unit (epoch {summary.best_epoch}); {summary.out}"
    )


@lnf.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "--split", type=click.Choice(["train", "valid", "test"]), default="test", show_default=True
)
# Ranges give a one-line usage error (exit 2) naming the bound; the library checks the same
# bounds for Python callers, and NaN, which compares False with both bounds and so passes.
@click.option(
    "--samples",
    "num_samples",
    type=click.IntRange(1, MAX_SAMPLES),
    default=100,
    show_default=True,
    help="Importance samples K per sequence.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_BATCH_SIZE),
    default=8,
    show_default=True,
    help="Sequences per batch (fewer is faster on CPU).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(1, MAX_CHUNK_SIZE),
    default=32,
    show_default=True,
    help="Samples per pass; lower it if memory runs out.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="bf16: the latent-flow model's LSTMs in bfloat16 on CPU (faster; densities in fp32).",
)
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    default=0,
    show_default=True,
    help="Seed of the guide's draws.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@click.option(
    "--per-sequence",
    is_flag=True,
    help="With --json: add log_likelihood_per_sequence, each sequence's log p̂(x) in batch order.",
)
@click.option(
    "--partial",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Keep each finished batch in FILE and, when FILE exists, skip the batches it holds: "
    "a stopped evaluation continues when rerun with the same options (sequence models, one "
    "process).",
)
@_DIST_TIMEOUT
@_DATA_DIR
def evaluate(checkpoint: str, as_json: bool, **options) -> None:
    """Importance-sampled NLL and ELBO of a checkpoint on a split, every number labelled.

    For the VAEs: perplexity from the ELBO (the papers' figure) and importance-sampled, and the KL.
    """
    import json

    from rich.console import Console

    from pyro_lnf.app.run import evaluate_checkpoint
    from pyro_lnf.nn.runtime import keep_freed_memory

    from pyro_lnf.distributed import process_group

    keep_freed_memory()  # K x B activations reuse pages instead of faulting in fresh ones
    timeout = options.pop("dist_timeout")
    with process_group(options["device"], timeout) as (group, device):
        options["device"] = device
        results = evaluate_checkpoint(checkpoint, quiet=as_json, **options)
    if group is not None and not group.main:  # under torchrun rank 0 alone prints
        return
    _record_evaluation(checkpoint, results)
    if as_json:
        click.echo(json.dumps(results))
        return
    Console().print(evaluation_table(results))  # the terminal's width, else 80 columns


def evaluation_table(results: dict):
    """``lnf evaluate``'s table of ``results``: every number with its key (as in --json) and
    what it means; the meanings wrap, so the table fits 80 columns."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from pyro_lnf.evaluate import METRIC_LABELS, PERPLEXITY_LABELS

    title = f"{results['model']} on {results['dataset']} / {results['split']}"
    if results.get("precision", "fp32") != "fp32":
        title += f" ({results['precision']} LSTMs)"
    table = Table(title=escape(title), box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("metric (--json key)", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("meaning", ratio=1)
    # A key both families report (sequences, num_samples) takes the wording of the family
    # that produced the results: perplexities come from a VAE.
    first, then = ((PERPLEXITY_LABELS, METRIC_LABELS) if "ppl_elbo" in results
                   else (METRIC_LABELS, PERPLEXITY_LABELS))
    labels = {
        **first,
        **{key: label for key, label in then.items() if key not in first},
        "analytic_kl_nats_per_sequence": "closed-form KL(q(z|x) || p(z)), mean per sequence",
    }
    for key, label in labels.items():
        if key in results:
            value = results[key]
            if key in ("units", "frames", "tokens") and isinstance(value, float) \
                    and value.is_integer():
                text = f"{int(value):,}"  # a count stored as a float
            elif isinstance(value, float):
                text = f"{value:.4f}"
            elif isinstance(value, int) and not isinstance(value, bool):
                text = f"{value:,}"
            else:
                text = str(value)
            # Labels hold brackets (E_q[log q − log p]) that rich would read as markup.
            table.add_row(escape(key), escape(text), escape(label))
    return table


def _record_evaluation(checkpoint: str, results: dict) -> None:
    """Keep the results in the run folder's evaluations.jsonl (for ``lnf runs``); a folder
    that cannot be written costs a warning, not the evaluation."""
    from pyro_lnf.records import record_evaluation

    try:
        record_evaluation(checkpoint, results, command=["lnf", *sys.argv[1:]])
    except OSError as err:
        click.echo(f"warning: results not recorded in the run folder: {err.strerror or err}",
                   err=True)


@lnf.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
def runs(run_dirs: tuple[str, ...]) -> None:
    """One table of several runs: model, dataset, epochs, best validation figures, test NLL
    (when `lnf evaluate` was run on a checkpoint in the folder) and wall-clock. A run is named
    by its folder, with its parents where two folders share a name (runs/repro-jsb/afaf and
    runs/repro-piano/afaf are repro-jsb/afaf and repro-piano/afaf).

    A folder that is not a run gets one line on stderr (and exit status 1) after the table.

    Example: lnf runs runs/*
    """
    from rich.console import Console

    from pyro_lnf.errors import ConfigError
    from pyro_lnf.records import distinct_names, runs_table, summarize_run

    summaries, errors = [], []
    for folder, name in zip(run_dirs, distinct_names(run_dirs), strict=True):
        try:
            summaries.append({**summarize_run(folder), "run": name})
        except ConfigError as err:
            errors.append(str(err))
    if summaries:
        Console(width=80).print(runs_table(summaries))
    for error in errors[:-1]:
        click.echo(f"error: {error}", err=True)
    if errors:
        raise ConfigError(errors[-1])


@lnf.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "-n",
    "--num",
    type=click.IntRange(1, MAX_NUM),
    default=4,
    show_default=True,
    help=f"Sequences to draw (-n x --length: at most {MAX_FRAMES} steps).",
)
@click.option(
    "--length",
    type=click.IntRange(1, MAX_LENGTH),
    default=None,
    help="Length of every sequence (default: each drawn from the model's p(T)); for a "
    "sentence VAE, the longest sentence (default 100 words; <eos> ends one earlier).",
)
@click.option(
    "--temperature",
    type=click.FloatRange(MIN_TEMPERATURE, MAX_TEMPERATURE),
    default=1.0,
    show_default=True,
    help="Flows: scales the prior noise; LSTM: divides the logits.",
)
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(["midi", "png", "txt", "npz"]),
    help="Output format, repeatable (default: midi for music, txt for text; an --interpolate "
    "path of music: midi and png, one grid image).",
)
@click.option(
    "--mode/--sample",
    "mode",
    default=None,
    help="Decode each step's most likely value (flows: z stays random) or sample it "
    "(default: sample; the mode along an --interpolate path).",
)
@click.option(
    "--tempo",
    type=click.FloatRange(MIN_TEMPO, MAX_TEMPO),
    default=120.0,
    show_default=True,
    help="MIDI beats per minute.",
)
@click.option(
    "--frames-per-beat",
    type=click.IntRange(1, MAX_FRAMES_PER_BEAT),
    default=None,
    help="Time steps per beat (default: 1 for JSB Chorales, 2 for the other datasets).",
)
@click.option(
    "--velocity",
    type=click.IntRange(MIN_VELOCITY, MAX_VELOCITY),
    default=80,
    show_default=True,
    help="MIDI note velocity.",
)
@click.option(
    "--interpolate",
    "between",
    type=int,
    nargs=2,
    default=None,
    metavar="A B",
    help="Instead of sampling, decode the path between the encodings of test "
    "sequences A and B (-n and --temperature do not apply; --length only to a sentence VAE).",
)
@click.option(
    "--steps",
    type=click.IntRange(2, MAX_STEPS),
    default=8,
    show_default=True,
    help="Points on the path.",
)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@_DATA_DIR
def sample(checkpoint: str, mode: bool | None, between: tuple[int, int] | None, **options) -> None:
    """Draw sequences from a checkpoint and write them as MIDI, PNG, text or npz.

    Example: lnf sample runs/jsb-afaf/best.pt -n 8 --format midi --format png --out samples
    """
    from pyro_lnf.app.sampling import sample_checkpoint

    result = sample_checkpoint(
        checkpoint,
        decode=None if mode is None else ("mode" if mode else "sample"),
        interpolate_between=between or None,
        **options,
    )
    for text in result.texts:
        click.echo(text)
    click.echo(
        f"wrote {len(result.files)} file(s) to {options['out']} "
        f"(lengths {', '.join(map(str, result.lengths))})",
        err=True,
    )


@lnf.command()
@click.argument("run_dirs", metavar="RUN...", nargs=-1, required=True,
                type=click.Path(file_okay=False))
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="PNG to write (default: RUN/curves.png for one run, ./curves.png for several).",
)
@click.option("--x", "x_axis", type=click.Choice(["epoch", "hours"]), default="epoch",
              show_default=True,
              help="x axis: the epoch, or the wall-clock hours of training and validation "
                   "(summed over resumes: compares runs given equal --max-time).")
@click.option("--bits", is_flag=True,
              help="Losses, KL and NLL in bits per unit (÷ ln 2; bits per character on PTB).")
@click.option("--panel", "panels", multiple=True,
              type=click.Choice(["loss", "kl", "beta", "nll"]),
              help="Draw only this panel (repeatable; default: every panel the runs have data "
                   "for).")
@click.option("--ylim", default=None, metavar="LOW,HIGH",
              help="The loss panel's range, linear (e.g. 1.3,3), instead of a log axis chosen "
                   "when the curves span more than 20x.")
def plot(run_dirs: tuple[str, ...], out: str | None, x_axis: str, bits: bool,
         panels: tuple[str, ...], ylim: str | None) -> None:
    """Plot training curves (loss, KL, β and learning rate, validation NLL) against the epoch
    or the wall-clock.

    One run: RUN/curves.png. Several: overlaid in one figure, one colour per run, named by
    folder (with its parents where two share a name). Prints the file written. Example:
    lnf plot runs/jsb-afaf runs/jsb-lstm --out jsb.png
    """
    from pathlib import Path

    from pyro_lnf.errors import ConfigError
    from pyro_lnf.app.plot import CURVES, METRICS_FILE, plot_run, plot_runs

    options = dict(x=x_axis, bits=bits, panels=panels or None,
                   ylim=None if ylim is None else _range(ylim))
    try:
        if len(run_dirs) == 1:
            written = plot_run(run_dirs[0], out=out, **options)
        else:
            written = plot_runs(run_dirs, out if out is not None else CURVES, **options)
    except UnicodeDecodeError as err:  # read_metrics reads UTF-8 text: a binary or other file
        where = next((run for run in run_dirs if _not_utf8(Path(run) / METRICS_FILE)), "RUN")
        raise ConfigError(
            f"{Path(where) / METRICS_FILE} is not UTF-8 text (byte {err.start}); it is not a "
            "metrics file that lnf train wrote"
        ) from err
    click.echo(str(written))


def _range(text: str) -> tuple[float, float]:
    """``LOW,HIGH`` as two finite floats, LOW < HIGH (ConfigError otherwise)."""
    from pyro_lnf.errors import ConfigError

    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--ylim wants LOW,HIGH (two numbers), not {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"--ylim wants finite LOW < HIGH, not {text!r}")
    return low, high


def _not_utf8(path) -> bool:
    try:
        path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return True
    except OSError:
        return False
    return False


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 1."""
    try:
        lnf.main(standalone_mode=False)
    except Interrupted as err:
        click.echo(f"stopped: {err}", err=True)
        sys.exit(128 + err.signum)
    except LnfError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    except OSError as err:  # an unwritable --out, a full disk, a file vanishing mid-read
        where = f" {err.filename}" if err.filename else ""
        click.echo(f"error: cannot access{where}: {err.strerror or err}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as err:  # one line, like every other error, with where to look
        command = err.ctx.command_path if err.ctx is not None else "lnf"
        click.echo(f"error: {err.format_message()} (see '{command} --help')", err=True)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
