r"""Flows across time: the prior :math:`p(z_{1:T} \mid T)` of latent normalizing flows.

A latent sequence :math:`z_{1:T}`, :math:`z_t \in \mathbb{R}^H`, is mapped to i.i.d. standard
normal noise one step at a time,

.. math::

    \epsilon_t = F(z_t;\, h_t), \qquad \epsilon_t \sim \mathcal{N}(0, I_H),

where :math:`F(\cdot;\, h)` is a K-layer flow over the hidden dimension (MADE-AF or split
coupling around NLSq or affine maps, :func:`pyro_lnf.transforms.stack.conditional_hidden_flow`)
in its data -> noise direction, and :math:`h_t` is a context that makes the flow move across
time. Because :math:`h_t` only depends on the past, the Jacobian of
:math:`z_{1:T} \mapsto \epsilon_{1:T}` is block triangular and

.. math::

    \log p(z_{1:T} \mid T) = \sum_t \Big[\log \mathcal{N}(\epsilon_t; 0, I)
        + \log\Big|\det \frac{\partial \epsilon_t}{\partial z_t}\Big|\Big],

one term per time step (which is what lets a model mask padded steps). Three kinds of context:

- ``"af"`` (AF in time): :math:`h_t = \mathrm{LSTM}(z_{<t}, T)`. Density is one teacher-forced
  pass, parallel over t; sampling is sequential over t.
- ``"iaf"`` (IAF in time): :math:`h_t = \mathrm{LSTM}(\epsilon_{<t}, T)`. Sampling is one
  parallel pass; density is sequential over t.
- ``"indep"`` (ablation): :math:`h_t = c_t`, the length features alone; the :math:`z_t` are
  independent given T and both directions are parallel.

Length conditioning. The authors feed :math:`\mathrm{onehot}(t) \oplus \mathrm{onehot}(T-1-t)`
into every network; a one-hot into a linear layer is an embedding lookup, so here
:math:`c_t = E_{\mathrm{pos}}[t] + E_{\mathrm{rem}}[T-1-t]`
(:class:`~pyro_lnf.nn.features.LengthFeatures`, indices clamped to ``max_length - 1``; padded
steps get row 0 of :math:`E_{\mathrm{rem}}` and can only influence later, padded steps, because
every network reading them is causal). The LSTM reads :math:`[u_t;\, c_{t+1}]` (``u`` = z for
AF, eps for IAF), so the output after step t knows the position it parameterises next; its
initial state :math:`(h_0, c_0)` is an MLP of :math:`c_0`, i.e. a learned function of T, and the
top layer's :math:`h_0` is the context of the first step. Dropout acts on every context
:math:`h_t` (and between LSTM layers) in the parallel and the sequential paths alike.

Reference: Zachary M. Ziegler and Alexander M. Rush, "Latent Normalizing Flows for Discrete
Sequences", ICML 2019 [arXiv:1901.10548], section 4 (AF/AF, AF/SCF, IAF/SCF priors).
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from pyro.distributions.conditional import ConditionalTransformModule
from torch import Tensor, nn
from torch.distributions import Transform, constraints

from pyro_lnf.errors import ConfigError
from pyro_lnf.nn.checks import check_sizes
from pyro_lnf.nn.features import LengthFeatures
from pyro_lnf.nn.lstm import LSTMStepper
from pyro_lnf.nn.lstm import LSTMState as StepperState
from pyro_lnf.nn.precision import bulk_autocast
from pyro_lnf.transforms.stack import conditional_hidden_flow

__all__ = ["KINDS", "TemporalFlow", "TemporalFlowDistribution"]

KINDS = ("af", "iaf", "indep")
_LOG_2PI = math.log(2 * math.pi)

LSTMState = tuple[Tensor, Tensor]


def _padded(lengths: Tensor, T: int) -> Tensor:
    """``(N, T)``, True at the padded steps t >= length."""
    return torch.arange(T, device=lengths.device) >= lengths[:, None]


def _standard_normal_log_prob(eps: Tensor) -> Tensor:
    """:math:`\\log \\mathcal{N}(\\epsilon; 0, I)` summed over the last dim."""
    return -0.5 * (eps.pow(2) + _LOG_2PI).sum(-1)


class TemporalFlow(nn.Module):
    r"""Owner of the networks of a prior flow across time (see the module docstring).

    :param dim: H, the size of each :math:`z_t`.
    :param kind: ``"af"`` (AF in time), ``"iaf"`` (IAF in time) or ``"indep"``.
    :param max_length: rows of the position and remaining-steps embeddings (M); larger indices
        are clamped to the last row.
    :param num_layers: K, the number of hidden-dimension flow layers.
    :param coupling: split coupling (SCF) instead of MADE-AF for the hidden flow.
    :param transform: the elementwise map inside the hidden flow, ``"nlsq"`` or ``"affine"``.
    :param hidden_dims: hidden sizes of the MADE / coupling conditioner.
    :param lstm_hidden: hidden size of the time LSTM (the context size for AF/IAF).
    :param lstm_layers: layers of the time LSTM.
    :param length_embedding_dim: width of the position / remaining-steps embeddings (the context
        size for ``"indep"``).
    :param dropout: dropout on the contexts :math:`h_t` and between LSTM layers.

    Example::

        >>> flow = TemporalFlow(8, "af", max_length=100, num_layers=2, lstm_hidden=32)
        >>> prior = flow.distribution(torch.tensor([5, 3]))   # batch (2, 5), event (8,)
        >>> z = prior.rsample()                                 # (2, 5, 8)
        >>> prior.log_prob(z).shape                             # per-step terms
        torch.Size([2, 5])

    In a Pyro model, mask the padded steps before moving time into the event::

        mask = torch.arange(T) < lengths[:, None]
        with pyro.plate("sequences", B):
            z = pyro.sample("z", flow.distribution(lengths, T).mask(mask).to_event(1))

    Reference: Ziegler & Rush, "Latent Normalizing Flows for Discrete Sequences", ICML 2019.
    """

    def __init__(
        self,
        dim: int,
        kind: str = "af",
        *,
        max_length: int,
        num_layers: int = 5,
        coupling: bool = False,
        transform: str = "nlsq",
        hidden_dims: tuple[int, ...] = (100, 100),
        lstm_hidden: int = 500,
        lstm_layers: int = 2,
        length_embedding_dim: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ConfigError(f"unknown time-flow kind {kind!r}: choose one of {', '.join(KINDS)}")
        check_sizes(
            dropout,
            dim=dim,
            max_length=max_length,
            num_layers=num_layers,
            lstm_hidden=lstm_hidden,
            lstm_layers=lstm_layers,
            length_embedding_dim=length_embedding_dim,
        )
        self.dim = dim
        self.kind = kind
        self.lstm_hidden = lstm_hidden
        self.lstm_layers = lstm_layers
        # The prior's own tables (not the model's shared ones), started standard normal as
        # they always were.
        self.length_features = LengthFeatures(max_length, length_embedding_dim, init_range=None)
        self.lstm: nn.LSTM | None = None
        self.initial_state: nn.Sequential | None = None
        context_dim = length_embedding_dim
        if kind != "indep":
            self.lstm = nn.LSTM(
                dim + length_embedding_dim,
                lstm_hidden,
                lstm_layers,
                batch_first=True,
                dropout=dropout if lstm_layers > 1 else 0.0,
            )
            # The authors' MLP over onehot(0) + onehot(T-1): the one-hot layer is the embedding.
            self.initial_state = nn.Sequential(
                nn.Linear(length_embedding_dim, lstm_hidden),
                nn.ReLU(),
                nn.Linear(lstm_hidden, 2 * lstm_layers * lstm_hidden),
            )
            context_dim = lstm_hidden
        self.context_dropout = nn.Dropout(dropout)
        self.hidden_flow: ConditionalTransformModule = conditional_hidden_flow(
            dim,
            context_dim,
            num_layers=num_layers,
            coupling=coupling,
            transform=transform,
            hidden_dims=tuple(hidden_dims),
            direction="af",
        )

    # ------------------------------------------------------------------ public API

    def distribution(self, lengths: Tensor, T: int | None = None) -> TemporalFlowDistribution:
        """A fresh prior over ``z`` of shape ``(B, T, H)`` for sequences of the given lengths.

        :param lengths: ``(B,)`` integer lengths, each in ``[1, T]``.
        :param T: padded length; defaults to ``max(lengths)``.
        """
        return TemporalFlowDistribution(self, lengths, T)

    # ------------------------------------------------------------------ building blocks

    @property
    def _reference(self) -> Tensor:
        """A parameter whose device and dtype every created tensor follows."""
        return self.length_features.position.weight

    def _lstm_start(self, c0: Tensor) -> tuple[Tensor, LSTMState]:
        """Initial LSTM state from :math:`c_0` (a function of T) and the first context h_0."""
        n = c0.shape[0]
        state = self.initial_state(c0).view(n, self.lstm_layers, 2, self.lstm_hidden)
        h0 = state[:, :, 0].transpose(0, 1).contiguous()
        cell0 = state[:, :, 1].transpose(0, 1).contiguous()
        return self.context_dropout(h0[-1]), (h0, cell0)

    def _stepper(self, features: Tensor) -> tuple[LSTMStepper, Tensor, StepperState]:
        """A step-by-step runner of the time LSTM whose step t reads :math:`[u_t; c_{t+1}]`,
        with the first context :math:`h_0` and the initial state."""
        h0, (hidden, cell) = self._lstm_start(features[:, 0])
        return LSTMStepper(self.lstm, features[:, 1:]), h0, (list(hidden), list(cell))

    def _contexts(self, u: Tensor, features: Tensor) -> Tensor:
        r"""All contexts :math:`h_{0..T-1}` in one pass, :math:`h_t` a function of :math:`u_{<t}`.

        :param u: ``(N, T, H)`` the sequence autoregressed on (z for AF, eps for IAF).
        :param features: ``(N, T + 1, D)`` length features :math:`c_0 .. c_T`.
        """
        T = u.shape[1]
        h0, state = self._lstm_start(features[:, 0])
        if T == 1:
            return h0.unsqueeze(1)
        # Teacher forcing: the output after reading u_t is the context of step t + 1, so the
        # last step's input is never needed.
        with bulk_autocast(u.device):
            out, _ = self.lstm(torch.cat([u[:, :-1], features[:, 1:T]], -1), state)
        out = out.to(u.dtype)
        return torch.cat([h0.unsqueeze(1), self.context_dropout(out)], 1)

    def _to_noise(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """eps = F(z; h) and log|d eps / d z| (the hidden flow's cheap data -> noise pass)."""
        flow = self.hidden_flow.condition(context)
        eps = flow.inv(z)
        return eps, -flow.log_abs_det_jacobian(eps, z)

    def _to_data(self, eps: Tensor, context: Tensor) -> tuple[Tensor, Transform]:
        """z = F^{-1}(eps; h), plus the conditioned transform for an optional log-det."""
        flow = self.hidden_flow.condition(context)
        return flow(eps), flow

    # ------------------------------------------------------------------ the two directions

    def noise(self, z: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        r"""The data -> noise map: :math:`\epsilon_t = F(z_t; h_t)` and per-step log-dets.

        :param z: ``(N, T, H)``.
        :param lengths: ``(N,)`` on the device of the module.
        :returns: eps ``(N, T, H)`` and :math:`\log|\det \partial\epsilon_t/\partial z_t|`
            ``(N, T)``. Padded steps (t >= length) are evaluated at :math:`z_t = 0` whatever the
            padding holds, so their values stay finite: a NaN or inf in a branch that a mask
            discards would still poison the gradients.
        """
        T = z.shape[1]
        z = z.masked_fill(_padded(lengths, T).unsqueeze(-1), 0.0)
        features = self.length_features(lengths, T + 1)
        if self.kind == "iaf":
            return self._noise_sequential(z, features)
        if self.kind == "af":
            context = self._contexts(z, features)
        else:
            context = self.context_dropout(features[:, :T])
        return self._to_noise(z, context)

    def _noise_sequential(self, z: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """IAF in time: eps_t needs h_t, which needs eps_{<t}, so walk forward in t."""
        T = z.shape[1]
        stepper, h, state = self._stepper(features)
        eps, log_dets = [], []
        # unbind, not z[:, t]: each indexing's backward would write a zero tensor of z's size.
        steps = z.unbind(1)
        for t in range(T):
            eps_t, log_det = self._to_noise(steps[t], h)
            eps.append(eps_t)
            log_dets.append(log_det)
            if t + 1 < T:
                out, state = stepper.step(t, eps_t, state)
                h = self.context_dropout(out)
        return torch.stack(eps, 1), torch.stack(log_dets, 1)

    def log_prob(self, z: Tensor, lengths: Tensor) -> Tensor:
        r"""Per-step log-densities ``(N, T)``,
        :math:`\log \mathcal{N}(\epsilon_t) + \log|\det \partial\epsilon_t/\partial z_t|`.

        One parallel pass for ``"af"`` and ``"indep"``, a loop over t for ``"iaf"``. Padded steps
        get 0, so ``.sum(-1)`` is already the per-sequence log-density.
        """
        eps, log_det = self.noise(z, lengths)
        log_prob = _standard_normal_log_prob(eps) + log_det
        return log_prob.masked_fill(_padded(lengths, z.shape[1]), 0.0)

    def sample(
        self,
        lengths: Tensor,
        T: int,
        temperature: float = 1.0,
        with_log_prob: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        r"""Draw z ``(N, T, H)``, the image of :math:`\epsilon \cdot \mathrm{temperature}`.

        With ``with_log_prob`` also return the per-step :math:`\log p(z_t \mid z_{<t}, T)` of the
        drawn z under the (untempered) prior, ``(N, T)``, accumulated while sampling (0 at
        padded steps, as in :meth:`log_prob`). Padded steps of z hold draws that no valid step
        depends on.
        """
        ref = self._reference
        eps = torch.randn(lengths.shape[0], T, self.dim, dtype=ref.dtype, device=ref.device)
        eps = eps * temperature
        features = self.length_features(lengths, T + 1)
        if self.kind == "af":
            z, log_det = self._sample_sequential(eps, features, with_log_prob)
        else:
            if self.kind == "indep":
                context = self.context_dropout(features[:, :T])
            else:
                context = self._contexts(eps, features)
            z, flow = self._to_data(eps, context)
            log_det = flow.log_abs_det_jacobian(eps, z) if with_log_prob else None
        if log_det is None:
            return z, None
        log_prob = _standard_normal_log_prob(eps) - log_det
        return z, log_prob.masked_fill(_padded(lengths, T), 0.0)

    def _sample_sequential(
        self, eps: Tensor, features: Tensor, with_log_prob: bool
    ) -> tuple[Tensor, Tensor | None]:
        r"""AF in time: z_t needs h_t, which needs z_{<t}, so walk forward in t.

        Returns z and, with ``with_log_prob``, the per-step
        :math:`\log|\det \partial z_t/\partial\epsilon_t|`.
        """
        T = eps.shape[1]
        stepper, h, state = self._stepper(features)
        zs, log_dets = [], []
        for t in range(T):
            eps_t = eps[:, t]  # one view: the flow's stashed log-det is matched by identity
            z_t, flow = self._to_data(eps_t, h)
            zs.append(z_t)
            if with_log_prob:
                log_dets.append(flow.log_abs_det_jacobian(eps_t, z_t))
            if t + 1 < T:
                out, state = stepper.step(t, z_t, state)
                h = self.context_dropout(out)
        return torch.stack(zs, 1), (torch.stack(log_dets, 1) if with_log_prob else None)


class TemporalFlowDistribution(TorchDistribution):
    r"""The prior :math:`p(z_{1:T} \mid T)` of a :class:`TemporalFlow`, one term per time step.

    Batch shape ``(B, T)`` (plus any leading dims from :meth:`expand`), event shape ``(H,)``.
    :meth:`log_prob` returns the per-step terms
    :math:`\log \mathcal{N}(\epsilon_t) + \log|\partial\epsilon_t/\partial z_t|`, shape
    ``(..., B, T)``, 0 at padded steps (t >= length; evaluated at :math:`z_t = 0` so that any
    padding stays finite). A model masks the padded steps and then moves time into the event:
    ``prior.mask(mask).to_event(1)`` has batch ``(B,)`` and event ``(T, H)``. Values with extra
    leading dims (vectorised particles, ``(K, B, T, H)``) are flattened before the LSTM.

    Build it with :meth:`TemporalFlow.distribution`, fresh for every model call.

    Example::

        >>> flow = TemporalFlow(8, "iaf", max_length=100, num_layers=2, lstm_hidden=32)
        >>> prior = flow.distribution(torch.tensor([5, 3]))      # lengths (B,)
        >>> z, lp = prior.rsample_with_log_prob(temperature=0.7)  # lp == prior.log_prob(z)
        >>> bool(torch.allclose(lp, prior.log_prob(z), atol=1e-4))
        True

    Reference: Ziegler & Rush, "Latent Normalizing Flows for Discrete Sequences", ICML 2019.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        flow: TemporalFlow,
        lengths: Tensor,
        T: int | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if lengths.dim() != 1 or lengths.dtype.is_floating_point or lengths.numel() == 0:
            raise ValueError(
                f"lengths must be a non-empty 1-D integer tensor, got {tuple(lengths.shape)} "
                f"{lengths.dtype}"
            )
        lengths = lengths.to(device=flow._reference.device, dtype=torch.long)
        shortest, longest = torch.stack(torch.aminmax(lengths)).tolist()  # one host sync
        T = longest if T is None else int(T)
        if shortest < 1 or longest > T:
            raise ValueError(f"lengths must lie in [1, T={T}], got min {shortest}, max {longest}")
        self.flow = flow
        self.lengths = lengths
        self.T = T
        super().__init__(lengths.shape + (T,), torch.Size([flow.dim]), validate_args)

    def expand(
        self,
        batch_shape: torch.Size | tuple[int, ...],
        _instance: TemporalFlowDistribution | None = None,
    ) -> TemporalFlowDistribution:
        """Broadcast to ``batch_shape`` (``pyro.plate`` and ``.mask`` call this); T is fixed."""
        batch_shape = torch.Size(batch_shape)
        if batch_shape[-1:] != torch.Size([self.T]):
            raise ValueError(
                f"cannot expand a time-flow prior with batch shape {tuple(self.batch_shape)} "
                f"to {tuple(batch_shape)}: the last dim must stay T={self.T}"
            )
        new = self._get_checked_instance(TemporalFlowDistribution, _instance)
        new.flow = self.flow
        new.lengths = self.lengths.expand(batch_shape[:-1])
        new.T = self.T
        super(TemporalFlowDistribution, new).__init__(
            batch_shape, self.event_shape, validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def _flat(self, value: Tensor) -> tuple[Tensor, Tensor, torch.Size]:
        """Value and lengths broadcast to common leading dims and flattened to (N, T, H), (N,)."""
        lead = torch.broadcast_shapes(value.shape[:-2], self.batch_shape[:-1])
        z = value.expand(lead + value.shape[-2:]).reshape(-1, self.T, self.flow.dim)
        return z, self.lengths.expand(lead).reshape(-1), lead

    def log_prob(self, value: Tensor) -> Tensor:
        if value.shape[-2:] != torch.Size([self.T, self.flow.dim]):
            raise ValueError(
                f"expected z with trailing shape ({self.T}, {self.flow.dim}), got "
                f"{tuple(value.shape)}"
            )
        if self._validate_args:
            self._validate_sample(value)
        z, lengths, lead = self._flat(value)
        return self.flow.log_prob(z, lengths).reshape(lead + (self.T,))

    def _sample(
        self, sample_shape: torch.Size | tuple[int, ...], temperature: float, with_log_prob: bool
    ) -> tuple[Tensor, Tensor | None]:
        lead = torch.Size(sample_shape) + self.batch_shape[:-1]
        lengths = self.lengths.expand(lead).reshape(-1)
        z, log_prob = self.flow.sample(lengths, self.T, temperature, with_log_prob)
        z = z.reshape(lead + (self.T, self.flow.dim))
        return z, (None if log_prob is None else log_prob.reshape(lead + (self.T,)))

    def rsample(
        self, sample_shape: torch.Size | tuple[int, ...] = torch.Size(), temperature: float = 1.0
    ) -> Tensor:
        """Reparameterised z of shape ``sample_shape + (B, T, H)``; ``temperature`` scales eps."""
        return self._sample(sample_shape, temperature, with_log_prob=False)[0]

    def rsample_with_log_prob(
        self, sample_shape: torch.Size | tuple[int, ...] = torch.Size(), temperature: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """z and its per-step log-density under the prior, computed while sampling.

        This costs no extra density pass, which matters for IAF in time, whose density pass is
        sequential. With ``temperature != 1`` the density is still that of the untempered prior.
        """
        return self._sample(sample_shape, temperature, with_log_prob=True)
