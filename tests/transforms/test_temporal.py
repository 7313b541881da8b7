"""Flows across time: both directions agree, time is causal, padding is inert, Pyro shapes work.

Everything runs in float64 and eval mode (no dropout) on tiny networks. The parameters are
perturbed away from the near-identity initialisation so that contexts actually matter: an
off-by-one in the LSTM shift would otherwise hide below the tolerances.
"""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_lnf.errors import ConfigError
from pyro_lnf.transforms.temporal import TemporalFlow, TemporalFlowDistribution

H = 5
T = 6
LENGTHS = (6, 4, 1)

# (kind, coupling, transform): the paper's AF/AF, AF/SCF, IAF/SCF and the independent ablation.
CONFIGS = [
    ("af", False, "nlsq"),
    ("af", False, "affine"),
    ("af", True, "nlsq"),
    ("af", True, "affine"),
    ("iaf", True, "nlsq"),
    ("iaf", True, "affine"),
    ("indep", False, "nlsq"),
    ("indep", False, "affine"),
]
IDS = [f"{k}-{'scf' if c else 'made'}-{t}" for k, c, t in CONFIGS]
# One per kind, for the tests about time structure rather than the hidden flow.
KIND_CONFIGS = [("af", False, "nlsq"), ("iaf", True, "nlsq"), ("indep", False, "nlsq")]
KIND_IDS = ["af-made", "iaf-scf", "indep-made"]


def make_flow(kind: str, coupling: bool, transform: str, **overrides) -> TemporalFlow:
    options = dict(
        max_length=10,
        num_layers=2,
        coupling=coupling,
        transform=transform,
        hidden_dims=(12,),
        lstm_hidden=10,
        lstm_layers=2,
        length_embedding_dim=4,
        dropout=0.2,
    )
    options.update(overrides)
    flow = TemporalFlow(H, kind, **options).double().eval()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


def lengths_tensor(lengths: tuple[int, ...] = LENGTHS) -> torch.Tensor:
    return torch.tensor(lengths)


def random_z(*lead: int) -> torch.Tensor:
    return torch.randn(*lead, T, H, dtype=torch.float64)


# ---------------------------------------------------------------------------- the two directions


@pytest.mark.parametrize("kind,coupling,transform", CONFIGS, ids=IDS)
def test_density_while_sampling_equals_density_pass(kind, coupling, transform):
    flow = make_flow(kind, coupling, transform)
    prior = flow.distribution(lengths_tensor())
    z, log_prob_sampling = prior.rsample_with_log_prob()
    assert z.shape == (len(LENGTHS), T, H) and z.dtype == torch.float64
    assert log_prob_sampling.shape == (len(LENGTHS), T)
    torch.testing.assert_close(prior.log_prob(z), log_prob_sampling, rtol=0, atol=1e-8)
    # The pushed-forward z must come back to the drawn noise: replaying the seed gives eps.
    pyro.set_rng_seed(1)
    z = prior.rsample(temperature=0.5)
    pyro.set_rng_seed(1)
    eps = 0.5 * torch.randn(len(LENGTHS), T, H, dtype=torch.float64)
    noise, _ = flow.noise(z, prior.lengths)
    valid = torch.arange(T) < prior.lengths[:, None]
    torch.testing.assert_close(noise[valid], eps[valid], rtol=0, atol=1e-8)


@pytest.mark.parametrize("kind,coupling,transform", KIND_CONFIGS, ids=KIND_IDS)
def test_per_step_log_dets_give_the_full_jacobian(kind, coupling, transform):
    """sum_t log|det d eps_t/d z_t| is log|det d eps_{1:T}/d z_{1:T}|: the Jacobian is block
    lower-triangular in time, and the per-step log-dets are those of its diagonal blocks."""
    flow = make_flow(kind, coupling, transform)
    lengths = torch.tensor([T])
    z = random_z(1)
    _, log_det = flow.noise(z, lengths)

    def to_noise(flat: torch.Tensor) -> torch.Tensor:
        return flow.noise(flat.view(1, T, H), lengths)[0].reshape(-1)

    jac = torch.autograd.functional.jacobian(to_noise, z.reshape(-1))
    blocks = jac.view(T, H, T, H)
    for t in range(T - 1):
        assert blocks[t, :, t + 1 :].abs().max() == 0, f"step {t} depends on the future"
    for t in range(T):
        torch.testing.assert_close(
            torch.linalg.slogdet(blocks[t, :, t]).logabsdet, log_det[0, t], rtol=0, atol=1e-9
        )
    torch.testing.assert_close(
        torch.linalg.slogdet(jac).logabsdet, log_det.sum(), rtol=0, atol=1e-9
    )


@pytest.mark.parametrize("kind,coupling,transform", KIND_CONFIGS, ids=KIND_IDS)
def test_log_prob_gradients_match_finite_differences(kind, coupling, transform):
    """Directional derivatives of sum log p(z), in z and in all parameters at once."""
    flow = make_flow(kind, coupling, transform)
    prior = flow.distribution(torch.tensor([4, 2]))
    z = torch.randn(2, 4, H, dtype=torch.float64, requires_grad=True)
    params = list(flow.parameters())
    grads = torch.autograd.grad(prior.log_prob(z).sum(), [z, *params])
    step = 1e-6

    def total(z_value: torch.Tensor, shift: float, directions: list[torch.Tensor]) -> float:
        with torch.no_grad():
            for p, d in zip(params, directions):
                p.add_(shift * d)
            value = prior.log_prob(z_value).sum().item()
            for p, d in zip(params, directions):
                p.sub_(shift * d)
        return value

    no_move = [torch.zeros_like(p) for p in params]
    v = torch.randn_like(z)
    central = (total(z + step * v, 0, no_move) - total(z - step * v, 0, no_move)) / (2 * step)
    assert central == pytest.approx((grads[0] * v).sum().item(), abs=1e-6)
    directions = [torch.randn_like(p) for p in params]
    central = (total(z, step, directions) - total(z, -step, directions)) / (2 * step)
    analytic = sum((g * d).sum() for g, d in zip(grads[1:], directions)).item()
    assert central == pytest.approx(analytic, rel=1e-6, abs=1e-6)


# ---------------------------------------------------------------------------- time structure


@pytest.mark.parametrize("kind,coupling,transform", KIND_CONFIGS, ids=KIND_IDS)
def test_changing_z_t_leaves_earlier_steps_unchanged(kind, coupling, transform):
    flow = make_flow(kind, coupling, transform)
    prior = flow.distribution(torch.tensor([T]))
    z = random_z(1)
    before = prior.log_prob(z)
    t = 2
    z_changed = z.clone()
    z_changed[:, t] += 0.7
    after = prior.log_prob(z_changed)
    torch.testing.assert_close(after[:, :t], before[:, :t], rtol=0, atol=0)
    assert (after[:, t] - before[:, t]).abs().item() > 1e-6
    later = (after[:, t + 1 :] - before[:, t + 1 :]).abs()
    if kind == "indep":
        assert later.max() == 0
    else:
        # AF reads z_t and IAF reads eps_t, a function of z_t: every later step moves.
        assert later.min() > 1e-8


@pytest.mark.parametrize("kind,coupling,transform", KIND_CONFIGS, ids=KIND_IDS)
def test_padded_batch_scores_each_sequence_as_if_alone(kind, coupling, transform):
    flow = make_flow(kind, coupling, transform)
    lengths = lengths_tensor()
    mask = torch.arange(T) < lengths[:, None]
    z = random_z(len(LENGTHS))
    z[~mask] = 1e4  # wild padding: must neither leak into valid steps nor overflow
    z.requires_grad_(True)
    batch = flow.distribution(lengths).log_prob(z)
    assert (batch[~mask] == 0).all()
    for b, length in enumerate(LENGTHS):
        alone = flow.distribution(torch.tensor([length])).log_prob(z[b : b + 1, :length])
        torch.testing.assert_close(batch[b, :length], alone[0], rtol=0, atol=1e-10)
        torch.testing.assert_close(batch[b].sum(), alone.sum(), rtol=0, atol=1e-10)
    batch.sum().backward()
    assert torch.isfinite(z.grad).all() and (z.grad[~mask] == 0).all()
    assert all(torch.isfinite(p.grad).all() for p in flow.parameters() if p.grad is not None)


@pytest.mark.parametrize("kind,coupling,transform", KIND_CONFIGS, ids=KIND_IDS)
def test_length_conditions_every_step(kind, coupling, transform):
    """The same z scored as the prefix of a longer sequence gets different terms: T is seen
    from the first step on (through the initial state or the remaining-steps embedding)."""
    flow = make_flow(kind, coupling, transform)
    z = random_z(1)
    long = flow.distribution(torch.tensor([T])).log_prob(z)
    short = flow.distribution(torch.tensor([T - 2]), T=T).log_prob(z)
    assert (long[0, : T - 2] - short[0, : T - 2]).abs().min() > 1e-8


def test_lengths_beyond_the_embeddings_are_clamped():
    flow = make_flow("af", False, "nlsq", max_length=4)
    prior = flow.distribution(torch.tensor([T, 2]))
    z, log_prob = prior.rsample_with_log_prob()
    assert torch.isfinite(log_prob).all()
    torch.testing.assert_close(prior.log_prob(z), log_prob, rtol=0, atol=1e-8)


# ---------------------------------------------------------------------------- Pyro integration


def test_expand_adds_leading_dims_and_keeps_values():
    flow = make_flow("af", False, "nlsq")
    prior = flow.distribution(lengths_tensor())
    assert prior.batch_shape == (len(LENGTHS), T) and prior.event_shape == (H,)
    expanded = prior.expand((2, len(LENGTHS), T))
    assert isinstance(expanded, TemporalFlowDistribution)
    assert expanded.batch_shape == (2, len(LENGTHS), T)
    z = random_z(len(LENGTHS))
    log_prob = expanded.log_prob(z)
    assert log_prob.shape == (2, len(LENGTHS), T)
    torch.testing.assert_close(log_prob[1], prior.log_prob(z), rtol=0, atol=1e-12)
    assert expanded.rsample().shape == (2, len(LENGTHS), T, H)
    with pytest.raises(ValueError, match="last dim must stay T"):
        prior.expand((len(LENGTHS), T + 1))


def test_masked_site_in_a_plate_sums_valid_steps():
    flow = make_flow("af", True, "nlsq")
    lengths = lengths_tensor()
    mask = torch.arange(T) < lengths[:, None]
    z = random_z(len(LENGTHS))

    def model(value):
        with pyro.plate("sequences", len(LENGTHS)):
            return pyro.sample("z", flow.distribution(lengths).mask(mask).to_event(1), obs=value)

    trace = pyro.poutine.trace(model).get_trace(z)
    trace.compute_log_prob()
    site = trace.nodes["z"]["log_prob"]
    assert site.shape == (len(LENGTHS),)
    expected = flow.distribution(lengths).log_prob(z).masked_fill(~mask, 0).sum(-1)
    torch.testing.assert_close(site, expected, rtol=0, atol=1e-12)
    assert model(None).shape == (len(LENGTHS), T, H)


@pytest.mark.parametrize("kind,coupling,transform", KIND_CONFIGS, ids=KIND_IDS)
def test_vectorised_particles(kind, coupling, transform):
    flow = make_flow(kind, coupling, transform)
    lengths = lengths_tensor()
    mask = torch.arange(T) < lengths[:, None]
    particles = 3
    z = random_z(particles, len(LENGTHS))

    def model(value):
        with pyro.plate("particles", particles, dim=-2), pyro.plate("sequences", len(LENGTHS)):
            return pyro.sample("z", flow.distribution(lengths).mask(mask).to_event(1), obs=value)

    trace = pyro.poutine.trace(model).get_trace(z)
    trace.compute_log_prob()
    site = trace.nodes["z"]["log_prob"]
    assert site.shape == (particles, len(LENGTHS))
    for k in range(particles):
        alone = flow.distribution(lengths).log_prob(z[k]).masked_fill(~mask, 0).sum(-1)
        torch.testing.assert_close(site[k], alone, rtol=0, atol=1e-10)
    drawn = model(None)
    assert drawn.shape == (particles, len(LENGTHS), T, H)
    # Particles are independent draws, not copies of one.
    assert (drawn[0] - drawn[1]).abs().min() > 0


def test_sampling_is_reparameterised_and_works_without_grad():
    flow = make_flow("af", True, "affine")
    prior = flow.distribution(lengths_tensor())
    prior.rsample().sum().backward()
    grads = [p.grad for p in flow.lstm.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        z = prior.rsample((2,))
    assert z.shape == (2, len(LENGTHS), T, H) and not z.requires_grad


def test_temperature_zero_is_deterministic():
    flow = make_flow("iaf", True, "nlsq")
    prior = flow.distribution(lengths_tensor())
    first, second = prior.rsample(temperature=0.0), prior.rsample(temperature=0.0)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert (prior.rsample() - first).abs().max() > 0


def test_dropout_acts_in_training_mode_only():
    flow = make_flow("af", False, "affine", dropout=0.5)
    prior = flow.distribution(lengths_tensor())
    z = random_z(len(LENGTHS))
    torch.testing.assert_close(prior.log_prob(z), prior.log_prob(z), rtol=0, atol=0)
    flow.train()
    assert (prior.log_prob(z) - prior.log_prob(z)).abs().max() > 0


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"kind": "lstm"}, "unknown time-flow kind 'lstm'"),
        ({"transform": "spline"}, "'spline'"),
        ({"max_length": 0}, "max_length must be a positive integer"),
        ({"dropout": 1.0}, "dropout must be in"),
    ],
)
def test_bad_options_raise_config_error(overrides, message):
    options = dict(kind="af", max_length=8, num_layers=1, hidden_dims=(8,), lstm_hidden=4)
    options.update(overrides)
    kind = options.pop("kind")
    with pytest.raises(ConfigError, match=message):
        TemporalFlow(H, kind, **options)


def test_bad_lengths_and_values_raise():
    flow = make_flow("indep", False, "affine")
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=3\]"):
        flow.distribution(torch.tensor([4, 2]), T=3)
    with pytest.raises(ValueError, match="lengths must lie"):
        flow.distribution(torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="1-D integer tensor"):
        flow.distribution(torch.tensor([2.0]))
    with pytest.raises(ValueError, match="trailing shape"):
        flow.distribution(torch.tensor([T])).log_prob(torch.zeros(1, T, H + 1).double())

