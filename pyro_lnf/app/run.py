"""Glue between the command line and the library: build a model for a dataset, train it with
the paper's presets, evaluate a checkpoint. Everything here is callable from Python too."""

from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

import pyro
import torch
from rich.progress import track

from pyro_lnf.checkpoint import load_checkpoint, model_from_checkpoint
from pyro_lnf.datasets import Dataset, load_dataset
from pyro_lnf.errors import ConfigError, EvaluationInterrupted
from pyro_lnf.evaluate import evaluate, perplexity
from pyro_lnf.interrupt import StopRequested, deferred_signals
from pyro_lnf.io import file_sha256
from pyro_lnf.models.baseline import LSTMBaseline
from pyro_lnf.models.lnf import LatentFlowModel
from pyro_lnf.models.nvdm import NVDM
from pyro_lnf.models.sentence_vae import SentenceVAE
from pyro_lnf.nn.precision import PRECISIONS, bulk_precision
from pyro_lnf.partial import PartialResults, sequences_sha256
from pyro_lnf.app.config import (
    LatentFlowConfig, LSTMConfig, ModelConfig, NVDMConfig, SentenceVAEConfig, from_recorded,
    model_kwargs, model_options, option_names, preset, with_overrides,
)
from pyro_lnf.nn.devices import resolve_device
from pyro_lnf.train import (
    LAST, TRAJECTORY_OPTIONS, TrainConfig, TrainSummary, sequence_batches, train,
)

#: What a checkpoint's ``train_config`` may set (an older file may hold options since removed).
_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


def max_length_for(dataset: Dataset) -> int:
    """Rows of the length-feature tables: 1.25 x the longest training sequence (the authors'
    margin), so most test sequences need no clamping."""
    return math.ceil(1.25 * int(dataset.lengths("train").max()))


def build_model(config: ModelConfig, dataset: Dataset) -> torch.nn.Module:
    """A fresh model as ``config`` says (:func:`~pyro_lnf.app.config.default_config`,
    :func:`~pyro_lnf.app.config.preset`), sized for ``dataset``: its keywords are the
    config's fields and the sizes the dataset gives."""
    kwargs = model_kwargs(config)
    if isinstance(config, SentenceVAEConfig):
        return SentenceVAE.from_vocab(dataset.vocab, dataset=dataset.name, **kwargs)
    if isinstance(config, NVDMConfig):
        return NVDM(dataset.num_features, dataset=dataset.name, **kwargs)
    if dataset.kind not in ("binary", "categorical"):
        name = config.prior if isinstance(config, LatentFlowConfig) else "lstm"
        raise ConfigError(f"model {name!r} needs a sequence dataset, not {dataset.name!r}")
    sizes = dict(
        kind=dataset.kind,
        num_features=dataset.num_features,
        max_length=max_length_for(dataset),
        lengths=dataset.lengths("train"),
        dataset=dataset.name,
    )
    if isinstance(config, LSTMConfig):
        return LSTMBaseline(**sizes, **kwargs)
    return LatentFlowModel(**sizes, **kwargs)


def dataset_batches(dataset: Dataset, split: str, config: TrainConfig, *, train: bool):
    """``epoch -> batches`` over a split, padded and counted as the dataset needs."""
    return sequence_batches(
        dataset.splits[split], config, train=train, pad_value=dataset.pad_value,
        bow_size=dataset.num_features if dataset.kind == "bow" else None,
    )


def run_training(
    model: str,
    dataset_name: str,
    *,
    data_dir: str | None = None,
    download: bool = False,
    overrides: dict[str, Any] | None = None,
    command: list[str] | None = None,
) -> TrainSummary:
    """Train ``model`` on ``dataset_name`` with the paper's preset, ``overrides`` applied.

    ``overrides`` name fields of the typed configs (:mod:`pyro_lnf.app.config`); a name no
    config has, or a model option ``model`` does not take, is refused in one line.

    A resumed run (``overrides["resume"]``) takes its model, dataset and every option not
    given from its ``last.pt``; an option given that would change the run (the model, the
    dataset, a model option or one that changes the sequence of updates) is refused, naming
    it. ``epochs``, ``min_lr``, the validation and checkpointing options and the device may
    change.

    The run's ``run.json`` (:mod:`pyro_lnf.records`) records ``command``, the command line
    that started it, when given.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    checkpoint = None  # on --resume, last.pt as read once, to rebuild the model and continue
    if given.get("resume"):
        module, model_config, config, checkpoint = _resumed(model, dataset_name, given)
        dataset = load_dataset(module.config["dataset"], data_dir=data_dir, download=download)
    else:
        model_config, config = with_overrides(model, preset(model, dataset_name), given)
        dataset = load_dataset(dataset_name, data_dir=data_dir, download=download)
        torch.manual_seed(config.seed)  # the initial weights are part of the run
        module = build_model(model_config, dataset)
    return train(
        module,
        dataset_batches(dataset, "train", config, train=True),
        dataset_batches(dataset, "valid", config, train=False),
        config,
        record=dict(model=model, dataset=dataset.name, model_options=model_options(model_config),
                    overrides=given, command=command),
        checkpoint=checkpoint,
    )


def model_choice(checkpoint: dict[str, Any]) -> str:
    """The ``--model`` name of a checkpoint's model (``afaf``, ..., ``lstm``, ``svae``)."""
    info = checkpoint["model"]
    return info["config"].get("prior", "?") if info["name"] == "lnf" else info["name"]


def _resumed(model: str, dataset_name: str, given: dict[str, Any]
             ) -> tuple[torch.nn.Module, ModelConfig, TrainConfig, dict[str, Any]]:
    """The model and configs of the run in ``given["out"]``, with the options ``given`` that
    may change applied, and its ``last.pt`` as read (for :func:`train` to continue from); a
    model option or trajectory option given must equal the run's."""
    if given.get("out") is None:
        raise ConfigError("--resume needs --out, the run directory that holds last.pt")
    path = Path(given["out"]) / LAST
    checkpoint = load_checkpoint(path)
    saved_model, saved_train = checkpoint["model"]["config"], checkpoint["train_config"]
    run_model = model_choice(checkpoint)
    run_configs = (
        from_recorded(run_model, saved_model),
        TrainConfig(**{k: v for k, v in saved_train.items() if k in _TRAIN_FIELDS}),
    )
    model_config, config = with_overrides(run_model, run_configs, given)
    differ = []
    if model != run_model:
        differ.append(f"--model {run_model} (given {model})")
    if dataset_name != saved_model.get("dataset"):
        differ.append(f"--dataset {saved_model.get('dataset')} (given {dataset_name})")
    for key in option_names(type(model_config)):
        ran, asked = getattr(run_configs[0], key), getattr(model_config, key)
        if key in given and asked != ran:
            differ.append(f"--{key.replace('_', '-')} {ran} (given {given[key]})")
    for key in TRAJECTORY_OPTIONS:
        if key in given and given[key] != saved_train.get(key):
            differ.append(f"--{key.replace('_', '-')} {saved_train.get(key)} (given {given[key]})")
    if differ:
        raise ConfigError(
            f"{path} is a run with {'; '.join(differ)}: --resume continues a run as it was "
            "(leave these out, or train into another --out)"
        )
    module = model_from_checkpoint(checkpoint, path, param_store=False)
    return module, run_configs[0], config, checkpoint


@torch.no_grad()
def _mean_analytic_kl(module: torch.nn.Module, batches: list[Any]) -> float:
    """Closed-form KL(q(z|x) || p(z)) averaged over the sequences (documents)."""
    module.eval()
    total = sum(float(module.analytic_kl(batch).sum()) for batch in batches)
    return total / sum(len(batch) for batch in batches)


def _tracked(batches: Iterable[Any], total: int, description: str, quiet: bool) -> Iterable[Any]:
    return batches if quiet else track(batches, total=total, description=description)


def evaluate_checkpoint(
    path: str,
    *,
    split: str = "test",
    num_samples: int = 100,
    batch_size: int = 8,
    chunk_size: int | None = 32,
    data_dir: str | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    seed: int = 0,
    quiet: bool = False,
    per_sequence: bool = False,
    partial: str | None = None,
) -> dict[str, Any]:
    """Importance-sampled NLL and ELBO of a saved model on one split of its dataset.

    The guide's draws of batch ``i`` are seeded with a hash of ``(seed, i)``, so a run repeats
    exactly (torch seeds its default generator at random in each process), and under torchrun
    (the process group initialised) each rank evaluates every ``W``-th batch and the figures,
    gathered in batch order, are the same for any number of ranks. (Before the data-parallel
    change one seed was set once for the whole split, so seeded figures moved slightly.)
    ``per_sequence`` adds ``log_likelihood_per_sequence`` (sequence models only).

    ``precision="bf16"`` runs the latent-flow model's LSTMs and emission projection in
    bfloat16 on CPU (:mod:`pyro_lnf.nn.precision`); densities and weights stay in float32.

    ``partial`` names a file (:mod:`pyro_lnf.partial`) that keeps each finished batch, so an
    evaluation stopped (SIGINT, SIGTERM, a kill) continues where it was when rerun with the
    same options: the figures equal an uninterrupted run's. SIGINT or SIGTERM then stop it
    between batches (:class:`~pyro_lnf.errors.EvaluationInterrupted`). Sequence models, one
    process.
    """
    from pyro_lnf.checkpoint import check_fits_dataset
    from pyro_lnf.distributed import current
    from pyro_lnf.evaluate import check_evaluate_options
    from pyro_lnf.nn.checks import MAX_SEED, check_between

    group = current()
    device = resolve_device(device)
    check_evaluate_options(num_samples, batch_size, chunk_size)
    check_between("--seed", seed, 0, MAX_SEED)
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "fp32" and device.type != "cpu":
        raise ConfigError(f"--precision {precision} is for CPU evaluation; use fp32 on {device}")
    checkpoint = load_checkpoint(path, map_location=device)
    module = model_from_checkpoint(checkpoint, path, device)
    if precision != "fp32" and not isinstance(module, LatentFlowModel):
        raise ConfigError(
            f"--precision {precision} applies to the latent-flow models, not {module.name!r}"
        )
    if group is not None and isinstance(module, (SentenceVAE, NVDM)):
        raise ConfigError(
            f"evaluating a {module.name} under torchrun is not supported yet; run lnf evaluate "
            "in one process"
        )
    if partial is not None:
        _check_resumable(module, group)
    if module.config.get("dataset") is None:
        raise ConfigError(f"checkpoint {path} does not name its dataset, which evaluating needs")
    dataset = load_dataset(module.config["dataset"], data_dir=data_dir)
    check_fits_dataset(module.config, dataset, path)
    longest = dataset.num_features if dataset.kind == "bow" else int(dataset.lengths(split).max())
    check_evaluate_options(num_samples, batch_size, chunk_size, longest)
    batches = list(dataset.batches(split, batch_size, shuffle=False, device=device))
    quiet = quiet or (group is not None and not group.main)
    tracked = _tracked(batches, len(batches), f"evaluating {split} (K={num_samples})", quiet)
    pyro.set_rng_seed(seed)
    if isinstance(module, (SentenceVAE, NVDM)):
        results = perplexity(
            module, tracked, num_samples=num_samples, chunk_size=chunk_size, device=device
        )
        results["analytic_kl_nats_per_sequence"] = _mean_analytic_kl(module, batches)
    else:
        options = dict(num_samples=num_samples, chunk_size=chunk_size, device=device, seed=seed,
                       per_sequence=per_sequence)
        with bulk_precision(PRECISIONS[precision]):
            if partial is None:
                results = evaluate(module, tracked, group=group, **options)
            else:
                header = _partial_header(
                    path, dataset, split, len(batches), batch_size=batch_size,
                    num_samples=num_samples, chunk_size=chunk_size, seed=seed,
                    precision=precision, device=device,
                )
                results = _resumable(partial, header, module, batches, tracked, options)
    results.update(
        dataset=dataset.name,
        split=split,
        model=checkpoint["model"]["name"],
        epochs_trained=checkpoint["progress"].get("epoch"),  # a dict: load_checkpoint checked
        precision=precision,
        seed=seed,
    )
    return results


def _check_resumable(module: torch.nn.Module, group: Any) -> None:
    """Refuse ``--partial`` where a resumed evaluation could not equal an uninterrupted one,
    or where kept batches would need every rank's results on every batch."""
    if isinstance(module, (SentenceVAE, NVDM)):
        raise ConfigError(
            f"--partial is for the sequence models, not {module.name!r}: a VAE's draws are "
            "seeded once for the whole split, so a resumed run could not repeat them"
        )
    if group is not None:
        raise ConfigError("--partial is not supported under torchrun; run lnf evaluate in one "
                          "process")


def _partial_header(path: str, dataset: Dataset, split: str, batches: int, *,
                    batch_size: int, num_samples: int, chunk_size: int | None, seed: int,
                    precision: str, device: torch.device) -> dict[str, Any]:
    """What an evaluation's figures depend on, for ``--partial``'s header: results kept under
    another header are never mixed in.

    The checkpoint is named by the SHA-256 of its bytes: under a second for 400 MB (and the
    file is in the page cache, just loaded), nothing beside hours of evaluation, while a size
    and mtime would refuse a copied file and could miss one rewritten within the clock's
    resolution. The chunk size is there because it groups the draws and the logsumexp merge,
    which moves figures by rounding; the device type because CPU and CUDA draw from different
    generators; on a CPU the thread count, because the kernels split their sums by thread
    (1 and 2 threads differ by up to 2e-4 nats per JSB chorale in float32). ``per_sequence``
    is not: every batch line keeps its sequences' values.
    """
    from pyro_lnf import __version__

    return dict(
        checkpoint_sha256=file_sha256(path), dataset=dataset.name, split=split,
        split_sha256=sequences_sha256(dataset.splits[split]), batches=batches,
        batch_size=batch_size, num_samples=num_samples, chunk_size=chunk_size, seed=seed,
        precision=precision, device=device.type,
        cpu_threads=torch.get_num_threads() if device.type == "cpu" else None,
        pyro_lnf_version=__version__,
        torch_version=torch.__version__, pyro_version=pyro.__version__,
    )


def _resumable(partial: str, header: dict[str, Any], module: torch.nn.Module,
               batches: list[Any], tracked: Iterable[Any], options: dict[str, Any]
               ) -> dict[str, Any]:
    """:func:`evaluate` keeping each batch in ``partial`` and skipping those it holds; a
    first SIGINT or SIGTERM stops it between batches, with how to continue."""
    sizes = [int(batch.lengths.shape[0]) for batch in batches]
    with PartialResults(partial, header, sizes) as kept, \
            deferred_signals(EvaluationInterrupted) as stop:
        try:
            return evaluate(module, stop.checked(tracked), done=kept.done,
                            on_batch=kept.append, **options)
        except StopRequested:
            raise EvaluationInterrupted(
                f"interrupted by {stop.name} after {kept.kept} of {len(batches)} batches, kept "
                f"in {partial}; run the same command to continue", stop.signum,
            ) from None
