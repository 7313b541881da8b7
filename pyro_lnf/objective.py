r"""The training objective: the β-weighted −ELBO of a batch, its KL, and the checks that stop
a diverging step before the optimizer applies it.

Each step minimises Pyro's ``Trace_ELBO(num_particles=S, vectorize_particles=True,
max_plate_nesting=1).differentiable_loss(model, guide, batch, beta)`` divided by the
units of the accumulation cycle, :math:`\sum_b n_b` over its batches (:math:`n_b = T_b + 1`,
``module.normalizer``; :func:`cycle_units`):

.. math::

    \mathcal{L}_\beta = \frac{1}{\sum_b n_b} \sum_b \frac{1}{S} \sum_{s=1}^{S}
        \Big[ -\log p(x_b, T_b \mid z_b^{(s)})
              + \beta \big(\log q(z_b^{(s)} \mid x_b) - \log p(z_b^{(s)})\big) \Big],
    \qquad z_b^{(s)} \sim q(\cdot \mid x_b),

:math:`\beta` entering through ``poutine.scale`` on the latent sites of both programs. We use
``differentiable_loss`` with a torch optimizer rather than ``SVI.step``: it gives global-norm
gradient clipping, gradient accumulation, and an optimizer whose state (moments, learning rate)
can be checkpointed and restored exactly; ``pyro.optim`` keeps one optimizer per tensor.

**Token weighting.** The loss is :math:`\sum / \sum` over the batch, the same accounting as the
reported metric, so every unit weighs the same. The authors (TextFlow, spec §7) average
per-sequence per-token losses instead, which up-weights short sequences.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from pyro.infer import JitTrace_ELBO, Trace_ELBO

from pyro_lnf.errors import ConfigError

__all__ = ["Diverged", "Objective", "checked_loss", "clip_gradients", "cycle_units"]


class _TrackedELBO(Trace_ELBO):
    """``Trace_ELBO`` that keeps its last traces, so the KL of the very same samples can be
    reported without a second pass.

    It overrides Pyro's private ``ELBO._get_traces``, the one place the traces pass through
    (``tests/test_private_api.py`` checks how ``differentiable_loss`` consumes it)."""

    traces: tuple[Any, Any] | None = None

    def _get_traces(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> Iterator[tuple[Any, Any]]:
        for model_trace, guide_trace in super()._get_traces(model, guide, args, kwargs):
            self.traces = (model_trace, guide_trace)
            yield model_trace, guide_trace


def _kl_of(model_trace: Any, guide_trace: Any) -> float:
    r"""Σ over latent sites of :math:`\log q - \log p`, undoing each site's β scale."""
    total: torch.Tensor | float = 0.0
    for name, g in guide_trace.nodes.items():
        if g["type"] != "sample" or g["is_observed"]:
            continue
        m = model_trace.nodes[name]
        total = total + (g["log_prob"] / g["scale"] - m["log_prob"] / m["scale"]).detach().sum()
    return float(total)


def _tensor_fields(batch: Any) -> tuple[list[str], list[torch.Tensor]]:
    if dataclasses.is_dataclass(batch):
        items = [(f.name, getattr(batch, f.name)) for f in dataclasses.fields(batch)]
    elif hasattr(batch, "_fields"):
        items = [(name, getattr(batch, name)) for name in batch._fields]
    else:
        raise ConfigError(
            f"jit needs batches that are dataclasses or named tuples, got {type(batch).__name__}; "
            "train without jit"
        )
    named = [(name, value) for name, value in items if isinstance(value, torch.Tensor)]
    return [name for name, _ in named], [value for _, value in named]


def _with_fields(batch: Any, names: list[str], tensors: Sequence[torch.Tensor]) -> Any:
    values = dict(zip(names, tensors, strict=True))
    if dataclasses.is_dataclass(batch):
        return dataclasses.replace(batch, **values)
    return batch._replace(**values)


class Objective:
    """Summed −ELBO of one batch (and its KL when observable), eager or JIT-compiled.

    Under JIT every tensor must be a positional argument: the batch is split into its tensor
    fields and β is passed as a 0-d tensor (a float would be baked into the trace). Pyro keys
    its compile cache on ``(len(args), kwargs)``, not on shapes (pyro-notes §4.2), so the
    fields' shapes go in as a keyword: one compile per distinct (B, T_max), as ``T_max=...``
    would do for lengths alone, but also correct for a short last batch.
    """

    def __init__(self, module: torch.nn.Module, *, particles: int, jit: bool) -> None:
        self.module = module
        self.particles = particles
        options = dict(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
        self.jit = jit
        self.template: Any = None
        if self.jit:
            self.elbo: Trace_ELBO = JitTrace_ELBO(ignore_jit_warnings=True, **options)
            self.names: list[str] = []
            # Pyro's cache key holds id(model) and id(guide): bind the methods once, since
            # every attribute access would make a new bound-method object (and a recompile).
            self.jit_model, self.jit_guide = self._jit_model, self._jit_guide
        else:
            self.elbo = _TrackedELBO(**options)

    def _jit_model(self, beta: torch.Tensor, *tensors: torch.Tensor, shapes: tuple) -> None:
        self.module.model(_with_fields(self.template, self.names, tensors), beta)

    def _jit_guide(self, beta: torch.Tensor, *tensors: torch.Tensor, shapes: tuple) -> None:
        self.module.guide(_with_fields(self.template, self.names, tensors), beta)

    def __call__(self, batch: Any, beta: float) -> tuple[torch.Tensor, float | None]:
        if not self.jit:
            loss = self.elbo.differentiable_loss(self.module.model, self.module.guide, batch, beta)
            model_trace, guide_trace = self.elbo.traces
            self.elbo.traces = None  # do not keep the graph alive until the next step
            return loss, _kl_of(model_trace, guide_trace) / self.particles
        self.names, tensors = _tensor_fields(batch)
        self.template = batch
        dtype = next((p.dtype for p in self.module.parameters() if p.is_floating_point()), None)
        beta_t = torch.tensor(beta, dtype=dtype, device=tensors[0].device)
        shapes = tuple(tuple(t.shape) for t in tensors)
        loss = self.elbo.differentiable_loss(
            self.jit_model, self.jit_guide, beta_t, *tensors, shapes=shapes
        )
        return loss, None


#: Pyro's message when a distribution gets a parameter outside its constraint (a NaN or an
#: infinity, in a run that has diverged): ``Expected parameter loc (Tensor of shape ...``.
_INVALID_PARAMETER = re.compile(r"Expected parameter (\w+)")


class Diverged(Exception):
    """What went non-finite in a step; :func:`~pyro_lnf.train.train` turns it into a
    :class:`~pyro_lnf.errors.DivergenceError` that says where."""


def checked_loss(objective: Objective, batch: Any, beta: float) -> tuple[torch.Tensor, float | None]:
    """The batch's loss, with a non-finite value or an invalid distribution parameter raised
    as :class:`Diverged` (Pyro would raise a ValueError with the whole trace)."""
    try:
        with warnings.catch_warnings():  # a NaN is reported below, in one line
            warnings.filterwarnings("ignore", "Encountered NaN", UserWarning)
            loss, kl = objective(batch, beta)
    except ValueError as err:
        found = _INVALID_PARAMETER.search(str(err))
        if found is None:
            raise
        raise Diverged(f"the {found.group(1)} of a distribution was invalid (nan or inf)") from err
    if not torch.isfinite(loss):
        raise Diverged(f"the loss was {loss.item()}")
    return loss, kl


def clip_gradients(module: torch.nn.Module, max_norm: float | None) -> None:
    """Clip the gradients to ``max_norm`` in global norm (``None``: do not clip); raise
    :class:`Diverged` if that norm is not finite (before the optimizer could apply it)."""
    if max_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
    else:
        norm = torch.nn.utils.get_total_norm(
            [p.grad for p in module.parameters() if p.grad is not None]
        )
    if not torch.isfinite(norm):
        raise Diverged(f"the gradient norm was {norm.item()}")


def cycle_units(module: torch.nn.Module, batches: Sequence[Any], j: int, accumulate: int) -> float:
    """The units :math:`\\sum_b n_b` of the gradient-accumulation cycle of ``accumulate``
    batches that batch ``j`` belongs to: each of its batches' losses is divided by them, so
    every unit weighs the same however the cycle's batches differ in length."""
    start = j - j % accumulate
    return sum(float(module.normalizer(b).sum()) for b in batches[start:start + accumulate])
