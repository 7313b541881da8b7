"""Checkpoints: round trips, the model registry, and refusal of bad or malicious files."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from pyro.distributions import constraints

from pyro_lnf.checkpoint import (
    FORMAT,
    get_rng_state,
    load_checkpoint,
    load_model,
    register_model,
    restore_param_store,
    save_checkpoint,
    set_rng_state,
)
from pyro_lnf.errors import CheckpointError


@register_model("test_checkpoint_mlp")
class TinyNet(torch.nn.Module):
    name = "tiny"

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.config = {"width": width}
        self.linear = torch.nn.Linear(width, 2)
        self.register_buffer("counts", torch.arange(width, dtype=torch.float32))


class Unregistered(TinyNet):
    pass


def _saved(tmp_path: Path, **kwargs) -> tuple[TinyNet, Path]:
    net = TinyNet(width=4)
    pyro.module(net.name, net)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    net.linear(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "ckpt.pt", module=net, optimizer=optimizer,
                           progress={"epoch": 3, "best": 1.5}, train_config={"seed": 1}, **kwargs)
    return net, path


def test_round_trip_rebuilds_the_model_and_its_state(tmp_path):
    net, path = _saved(tmp_path)
    checkpoint = load_checkpoint(path)
    assert checkpoint["format"] == FORMAT and checkpoint["library"]
    assert checkpoint["model"]["name"] == "test_checkpoint_mlp"
    assert checkpoint["model"]["class"].endswith("TinyNet")
    assert checkpoint["progress"] == {"epoch": 3, "best": 1.5}
    assert checkpoint["train_config"] == {"seed": 1}
    assert checkpoint["optimizer"]["state"][0]["step"].item() == 1
    loaded = load_model(path)
    assert type(loaded) is TinyNet and loaded.config == {"width": 4} and not loaded.training
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    # The param store now holds the loaded module's own tensors, not stale copies.
    assert pyro.param("tiny$$$linear.weight") is loaded.linear.weight


def test_param_store_entries_outside_the_module_keep_their_constraint(tmp_path):
    scale = pyro.param("noise_scale", torch.tensor([0.5, 2.0]), constraint=constraints.positive)
    _, path = _saved(tmp_path)
    pyro.clear_param_store()
    module = load_model(path)
    torch.testing.assert_close(pyro.param("noise_scale"), scale.detach())
    assert pyro.get_param_store()._constraints["noise_scale"] is constraints.positive
    assert pyro.param("tiny$$$linear.bias") is module.linear.bias


def test_unstorable_constraint_is_refused_and_leaves_the_old_file(tmp_path):
    _, path = _saved(tmp_path)
    before = path.read_bytes()
    pyro.param("odd", torch.tensor(3.0), constraint=constraints.greater_than(1.0))
    with pytest.raises(CheckpointError, match="'odd' has constraint"):
        save_checkpoint(path, module=TinyNet())
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_restore_param_store_without_module(tmp_path):
    _, path = _saved(tmp_path)
    pyro.get_param_store().clear()
    restore_param_store(load_checkpoint(path))
    assert set(pyro.get_param_store().keys()) == {"tiny$$$linear.weight", "tiny$$$linear.bias"}


def test_rng_state_round_trip():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = get_rng_state()
    first = (random.random(), np.random.rand(3), torch.randn(3))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    set_rng_state(state)
    second = (random.random(), np.random.rand(3), torch.randn(3))
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])
    assert torch.equal(first[2], second[2])


def test_rng_state_survives_a_weights_only_file(tmp_path):
    _, path = _saved(tmp_path)
    expected = torch.randn(4)  # drawn right after the state was saved ...
    torch.manual_seed(5)
    set_rng_state(load_checkpoint(path)["rng"])
    assert torch.equal(torch.randn(4), expected)  # ... so restoring it redraws the same


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing\.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_truncated_file(tmp_path):
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"ckpt\.pt is truncated, corrupt or unsafe"):
        load_checkpoint(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x00\xffnot a checkpoint at all" * 20)
    with pytest.raises(CheckpointError, match=r"garbage\.pt is truncated, corrupt or unsafe"):
        load_model(path)


class _Exploit:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_is_refused_not_executed(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "format_version": 1, "model": _Exploit(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"evil\.pt is truncated, corrupt or unsafe"):
        load_checkpoint(path)
    assert not marker.exists()


def test_file_of_another_format(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": TinyNet().state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"weights\.pt is not a pyro-lnf checkpoint"):
        load_checkpoint(path)


def test_newer_format_version(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format": FORMAT, "format_version": 99}, path)
    with pytest.raises(CheckpointError, match="format version 99.*upgrade pyro-lnf"):
        load_checkpoint(path)


def test_unregistered_model_cannot_be_rebuilt(tmp_path):
    path = save_checkpoint(tmp_path / "u.pt", module=Unregistered())
    assert load_checkpoint(path)["model"]["name"] is None
    with pytest.raises(CheckpointError, match="not registered"):
        load_model(path)


def test_weights_that_do_not_fit(tmp_path):
    _, path = _saved(tmp_path)
    checkpoint = load_checkpoint(path)
    checkpoint["model"]["config"] = {"width": 7}
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="weights do not fit 'test_checkpoint_mlp'"):
        load_model(path)


def test_registry_refuses_a_second_class_under_one_name():
    with pytest.raises(ValueError, match="already registered"):
        register_model("test_checkpoint_mlp")(Unregistered)
