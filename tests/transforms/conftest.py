"""The transform harness: reusable checks for event_dim 0/1 flows (Pyro convention: ``_call``
noise to sample), offered to the tests in this folder as fixtures.

A test module keeps a table of flows, one line per flow, and a ``case`` fixture parametrized
over it that builds each line with ``flow_case``; its shared float64 tests run every line
through ``flow_checks``:

* ``flow_case(name, module, build, dim, context_dim=0)`` — a :class:`FlowCase`, its module
  moved to float64 and its parameters far from the near-identity initialisation;
* ``flow_checks`` — the checks below (``flow_checks.round_trip_errors(t, x)``, ...);
* ``randomize`` — :func:`randomize_`, for tests that build a flow of their own.

Every check calls ``_call``/``_inverse`` directly, bypassing Pyro's cache, and works in float64:

* :func:`round_trip_errors` — ``_inverse(_call(x))`` and ``_call(_inverse(y))``;
* :func:`assert_log_det_matches_jacobian` — ``log_abs_det_jacobian`` against ``slogdet`` of
  ``torch.autograd.functional.jacobian`` (both directions);
* :func:`assert_input_gradients` / :func:`assert_param_gradients` — autograd against central
  finite differences (``torch.autograd.gradcheck``), for the values AND the log-determinant, for
  both ``_call`` and ``_inverse``; parameters go through ``torch.func.functional_call``.
  ``check_undefined_grad`` is off: it probes custom autograd Functions' handling of undefined
  output gradients (there are none here) and would quadruple the cost.

A :class:`FlowCase` describes one flow: the module that owns the parameters and a ``build``
function ``context -> fresh transform`` (for unconditional flows it ignores the context).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Transform

METHODS = ("_call", "_inverse")


@dataclass
class FlowCase:
    name: str
    module: nn.Module
    build: Callable[[Tensor | None], Transform]
    dim: int
    context_dim: int = 0

    def context(self, *batch: int, generator: torch.Generator | None = None) -> Tensor | None:
        if not self.context_dim:
            return None
        return torch.randn(*batch, self.context_dim, dtype=torch.float64, generator=generator)


def randomize_(module: nn.Module, scale: float = 0.3) -> nn.Module:
    """Move every parameter far from the near-identity initialisation (masks stay applied)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, scale)
    return module


def round_trip_errors(t: Transform, x: Tensor) -> tuple[float, float]:
    """max |_inverse(_call(x)) - x| and max |_call(_inverse(x)) - x|."""
    forward_back = (t._inverse(t._call(x)) - x).abs().max().item()
    back_forward = (t._call(t._inverse(x)) - x).abs().max().item()
    return forward_back, back_forward


def _summed_ladj(t: Transform, x: Tensor, y: Tensor) -> Tensor:
    ladj = t.log_abs_det_jacobian(x, y)
    return ladj.sum(-1) if t.domain.event_dim == 0 else ladj


def assert_log_det_matches_jacobian(t: Transform, x: Tensor, atol: float = 1e-8) -> None:
    """For one unbatched point x ``(D,)``: log|det dy/dx| = slogdet(jacobian(_call)), and the
    same for ``_inverse`` (whose log-det is minus the transform's at the image)."""
    y = t._call(x)
    jac = torch.autograd.functional.jacobian(t._call, x)
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign.abs() == 1
    torch.testing.assert_close(_summed_ladj(t, x, y), logabsdet, atol=atol, rtol=0)
    # Same from the other side: eps = _inverse(z), log|d eps/d z| = -ladj(eps, z).
    z = x
    eps = t._inverse(z)
    jac_inv = torch.autograd.functional.jacobian(t._inverse, z)
    torch.testing.assert_close(-_summed_ladj(t, eps, z), torch.linalg.slogdet(jac_inv)[1],
                               atol=atol, rtol=0)


def _op(t: Transform, method: str, x: Tensor) -> tuple[Tensor, Tensor]:
    """Value and the transform's log-det for ``_call`` (at (x, y)) or ``_inverse`` (at (out, x))."""
    out = getattr(t, method)(x)
    ladj = t.log_abs_det_jacobian(x, out) if method == "_call" else t.log_abs_det_jacobian(out, x)
    return out, ladj


def assert_input_gradients(
    case: FlowCase, x: Tensor, context: Tensor | None, fast_mode: bool = False
) -> None:
    """gradcheck w.r.t. the input (and the context) of value and log-det, both methods; full
    Jacobians by default, random projections with ``fast_mode``."""
    for method in METHODS:
        inputs = (x.clone().requires_grad_(),)
        if context is not None:
            inputs += (context.clone().requires_grad_(),)

        def fn(x_: Tensor, *ctx: Tensor, method: str = method) -> tuple[Tensor, Tensor]:
            return _op(case.build(ctx[0] if ctx else None), method, x_)

        assert torch.autograd.gradcheck(fn, inputs, fast_mode=fast_mode,
                                        check_undefined_grad=False), (case.name, method)


class _Apply(nn.Module):
    def __init__(self, case: FlowCase, method: str) -> None:
        super().__init__()
        self.owner = case.module
        self.case = case
        self.method = method

    def forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return _op(self.case.build(context), self.method, x)


def assert_param_gradients(case: FlowCase, x: Tensor, context: Tensor | None) -> None:
    """gradcheck w.r.t. every parameter of value and log-det, for both methods.

    All parameters are packed into one flat vector (swapped in with
    ``torch.func.functional_call``) and checked along random projections (``fast_mode``), so
    one check covers every parameter at the cost of a few evaluations.
    """
    for method in METHODS:
        apply = _Apply(case, method)
        named = list(apply.named_parameters())
        assert named, case.name
        flat = torch.cat([p.detach().flatten() for _, p in named]).requires_grad_()

        def fn(v: Tensor, apply: _Apply = apply, named: list = named) -> tuple[Tensor, Tensor]:
            pieces = v.split([p.numel() for _, p in named])
            params = {name: piece.view_as(p) for (name, p), piece in zip(named, pieces)}
            return torch.func.functional_call(apply, params, (x, context))

        assert torch.autograd.gradcheck(fn, (flat,), fast_mode=True,
                                        check_undefined_grad=False), (case.name, method)


# ------------------------------------------------------------------------------------------------
# The fixtures


@pytest.fixture
def flow_case() -> Callable[..., FlowCase]:
    """``flow_case(name, module, build, dim, context_dim=0)``: one line of a flow table, its
    module in float64 with randomized parameters."""

    def make(name: str, module: nn.Module, build: Callable[[Tensor | None], Transform], dim: int,
             context_dim: int = 0) -> FlowCase:
        randomize_(module.double())
        return FlowCase(name, module, build, dim, context_dim)

    return make


@pytest.fixture
def flow_checks() -> SimpleNamespace:
    """The shared float64 checks, by their names in this module."""
    return SimpleNamespace(
        round_trip_errors=round_trip_errors,
        assert_log_det_matches_jacobian=assert_log_det_matches_jacobian,
        assert_input_gradients=assert_input_gradients,
        assert_param_gradients=assert_param_gradients,
    )


@pytest.fixture
def randomize() -> Callable[..., nn.Module]:
    """:func:`randomize_`: ``randomize(module, scale=0.3)`` moves every parameter far from the
    near-identity initialisation, in place."""
    return randomize_
