"""The private torch, Pyro and numpy APIs pyro-lnf relies on, one test each.

Each is used in exactly one place (named below). A test here exercises exactly the behaviour
that place assumes, so an upstream change fails here, with a message naming the private API,
rather than as a wrong gradient, a wrong checkpoint or a wrong KL somewhere downstream.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer import Trace_ELBO

from pyro_lnf.checkpoint import param_constraint
from pyro_lnf.datasets.polyphonic import RestrictedUnpickler
from pyro_lnf.models.length import LengthModel
from pyro_lnf.nn.weight_bank import current_graph_task
from pyro_lnf.objective import Objective


def changed(api: str, what: str) -> str:
    return f"upstream change in the private {api}: {what}; see where pyro-lnf uses it"


# --- torch._C._current_graph_task_id (pyro_lnf.nn.weight_bank.current_graph_task) ------------


class _SeesTask(torch.autograd.Function):
    """Records the graph task its backward runs in."""

    seen: list[int] = []

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        _SeesTask.seen.append(current_graph_task())
        return grad


def test_current_graph_task_id_tells_backward_passes_apart_and_is_minus_one_outside():
    api = "torch._C._current_graph_task_id"
    assert current_graph_task() == -1, changed(api, "it is no longer -1 outside backward")
    x = torch.ones(2, requires_grad=True)
    _SeesTask.seen = []
    y = _SeesTask.apply(x) * 2
    (y.sum() + _SeesTask.apply(x).sum()).backward()  # one pass, two nodes
    torch.autograd.grad(_SeesTask.apply(x).sum(), x)  # a second pass
    first, same, second = _SeesTask.seen
    assert first == same >= 0, changed(api, "the nodes of one backward pass see different ids")
    assert second != first, changed(api, "two backward passes share an id")
    assert current_graph_task() == -1, changed(api, "it is not -1 again after backward")


# --- ParamStoreDict._constraints (pyro_lnf.checkpoint.param_constraint) -----------------------


def test_param_store_constraints_hold_the_constraint_given_to_pyro_param():
    api = "pyro ParamStoreDict._constraints"
    pyro.clear_param_store()
    pyro.param("scale", torch.ones(2), constraint=constraints.positive)
    pyro.module("net", torch.nn.Linear(2, 1))
    store = pyro.get_param_store()
    assert param_constraint(store, "scale") is constraints.positive, changed(
        api, "it no longer maps a name to the constraint given to pyro.param")
    for name in ("net$$$weight", "net$$$bias"):
        assert param_constraint(store, name) is constraints.real, changed(
            api, "a module's parameter is no longer unconstrained (real)")
    unconstrained = dict(store.named_parameters())["scale"]
    assert torch.allclose(unconstrained, torch.zeros(2)), changed(
        api, "named_parameters no longer yields the unconstrained values it goes with")
    pyro.clear_param_store()


# --- Trace_ELBO._get_traces (pyro_lnf.objective._TrackedELBO) --------------------------------


class _Gaussian(torch.nn.Module):
    """z ~ N(0, 1) per sequence, x ~ N(z, 1); guide N(loc, 1): KL = loc² / 2 on average."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.tensor(0.5))

    def model(self, x: torch.Tensor, beta: float) -> None:
        pyro.module("gaussian", self)
        with pyro.plate("data", x.shape[0]), pyro.poutine.scale(scale=beta):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("obs", x.shape[0]):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(self, x: torch.Tensor, beta: float) -> None:
        pyro.module("gaussian", self)
        with pyro.plate("data", x.shape[0]), pyro.poutine.scale(scale=beta):
            pyro.sample("z", dist.Normal(self.loc, 1.0))


def test_get_traces_yields_the_model_and_guide_trace_pairs_differentiable_loss_scores():
    api = "pyro Trace_ELBO._get_traces"
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    module = _Gaussian()
    objective = Objective(module, particles=3, jit=False)
    seen = []
    original = type(objective.elbo)._get_traces

    def spy(elbo, *args):
        for pair in original(elbo, *args):
            seen.append(pair)
            yield pair

    x = torch.zeros(4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(objective.elbo), "_get_traces", spy)
        loss, kl = objective(x, 0.25)
    assert len(seen) == 1, changed(api, "vectorized particles no longer give one trace pair")
    model_trace, guide_trace = seen[0]
    z = guide_trace.nodes["z"]
    assert z["value"].shape == (3, 4), changed(api, "the particles are not a leading dim")
    assert z["scale"] == 0.25 and "log_prob" in z, changed(
        api, "the guide trace's sites lack the scale or the log_prob scored by the loss")
    assert model_trace.nodes["z"]["value"] is z["value"], changed(
        api, "the model trace was not replayed against the guide trace")
    sample = z["value"].detach()
    log_q, log_p = dist.Normal(0.5, 1.0).log_prob(sample), dist.Normal(0.0, 1.0).log_prob(sample)
    assert kl == pytest.approx(float((log_q - log_p).sum()) / 3, rel=1e-5), changed(
        api, "the KL read from the kept traces is not that of the scored samples")
    expected = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(0)
    again = expected.differentiable_loss(module.model, module.guide, x, 0.25)
    assert torch.equal(loss, again), changed(api, "overriding it changes the loss")
    pyro.clear_param_store()


# --- nn.Module._load_from_state_dict (pyro_lnf.models.length.LengthModel) ---------------------


def test_load_from_state_dict_lets_a_module_resize_a_buffer_before_loading():
    api = "torch nn.Module._load_from_state_dict"
    fitted = LengthModel([1, 2, 2, 5]).state_dict()
    parent = torch.nn.Module()
    parent.length = LengthModel()  # an empty table, as when a model is rebuilt to be loaded
    parent.load_state_dict({f"length.{k}": v for k, v in fitted.items()})
    assert torch.equal(parent.length.log_probs_table, fitted["log_probs_table"]), changed(
        api, "it is not called with the submodule's prefix before the buffers are copied")


# --- numpy._core.multiarray.scalar (pyro_lnf.datasets.polyphonic) ----------------------------


def test_numpy_scalars_pickle_through_the_global_the_dataset_unpickler_allows():
    api = "numpy._core.multiarray.scalar"
    data = pickle.dumps({"train": [[np.float64(60.0)]]}, protocol=2)
    try:
        loaded = RestrictedUnpickler(io.BytesIO(data), source="x.pickle",
                                     encoding="latin1").load()
    except Exception as err:  # the unpickler refuses an unknown global
        pytest.fail(changed(api, f"a numpy scalar no longer unpickles: {err}"))
    assert loaded["train"][0][0] == 60.0, changed(api, "the scalar's value changed")
