"""Math and contract tests for pyro_lnf.transforms (float64 throughout where math is checked)."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch

import pyro_lnf.transforms as T
from pyro_lnf.errors import ConfigError
from pyro_lnf.transforms.nlsq import _NLSQ_A, _depressed_cubic_root

F64 = torch.float64
EPS64 = torch.finfo(F64).eps
D, C = 5, 3
HIDDEN = (10, 10)
ORDER = [2, 0, 4, 1, 3]  # a non-trivial processing order for the single MADE layers

# ------------------------------------------------------------------------------------------------
# Every flow: elementwise map x structure x direction, conditional and not, through the
# harness's shared float64 checks (tests/transforms/conftest.py).

SPECS = (
    [("elementwise", tr, "-", cond) for tr in ("nlsq", "affine") for cond in (False, True)]
    + [("autoregressive", tr, d, cond) for tr in ("nlsq", "affine") for d in ("af", "iaf")
       for cond in (False, True)]
    + [("coupling", tr, flip, cond) for tr in ("nlsq", "affine") for flip in ("keep", "flip")
       for cond in (False, True)]
    + [("stack", tr, s, cond) for tr in ("nlsq", "affine") for s in ("af", "iaf", "coupling")
       for cond in (False, True)]
)


def _spec_id(spec: tuple) -> str:
    kind, tr, variant, cond = spec
    return f"{'cond-' if cond else ''}{kind}-{tr}-{variant}"


def make_case(spec: tuple, flow_case):
    kind, tr, variant, cond = spec
    context_dim = C if cond else 0
    if kind == "elementwise":
        module = (T.conditional_nlsq if tr == "nlsq" else T.conditional_affine)(D, C, (7,)) \
            if cond else (T.NLSq(D) if tr == "nlsq" else T.Affine(D))
    elif kind == "autoregressive":
        module = T.conditional_autoregressive_flow(D, C, tr, variant, HIDDEN, ORDER) if cond \
            else T.autoregressive_flow(D, tr, variant, HIDDEN, ORDER)
    elif kind == "coupling":
        flip = variant == "flip"
        module = T.conditional_coupling_flow(D, C, tr, (8,), flip) if cond \
            else T.coupling_flow(D, tr, (8,), flip)
    else:
        kw = dict(num_layers=2, coupling=variant == "coupling", transform=tr, hidden_dims=HIDDEN,
                  direction="iaf" if variant == "iaf" else "af")
        module = T.conditional_hidden_flow(D, C, **kw) if cond else T.hidden_flow(D, **kw)
    if cond:
        return flow_case(_spec_id(spec), module, lambda ctx: module.condition(ctx), D, context_dim)
    return flow_case(_spec_id(spec), module, lambda ctx: module, D, 0)


@pytest.fixture(params=SPECS, ids=_spec_id)
def case(request, flow_case):
    return make_case(request.param, flow_case)


def test_round_trip(case, flow_checks):
    x = 2.0 * torch.randn(6, D, dtype=F64)
    t = case.build(case.context(6))
    forward_back, back_forward = flow_checks.round_trip_errors(t, x)
    assert forward_back < 1e-10 and back_forward < 1e-10, (forward_back, back_forward)


def test_log_det_matches_autograd_jacobian(case, flow_checks):
    for _ in range(2):
        t = case.build(case.context())
        flow_checks.assert_log_det_matches_jacobian(t, torch.randn(D, dtype=F64))


def test_gradients_match_finite_differences_inputs(case, flow_checks):
    # Stacks are compositions of the single layers checked in full: random projections suffice.
    # Rows of a batch are independent (checked elsewhere): one point carries the full Jacobian.
    fast = "stack" in case.name
    flow_checks.assert_input_gradients(case, torch.randn(1, D, dtype=F64), case.context(1),
                                       fast_mode=fast)


def test_gradients_match_finite_differences_params(case, flow_checks):
    flow_checks.assert_param_gradients(case, torch.randn(2, D, dtype=F64), case.context(2))


def test_log_det_stash_is_identity_checked(case):
    t = case.build(case.context(4))
    x = torch.randn(4, D, dtype=F64)
    y = t._call(x)
    stashed = t.log_abs_det_jacobian(x, y)
    assert stashed is t._stash[2]
    # A clone is a cache miss: recomputed, same value.
    recomputed = t.log_abs_det_jacobian(x.clone(), y.clone())
    assert recomputed is not stashed
    torch.testing.assert_close(recomputed, stashed, atol=1e-12, rtol=0)
    # A stale pair must not be served from the stash of a later call.
    x2 = torch.randn(4, D, dtype=F64)
    t._call(x2)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), stashed, atol=1e-12, rtol=0)
    # Scoring from the data side gives the same log-det as sampling did.
    eps = t._inverse(y)
    torch.testing.assert_close(t.log_abs_det_jacobian(eps, y), stashed, atol=1e-12, rtol=0)


def test_batch_shapes_and_context_broadcast(case):
    """x (K, B, T, D) with a context (B, T, C) equals the explicitly expanded context."""
    x = torch.randn(2, 3, 4, D, dtype=F64)
    ctx = case.context(3, 4)
    t = case.build(ctx)
    y = t._call(x)
    ladj = t.log_abs_det_jacobian(x, y)
    event_shape = (D,) if t.domain.event_dim == 0 else ()
    assert y.shape == x.shape and ladj.shape == (2, 3, 4) + event_shape
    eps = t._inverse(x)
    assert eps.shape == x.shape
    if ctx is not None:
        t_full = case.build(ctx.expand(2, 3, 4, C))
        torch.testing.assert_close(t_full._call(x), y, atol=1e-12, rtol=0)
        torch.testing.assert_close(t_full._inverse(x), eps, atol=1e-12, rtol=0)
        # and the other way round: one point, a batch of contexts
        t_many = case.build(ctx)
        point = x[0, 0, 0]
        y_many = t_many._call(point)
        assert y_many.shape == (3, 4, D) and t_many._inverse(point).shape == (3, 4, D)
        assert t_many.log_abs_det_jacobian(point, y_many).shape == (3, 4) + event_shape
        torch.testing.assert_close(y_many, t_many._call(point.expand(3, 4, D)), atol=1e-12,
                                   rtol=0)


def test_float32_inputs_keep_dtype(case):
    case.module.float()
    ctx = case.context(4)
    t = case.build(None if ctx is None else ctx.float())
    x = torch.randn(4, D)
    y = t._call(x)
    assert y.dtype == torch.float32 and t.log_abs_det_jacobian(x, y).dtype == torch.float32
    assert (t._inverse(y) - x).abs().max() < 1e-3


# ------------------------------------------------------------------------------------------------
# Autoregressive structure


@pytest.mark.parametrize("cond", [False, True], ids=["plain", "cond"])
@pytest.mark.parametrize("direction", ["af", "iaf"])
@pytest.mark.parametrize("transform", ["nlsq", "affine"])
def test_autoregressive_jacobian_is_triangular_in_declared_order(transform, direction, cond,
                                                                randomize):
    # Wide hidden layers (6 units per degree) so that, over a few points, the ReLUs leave every
    # allowed link live somewhere.
    module = (T.conditional_autoregressive_flow(D, C, transform, direction, (30, 30), ORDER)
              if cond else T.autoregressive_flow(D, transform, direction, (30, 30), ORDER))
    randomize(module.double())
    order_t = torch.tensor(ORDER)
    later = order_t[None, :] > order_t[:, None]      # J[i, j] must vanish when j comes after i
    earlier = order_t[None, :] < order_t[:, None]
    for method in ("_call", "_inverse"):
        live = torch.zeros(D, D, dtype=torch.bool)
        for _ in range(8):
            t = module.condition(torch.randn(C, dtype=F64)) if cond else module
            jac = torch.autograd.functional.jacobian(getattr(t, method),
                                                     torch.randn(D, dtype=F64))
            assert torch.all(jac[later] == 0), method
            assert torch.all(jac.diagonal() > 0), method
            live |= jac != 0
        assert torch.all(live[earlier]), method


def test_made_connectivity_through_gradients():
    made = T.MADE(D, C, HIDDEN, num_params=3, order=ORDER).double()
    with torch.no_grad():  # positive weights and inputs: every unmasked path is live
        for p in made.parameters():
            p.uniform_(0.1, 1.0)
    x = torch.rand(8, D, dtype=F64, requires_grad=True)
    ctx = torch.rand(8, C, dtype=F64, requires_grad=True)
    out = made(x, ctx)
    assert out.shape == (8, D, 3)
    for i in range(D):
        for p in range(3):
            gx, gc = torch.autograd.grad(out[:, i, p].sum(), (x, ctx), retain_graph=True)
            reached = gx.abs().sum(0) > 0
            expected = torch.tensor([ORDER[j] < ORDER[i] for j in range(D)])
            assert torch.equal(reached, expected), (i, p)
            assert torch.all(gc.abs().sum(0) > 0)  # the context feeds every output


def test_made_degrees_and_masks_follow_the_authors_rules():
    made = T.MADE(4, 2, (6,), num_params=2, order=[3, 1, 0, 2])
    m_in, m_out = (m.long() for m in made.masks())
    hidden_deg = torch.arange(6) % 4
    in_deg = torch.tensor([3, 1, 0, 2]) + 1
    assert torch.equal(m_in, (hidden_deg[:, None] >= in_deg[None, :]).long())
    out_deg = torch.tensor([3, 1, 0, 2]).repeat_interleave(2)
    assert torch.equal(m_out, (out_deg[:, None] >= hidden_deg[None, :]).long())
    assert made.sequence == (2, 1, 3, 0)


def test_made_near_identity_init_and_no_hidden_layers():
    made = T.MADE(3, 2, (), num_params=2, order=[1, 2, 0])
    x = torch.randn(5, 3, requires_grad=True)
    out = made(x, torch.randn(5, 2))
    grad = torch.autograd.grad(out[:, 1].sum(), x)[0]   # dim 1 has order 2: sees dims 0 and 2
    assert torch.all(grad[:, 1] == 0) and torch.all(grad[:, [0, 2]] != 0)
    flow = T.conditional_hidden_flow(6, 4, num_layers=5)  # default (100, 100) as the authors
    eps = torch.randn(8, 6)
    z = flow.condition(torch.randn(8, 4))(eps)
    assert (z - eps).abs().max() < 0.5  # every layer starts close to the identity


@pytest.mark.parametrize("hidden", [(), (7,), (6, 9)])
def test_made_single_coordinate_output_matches_full_output(hidden, randomize):
    made = randomize(T.MADE(5, 3, hidden, num_params=4, order=ORDER).double())
    x, ctx = torch.randn(2, 6, 5, dtype=F64), torch.randn(6, 3, dtype=F64)
    net = made.conditioner(ctx)
    full = net(x)
    for i in range(5):
        torch.testing.assert_close(net(x, coordinate=i), full[..., i, :], atol=1e-14, rtol=0)


def test_made_rejects_narrow_hidden_layer_and_bad_order():
    with pytest.raises(ConfigError, match="width 40 .* input dimension 50"):
        T.MADE(50, 0, (100, 40))
    with pytest.raises(ConfigError, match="permutation"):
        T.MADE(3, 0, (3,), order=[0, 0, 1])


def test_made_context_errors():
    made = T.MADE(3, 2, (4,))
    with pytest.raises(ConfigError, match="context_dim=2"):
        made(torch.randn(3))
    with pytest.raises(ConfigError, match="size 2"):
        made(torch.randn(3), torch.randn(5))
    with pytest.raises(ConfigError, match="without a context"):
        T.MADE(3, 0, (4,))(torch.randn(3), torch.randn(2))


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="'spline'"):
        T.autoregressive_flow(4, transform="spline")
    with pytest.raises(ConfigError, match="'maf'"):
        T.conditional_hidden_flow(4, 2, direction="maf")
    with pytest.raises(ConfigError, match="at least 2 dims"):
        T.coupling_flow(1)
    with pytest.raises(ConfigError, match="num_layers >= 1"):
        T.hidden_flow(4, num_layers=0)
    with pytest.raises(ConfigError, match="context_dim >= 1"):
        T.conditional_hidden_flow(4, 0)
    with pytest.raises(ConfigError, match="emits 2 parameters .* needs 5"):
        T.AutoregressiveFlow(T.MADE(4, 0, (4,), num_params=2), T.NLSqMap())
    with pytest.raises(ConfigError, match="ConditionalAutoregressiveFlow"):
        T.AutoregressiveFlow(T.MADE(4, 2, (4,), num_params=5), T.NLSqMap())
    with pytest.raises(ConfigError, match="positive integer"):
        T.NLSq(0)


# ------------------------------------------------------------------------------------------------
# Coupling: both halves carry gradient, the split follows the authors.


@pytest.mark.parametrize("flip", [False, True])
def test_coupling_identity_half_receives_gradient(flip, randomize):
    flow = T.conditional_coupling_flow(5, 2, "nlsq", (8,), flip).double()
    with torch.no_grad():  # constant parameters: d eps_id / d z_id is exactly the identity
        for layer in flow.net.layers:
            layer.weight.zero_()
        flow.net.context_layer.weight.zero_()
    identity = slice(3, 5) if flip else slice(0, 2)
    z = torch.randn(4, 5, dtype=F64, requires_grad=True)
    eps = flow.condition(torch.randn(4, 2, dtype=F64))._inverse(z)
    grad = torch.autograd.grad(eps[..., identity].sum(), z)[0]
    assert torch.equal(grad[..., identity], torch.ones_like(grad[..., identity]))
    # and the base-density term of the identity half reaches z through the network too
    flow_random = randomize(T.conditional_coupling_flow(5, 2, "nlsq", (8,), flip).double())
    d = dist.TransformedDistribution(dist.Normal(torch.zeros(5, dtype=F64), 1.0).to_event(1),
                                     [flow_random.condition(torch.randn(4, 2, dtype=F64))])
    g = torch.autograd.grad(d.log_prob(z).sum(), z)[0]
    assert torch.all(g[..., identity] != 0)


@pytest.mark.parametrize("flip, unchanged", [(False, slice(0, 2)), (True, slice(3, 5))])
def test_coupling_split(flip, unchanged, randomize):
    t = randomize(T.coupling_flow(5, "nlsq", (8,), flip).double())
    x = torch.randn(3, 5, dtype=F64)
    y = t._call(x)
    assert torch.equal(y[..., unchanged], x[..., unchanged])
    changed = torch.ones(5, dtype=torch.bool)
    changed[unchanged] = False
    assert torch.all(y[..., changed] != x[..., changed])


# ------------------------------------------------------------------------------------------------
# Stacks: orders alternate, the parallel direction is one pass per layer, caches behave.


def _count_made_passes(monkeypatch) -> list[int]:
    calls = [0]
    original = T.MADE.conditioner

    def counting(self, context=None):
        net = original(self, context)

        def wrapped(x, **kwargs):
            calls[0] += 1
            return net(x, **kwargs)

        return wrapped

    monkeypatch.setattr(T.MADE, "conditioner", counting)
    return calls


def test_stack_orders_alternate():
    flow = T.conditional_hidden_flow(4, 2, num_layers=3, hidden_dims=(4,))
    assert [layer.made.order.tolist() for layer in flow.layers] == [
        [0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3]]
    flipped = T.hidden_flow(4, num_layers=2, coupling=True, hidden_dims=(4,), reverse_first=True)
    assert [layer.flip for layer in flipped.layers] == [True, False]


@pytest.mark.parametrize("direction, density_passes, sample_passes", [
    ("af", 3, 3 * D), ("iaf", 3 * D, 3)])
def test_stack_pass_counts(monkeypatch, direction, density_passes, sample_passes):
    """AF: log_prob is one MADE pass per layer; IAF: sampling is. Scoring a fresh sample and
    the log-det after scoring reuse what was computed."""
    flow = T.conditional_hidden_flow(D, C, num_layers=3, hidden_dims=HIDDEN, direction=direction)
    calls = _count_made_passes(monkeypatch)
    ctx = torch.randn(7, C)
    base = dist.Normal(torch.zeros(7, D), 1.0).to_event(1)
    prior = dist.TransformedDistribution(base, [flow.condition(ctx)])
    prior.log_prob(torch.randn(7, D))
    assert calls[0] == density_passes
    calls[0] = 0
    z = prior.rsample()
    assert calls[0] == sample_passes
    calls[0] = 0
    prior.log_prob(z)  # the sample's own score: served by the cache and the stash
    assert calls[0] == 0


def test_stack_log_det_recomputes_along_parallel_direction(monkeypatch):
    flow = T.conditional_hidden_flow(D, C, num_layers=2, hidden_dims=HIDDEN, direction="af")
    t = flow.condition(torch.randn(3, C))
    eps = torch.randn(3, D)
    z = t._call(eps)
    calls = _count_made_passes(monkeypatch)
    ladj = t.log_abs_det_jacobian(eps.clone(), z.clone())
    assert calls[0] == 2  # one pass per layer, never the D-pass direction
    torch.testing.assert_close(ladj, t.log_abs_det_jacobian(eps, z))


def test_conditioned_flows_are_fresh_and_not_stale():
    flow = T.conditional_hidden_flow(D, C, num_layers=2, hidden_dims=HIDDEN)
    ctx = torch.randn(4, C)
    t1, t2 = flow.condition(ctx), flow.condition(ctx)
    assert t1 is not t2
    z = torch.randn(4, D)
    before = t1._inverse(z)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1)
    # the same conditioned object reads the updated parameters (nothing precomputed at condition)
    assert not torch.allclose(t1._inverse(z), before)


def test_state_dict_round_trips_with_weights_only_load():
    import io

    flow = T.conditional_hidden_flow(D, C, num_layers=2, hidden_dims=HIDDEN)
    buffer = io.BytesIO()
    torch.save(flow.state_dict(), buffer)
    buffer.seek(0)
    fresh = T.conditional_hidden_flow(D, C, num_layers=2, hidden_dims=HIDDEN)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    ctx, z = torch.randn(3, C), torch.randn(3, D)
    torch.testing.assert_close(fresh.condition(ctx)._inverse(z), flow.condition(ctx)._inverse(z))
    assert not any("mask" in key or "order" in key for key in flow.state_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("coupling, direction", [(False, "af"), (False, "iaf"), (True, "af")])
def test_flows_run_unchanged_on_cuda(coupling, direction):
    device = torch.device("cuda")
    flow = T.conditional_hidden_flow(D, C, 2, coupling, "nlsq", HIDDEN, direction).to(device)
    t = flow.condition(torch.randn(3, 4, C, device=device))
    eps = torch.randn(2, 3, 4, D, device=device)
    z = t._call(eps)
    assert z.device.type == "cuda" and t.log_abs_det_jacobian(eps, z).device.type == "cuda"
    assert (t._inverse(z) - eps).abs().max() < 1e-4


def test_flows_train_inside_pyro():
    """Gradients reach every parameter through TransformedDistribution.log_prob."""
    for flow in (T.conditional_hidden_flow(D, C, 2, coupling=False, hidden_dims=HIDDEN),
                 T.conditional_hidden_flow(D, C, 2, coupling=True, hidden_dims=HIDDEN),
                 T.hidden_flow(D, 2, direction="iaf", hidden_dims=HIDDEN),
                 T.conditional_nlsq(D, C, (7,)), T.NLSq(D)):
        cond = hasattr(flow, "condition")
        t = flow.condition(torch.randn(6, C)) if cond else flow
        d = dist.TransformedDistribution(dist.Normal(torch.zeros(6, D), 1.0).to_event(1), [t])
        d.log_prob(torch.randn(6, D)).sum().backward()
        for name, p in flow.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------------
# The NLSq map and its cubic inverse


def _nlsq_terms_scale(x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """|a| + |b x| + |c/(1+u²)|: the size of the terms float64 rounds when evaluating g."""
    a, log_b, s, log_d, f = T.NLSqMap._unpack(o)
    u = torch.exp(log_d) * x + f
    c_term = s * torch.exp(log_b - log_d) / (1 + u * u)
    return a.abs() + (torch.exp(log_b) * x).abs() + c_term.abs()


def test_nlsq_forward_log_derivative_matches_autograd_and_is_bounded():
    phi = T.NLSqMap()
    o = 2.0 * torch.randn(2000, 5, dtype=F64)
    x = (3.0 * torch.randn(2000, dtype=F64)).requires_grad_()
    y, log_dydx = phi.forward(x, o)
    dydx = torch.autograd.grad(y.sum(), x)[0]
    torch.testing.assert_close(log_dydx, dydx.log(), atol=1e-12, rtol=1e-12)
    b = torch.exp(0.4 * o[:, 1])
    bound = 1 - _NLSQ_A * 9 / (8 * math.sqrt(3))  # ≈ 0.0325
    assert torch.all(dydx >= bound * b * (1 - 1e-12))


@pytest.mark.parametrize("raw_std", [1.0, 5.0, 10.0])
def test_nlsq_inverse_round_trips_at_extreme_parameters(raw_std):
    """Absolute 1e-10 wherever float64 can evaluate g to 1e-10; in general the error stays
    within a few ulps of the terms g is made of (backward stable), with no NaN/inf."""
    phi = T.NLSqMap()
    g = torch.Generator().manual_seed(int(raw_std))
    n = 20_000
    o = raw_std * torch.randn(n, 5, dtype=F64, generator=g)
    eps = 3.0 * torch.randn(n, dtype=F64, generator=g)
    x = phi.inverse(eps, o)
    assert torch.isfinite(x).all()
    y, _ = phi.forward(x, o)
    err = (y - eps).abs()
    ulps = 4 * EPS64 * _nlsq_terms_scale(x, o)
    assert torch.all(err <= torch.clamp(ulps, min=1e-10))
    well_posed = ulps < 1e-10
    assert well_posed.double().mean() > 0.95 and err[well_posed].max() < 1e-10
    # data side: x -> y -> x, error within the conditioning of g (its terms over its slope)
    x0 = torch.randn(n, dtype=F64, generator=g)
    y0, log_dydx = phi.forward(x0, o)
    x1 = phi.inverse(y0, o)
    cond = 4 * EPS64 * _nlsq_terms_scale(x0, o) / log_dydx.exp()
    assert torch.all((x1 - x0).abs() <= torch.clamp(cond, min=1e-10))
    if raw_std <= 5.0:
        assert (x1 - x0).abs()[cond < 1e-11].max() < 1e-10


def _params_for(w: float, s: float, a: float = 0.3, log_b: float = 0.2, log_d: float = -0.1,
                f: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw outputs o and a noise value y whose inverse problem has the given (w, s)."""
    o = torch.tensor([a, log_b / 0.4, math.atanh(s / _NLSQ_A) / 0.3, log_d / 0.4, f], dtype=F64)
    y = torch.tensor(a + (w - f) * math.exp(log_b - log_d), dtype=F64)
    return o, y


@pytest.mark.parametrize("w, s", [
    (math.sqrt(3.0), 0.4),      # p = 1 - w²/3 ≈ 0 (rounds to 0 or ±1 ulp)
    (-math.sqrt(3.0), -1.2),
    (math.sqrt(3.0) * (1 + 1e-9), 0.0),  # p slightly negative
    (0.0, 0.0),                 # q = 0, p = 1: the root t = 0
    (1.0, 2 / 3 + 2 / 27),      # q = s - 2w/3 - 2w³/27 = 0 with w != 0
    (1e6, 1.4),                 # |w| huge: X -> 1 from above in the cosh branch
    (-1e8, -1.0),
])
def test_nlsq_inverse_at_degenerate_cubics(w, s):
    phi = T.NLSqMap()
    o, y = _params_for(w, s)
    x = phi.inverse(y, o)
    assert torch.isfinite(x)
    y_back, _ = phi.forward(x, o)
    assert abs(y_back - y) <= max(1e-12, 4 * EPS64 * _nlsq_terms_scale(x, o).item())


def test_depressed_cubic_root_guards():
    p = torch.tensor([0.0, 0.0, -0.0, 1e-300, -1e-300, 5e-324, 1.0, -3.0], dtype=F64)
    q = torch.tensor([0.0, 8.0, -27.0, 0.0, 0.0, 0.0, 0.0, 2.0], dtype=F64)
    t = _depressed_cubic_root(p, q)
    assert torch.isfinite(t).all()
    torch.testing.assert_close(t[:6], torch.tensor([0.0, -2.0, 3.0, 0.0, 0.0, 0.0], dtype=F64))
    assert t[6] == 0  # p > 0, q = 0
    # p = -3, q = 2: roots -2 and 1 (double); the largest-magnitude root is -2
    torch.testing.assert_close(t[7], torch.tensor(-2.0, dtype=F64))


def test_depressed_cubic_root_random_single_root_cases():
    g = torch.Generator().manual_seed(1)
    t0 = 10 ** (4 * torch.rand(20000, dtype=F64, generator=g) - 2) * torch.sign(
        torch.randn(20000, dtype=F64, generator=g))
    p = torch.randn(20000, dtype=F64, generator=g) * t0.abs() ** 2
    # keep one real root: the quadratic factor t² + t0 t + (t0² + p) has no real roots
    p = torch.where(4 * (t0 * t0 + p) > t0 * t0, p, -p.abs() * 0.1)
    q = -t0 ** 3 - p * t0
    single = 4 * p ** 3 + 27 * q ** 2 > 1e-6 * q ** 2
    t = _depressed_cubic_root(p[single], q[single])
    residual = (t ** 3 + p[single] * t + q[single]).abs()
    scale = t.abs() ** 3 + (p[single] * t).abs() + q[single].abs()
    assert torch.all(residual <= 1e-9 * scale)


def test_nlsq_forward_gradients_match_finite_differences():
    """The hand-written backward of (y, log dy/dx), for both outputs at once and with params
    broadcasting over x (one parameter row per coordinate, shared across the batch)."""
    phi = T.NLSqMap()
    x = (2.0 * torch.randn(4, 3, dtype=F64)).requires_grad_()
    for o in (3.0 * torch.randn(4, 3, 5, dtype=F64), 3.0 * torch.randn(3, 5, dtype=F64)):
        assert torch.autograd.gradcheck(phi.forward, (x, o.requires_grad_()))
    # each output alone (the other's incoming gradient is then zero)
    o = (3.0 * torch.randn(4, 3, 5, dtype=F64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, o: phi.forward(x, o)[0], (x, o))
    assert torch.autograd.gradcheck(lambda x, o: phi.forward(x, o)[1], (x, o))


def test_nlsq_inverse_gradients_match_finite_differences():
    phi = T.NLSqMap()
    o = (3.0 * torch.randn(6, 5, dtype=F64)).requires_grad_()
    y = (2.0 * torch.randn(6, dtype=F64)).requires_grad_()
    assert torch.autograd.gradcheck(phi.inverse, (y, o))
    # and it is the implicit-function-theorem gradient: dx/dy = 1 / g'(x)
    x = phi.inverse(y, o)
    _, log_dydx = phi.forward(x.detach(), o.detach())
    torch.testing.assert_close(torch.autograd.grad(x.sum(), y)[0], torch.exp(-log_dydx))


def test_nlsq_inverse_float32_in_float32_out():
    o = torch.randn(1000, 5)
    y = torch.randn(1000)
    x = T.NLSqMap().inverse(y, o)
    assert x.dtype == torch.float32
    assert (T.NLSqMap().forward(x, o)[0] - y).abs().max() < 1e-5


def test_affine_map_and_elementwise_near_identity():
    phi = T.AffineMap()
    o = torch.tensor([[1.5, math.log(4.0)]], dtype=F64)
    y, log_dydx = phi.forward(torch.tensor([2.0], dtype=F64), o)
    assert y.item() == 1.5 + 2.0 * 2.0 and log_dydx.item() == pytest.approx(math.log(2.0))
    x = torch.randn(10, 4)
    for flow in (T.nlsq(4), T.affine(4)):
        assert (flow(x) - x).abs().max() < 0.1
    assert isinstance(T.NLSqMap(), T.ElementwiseMap)
    assert T.elementwise_map("affine").num_params == 2
