r"""Importance-sampled likelihoods and ELBOs, per sequence, for any model/guide pair.

For one sequence :math:`x` and :math:`K` guide samples :math:`z_k \sim q(z \mid x)`,

.. math::

    \log w_k = \log p(x, z_k) - \log q(z_k \mid x), \qquad
    \log \hat p_K(x) = \operatorname{logsumexp}_k \log w_k - \log K .

:math:`\mathbb{E}\,\hat p_K(x) = p(x)`, so :math:`\mathbb{E} \log \hat p_K(x) \le \log p(x)`
(Jensen); the bound tightens as :math:`K` grows (Burda et al., 2016) and is exact for every
:math:`K` when :math:`q` is the true posterior, because then every :math:`w_k = p(x)`. With
:math:`K = 1` it is a one-sample ELBO, and the mean of the :math:`\log w_k` is the
:math:`K`-sample ELBO estimate, so one pass gives both.

That pass is reduced two ways: :func:`evaluate` per unit and per frame of a sequence model
(the latent-flow model, the LSTM baseline), :func:`perplexity` per token for the VAEs (the
sentence VAE, NVDM), from the ELBO as the papers report it and from importance sampling.

Log-weights are kept **per sequence**: each site's log-density is summed within its element of
the ``"sequences"`` plate (dim −1), never across the batch. ``pyro.infer.Importance`` weights a
whole batch jointly, which is a looser bound (pyro-notes §4.4). Samples are drawn in chunks of
``chunk_size`` inside a particle plate at dim −2 and merged with a running logsumexp, so
memory grows with the chunk, not with :math:`K` (K = 1000 fits).

References:

[1] Yuri Burda, Roger Grosse, Ruslan Salakhutdinov. Importance Weighted Autoencoders.
    ICLR 2016. [arXiv:1509.00519]
[2] Zachary M. Ziegler, Alexander M. Rush. Latent Normalizing Flows for Discrete Sequences.
    ICML 2019, §5 (NLL by importance sampling). [arXiv:1901.10548]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from pyro_lnf.errors import ConfigError
from pyro_lnf.nn.checks import MAX_BATCH_SIZE, MAX_CHUNK_SIZE, MAX_SAMPLES
from pyro_lnf.nn.checks import check_between
from pyro_lnf.nn.modes import evaluating

__all__ = [
    "BATCH_SUMS",
    "MAX_BATCH_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_PASS_UNITS",
    "MAX_SAMPLES",
    "METRIC_LABELS",
    "PERPLEXITY_LABELS",
    "BatchResult",
    "ImportanceEstimate",
    "check_evaluate_options",
    "evaluate",
    "importance_log_likelihood",
    "importance_sample",
    "perplexity",
]

#: Bounds of ``lnf evaluate``'s options (the CLI's click ranges read them too), defined in the
#: import-free :mod:`pyro_lnf.nn.checks`. Memory grows with chunk x batch x the longest item of the
#: split: each bound is generous alone, and :data:`MAX_PASS_UNITS` bounds the product (an LSTM
#: activation of width 500 over 8e6 steps is 16 GB in float32; the defaults on MuseData's
#: longest test piece, 32 x 8 x 4273, need 1.1e6).
MAX_PASS_UNITS = 8_000_000

_PARTICLE_PLATE = "importance_samples"
_PARTICLE_DIM = -2  # the "sequences" plate is dim -1 (models/base.py)


@dataclass
class ImportanceEstimate:
    """Per-sequence results of :func:`importance_sample`, each of shape ``(B,)``, in nats.

    :ivar log_likelihood: :math:`\\log \\hat p_K(x)`, the importance-sampled log-likelihood.
    :ivar elbo: the :math:`K`-sample mean of :math:`\\log w_k` (an ELBO estimate).
    :ivar reconstruction: the mean of :math:`-\\log p(\\text{observed sites} \\mid z_k)`.
    :ivar kl: the mean of :math:`\\log q(z_k \\mid x) - \\log p(z_k)` over the latent sites.
    :ivar num_samples: :math:`K`.
    """

    log_likelihood: torch.Tensor
    elbo: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    num_samples: int


#: The order of :attr:`BatchResult.sums`.
BATCH_SUMS = ("log_lik", "elbo", "rec", "kl", "units", "frames")


@dataclass(frozen=True)
class BatchResult:
    """What :func:`evaluate` keeps of one batch: everything its reductions read, as the
    float64 sums it adds in batch order, so figures rebuilt from kept results (a resumed
    ``lnf evaluate --partial``) are the very same floats.

    :ivar index: the batch's place in the split.
    :ivar sums: Σ log p̂_K, Σ ELBO, Σ reconstruction, Σ KL, Σ units, Σ frames (:data:`BATCH_SUMS`).
    :ivar log_likelihood: each sequence's log p̂_K(x), in batch order.
    """

    index: int
    sums: tuple[float, ...]
    log_likelihood: tuple[float, ...]

    @property
    def sequences(self) -> int:
        return len(self.log_likelihood)


def _batch_result(module: torch.nn.Module, index: int, batch: Any,
                  est: ImportanceEstimate) -> BatchResult:
    """One batch's :class:`BatchResult`, summed in float64."""
    log_lik = est.log_likelihood.double()
    sums = (
        log_lik.sum().item(),
        est.elbo.double().sum().item(),
        est.reconstruction.double().sum().item(),
        est.kl.double().sum().item(),
        module.normalizer(batch).double().sum().item(),
        batch.lengths.double().sum().item(),
    )
    return BatchResult(index, sums, tuple(log_lik.tolist()))


def _per_sequence(log_prob: torch.Tensor | float, k: int) -> torch.Tensor:
    """A site's log-density as ``(k, B)``: sequences on dim −1, particles on dim −2."""
    log_prob = torch.as_tensor(log_prob)
    while log_prob.dim() < 2:
        log_prob = log_prob.unsqueeze(0)
    return log_prob.expand(k, log_prob.shape[-1])


def _chunk_log_weights(
    model: Callable[..., Any], guide: Callable[..., Any], k: int, args: tuple, kwargs: dict
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log p(observed | z), log p(z), log q(z))`` for ``k`` guide samples, each ``(k, B)``."""
    with pyro.plate(_PARTICLE_PLATE, k, dim=_PARTICLE_DIM):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    guide_trace = prune_subsample_sites(guide_trace)  # plates are recorded as sites too
    model_trace = prune_subsample_sites(model_trace)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    guided = {
        name
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    parts: dict[str, list[torch.Tensor]] = {"obs": [], "prior": [], "q": []}
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            parts["obs"].append(_per_sequence(site["log_prob"], k))
        elif name in guided:
            parts["prior"].append(_per_sequence(site["log_prob"], k))
        else:
            raise ValueError(
                f"model site {name!r} is neither observed nor sampled by the guide; "
                "importance weights need a proposal for every latent site"
            )
    parts["q"] = [_per_sequence(guide_trace.nodes[name]["log_prob"], k) for name in guided]
    every = [t for terms in parts.values() for t in terms]
    if not every:
        raise ValueError("the model has no sample sites: nothing to weigh")
    shape = torch.broadcast_shapes(*(t.shape for t in every))
    zero = every[0].new_zeros(shape)  # device and dtype of the model's own log-densities
    log_obs, log_prior, log_q = (sum(parts[key], zero) for key in ("obs", "prior", "q"))
    return log_obs, log_prior, log_q


def check_evaluate_options(
    num_samples: int, batch_size: int, chunk_size: int | None, longest: int | None = None
) -> None:
    """Refuse ``lnf evaluate`` options outside their bounds, and (given ``longest``, the
    longest item of the split in steps, or the vocabulary for bags of words) a pass of
    chunk x batch x longest beyond :data:`MAX_PASS_UNITS`.

    :raises ConfigError: one line naming the option (or the product) and its bound.
    """
    check_between("--samples", num_samples, 1, MAX_SAMPLES)
    check_between("--batch-size", batch_size, 1, MAX_BATCH_SIZE)
    if chunk_size is not None:
        check_between("--chunk-size", chunk_size, 1, MAX_CHUNK_SIZE)
    if longest is not None:
        chunk = num_samples if chunk_size is None else min(chunk_size, num_samples)
        if chunk * batch_size * longest > MAX_PASS_UNITS:
            raise ConfigError(
                f"--chunk-size x --batch-size x the longest item ({longest}) must be at most "
                f"{MAX_PASS_UNITS} per pass, got {chunk} x {batch_size} x {longest} = "
                f"{chunk * batch_size * longest}; lower --chunk-size or --batch-size"
            )


@torch.no_grad()
def importance_sample(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_samples: int = 30,
    chunk_size: int | None = 32,
    **kwargs: Any,
) -> ImportanceEstimate:
    r"""Importance-sampled :math:`\log \hat p_K(x)` and the ELBO, per sequence.

    The guide is traced inside a particle plate (dim −2) and the model replayed against it;
    log-weights are summed per element of the ``"sequences"`` plate (dim −1). Chunks of
    ``chunk_size`` samples are merged with a running logsumexp, so the result is the same as
    one chunk of ``num_samples`` up to rounding (exactly the same draws when every sample uses
    the same amount of randomness, as in reparameterised guides). Every sample site must live
    in the ``"sequences"`` plate; call the programs with ``beta = 1`` so no site is rescaled.

    :param model: a Pyro model ``model(*args, **kwargs)``.
    :param guide: its guide, with the same signature; it proposes every latent site.
    :param num_samples: :math:`K`.
    :param chunk_size: samples per pass (memory grows linearly in it); ``None``: one pass.

    Example::

        est = importance_sample(module.model, module.guide, batch, 1.0, num_samples=1000)
        nll_per_unit = -est.log_likelihood.sum() / module.normalizer(batch).sum()
    """
    if num_samples < 1:
        raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
    if chunk_size is not None and chunk_size < 1:  # 0 used to mean 1, silently
        raise ConfigError(f"chunk_size must be at least 1 (or None: one pass), got {chunk_size}")
    chunk = num_samples if chunk_size is None else min(chunk_size, num_samples)
    log_total = sum_log_w = sum_obs = sum_kl = None
    done = 0
    while done < num_samples:
        k = min(chunk, num_samples - done)
        log_obs, log_prior, log_q = _chunk_log_weights(model, guide, k, args, kwargs)
        log_w = log_obs + log_prior - log_q
        part = torch.logsumexp(log_w, dim=0)
        if log_total is None:
            log_total, sum_log_w = part, log_w.sum(0)
            sum_obs, sum_kl = log_obs.sum(0), (log_q - log_prior).sum(0)
        else:
            log_total = torch.logaddexp(log_total, part)
            sum_log_w = sum_log_w + log_w.sum(0)
            sum_obs = sum_obs + log_obs.sum(0)
            sum_kl = sum_kl + (log_q - log_prior).sum(0)
        done += k
    return ImportanceEstimate(
        log_likelihood=log_total - math.log(num_samples),
        elbo=sum_log_w / num_samples,
        reconstruction=-sum_obs / num_samples,
        kl=sum_kl / num_samples,
        num_samples=num_samples,
    )


def importance_log_likelihood(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_samples: int = 30,
    chunk_size: int | None = 32,
    **kwargs: Any,
) -> torch.Tensor:
    r"""Per-sequence :math:`\log \hat p_K(x) = \operatorname{logsumexp}_k \log w_k - \log K`.

    Shape ``(B,)``; see :func:`importance_sample` for the arguments and the estimator.

    Example::

        log_px = importance_log_likelihood(module.model, module.guide, batch, 1.0,
                                           num_samples=1000, chunk_size=50)
    """
    return importance_sample(
        model, guide, *args, num_samples=num_samples, chunk_size=chunk_size, **kwargs
    ).log_likelihood


METRIC_LABELS: dict[str, str] = {
    "sequences": "number of sequences evaluated",
    "units": "Σ normalizer = Σ(T+1): every step plus the length (paper's denominator)",
    "frames": "Σ T: time steps (music frames / characters)",
    "num_samples": "K, importance samples per sequence",
    "nll_nats_per_unit": "IS NLL, −Σ log p̂(x, T) / Σ(T+1), nats (paper's accounting, "
    "incl. −log p(T))",
    "nll_bits_per_unit": "same in bits (/ln 2): the paper's BPC for PTB",
    "nll_nats_per_frame": "IS NLL, −Σ log p̂(x, T) / Σ T, nats per frame/character "
    "(incl. −log p(T))",
    "nll_bits_per_frame": "same in bits (/ln 2)",
    "elbo_loss_nats_per_unit": "−ELBO (mean over the K samples) / Σ(T+1), nats",
    "reconstruction_nats_per_unit": "−E_q log p(x, T | z) / Σ(T+1), nats (observed sites)",
    "kl_nats_per_unit": "E_q[log q(z|x) − log p(z)] / Σ(T+1), nats (latent sites)",
    "elbo_loss_nats_per_frame": "−ELBO / Σ T, nats",
    "reconstruction_nats_per_frame": "−E_q log p(x, T | z) / Σ T, nats",
    "kl_nats_per_frame": "E_q[log q − log p(z)] / Σ T, nats",
}


@torch.no_grad()
def evaluate(
    module: torch.nn.Module,
    batches: Iterable[Any],
    num_samples: int = 30,
    *,
    chunk_size: int | None = 32,
    device: str | torch.device | None = None,
    seed: int | None = None,
    group: Any = None,
    per_sequence: bool = False,
    done: Mapping[int, BatchResult] | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
) -> dict[str, Any]:
    r"""Importance-sampled NLL and the ELBO of a model over a data set, in nats and bits.

    Runs ``module.model`` / ``module.guide`` at :math:`\beta = 1` in eval mode and without
    gradients. With :math:`n_b` = ``module.normalizer(batch)`` (:math:`T_b + 1`) and
    :math:`T_b` = ``batch.lengths``:

    .. math::

        \text{NLL per unit} = -\frac{\sum_b \log \hat p_K(x_b, T_b)}{\sum_b n_b}, \qquad
        \text{NLL per frame} = -\frac{\sum_b \log \hat p_K(x_b, T_b)}{\sum_b T_b}.

    The length site is part of the model, so :math:`-\log p(T)` is included in both (the
    paper's accounting, Ziegler & Rush 2019 §5). The ELBO, its reconstruction part (observed
    sites, length included) and its KL part (latent sites) come from the same samples and are
    reported with the same denominators. Keys and their meaning: :data:`METRIC_LABELS`.

    :param batches: objects with ``.to(device)`` and ``.lengths``, accepted by the module.
    :param num_samples: :math:`K` importance samples per sequence.
    :param chunk_size: samples per pass (memory ∝ chunk × batch × length).
    :param device: where to run; the module's device by default.
    :param seed: seed batch ``i``'s draws with a hash of ``(seed, i)`` (:func:`batch_seed`), so
        each sequence's figure depends on the seed and its batch, not on which rank evaluated
        it; ``None``: draw from the generators as they are.
    :param group: a :class:`pyro_lnf.distributed.Group`: rank ``r`` evaluates batches ``r, r +
        W, ...`` and the per-batch sums are gathered and added in batch order, so with ``seed``
        every figure is the same for any number of ranks.
    :param per_sequence: also return ``log_likelihood_per_sequence``, the list of
        :math:`\log \hat p_K(x)` in batch order.
    :param done: results already computed, by batch index (a resumed evaluation): those
        batches are not evaluated again and their results enter the sums as they are; needs
        ``seed``, so every other batch draws as it would have, and one process.
    :param on_batch: called with each batch's result as soon as it is computed (to keep it).
    """
    from pyro_lnf.distributed import all_gather

    done = done or {}
    if done and (seed is None or group is not None):
        raise ConfigError("resuming an evaluation needs a seed and one process")
    rank, world = (0, 1) if group is None else (group.rank, group.world)
    parts = list(done.values())
    passes = _importance_passes(module, batches, num_samples, chunk_size, device,
                                seed=seed, rank=rank, world=world, skip=done)
    for i, batch, est in passes:
        result = _batch_result(module, i, batch, est)
        if on_batch is not None:
            on_batch(result)
        parts.append(result)
    gathered = sorted((p for ps in all_gather(parts, group) for p in ps), key=lambda p: p.index)
    totals = dict.fromkeys(BATCH_SUMS, 0.0)
    sequences = 0
    for part in gathered:  # in batch order: the same float sums for any world size
        for key, value in zip(totals, part.sums, strict=True):
            totals[key] += value
        sequences += part.sequences
    if sequences == 0:
        raise ConfigError("nothing to evaluate: the split has no sequences")
    units, frames = totals["units"], totals["frames"]
    nll = -totals["log_lik"]
    extra = ({"log_likelihood_per_sequence": [x for p in gathered for x in p.log_likelihood]}
             if per_sequence else {})
    return {
        "sequences": sequences,
        "units": units,
        "frames": frames,
        "num_samples": num_samples,
        "nll_nats_per_unit": nll / units,
        "nll_bits_per_unit": nll / units / math.log(2),
        "nll_nats_per_frame": nll / frames,
        "nll_bits_per_frame": nll / frames / math.log(2),
        "elbo_loss_nats_per_unit": -totals["elbo"] / units,
        "reconstruction_nats_per_unit": totals["rec"] / units,
        "kl_nats_per_unit": totals["kl"] / units,
        "elbo_loss_nats_per_frame": -totals["elbo"] / frames,
        "reconstruction_nats_per_frame": totals["rec"] / frames,
        "kl_nats_per_frame": totals["kl"] / frames,
        **extra,
    }


#: What each key of :func:`perplexity`'s result means.
PERPLEXITY_LABELS: dict[str, str] = {
    "average": "'corpus': exp(Σ_d NLL_d / Σ_d N_d); 'document': exp(mean_d NLL_d / N_d)",
    "sequences": "number of sentences / documents evaluated",
    "tokens": "Σ_d N_d, tokens predicted (sentences: words + <eos>; documents: words)",
    "num_samples": "K, samples of z per sequence",
    "ppl_elbo": "perplexity from the ELBO, NLL_d = −mean_k log w_k (an upper bound; the papers' figure)",
    "ppl_is": "perplexity from the importance-sampled NLL, NLL_d = −log mean_k w_k (tighter)",
    "nll_elbo_nats_per_token": "log ppl_elbo: −ELBO per token in nats, same average",
    "nll_is_nats_per_token": "log ppl_is: IS NLL per token in nats, same average",
    "kl_nats_per_sequence": "mean_d of the Monte Carlo KL, E_q[log q(z|x) − log p(z)], nats",
    "reconstruction_nats_per_token": "−E_q log p(x|z) per token, same average as the perplexities",
}


@torch.no_grad()
def perplexity(
    module: torch.nn.Module,
    batches: Iterable[Any],
    num_samples: int = 30,
    *,
    average: Literal["corpus", "document"] | None = None,
    chunk_size: int | None = 32,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    r"""Perplexities of a VAE over a data set, from the ELBO and from importance sampling: a
    second reduction of :func:`evaluate`'s per-sequence pass, per token.

    With :math:`K` samples :math:`z_k \sim q(z \mid x_d)` and
    :math:`\log w_k = \log p(x_d, z_k) - \log q(z_k \mid x_d)`:

    .. math::

        \mathrm{NLL}^{\mathrm{ELBO}}_d = -\tfrac1K \textstyle\sum_k \log w_k, \qquad
        \mathrm{NLL}^{\mathrm{IS}}_d = -\log \tfrac1K \textstyle\sum_k w_k
        \;\le\; \mathrm{NLL}^{\mathrm{ELBO}}_d,

    and, with :math:`N_d` = ``module.normalizer``,

    * ``average="corpus"``: :math:`\mathrm{PPL} = \exp(\sum_d \mathrm{NLL}_d / \sum_d N_d)`
      (language models; the sentence VAE's default);
    * ``average="document"``: :math:`\mathrm{PPL} = \exp(\frac1D \sum_d \mathrm{NLL}_d / N_d)`
      (NVDM's convention and its default).

    Xu & Durrett report the ELBO form (with :math:`K = 3`); the IS form is the tighter estimate
    of the same likelihood. Both come from the same samples. Runs in eval mode at β = 1. Keys
    and their meaning: :data:`PERPLEXITY_LABELS`.

    :param module: a :class:`~pyro_lnf.models.sentence_vae.SentenceVAE`,
        :class:`~pyro_lnf.models.nvdm.NVDM` or any model of the :mod:`~pyro_lnf.models.base`
        contract.
    :param batches: batches the module accepts (with ``.to(device)``).
    :param num_samples: :math:`K`.
    :param average: ``"corpus"`` or ``"document"``; the module's ``perplexity_average`` by default.

    Example::

        >>> ds = load_dataset("20news")                    # doctest: +SKIP
        >>> nvdm = load_model("runs/nvdm-vmf/best.pt")     # doctest: +SKIP
        >>> perplexity(nvdm, ds.batches("test", 500), num_samples=20)["ppl_elbo"]  # doctest: +SKIP
    """
    if average is None:
        average = getattr(module, "perplexity_average", "corpus")
    if average not in ("corpus", "document"):
        raise ConfigError(f"average must be 'corpus' or 'document', got {average!r}")
    nll_elbo, nll_is, rec, kl, tokens = [], [], [], [], []
    for _, batch, est in _importance_passes(module, batches, num_samples, chunk_size, device):
        nll_elbo.append(-est.elbo.double())
        nll_is.append(-est.log_likelihood.double())
        rec.append(est.reconstruction.double())
        kl.append(est.kl.double())
        tokens.append(module.normalizer(batch).double())
    if not tokens:
        raise ConfigError("perplexity() got no batches; check the split is not empty")
    n = torch.cat(tokens)

    def per_token(values: list[torch.Tensor]) -> float:
        v = torch.cat(values)
        return float(v.sum() / n.sum()) if average == "corpus" else float((v / n).mean())

    elbo_rate, is_rate = per_token(nll_elbo), per_token(nll_is)
    return {
        "average": average,
        "sequences": int(n.numel()),
        "tokens": float(n.sum()),
        "num_samples": num_samples,
        "ppl_elbo": math.exp(elbo_rate),
        "ppl_is": math.exp(is_rate),
        "nll_elbo_nats_per_token": elbo_rate,
        "nll_is_nats_per_token": is_rate,
        "kl_nats_per_sequence": float(torch.cat(kl).mean()),
        "reconstruction_nats_per_token": per_token(rec),
    }


def _importance_passes(
    module: torch.nn.Module,
    batches: Iterable[Any],
    num_samples: int,
    chunk_size: int | None,
    device: str | torch.device | None,
    *,
    seed: int | None = None,
    rank: int = 0,
    world: int = 1,
    skip: Container[int] = (),
) -> Iterator[tuple[int, Any, ImportanceEstimate]]:
    """The one per-sequence importance-sampling pass that :func:`evaluate` and
    :func:`perplexity` reduce: ``(index, batch on device, estimate)`` for batches ``rank,
    rank + world, ...`` not in ``skip``, in eval mode at β = 1, batch ``i`` seeded with
    :func:`batch_seed` when ``seed`` is given; ``device`` defaults to the module's."""
    if device is None:
        device = next(iter(module.parameters()), torch.empty(0)).device
    with evaluating(module):
        for i, batch in enumerate(batches):
            if i % world != rank or i in skip:
                continue
            if seed is not None:
                torch.manual_seed(batch_seed(seed, i))
            batch = batch.to(device)
            yield i, batch, importance_sample(
                module.model, module.guide, batch, 1.0, num_samples=num_samples,
                chunk_size=chunk_size,
            )


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index``'s draws in a seeded :func:`evaluate`."""
    import numpy as np

    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
