"""Tests of the Gaussian / vMF sentence VAE and NVDM (Xu & Durrett 2018).

The ELBO is checked against a hand computation that runs every sentence unpadded through the
networks and writes each log-density out from its formula (the vMF normaliser from its Bessel
power series); the KL against its closed form; perplexities against a model whose answer is
known exactly; and training against the property that motivates the vMF: with fixed κ its KL
cannot move, while a Gaussian VAE with a strong decoder collapses onto its prior.
"""

from __future__ import annotations

import json
import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.poutine.util import site_is_subsample

from pyro_lnf.checkpoint import load_model, save_checkpoint
from pyro_lnf.datasets.base import Vocab
from pyro_lnf.datasets.batching import collate
from pyro_lnf.distributions.vmf import VonMisesFisher, vmf_mean_resultant_length
from pyro_lnf.errors import ConfigError
from pyro_lnf.evaluate import importance_sample, perplexity
from pyro_lnf.models.latent_head import LatentHead
from pyro_lnf.models.nvdm import NVDM
from pyro_lnf.models.sentence_vae import SentenceVAE
from pyro_lnf.train import METRICS, TrainConfig, train

f64 = torch.float64
PAD, SOS, EOS = 0, 1, 2
VOCAB = 12
SENTENCES = [
    torch.tensor([3, 4, 5, 2]),
    torch.tensor([6, 2]),
    torch.tensor([7, 8, 9, 10, 11, 2]),
    torch.tensor([4, 4, 2]),
]
DOCUMENTS = [torch.tensor([0, 0, 3, 5, 5, 5]), torch.tensor([1, 2]), torch.tensor([4, 6, 6])]
CASES = [(latent, decoder) for latent in ("gaussian", "vmf") for decoder in ("standard", "inputless")]


# Tiny models: one thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def sample_sites(trace) -> list[str]:
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]


def sentence_batch():
    # Not sorted by length, so packing must not assume it.
    return collate(SENTENCES, [1, 2, 0, 3], pad_value=PAD)


def document_batch():
    return collate(DOCUMENTS, [0, 1, 2], bow_size=7)


def tiny_vae(latent: str, decoder: str = "standard", **kwargs) -> SentenceVAE:
    options = dict(
        latent=latent, latent_dim=4, kappa=10.0, embedding_dim=5, hidden_size=6, decoder=decoder,
        dropout=0.3, pad_index=PAD, sos_index=SOS, eos_index=EOS,
    )
    options.update(kwargs)
    return SentenceVAE(VOCAB, **options)


def tiny_nvdm(latent: str) -> NVDM:
    return NVDM(7, latent=latent, latent_dim=3, kappa=10.0, hidden_size=8)


def traces(module, batch, beta: float, particles: int | None = None):
    def run():
        guide = poutine.trace(module.guide).get_trace(batch, beta)
        model = poutine.trace(poutine.replay(module.model, trace=guide)).get_trace(batch, beta)
        return guide, model

    if particles is None:
        guide, model = run()
    else:
        with pyro.plate("particles", particles, dim=-2):
            guide, model = run()
    guide.compute_log_prob()
    model.compute_log_prob()
    return guide, model


# ----------------------------------------------------------------------------------------------
# independent references


def log_bessel_iv_series(order: float, x: float) -> float:
    """``log I_v(x)`` from its power series, summed in log space in float64."""
    k = torch.arange(400, dtype=f64)
    terms = (2 * k + order) * math.log(x / 2) - torch.lgamma(k + 1) - torch.lgamma(k + order + 1)
    return torch.logsumexp(terms, 0).item()


def vmf_log_normalizer_ref(dim: int, kappa: float) -> float:
    order = dim / 2 - 1
    return order * math.log(kappa) - dim / 2 * math.log(2 * math.pi) - log_bessel_iv_series(order, kappa)


def log_sphere_area_ref(dim: int) -> float:
    return math.log(2 * math.pi ** (dim / 2) / math.gamma(dim / 2))


def vmf_kl_ref(dim: int, kappa: float) -> float:
    """``E_q[log q − log p] = κ A_d(κ) + log C_d(κ) + log|S^{d−1}|``, with ``A_d`` from the series."""
    ratio = math.exp(log_bessel_iv_series(dim / 2, kappa) - log_bessel_iv_series(dim / 2 - 1, kappa))
    return kappa * ratio + vmf_log_normalizer_ref(dim, kappa) + log_sphere_area_ref(dim)


def encoder_features_unpadded(vae: SentenceVAE, tokens: torch.Tensor) -> torch.Tensor:
    """The encoder's ``[h_fwd; h_bwd; c_fwd; c_bwd]`` of one sentence run on its own."""
    _, (h, c) = vae.encoder_rnn(vae.embedding(tokens)[None])
    return torch.cat([h[0, 0], h[1, 0], c[0, 0], c[1, 0]])


def sentence_log_likelihood_unpadded(vae: SentenceVAE, z: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_t \log p(x_t \mid z, x_{<t})` of one sentence, decoded on its own."""
    steps = tokens.shape[0]
    h0, c0 = vae.init_state(z).chunk(2)
    inputs = z.expand(steps, -1)
    if vae.decoder == "standard":
        previous = torch.cat([torch.tensor([SOS]), tokens[:-1]])
        inputs = torch.cat([vae.embedding(previous), inputs], -1)
    out, _ = vae.decoder_rnn(inputs[None], (h0[None, None], c0[None, None]))
    log_probs = vae.output(out[0]).log_softmax(-1)
    return log_probs.gather(-1, tokens[:, None]).sum()


# ----------------------------------------------------------------------------------------------
# shapes and sites


@pytest.mark.parametrize("latent, decoder", CASES)
def test_sentence_vae_sites_and_shapes(latent, decoder):
    vae = tiny_vae(latent, decoder)
    batch = sentence_batch()
    guide, model = traces(vae, batch, beta=0.25)
    assert sample_sites(guide) == ["z"] and sample_sites(model) == ["z", "x"]
    for trace in (guide, model):
        z = trace.nodes["z"]
        assert z["fn"].batch_shape == (4,) and z["fn"].event_shape == (4,)
        assert z["log_prob"].shape == (4,)
        assert z["scale"] == 0.25  # beta reaches the latent site of both programs
        assert [f.name for f in z["cond_indep_stack"]] == ["sequences"]
    x = model.nodes["x"]
    assert x["is_observed"] and x["scale"] == 1.0
    assert x["fn"].batch_shape == (4,) and x["log_prob"].shape == (4,)  # one term per sentence
    z = guide.nodes["z"]["value"]
    if latent == "vmf":
        assert torch.allclose(z.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert vae.normalizer(batch).tolist() == [2.0, 6.0, 4.0, 3.0]

    # Vectorised particles (a plate at dim -2) decode K x B sentences at once, each exactly as
    # if its z were decoded alone.
    guide, model = traces(vae, batch, beta=1.0, particles=3)
    z = guide.nodes["z"]["value"]
    assert z.shape == (3, 4, 4) and model.nodes["x"]["log_prob"].shape == (3, 4)
    vae.eval()
    together = vae.logits(z, batch.x)
    assert together.shape == (3, 4, 6, VOCAB)
    for k in range(3):
        assert torch.allclose(together[k], vae.logits(z[k], batch.x), atol=1e-6)


@pytest.mark.parametrize("latent", ["gaussian", "vmf"])
def test_nvdm_sites_and_shapes(latent):
    nvdm = tiny_nvdm(latent)
    batch = document_batch()
    assert batch.x.shape == (3, 7)
    guide, model = traces(nvdm, batch, beta=0.5)
    assert sample_sites(guide) == ["z"] and sample_sites(model) == ["z", "x"]
    assert guide.nodes["z"]["fn"].event_shape == (3,) and guide.nodes["z"]["scale"] == 0.5
    assert model.nodes["x"]["is_observed"] and model.nodes["x"]["log_prob"].shape == (3,)
    assert nvdm.normalizer(batch).tolist() == [6.0, 2.0, 3.0]
    guide, model = traces(nvdm, batch, beta=1.0, particles=5)
    assert guide.nodes["z"]["value"].shape == (5, 3, 3)
    assert model.nodes["x"]["log_prob"].shape == (5, 3)


# ----------------------------------------------------------------------------------------------
# the ELBO, by hand


@pytest.mark.parametrize("latent, decoder", CASES)
def test_sentence_vae_elbo_matches_hand_computation(latent, decoder):
    vae = tiny_vae(latent, decoder).double().eval()  # eval: dropout would draw random numbers
    batch = sentence_batch()
    beta = 0.3
    pyro.set_rng_seed(7)
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, batch, beta)

    pyro.set_rng_seed(7)
    with torch.no_grad():
        order = batch.indices.tolist()
        feats = torch.stack([encoder_features_unpadded(vae, SENTENCES[i]) for i in order])
        loc = vae.head.loc(feats)
        d = loc.shape[-1]
        if latent == "gaussian":
            scale = F.softplus(vae.head.scale(feats)) + 1e-4
            z = torch.distributions.Normal(loc, scale).rsample()
            log_q = (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
            log_p = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        else:
            mu = loc / loc.norm(dim=-1, keepdim=True)
            z = VonMisesFisher(mu, 10.0).rsample()
            log_q = 10.0 * (mu * z).sum(-1) + vmf_log_normalizer_ref(d, 10.0)
            log_p = torch.full((4,), -log_sphere_area_ref(d), dtype=f64)
        log_lik = torch.stack(
            [sentence_log_likelihood_unpadded(vae, z[b], SENTENCES[i]) for b, i in enumerate(order)]
        )
        hand = (log_lik + beta * (log_p - log_q)).sum()
    assert loss.dtype == f64
    assert torch.allclose(-loss, hand, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("latent", ["gaussian", "vmf"])
def test_nvdm_elbo_matches_hand_computation(latent):
    nvdm = tiny_nvdm(latent).double().eval()
    batch = document_batch()
    pyro.set_rng_seed(3)
    loss = Trace_ELBO().differentiable_loss(nvdm.model, nvdm.guide, batch, 1.0)

    pyro.set_rng_seed(3)
    with torch.no_grad():
        counts = batch.x.double()
        lin1, lin2 = nvdm.encoder[0], nvdm.encoder[3]
        h = torch.tanh(lin2(torch.tanh(lin1(counts))))
        loc = nvdm.head.loc(h)
        if latent == "gaussian":
            scale = F.softplus(nvdm.head.scale(h)) + 1e-4
            z = torch.distributions.Normal(loc, scale).rsample()
            kl = (
                torch.distributions.Normal(loc, scale).log_prob(z)
                - torch.distributions.Normal(0.0, 1.0).log_prob(z)
            ).sum(-1)
        else:
            mu = loc / loc.norm(dim=-1, keepdim=True)
            z = VonMisesFisher(mu, 10.0).rsample()
            kl = 10.0 * (mu * z).sum(-1) + vmf_log_normalizer_ref(3, 10.0) + log_sphere_area_ref(3)
        logits = z @ nvdm.output.weight.T + nvdm.output.bias
        log_lik = (counts * (logits - logits.logsumexp(-1, keepdim=True))).sum(-1)
    assert torch.allclose(-loss, (log_lik - kl).sum(), rtol=1e-10, atol=1e-10)


def test_elbo_gradients_reach_every_parameter():
    for module, batch in ((tiny_vae("vmf"), sentence_batch()), (tiny_nvdm("vmf"), document_batch())):
        loss = Trace_ELBO().differentiable_loss(module.model, module.guide, batch, 1.0)
        loss.backward()
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------------------------
# KL


def test_gaussian_posterior_scale_has_a_floor():
    """A very negative scale pre-activation underflows softplus to 0 in float32; the floor keeps
    the posterior proper and log q finite."""
    head = LatentHead(4, "gaussian", latent_dim=3, kappa=1.0)
    with torch.no_grad():
        head.scale.bias.fill_(-200.0)
    q = head.posterior(torch.zeros(2, 4))
    assert q.base_dist.scale.min().item() == pytest.approx(1e-4)
    assert torch.isfinite(q.log_prob(q.rsample())).all()


def test_gaussian_analytic_kl_is_the_closed_form():
    vae = tiny_vae("gaussian").double().eval()
    batch = sentence_batch()
    q = vae.posterior(batch)
    loc, scale = q.base_dist.loc, q.base_dist.scale
    expected = 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).sum(-1)
    assert torch.allclose(vae.analytic_kl(batch), expected, rtol=1e-12)


@pytest.mark.parametrize("module_factory, batch_factory", [
    (lambda: tiny_vae("vmf"), sentence_batch),
    (lambda: tiny_nvdm("vmf"), document_batch),
])
def test_vmf_kl_is_a_constant_and_the_sites_estimate_it(module_factory, batch_factory):
    module = module_factory().double().eval()
    batch = batch_factory()
    d, kappa = module.head.latent_dim, module.head.kappa
    expected = vmf_kl_ref(d, kappa)
    analytic = module.analytic_kl(batch)
    assert torch.allclose(analytic, torch.full_like(analytic, expected), rtol=1e-10)
    # Moving every weight leaves it unchanged: it does not depend on the mean direction.
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))
    assert torch.allclose(module.analytic_kl(batch), analytic, rtol=1e-12)

    # log q(z|x) − log p(z) at the sampled z, through the Pyro sites, is an unbiased estimate.
    # Its variance is κ² Var(w) for the cosine w = μᵀz, with E w = A_d(κ) and
    # E w² = 1 − (d − 1) A_d(κ) / κ.
    k = 3000
    mc = importance_sample(module.model, module.guide, batch, 1.0, num_samples=k, chunk_size=k).kl
    mean_length = vmf_mean_resultant_length(d, torch.tensor(kappa, dtype=f64)).item()
    var_w = 1 - (d - 1) * mean_length / kappa - mean_length**2
    stderr = kappa * math.sqrt(var_w / k)
    assert (mc - expected).abs().max() < 4 * stderr


# ----------------------------------------------------------------------------------------------
# perplexity


def test_perplexity_has_the_known_answer_when_q_is_the_prior_and_x_ignores_z():
    """With q(z|x) = p(z) = N(0, I) and p(x|z) = p(x), every importance weight equals p(x), so
    the ELBO and IS perplexities coincide and equal the exact ones, for both averages."""
    nvdm = tiny_nvdm("gaussian").double()
    with torch.no_grad():
        for layer in (nvdm.head.loc, nvdm.head.scale, nvdm.output):
            layer.weight.zero_()
        nvdm.head.loc.bias.zero_()
        nvdm.head.scale.bias.fill_(math.log(math.exp(1 - 1e-4) - 1))  # softplus(b) + 1e-4 = 1
        nvdm.output.bias.copy_(torch.linspace(-1.0, 2.0, 7, dtype=f64))
    log_p = nvdm.output.bias.detach().log_softmax(-1)
    nll = torch.stack([-log_p[doc].sum() for doc in DOCUMENTS])
    words = torch.tensor([float(len(doc)) for doc in DOCUMENTS], dtype=f64)
    batches = [collate(DOCUMENTS, [0, 1], bow_size=7), collate(DOCUMENTS, [2], bow_size=7)]

    doc = perplexity(nvdm, batches, num_samples=4)
    assert doc["average"] == "document"  # NVDM's convention is the module's default
    assert doc["ppl_elbo"] == pytest.approx(math.exp((nll / words).mean().item()), rel=1e-12)
    assert doc["ppl_is"] == pytest.approx(doc["ppl_elbo"], rel=1e-12)
    assert doc["kl_nats_per_sequence"] == pytest.approx(0.0, abs=1e-12)
    corpus = perplexity(nvdm, batches, num_samples=4, average="corpus")
    assert corpus["ppl_elbo"] == pytest.approx(math.exp((nll.sum() / words.sum()).item()), rel=1e-12)
    assert corpus["ppl_is"] == pytest.approx(corpus["ppl_elbo"], rel=1e-12)
    assert corpus["tokens"] == 11 and corpus["sequences"] == 3
    assert abs(corpus["ppl_elbo"] - doc["ppl_elbo"]) > 0.1  # the two averages really differ


@pytest.mark.parametrize("latent", ["gaussian", "vmf"])
def test_sentence_perplexity_is_tighter_from_importance_sampling(latent):
    vae = tiny_vae(latent).double()
    vae.train()
    result = perplexity(vae, [sentence_batch()], num_samples=16)
    assert vae.training  # the mode is restored
    assert result["average"] == "corpus" and result["tokens"] == 15
    assert 1 < result["ppl_is"] < result["ppl_elbo"]
    assert result["nll_elbo_nats_per_token"] == pytest.approx(math.log(result["ppl_elbo"]))
    # −ELBO = reconstruction + KL, per token.
    assert result["nll_elbo_nats_per_token"] == pytest.approx(
        result["reconstruction_nats_per_token"] + 4 * result["kl_nats_per_sequence"] / 15, rel=1e-9
    )
    with pytest.raises(ConfigError, match="average"):
        perplexity(vae, [sentence_batch()], average="word")


# ----------------------------------------------------------------------------------------------
# generation


@pytest.mark.parametrize("decoder", ["standard", "inputless"])
def test_generate_returns_the_model_log_likelihood_of_its_samples(decoder):
    vae = tiny_vae("vmf", decoder).double()
    z = vae.prior(20).sample()
    assert z.dtype == f64 and z.shape == (20, 4)
    tokens, lengths, log_prob = vae.generate(z, max_length=30)
    assert tokens.shape == (20, 30) and vae.training
    stopped = tokens[torch.arange(20), lengths - 1] == EOS
    assert stopped.sum() >= 10
    for i in stopped.nonzero()[:, 0].tolist():
        sentence = tokens[i, : lengths[i]]
        assert (sentence[:-1] != EOS).all() and (tokens[i, lengths[i]:] == PAD).all()
        vae.eval()
        expected = sentence_log_likelihood_unpadded(vae, z[i], sentence)
        assert log_prob[i].item() == pytest.approx(expected.item(), rel=1e-10)
    greedy, _, greedy_logp = vae.generate(z[:3], max_length=30, greedy=True)
    again, _, _ = vae.generate(z[:3], max_length=30, greedy=True)
    assert torch.equal(greedy, again) and (greedy_logp <= 0).all()


# ----------------------------------------------------------------------------------------------
# configuration and checkpoints


@pytest.mark.parametrize("latent", ["gaussian", "vmf"])
def test_nvdm_generates_bags_of_the_asked_size_from_its_word_distribution(latent):
    nvdm = tiny_nvdm(latent)
    torch.manual_seed(0)
    z = nvdm.prior(2).sample()
    counts = nvdm.generate(z, torch.tensor([5, 20_000]))
    assert counts.shape == (2, 7) and counts.sum(-1).tolist() == [5.0, 20_000.0]
    # A large bag's word frequencies are the decoder's softmax(Wz + b).
    probs = nvdm.output(z[1]).softmax(-1)
    assert torch.allclose(counts[1] / 20_000, probs, atol=0.02)
    with pytest.raises(ConfigError, match="num_words"):
        nvdm.generate(z, 0)


def test_bad_options_raise_config_errors():
    with pytest.raises(ConfigError, match="latent 'normal'"):
        tiny_vae("normal")
    with pytest.raises(ConfigError, match="decoder 'word'"):
        tiny_vae("vmf", decoder="word")
    with pytest.raises(ConfigError, match="latent_dim >= 2"):
        tiny_vae("vmf", latent_dim=1)
    with pytest.raises(ConfigError, match="kappa"):
        NVDM(7, latent="vmf", kappa=0.0)
    with pytest.raises(ConfigError, match="eos_index"):
        tiny_vae("gaussian", eos_index=VOCAB)
    with pytest.raises(ConfigError, match="dropout"):
        NVDM(7, dropout=1.0)
    chars = Vocab(["<unk>", "<pad>", "a"], unk_index=0, pad_index=1, level="char")
    with pytest.raises(ConfigError, match="<sos>, <eos>"):
        SentenceVAE.from_vocab(chars)
    words = Vocab(["<unk>", "<pad>", "<sos>", "<eos>", "a"], unk_index=0, pad_index=1, level="word")
    vae = SentenceVAE.from_vocab(words, latent_dim=2, hidden_size=3, embedding_dim=2)
    assert (vae.pad_index, vae.sos_index, vae.eos_index) == (1, 2, 3)


def test_checkpoints_rebuild_both_models(tmp_path):
    for module, batch in ((tiny_vae("vmf", "inputless"), sentence_batch()), (tiny_nvdm("gaussian"), document_batch())):
        path = save_checkpoint(tmp_path / f"{module.name}.pt", module=module)
        loaded = load_model(path)
        assert type(loaded) is type(module) and loaded.config == module.config
        module.eval()
        assert torch.equal(loaded.encode(batch), module.encode(batch))
        assert torch.equal(loaded.analytic_kl(batch), module.analytic_kl(batch))


# ----------------------------------------------------------------------------------------------
# training: the vMF KL cannot move; the Gaussian KL collapses


def topic_sentences(n: int, seed: int) -> list[torch.Tensor]:
    """Sentences of 6–10 words from one of 4 topics, each favouring 3 of 13 words, then <eos>.

    The topic is the only global information, and an LSTM decoder reading the previous words
    can infer it from the prefix: a strong decoder that does not need z.
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for topic in torch.randint(0, 4, (n,), generator=g).tolist():
        probs = torch.full((VOCAB + 4 - 3,), 0.02)
        probs[3 * topic : 3 * topic + 3] = 1.0
        length = int(torch.randint(6, 11, (1,), generator=g))
        words = torch.multinomial(probs, length, replacement=True, generator=g) + 3
        out.append(torch.cat([words, torch.tensor([EOS])]))
    return out


def test_fixed_kappa_kl_stays_constant_while_the_gaussian_collapses(tmp_path):
    sentences = topic_sentences(128, seed=1)
    tokens = sum(len(s) for s in sentences)
    probe = collate(sentences, list(range(64)), pad_value=PAD)

    def batches(epoch: int):
        order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(epoch))
        return [collate(sentences, order[i : i + 16], pad_value=PAD) for i in range(0, len(sentences), 16)]

    kl = {}
    for latent in ("gaussian", "vmf"):
        vae = SentenceVAE(
            VOCAB + 4, latent=latent, latent_dim=16, kappa=20.0, embedding_dim=16, hidden_size=24,
            decoder="standard", dropout=0.0, pad_index=PAD, sos_index=SOS, eos_index=EOS,
        )
        before = vae.analytic_kl(probe).mean().item()
        out = tmp_path / latent
        config = TrainConfig(epochs=12, lr=1e-2, grad_clip=None, quiet=True, out=str(out), nll_every=0)
        train(vae, batches, None, config)  # beta = 1 throughout: no KL annealing
        after = vae.analytic_kl(probe).mean().item()
        # The trainer logs the Monte Carlo KL of its own samples per token; per sentence:
        per_epoch = [
            json.loads(line)["train_kl"] * tokens / len(sentences)
            for line in (out / METRICS).read_text().splitlines()
        ]
        kl[latent] = (before, after, per_epoch)

    before, after, per_epoch = kl["vmf"]
    expected = vmf_kl_ref(16, 20.0)
    assert before == pytest.approx(expected, rel=1e-5) and after == before
    # Each epoch's Monte Carlo KL is an average over the 128 sentences of a variable with mean
    # `expected` and variance κ² Var(w), whatever the parameters.
    mean_length = vmf_mean_resultant_length(16, torch.tensor(20.0, dtype=f64)).item()
    sd = 20.0 * math.sqrt(1 - 15 * mean_length / 20.0 - mean_length**2)
    epoch_err = sd / math.sqrt(len(sentences))
    assert all(abs(k - expected) < 4 * epoch_err for k in per_epoch)
    assert abs(sum(per_epoch) / len(per_epoch) - expected) < 4 * epoch_err / math.sqrt(len(per_epoch))

    before, after, per_epoch = kl["gaussian"]
    assert before > 1.0  # the untrained encoder does carry information about x
    assert after < 0.15 * before  # posterior collapse: q(z|x) moves onto p(z)
    assert after < 0.05 * kl["vmf"][1]
    assert per_epoch[-1] < 0.3 * per_epoch[0]


# ----------------------------------------------------------------------------------------------
# real data


def test_models_run_on_ptb_words_and_20news(data_dir):
    from pyro_lnf.datasets import load_dataset

    ptb = load_dataset("ptb_words", data_dir=data_dir)
    vae = SentenceVAE.from_vocab(
        ptb.vocab, latent="vmf", latent_dim=8, kappa=20.0, embedding_dim=8, hidden_size=8,
        decoder="inputless",
    )
    batch = next(iter(ptb.batches("valid", 8)))
    assert (batch.x[torch.arange(8), batch.lengths - 1] == ptb.vocab.stoi["<eos>"]).all()
    result = perplexity(vae, [batch], num_samples=2)
    # An untrained decoder is close to uniform over the 10002 tokens.
    assert abs(result["reconstruction_nats_per_token"] - math.log(len(ptb.vocab))) < 1.0
    assert result["ppl_is"] <= result["ppl_elbo"]

    news = load_dataset("20news", data_dir=data_dir)
    nvdm = NVDM(news.num_features, latent="vmf", latent_dim=4, hidden_size=16)
    batch = next(iter(news.batches("valid", 8)))
    assert torch.equal(nvdm.normalizer(batch), batch.x.sum(-1))
    result = perplexity(nvdm, [batch], num_samples=2)
    assert abs(result["reconstruction_nats_per_token"] - math.log(news.num_features)) < 1.0
    assert result["ppl_is"] <= result["ppl_elbo"]
