"""The model registry records what a checkpoint needs to rebuild a model: the constructor's
arguments, defaults included, as plain data."""

import torch

from pyro_lnf.models.registry import model_registry, register_model


@register_model("test_registry_net", data=("fitted_to",))
class _Net(torch.nn.Module):
    def __init__(self, width: int, *, hidden: tuple[int, ...] = (3, 4), fitted_to=None,
                 dataset: str | None = None) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width, hidden[0])


def test_config_is_every_argument_with_defaults_as_plain_data_less_the_data():
    net = _Net(2, fitted_to=torch.arange(5), dataset="toy")
    assert net.config == {"width": 2, "hidden": [3, 4], "dataset": "toy"}
    assert model_registry()["test_registry_net"] is _Net


def test_the_config_rebuilds_an_equal_model():
    net = _Net(3, hidden=(5,))
    again = _Net(**net.config)
    again.load_state_dict(net.state_dict())
    assert again.config == net.config == {"width": 3, "hidden": [5], "dataset": None}
