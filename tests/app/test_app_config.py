"""Typed configs: the paper's presets as (model config, train config) pairs, and options that
a model does not take refused in one line naming the option and the model."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from pyro_lnf.app import cli
from pyro_lnf.app.config import (
    MODELS, LatentFlowConfig, default_config, from_recorded, model_kwargs, preset, with_overrides,
)
from pyro_lnf.errors import ConfigError


def test_presets_hold_the_papers_numbers_with_their_per_dataset_tweaks():
    model, train = preset("iafscf", "ptb_char")
    assert (model.prior, model.flow_layers, model.dropout) == ("iafscf", 3, 0.0)
    assert (train.batch_size, train.particles, train.kl_initial_zero) == (15, 10, 4)
    model, train = preset("afaf", "muse_data")
    assert (model.flow_layers, model.dropout, model.latent_dim) == (5, 0.2, 50)
    assert (train.batch_size, train.grad_accum, train.nll_samples, train.epochs) == (1, 8, 4, 100)
    model, train = preset("svae", "ptb_words")
    assert model_kwargs(model)["kappa"] == 35.0 and train.epochs == 10


def test_configs_are_frozen():
    model, train = preset("afaf", "jsb_chorales")
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.hidden_size = 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        train.lr = 1.0


def test_the_inputless_decoder_takes_its_own_kappa_unless_one_is_given():
    configs = preset("svae", "ptb_words")
    inputless, _ = with_overrides("svae", configs, {"decoder": "inputless"})
    assert model_kwargs(inputless)["kappa"] == 80.0
    given, _ = with_overrides("svae", configs, {"decoder": "inputless", "kappa": 12.0})
    assert model_kwargs(given)["kappa"] == 12.0


@pytest.mark.parametrize(("model", "dataset", "option", "says"), [
    ("lstm", "jsb_chorales", "flow_layers", "--flow-layers does not apply to model 'lstm'"),
    ("afaf", "jsb_chorales", "kappa", "--kappa does not apply to model 'afaf' (only to svae and "
     "nvdm)"),
    ("nvdm", "20news", "decoder", "--decoder does not apply to model 'nvdm' (only to svae)"),
    ("afaf", "jsb_chorales", "epochz", "unknown option(s): epochz"),
])
def test_an_option_the_model_does_not_take_is_refused_naming_both(model, dataset, option, says):
    with pytest.raises(ConfigError) as err:
        with_overrides(model, preset(model, dataset), {option: 3})
    assert str(err.value).startswith(says) and "\n" not in str(err.value)


def test_a_recorded_config_reads_back_as_the_same_config():
    model, _ = with_overrides("afscf", preset("afscf", "jsb_chorales"), {"flow_hidden": [8, 8]})
    recorded = {**dataclasses.asdict(model), "flow_hidden": [8, 8], "dataset": "jsb_chorales"}
    assert from_recorded("afscf", recorded) == model == LatentFlowConfig(
        prior="afscf", flow_hidden=(8, 8))
    assert default_config("lstm") == preset("lstm", "ptb_char")[0]


def test_the_clis_model_choices_are_the_presets():
    param = next(p for p in cli.train.params if p.name == "model")
    assert tuple(param.type.choices) == MODELS


def test_lnf_train_refuses_an_option_of_another_model_in_one_line(monkeypatch, capsys, tmp_path):
    args = ["lnf", "train", "--model", "lstm", "--dataset", "jsb_chorales", "--flow-layers", "3",
            "--out", str(tmp_path / "run")]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: --flow-layers does not apply to model 'lstm'")
    assert not (tmp_path / "run").exists()


def test_the_flow_model_names_are_the_models_priors():
    # The CLI reads the names from the import-free config module, the model from its PRIORS:
    # two lists that must stay one.
    from pyro_lnf.app.config import FLOW_MODELS
    from pyro_lnf.models.lnf import PRIORS

    assert set(FLOW_MODELS) == set(PRIORS)
