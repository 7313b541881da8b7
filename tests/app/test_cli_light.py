"""`lnf --help` and usage errors do not import torch or Pyro (they take seconds to load), and
the lazy `pyro_lnf` package still exports every public name. Checked through `sys.modules` in a
fresh interpreter, not by timing."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from helpers import REPO

from pyro_lnf.app import cli

HEAVY = ("torch", "pyro", "numpy", "matplotlib", "pretty_midi")

#: What `pyro_lnf/__init__.py` exported before it became lazy, besides the flows' own names.
PUBLIC = [
    "NVDM", "Batch", "CheckpointError", "ChecksumError", "ConfigError", "Dataset",
    "DatasetError", "DownloadError", "HypersphericalUniform", "LSTMBaseline", "LatentFlowModel",
    "LengthDistribution", "LnfError", "SentenceVAE", "TemporalFlow", "TemporalFlowDistribution",
    "TrainConfig", "VonMisesFisher", "bulk_precision", "importance_log_likelihood",
    "iterate_batches", "keep_freed_memory", "load_checkpoint", "load_dataset", "load_model",
    "log_bessel_iv", "register_model", "save_checkpoint",
]


def heavy_modules_after(code: str) -> tuple[list[str], str]:
    """Run ``code`` in a fresh interpreter in the repository root: (heavy modules it loaded,
    what it printed)."""
    probe = (
        "import sys, json\n"
        f"{code}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    *printed, last = done.stdout.strip().splitlines()
    return json.loads(last), "\n".join(printed) + done.stderr


def run_cli(*args: str) -> str:
    return (
        f"sys.argv = ['lnf', {', '.join(map(repr, args))}]\n"
        "import cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass"
    )


@pytest.mark.parametrize("args", [
    ("--help",),
    ("sample", "--help"),
    ("train", "--model", "nope", "--dataset", "jsb_chorales", "--out", "x"),  # a usage error
    ("evaluate", "x.pt", "--samples", "0"),
])
def test_help_and_usage_errors_import_no_torch(args):
    heavy, printed = heavy_modules_after(run_cli(*args))
    assert heavy == [], printed
    assert "Usage:" in printed or "error:" in printed


def test_importing_the_package_and_its_errors_imports_no_torch():
    heavy, printed = heavy_modules_after("import pyro_lnf, pyro_lnf.errors, pyro_lnf.nn.checks")
    assert heavy == [], printed


def test_every_public_name_still_imports_from_the_package():
    import pyro_lnf
    import pyro_lnf.transforms

    expected = sorted([*PUBLIC, *pyro_lnf.transforms.__all__])
    assert pyro_lnf.__all__ == expected
    for name in expected:
        assert getattr(pyro_lnf, name) is not None, name
    namespace: dict = {}
    exec("from pyro_lnf import *", namespace)
    assert set(expected) <= set(namespace)
    assert set(expected) <= set(dir(pyro_lnf))
    from pyro_lnf import LatentFlowModel, NLSq
    from pyro_lnf.models import LatentFlowModel as direct

    assert LatentFlowModel is direct and NLSq is pyro_lnf.transforms.NLSq
    with pytest.raises(AttributeError):
        pyro_lnf.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        exec("from pyro_lnf import no_such_name", {})


def choices(command: click.Command, option: str) -> tuple[str, ...]:
    param = next(p for p in command.params if p.name == option)
    return tuple(param.type.choices)


def test_the_clis_light_choices_match_the_registries():
    from pyro_lnf.datasets import DATASETS
    from pyro_lnf.nn.checks import DATASET_NAMES
    from pyro_lnf.app.config import MODELS

    assert tuple(DATASETS) == DATASET_NAMES
    assert choices(cli.train, "dataset") == DATASET_NAMES
    assert choices(cli.train, "model") == MODELS


def test_python_m_pyro_lnf_is_the_lnf_command():
    """What `torchrun -m pyro_lnf train ...` runs: the same command, with its one-line errors."""
    done = subprocess.run([sys.executable, "-m", "pyro_lnf", "train", "--model", "nope"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("error: Invalid value for '--model'")
    assert len(done.stderr.splitlines()) == 1
