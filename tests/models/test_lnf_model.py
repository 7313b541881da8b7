"""The latent-flow model and the LSTM baseline: the ELBO Pyro computes is the one on paper,
and a small model learns a known discrete distribution to within 0.05 nats per step."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyro_lnf.datasets import iterate_batches
from pyro_lnf.evaluate import evaluate
from pyro_lnf.models.baseline import LSTMBaseline
from pyro_lnf.models.lnf import PRIORS, LatentFlowModel
from pyro_lnf.train import TrainConfig, sequence_batches, train

TINY = dict(
    latent_dim=4,
    hidden_size=12,
    embedding_dim=8,
    flow_layers=2,
    flow_hidden=(8, 8),
    length_dim=4,
    dropout=0.0,
)


def tiny_model(kind: str, prior: str, lengths) -> LatentFlowModel:
    features = 5 if kind == "categorical" else 6
    return LatentFlowModel(
        kind=kind, num_features=features, max_length=9, lengths=lengths, prior=prior, **TINY
    )


def random_sequences(kind: str, lengths, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if kind == "categorical":
        return [torch.randint(0, 5, (n,), generator=g) for n in lengths]
    return [(torch.rand(n, 6, generator=g) < 0.3).float() for n in lengths]


@pytest.mark.parametrize("kind", ["categorical", "binary"])
@pytest.mark.parametrize("prior", sorted(PRIORS))
def test_elbo_equals_hand_computation(kind, prior):
    """−Trace_ELBO = log p(T) + log p(x|z) + log p(z) − log q(z|x), term by term, masked."""
    lengths = [7, 4, 1, 5]
    model = tiny_model(kind, prior, lengths).eval()
    batch = next(iterate_batches(random_sequences(kind, lengths), 4, shuffle=False, pad_value=0))
    pyro.set_rng_seed(3)
    loss = Trace_ELBO().differentiable_loss(model.model, model.guide, batch, 1.0)

    pyro.set_rng_seed(3)  # the guide runs first inside the ELBO: the same z
    z = poutine.trace(model.guide).get_trace(batch, 1.0).nodes["z"]["value"]
    mask = batch.mask
    loc, scale = model.encoder(batch.x, batch.lengths)
    log_q = (dist.Normal(loc, scale).log_prob(z).sum(-1) * mask).sum()
    log_prior = (model.prior.log_prob(z, batch.lengths) * mask).sum()
    logits = model.emission(z, batch.lengths)
    if kind == "categorical":
        log_lik = torch.log_softmax(logits, -1).gather(-1, batch.x.unsqueeze(-1)).squeeze(-1)
    else:
        log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, batch.x, reduction="none"
        ).sum(-1)
    log_lik = (log_lik * mask).sum()
    log_length = model.length_model.distribution().log_prob(batch.lengths).sum()
    by_hand = log_length + log_lik + log_prior - log_q
    assert torch.allclose(-loss, by_hand, rtol=1e-5, atol=1e-3)


def test_elbo_of_padded_batch_is_sum_of_single_sequences():
    lengths = [6, 2, 4]
    model = tiny_model("categorical", "afaf", lengths).eval()
    seqs = random_sequences("categorical", lengths, seed=1)
    z_full = torch.randn(3, 6, TINY["latent_dim"])
    batch = next(iterate_batches(seqs, 3, shuffle=False, pad_value=0))
    order = batch.indices.tolist()

    def log_joint(b, z):
        conditioned = poutine.condition(model.model, data={"z": z})
        trace = poutine.trace(conditioned).get_trace(b, 1.0)
        trace.compute_log_prob()
        return sum(site["log_prob"] for site in trace.nodes.values() if site["type"] == "sample")

    joint = log_joint(batch, z_full[:, : batch.mask.shape[1]])
    for row, i in enumerate(order):
        single = next(iterate_batches([seqs[i]], 1, shuffle=False, pad_value=0))
        alone = log_joint(single, z_full[row : row + 1, : lengths[i]])
        assert torch.allclose(joint[row], alone[0], atol=1e-4)


# --- a discrete source whose entropy is known -------------------------------------------

INITIAL = torch.tensor([0.6, 0.3, 0.1])
TRANSITION = torch.tensor([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
LENGTHS = torch.tensor([0.1, 0.15, 0.2, 0.2, 0.2, 0.15])  # p(T), T = 1..6


def markov_sequences(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    seqs = []
    for _ in range(n):
        length = int(torch.multinomial(LENGTHS, 1, generator=g)) + 1
        x = [int(torch.multinomial(INITIAL, 1, generator=g))]
        for _ in range(length - 1):
            x.append(int(torch.multinomial(TRANSITION[x[-1]], 1, generator=g)))
        seqs.append(torch.tensor(x))
    return seqs


def true_log_prob(x: torch.Tensor) -> float:
    x = x.tolist()
    log_p = math.log(LENGTHS[len(x) - 1]) + math.log(INITIAL[x[0]])
    return log_p + sum(math.log(TRANSITION[a, b]) for a, b in zip(x[:-1], x[1:]))


def test_learns_markov_chain_to_within_005_nats_and_is_estimate_tightens_with_k():
    train_set, test_set = markov_sequences(2000, seed=1), markov_sequences(200, seed=2)
    units = sum(len(x) + 1 for x in test_set)
    entropy = -sum(true_log_prob(x) for x in test_set) / units  # nats per unit, empirical

    torch.manual_seed(0)
    model = LatentFlowModel(
        kind="categorical",
        num_features=3,
        max_length=8,
        lengths=[len(x) for x in train_set],
        prior="afaf",
        latent_dim=4,
        hidden_size=32,
        embedding_dim=16,
        flow_layers=2,
        flow_hidden=(16, 16),
        length_dim=8,
        dropout=0.0,
    )
    config = TrainConfig(
        epochs=12,
        batch_size=64,
        lr=3e-3,
        grad_clip=1.0,
        kl_initial_zero=1,
        kl_rampup=5,
        nll_every=0,
        seed=0,
        quiet=True,
    )
    train(model, sequence_batches(train_set, config, train=True), None, config)

    nll = {}
    for k in (10, 100, 1000):
        pyro.set_rng_seed(0)
        batches = iterate_batches(test_set, 100, shuffle=False, pad_value=0)
        nll[k] = evaluate(model, batches, num_samples=k, chunk_size=250)["nll_nats_per_unit"]
    assert nll[100] - entropy < 0.05, (nll, entropy)
    # A lower bound that tightens with K: allow only Monte Carlo jitter upwards.
    assert nll[100] <= nll[10] + 1e-3 and nll[1000] <= nll[100] + 1e-3, nll


def test_baseline_nll_is_exact_log_likelihood():
    """Without latents the importance estimate is the exact log-likelihood, for any K."""
    lengths = [5, 3, 2]
    model = LSTMBaseline(
        kind="categorical",
        num_features=5,
        max_length=8,
        lengths=lengths,
        hidden_size=8,
        embedding_dim=8,
        length_dim=4,
        dropout=0.0,
    ).eval()
    seqs = random_sequences("categorical", lengths)
    batch = next(iterate_batches(seqs, 3, shuffle=False, pad_value=0))
    log_probs = torch.log_softmax(model.logits(batch.x, batch.lengths), -1)
    exact = (log_probs.gather(-1, batch.x.unsqueeze(-1)).squeeze(-1) * batch.mask).sum()
    exact = exact + model.length_model.distribution().log_prob(batch.lengths).sum()
    units = (batch.lengths + 1).sum().item()
    for k in (1, 7):
        result = evaluate(model, [batch], num_samples=k)
        assert result["nll_nats_per_unit"] == pytest.approx(-exact.item() / units, rel=1e-5)
