"""Training never runs a hidden flow in its noise -> data (sampling) direction.

The prior only scores guide samples, so an SVI step, in the prior's density path and in the
guide's scoring alike, must go through the hidden flows' cheap data -> noise pass: no MADE-AF
``_call`` (H network passes, one dim at a time) and no NLSq cubic solve, for AF/AF, AF/SCF and
IAF/SCF (whose density loops over time but still only inverts per step). The counters wrap those
directions; sampling from the prior is the check that they do count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import nn
from torch.nn import functional as F

from pyro_lnf.transforms.autoregressive import ConditionedAutoregressiveFlow
from pyro_lnf.transforms.nlsq import NLSqMap
from pyro_lnf.transforms.temporal import TemporalFlow

H = 4
V = 7
LENGTHS = (5, 3, 2)


class TinyLNF(nn.Module):
    """z ~ time-flow prior (masked), x_t ~ Categorical(emission(z_t)); guide: diagonal Normal."""

    def __init__(self, kind: str, coupling: bool) -> None:
        super().__init__()
        self.prior = TemporalFlow(
            H,
            kind,
            max_length=8,
            num_layers=2,
            coupling=coupling,
            transform="nlsq",
            hidden_dims=(8,),
            lstm_hidden=8,
            lstm_layers=2,
            length_embedding_dim=4,
            dropout=0.1,
        )
        self.emission = nn.Linear(H, V)
        self.encoder = nn.Embedding(V, 2 * H)

    @staticmethod
    def _mask(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.arange(x.shape[1]) < lengths[:, None]

    def model(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        pyro.module("tiny", self)
        mask = self._mask(x, lengths)
        with pyro.plate("sequences", x.shape[0]):
            prior = self.prior.distribution(lengths, x.shape[1])
            z = pyro.sample("z", prior.mask(mask).to_event(1))
            logits = self.emission(z)
            pyro.sample("x", dist.Categorical(logits=logits).mask(mask).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        pyro.module("tiny", self)
        mask = self._mask(x, lengths)
        loc, raw_scale = self.encoder(x).chunk(2, -1)
        with pyro.plate("sequences", x.shape[0]):
            q = dist.Normal(loc, F.softplus(raw_scale) + 1e-3)
            pyro.sample("z", q.mask(mask.unsqueeze(-1)).to_event(2))


def _counting(counts: Counter, key: str, fn: Callable) -> Callable:
    def counted(*args, **kwargs):
        counts[key] += 1
        return fn(*args, **kwargs)

    return counted


@pytest.fixture
def sequential_calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Count the sequential / sampling-only directions of the hidden flows, by class."""
    counts: Counter = Counter()
    for cls, name, key in [
        # MADE-AF noise -> data: D MADE passes, however it is reached (``_call`` or a stack).
        (ConditionedAutoregressiveFlow, "_call", "MADE _call"),
        (ConditionedAutoregressiveFlow, "call_and_ladj", "MADE call_and_ladj"),
        (ConditionedAutoregressiveFlow, "_sequential", "MADE one-dim-at-a-time loop"),
        # The NLSq cubic solve: only ever needed noise -> data.
        (NLSqMap, "inverse", "NLSq cubic inverse"),
    ]:
        monkeypatch.setattr(cls, name, _counting(counts, key, getattr(cls, name)))
    return counts


def count_noise_to_data(
    monkeypatch: pytest.MonkeyPatch, flow: TemporalFlow, counts: Counter
) -> None:
    """Also count every noise -> data pass of the conditioned stacks ``flow`` builds (coupling
    layers included, whose ``_call`` is parallel but still the sampling direction)."""
    condition = flow.hidden_flow.condition

    def counted_condition(context: torch.Tensor):
        transform = condition(context)
        transform._call = _counting(counts, "hidden flow _call", transform._call)
        return transform

    monkeypatch.setattr(flow.hidden_flow, "condition", counted_condition)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor(LENGTHS)
    x = torch.randint(V, (len(LENGTHS), max(LENGTHS)))
    x[torch.arange(max(LENGTHS)) >= lengths[:, None]] = 0
    return x, lengths


@pytest.mark.parametrize(
    "kind,coupling",
    [("af", False), ("af", True), ("iaf", True)],
    ids=["af-made", "af-scf", "iaf-scf"],
)
@pytest.mark.parametrize("particles", [1, 2], ids=["one-particle", "vectorised-particles"])
def test_svi_step_makes_no_sequential_call(
    monkeypatch, sequential_calls, kind, coupling, particles
):
    module = TinyLNF(kind, coupling)
    count_noise_to_data(monkeypatch, module.prior, sequential_calls)
    elbo = Trace_ELBO(
        num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1
    )
    svi = SVI(module.model, module.guide, Adam({"lr": 1e-2}), elbo)
    x, lengths = batch()
    before = [p.detach().clone() for p in module.prior.parameters()]

    loss = svi.step(x, lengths)

    assert torch.isfinite(torch.tensor(loss))
    assert sum(sequential_calls.values()) == 0, dict(sequential_calls)
    moved = [(p - b).abs().max() > 0 for p, b in zip(module.prior.parameters(), before)]
    assert all(moved), "every prior parameter gets a gradient through the density pass"

    # The counters do count: sampling the prior runs the noise -> data direction.
    with torch.no_grad():
        module.prior.distribution(lengths).rsample()
    assert sequential_calls["hidden flow _call"] > 0
    assert sequential_calls["NLSq cubic inverse"] > 0
    if not coupling:
        assert sequential_calls["MADE one-dim-at-a-time loop"] > 0
