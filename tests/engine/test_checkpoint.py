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
    restore_param_store,
    save_checkpoint,
    set_rng_state,
)
from pyro_lnf.errors import CheckpointError
from pyro_lnf.models.registry import register_model


@register_model("test_checkpoint_mlp")
class TinyNet(torch.nn.Module):
    name = "tiny"

    def __init__(self, width: int = 3) -> None:
        super().__init__()
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


# ------------------------------------------------------------------------------------------
# a file with the right header but a missing or wrong part: one CheckpointError, never a
# KeyError or TypeError from whichever loader reads that part first

#: Key paths of every part a loader reads (one line each, so a new part is one line here).
PARTS = [
    *[(key,) for key in ("model", "param_store", "optimizer", "rng", "progress", "train_config")],
    *[("model", key) for key in ("name", "class", "config", "state_dict")],
    *[("param_store", key) for key in ("params", "constraints")],
    *[("rng", key) for key in ("python", "numpy", "torch")],
    *[("optimizer", key) for key in ("state", "param_groups")],
]


def _edited(path: Path, keys: tuple, value=None, delete: bool = False) -> None:
    checkpoint = torch.load(path, weights_only=True)
    parent = checkpoint
    for key in keys[:-1]:
        parent = parent[key]
    if delete:
        del parent[keys[-1]]
    else:
        parent[keys[-1]] = value
    torch.save(checkpoint, path)


@pytest.mark.parametrize("keys", PARTS, ids=".".join)
@pytest.mark.parametrize("change", ["deleted", "wrong type"])
def test_a_missing_or_mistyped_part_is_one_checkpoint_error(tmp_path, keys, change):
    _, path = _saved(tmp_path)
    # A wrong type for every part: a list where a dict, string or tensor belongs, and a
    # string where a dict, list or None belongs.
    original = load_checkpoint(path)
    for key in keys:
        original = original[key]
    wrong = "oops" if isinstance(original, (dict, list, type(None))) else [1, 2]
    if keys == ("model", "name"):
        wrong = 3  # None is allowed (an unregistered model), a number is not
    _edited(path, keys, wrong, delete=change == "deleted")
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"checkpoint {path} is damaged: its {'.'.join(keys)}")
    assert "\n" not in message


@pytest.mark.parametrize(
    "keys, value, needle",
    [
        (("model", "state_dict", "linear.weight"), "w", "model.state_dict['linear.weight'] "
                                                        "should be a tensor, but is a str"),
        (("model", "config", "dataset"), 5, "model.config['dataset'] should be a dataset name"),
        (("param_store", "constraints", "tiny$$$linear.bias"), "wobbly", "unknown constraint"),
        (("param_store", "params", "extra"), torch.zeros(1), "'extra' in only one of"),
        (("rng", "torch"), torch.zeros(3), "1-d uint8 tensor"),
        (("rng", "python"), (3, (1, 2), None), "not a state of python's random module"),
        (("optimizer", "param_groups"), ["lr"], "a list of dicts"),
    ],
)
def test_a_wrong_entry_inside_a_part_is_named(tmp_path, keys, value, needle):
    _, path = _saved(tmp_path)
    _edited(path, keys, value)
    with pytest.raises(CheckpointError, match="is damaged") as info:
        load_model(path)
    assert needle in str(info.value)


def test_optional_none_optimizer_and_a_config_without_dataset_are_accepted(tmp_path):
    path = save_checkpoint(tmp_path / "plain.pt", module=TinyNet())  # no optimizer
    assert load_checkpoint(path)["optimizer"] is None
    assert isinstance(load_model(path), TinyNet)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad):
    _, path = _saved(tmp_path)
    checkpoint = load_checkpoint(path)
    checkpoint["model"]["state_dict"]["linear.bias"][1] = bad
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"model.state_dict\['linear.bias'\] holds NaN"):
        load_model(path)
    load_checkpoint(path)  # the file itself is readable: only using the weights is refused


def test_a_config_the_class_refuses_is_one_checkpoint_error(tmp_path):
    _, path = _saved(tmp_path)
    _edited(path, ("model", "config", "width"), -3)
    with pytest.raises(CheckpointError, match="cannot rebuild 'test_checkpoint_mlp' from its "
                                              "config"):
        load_model(path)


def test_fit_to_the_dataset_compares_size_kind_and_special_tokens():
    from types import SimpleNamespace

    from pyro_lnf.checkpoint import check_fits_dataset
    from pyro_lnf.datasets import Vocab

    vocab = Vocab(["<pad>", "<sos>", "<eos>", "a"], unk_index=None, pad_index=0, level="word")
    text = SimpleNamespace(name="toy", kind="categorical", num_features=4, vocab=vocab)
    check_fits_dataset({"kind": "categorical", "num_features": 4}, text, "m.pt")
    check_fits_dataset({"vocab_size": 4, "pad_index": 0, "sos_index": 1, "eos_index": 2},
                       text, "m.pt")
    for config, needle in [
        ({"kind": "categorical", "num_features": 51}, "the model has 51 symbols, the dataset 4"),
        ({"kind": "binary", "num_features": 4}, "reads binary data, the dataset is categorical"),
        ({"vocab_size": 4, "eos_index": 3}, "<eos> has id 3 in the model, 2 in the vocabulary"),
    ]:
        with pytest.raises(CheckpointError, match="m.pt does not fit dataset 'toy'") as info:
            check_fits_dataset(config, text, "m.pt")
        assert needle in str(info.value)
