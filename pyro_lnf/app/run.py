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
from pyro_lnf.errors import ConfigError
from pyro_lnf.evaluate import evaluate
from pyro_lnf.models.baseline import LSTMBaseline
from pyro_lnf.models.lnf import LatentFlowModel
from pyro_lnf.models.vae import NVDM, SentenceVAE, perplexity
from pyro_lnf.nn.precision import PRECISIONS, bulk_precision
from pyro_lnf.app.config import FLOW_MODELS, KAPPA, VAE_MODELS, preset
from pyro_lnf.sample import resolve_device
from pyro_lnf.train import (
    LAST, TRAJECTORY_OPTIONS, TrainConfig, TrainSummary, sequence_batches, train,
)

#: Preset keys that configure the model rather than the training loop.
MODEL_OPTIONS = (
    "dropout",
    "flow_layers",
    "transform",
    "latent_dim",
    "hidden_size",
    "latent",
    "kappa",
    "decoder",
)
_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


def max_length_for(dataset: Dataset) -> int:
    """Rows of the length-feature tables: 1.25 x the longest training sequence (the authors'
    margin), so most test sequences need no clamping."""
    return math.ceil(1.25 * int(dataset.lengths("train").max()))


def build_model(model: str, dataset: Dataset, **options: Any) -> torch.nn.Module:
    """A fresh model of type ``model`` (``afaf``, ``afscf``, ``iafscf``, ``indep``, ``lstm``,
    ``svae``, ``nvdm``) sized for ``dataset``; ``options`` override the constructor defaults."""
    if model in VAE_MODELS:
        return _build_vae(model, dataset, **options)
    for option in ("latent", "kappa", "decoder"):
        if options.pop(option, None) is not None:
            raise ConfigError(f"--{option} applies to the svae and nvdm models only")
    if dataset.kind not in ("binary", "categorical"):
        raise ConfigError(f"model {model!r} needs a sequence dataset, not {dataset.name!r}")
    common = dict(
        kind=dataset.kind,
        num_features=dataset.num_features,
        max_length=max_length_for(dataset),
        lengths=dataset.lengths("train"),
        dataset=dataset.name,
    )
    if model == "lstm":
        for option in ("flow_layers", "transform", "latent_dim"):
            if options.pop(option, None) is not None:
                raise ConfigError(
                    f"--{option.replace('_', '-')} does not apply to the LSTM baseline"
                )
        return LSTMBaseline(**common, **options)
    if model not in FLOW_MODELS:
        raise ConfigError(
            f"unknown model {model!r}; choose one of {', '.join((*FLOW_MODELS, 'lstm'))}"
        )
    return LatentFlowModel(**common, prior=model, **options)


def _build_vae(model: str, dataset: Dataset, **options: Any) -> torch.nn.Module:
    for option in ("flow_layers", "transform"):
        if options.pop(option, None) is not None:
            raise ConfigError(f"--{option.replace('_', '-')} does not apply to {model!r}")
    decoder = options.get("decoder", "standard") if model == "svae" else None
    if model == "nvdm" and options.pop("decoder", None) is not None:
        raise ConfigError("--decoder applies to the svae model only")
    options.setdefault("kappa", KAPPA[(model, decoder)])
    if model == "svae":
        return SentenceVAE.from_vocab(dataset.vocab, dataset=dataset.name, **options)
    return NVDM(dataset.num_features, dataset=dataset.name, **options)


def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate model options from training options; anything else is an error."""
    model_opts = {k: v for k, v in settings.items() if k in MODEL_OPTIONS and v is not None}
    train_opts = {k: v for k, v in settings.items() if k in _TRAIN_FIELDS}
    unknown = set(settings) - set(MODEL_OPTIONS) - _TRAIN_FIELDS
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
    return model_opts, train_opts


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
        module, config, checkpoint = _resumed(model, dataset_name, given)
        dataset = load_dataset(module.config["dataset"], data_dir=data_dir, download=download)
    else:
        model_opts, train_opts = split_settings({**preset(model, dataset_name), **given})
        config = TrainConfig(**train_opts)
        dataset = load_dataset(dataset_name, data_dir=data_dir, download=download)
        torch.manual_seed(config.seed)  # the initial weights are part of the run
        module = build_model(model, dataset, **model_opts)
    return train(
        module,
        dataset_batches(dataset, "train", config, train=True),
        dataset_batches(dataset, "valid", config, train=False),
        config,
        record=dict(model=model, dataset=dataset.name, overrides=given, command=command),
        checkpoint=checkpoint,
    )


def model_choice(checkpoint: dict[str, Any]) -> str:
    """The ``--model`` name of a checkpoint's model (``afaf``, ..., ``lstm``, ``svae``)."""
    info = checkpoint["model"]
    return info["config"].get("prior", "?") if info["name"] == "lnf" else info["name"]


def _resumed(model: str, dataset_name: str,
             given: dict[str, Any]) -> tuple[torch.nn.Module, TrainConfig, dict[str, Any]]:
    """The model and options of the run in ``given["out"]``, with the options ``given``
    that may change applied, and its ``last.pt`` as read (for :func:`train` to continue
    from); anything else given must equal the run's."""
    if given.get("out") is None:
        raise ConfigError("--resume needs --out, the run directory that holds last.pt")
    path = Path(given["out"]) / LAST
    checkpoint = load_checkpoint(path)
    saved_model, saved_train = checkpoint["model"]["config"], checkpoint["train_config"]
    differ = []
    if model != model_choice(checkpoint):
        differ.append(f"--model {model_choice(checkpoint)} (given {model})")
    if dataset_name != saved_model.get("dataset"):
        differ.append(f"--dataset {saved_model.get('dataset')} (given {dataset_name})")
    for key in MODEL_OPTIONS:
        if key in given and given[key] != saved_model.get(key):
            differ.append(f"--{key.replace('_', '-')} {saved_model.get(key)} (given {given[key]})")
    for key in TRAJECTORY_OPTIONS:
        if key in given and given[key] != saved_train.get(key):
            differ.append(f"--{key.replace('_', '-')} {saved_train.get(key)} (given {given[key]})")
    if differ:
        raise ConfigError(
            f"{path} is a run with {'; '.join(differ)}: --resume continues a run as it was "
            "(leave these out, or train into another --out)"
        )
    settings = {k: v for k, v in saved_train.items() if k in _TRAIN_FIELDS}
    settings.update({k: v for k, v in given.items() if k in _TRAIN_FIELDS})
    module = model_from_checkpoint(checkpoint, path, param_store=False)
    return module, TrainConfig(**settings), checkpoint


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
    """
    from pyro_lnf.checkpoint import check_fits_dataset
    from pyro_lnf.evaluate import check_evaluate_options
    from pyro_lnf.app.files import check_between
    from pyro_lnf.sample import MAX_SEED

    from pyro_lnf.distributed import current

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
        with bulk_precision(PRECISIONS[precision]):
            results = evaluate(
                module, tracked, num_samples=num_samples, chunk_size=chunk_size, device=device,
                seed=seed, group=group, per_sequence=per_sequence,
            )
    results.update(
        dataset=dataset.name,
        split=split,
        model=checkpoint["model"]["name"],
        epochs_trained=checkpoint["progress"].get("epoch"),  # a dict: load_checkpoint checked
        precision=precision,
        seed=seed,
    )
    return results
