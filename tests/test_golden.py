"""Golden figures: the library's numbers before the redesign, to hold after it.

**These figures must not change in a refactor.** They were recorded from the code as it was
before the modules moved into subpackages (see ``RECORDED_AT``); a move, a rename, typed configs
or ``generate()`` methods change no number here. A change of behaviour (another init order, a
changed loss, another sampler) that moves a figure needs a deliberate update of the constant,
with the reason in the commit message, never a silent re-record.

What is pinned, every figure seeded:

1. ``TRAIN``: the training loss (and KL, and one validation batch's -ELBO) of two epochs of
   three fixed batches for every model kind: ``afaf``, ``afscf``, ``iafscf``, ``indep``, the
   ``--transform affine`` variant of ``afscf`` and the LSTM baseline on JSB Chorales, ``iafscf``
   and the LSTM on PTB characters, ``svae`` (Gaussian and vMF) on PTB words and ``nvdm``
   (Gaussian and vMF) on 20 Newsgroups. The model is built and trained the way ``lnf train``
   does it (the dataset's preset, ``torch.manual_seed(seed)`` then ``build_model``, then
   ``train``), only tiny and on the first three batches of epoch 0. ``LSTM_EPOCH``: one whole
   ``run_training`` epoch of a tiny LSTM on JSB Chorales, the ``lnf train`` path end to end.
2. ``NLL``: the seeded importance-sampled NLL (``evaluate_checkpoint``, K = 2, seed 0) of three
   tiny checkpoints in ``tests/fixtures/`` written by the pre-redesign code: ``afaf`` and the
   LSTM on JSB Chorales, a vMF ``svae`` on PTB words. They must keep loading (a redesign that
   renames state-dict keys migrates them on load).
3. ``SAMPLES``: a seeded ``sample_checkpoint`` from each fixture: the lengths and the sum of
   the sampled piano roll, or the sampled sentences.
4. ``FLOWS``: output and log|det J| of each flow family (AF, IAF, SCF; NLSq and affine) on a
   fixed input, with a seeded initialisation.

Tolerance: float32 on another CPU (AVX2 vs AVX-512 kernels) differs in the last bits, and a few
optimizer steps carry that along, so figures compare at a relative 2e-5 (absolute 1e-6 for
figures near zero); any real change of behaviour moves them by far more. The test passes with
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` as well as without.

To print the figures of the current code (when a deliberate change needs new ones), run
``LNF_DATA_DIR=... python tests/test_golden.py``; ``--write-fixtures`` writes the checkpoints
(only where none exists: the committed ones are the pre-redesign files and stay as they are).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: the library of this checkout, not an installed one
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pyro_lnf.checkpoint import save_checkpoint  # noqa: E402
from pyro_lnf.datasets import Dataset, load_dataset  # noqa: E402
from pyro_lnf.app.run import (  # noqa: E402
    build_model, dataset_batches, evaluate_checkpoint, run_training,
)
from pyro_lnf.app.config import preset, with_overrides  # noqa: E402
from pyro_lnf.app.sampling import sample_checkpoint  # noqa: E402
from pyro_lnf.train import METRICS, TrainConfig, train  # noqa: E402
from pyro_lnf.transforms import autoregressive_flow, coupling_flow  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REL, ABS = 2e-5, 1e-6

#: Where the figures come from.
RECORDED_AT = "commit be32a28 (branch golden, before the redesign), Intel(R) Xeon(R) Processor"

# ------------------------------------------------------------------------------------------
# the cases

#: Tiny sizes; ``embedding_dim``, ``flow_hidden``, ``lstm_layers`` and ``length_dim`` are
#: model options ``lnf train`` has no flag for (it keeps the paper's).
TINY_FLOW = dict(hidden_size=8, latent_dim=4, flow_layers=1)
TINY_FLOW_EXTRA = dict(embedding_dim=8, flow_hidden=(8,), lstm_layers=1, length_dim=4)
TINY_LSTM = dict(hidden_size=8)
TINY_LSTM_EXTRA = dict(embedding_dim=8, lstm_layers=1, length_dim=4)
TINY_SVAE = dict(hidden_size=4, latent_dim=4)
TINY_SVAE_EXTRA = dict(embedding_dim=4)
TINY_NVDM = dict(hidden_size=8, latent_dim=4)

#: name: (model, dataset, options as ``lnf train`` takes them, further constructor options).
CASES: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "afaf": ("afaf", "jsb_chorales", TINY_FLOW, TINY_FLOW_EXTRA),
    "afscf": ("afscf", "jsb_chorales", TINY_FLOW, TINY_FLOW_EXTRA),
    "iafscf": ("iafscf", "jsb_chorales", TINY_FLOW, TINY_FLOW_EXTRA),
    "indep": ("indep", "jsb_chorales", TINY_FLOW, TINY_FLOW_EXTRA),
    "afscf_affine": ("afscf", "jsb_chorales", {**TINY_FLOW, "transform": "affine"},
                     TINY_FLOW_EXTRA),
    "lstm": ("lstm", "jsb_chorales", TINY_LSTM, TINY_LSTM_EXTRA),
    "iafscf_char": ("iafscf", "ptb_char", TINY_FLOW, TINY_FLOW_EXTRA),
    "lstm_char": ("lstm", "ptb_char", TINY_LSTM, TINY_LSTM_EXTRA),
    "svae_gaussian": ("svae", "ptb_words", {**TINY_SVAE, "latent": "gaussian"}, TINY_SVAE_EXTRA),
    "svae_vmf": ("svae", "ptb_words", {**TINY_SVAE, "latent": "vmf"}, TINY_SVAE_EXTRA),
    "nvdm_gaussian": ("nvdm", "20news", {**TINY_NVDM, "latent": "gaussian"}, {}),
    "nvdm_vmf": ("nvdm", "20news", {**TINY_NVDM, "latent": "vmf"}, {}),
}
STEPS, EPOCHS = 3, 2

#: The checkpoints in ``tests/fixtures/``: name -> the case trained to make it (svae smaller
#: still: its 10k-word embedding and output layer dominate the file).
FIXTURE_CASES: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "afaf": CASES["afaf"],
    "lstm": CASES["lstm"],
    "svae_vmf": ("svae", "ptb_words", dict(hidden_size=1, latent_dim=4, latent="vmf"),
                 dict(embedding_dim=1)),
}


#: Fixtures that also hold Pyro's param store, as a ``last.pt`` of ``lnf train`` does (the
#: others leave it out: it would store every weight twice).
WITH_PARAM_STORE = ("lstm",)


def fixture_path(name: str) -> Path:
    return FIXTURES / f"golden_{name}.pt"


# ------------------------------------------------------------------------------------------
# computing the figures

_DATASETS: dict[str, Dataset] = {}


def _dataset(name: str, data_dir: str | Path) -> Dataset:
    if name not in _DATASETS:
        _DATASETS[name] = load_dataset(name, data_dir=data_dir)
    return _DATASETS[name]


def train_case(case: tuple, data_dir: str | Path, out: Path) -> tuple[torch.nn.Module,
                                                                      TrainConfig, list[dict]]:
    """Train one case as ``lnf train`` would, on the first ``STEPS`` batches of epoch 0 for
    ``EPOCHS`` epochs and one validation batch; the model, its config and the metrics lines."""
    model, dataset_name, options, extra = case
    dataset = _dataset(dataset_name, data_dir)
    settings = {**options, **extra, "epochs": EPOCHS, "nll_every": 0, "quiet": True,
                "out": str(out)}
    model_config, config = with_overrides(model, preset(model, dataset_name), settings)
    torch.manual_seed(config.seed)  # as run_training: the initial weights are part of the run
    module = build_model(model_config, dataset)
    batches = list(dataset_batches(dataset, "train", config, train=True)(0))[:STEPS]
    valid = list(dataset_batches(dataset, "valid", config, train=False)(0))[:1]
    train(module, batches, valid, config)
    lines = [json.loads(line) for line in (out / METRICS).read_text().splitlines()]
    return module, config, lines


def train_figures(case: tuple, data_dir: str | Path, out: Path) -> list[float]:
    """Per epoch: train loss, train KL, validation -ELBO at beta = 1 (nats per unit)."""
    _, _, lines = train_case(case, data_dir, out)
    return [float(line[key]) for line in lines
            for key in ("train_loss", "train_kl", "valid_loss_beta1")]


def lstm_epoch_figures(data_dir: str | Path, out: Path) -> list[float]:
    """One whole epoch of ``run_training`` (the ``lnf train`` path) of a tiny LSTM on JSB."""
    summary = run_training("lstm", "jsb_chorales", data_dir=str(data_dir), overrides=dict(
        epochs=1, hidden_size=8, quiet=True, nll_every=0, out=str(out)))
    m = summary.last_metrics
    return [float(summary.steps), m["train_loss"], m["valid_loss_beta1"]]


def nll_figures(name: str, data_dir: str | Path) -> list[float]:
    """IS NLL and -ELBO per unit (per token and the analytic KL for the sentence VAE) of a
    fixture on the validation split, K = 2, seed 0."""
    result = evaluate_checkpoint(str(fixture_path(name)), split="valid", num_samples=2, seed=0,
                                 data_dir=str(data_dir), quiet=True)
    if "nll_is_nats_per_token" in result:  # a sentence VAE
        return [result["nll_is_nats_per_token"], result["nll_elbo_nats_per_token"],
                result["analytic_kl_nats_per_sequence"]]
    return [result["nll_nats_per_unit"], result["elbo_loss_nats_per_unit"]]


def sample_figures(name: str, data_dir: str | Path, out: Path) -> dict[str, Any]:
    """A seeded sample of a fixture: lengths and the roll's sum, or the sentences."""
    if name == "svae_vmf":
        result = sample_checkpoint(fixture_path(name), out, num=3, length=12, seed=0,
                                   formats=("txt",), data_dir=str(data_dir))
        return dict(lengths=result.lengths, texts=result.texts)
    result = sample_checkpoint(fixture_path(name), out, num=3, seed=0, formats=("npz",))
    with __import__("numpy").load(out / "samples.npz") as arrays:
        x = torch.as_tensor(arrays["x"])
    steps = torch.arange(1, x.shape[1] + 1, dtype=torch.float64)
    return dict(lengths=result.lengths, notes=int(x.sum()),
                weighted=float((x.double().sum(-1) * steps).sum()))


FLOW_KINDS = ("af", "iaf", "scf")


def flow_figures(kind: str, transform: str) -> list[float]:
    """``y`` (3 x 4, flattened) and log|det J| (3) of a flow seeded at 0 on ``randn`` seeded
    at 1, in the flow's sampling direction (noise to sample)."""
    torch.manual_seed(0)
    if kind == "scf":
        flow = coupling_flow(4, transform, (8,))
    else:
        flow = autoregressive_flow(4, transform, kind, (8,))
    torch.manual_seed(1)
    x = torch.randn(3, 4)
    with torch.no_grad():
        y = flow(x)
        ladj = flow.log_abs_det_jacobian(x, y)
    return [*y.flatten().tolist(), *ladj.tolist()]


# ------------------------------------------------------------------------------------------
# the recorded figures (RECORDED_AT)

# fmt: off
TRAIN: dict[str, list[float]] = {
    'afaf': [60.009140497205564, 0.5620333839008826, 60.31477526105723, 59.863366446292254, 0.5580526537047608, 60.17137776547126],
    'afscf': [60.00913943225191, 0.4055880314651206, 60.176269058109256, 59.8633653813386, 0.42120705774072215, 60.03882949638025],
    'iafscf': [60.00913943225191, 0.40558884682026136, 60.17626956764544, 59.8633653813386, 0.4212078730958629, 60.038830369870865],
    'indep': [60.009703857688116, 0.6088541711039736, 60.32502894893457, 59.86353364401581, 0.5727289796785544, 60.20779864789477],
    'afscf_affine': [60.00913943225191, 0.4050042538242486, 60.17492082535545, 59.8633653813386, 0.4198471618452665, 60.03726398283766],
    'lstm': [59.790501567764885, 0.0, 59.12034488341969, 59.51909104736054, 0.0, 58.842004963771046],
    'iafscf_char': [3.9409452387971697, 0.439327934601022, 4.689828167442514, 3.9365338787342767, 0.4426649162244497, 4.692500555214762],
    'lstm_char': [3.9410549331761007, 0.0, 4.2889032444032305, 3.934280476120283, 0.0, 4.283223160174715],
    'svae_gaussian': [9.312425211708394, 0.03911640015547335, 9.461739109680716, 9.298208724533628, 0.039743521778853895, 9.445533026636173],
    'svae_vmf': [9.511911233968458, 0.1984739982443928, 10.544181806851277, 9.49261921061917, 0.19067028496975869, 10.506605570295216],
    'nvdm_gaussian': [7.712608327389444, 0.00878429352982068, 7.700146824859532, 7.702262170114123, 0.009266923586074024, 7.706436448351153],
    'nvdm_vmf': [7.737618803495007, 0.06163094992644436, 7.740775518470211, 7.723394481098431, 0.060905451754190446, 7.734706528556831],
}
LSTM_EPOCH: list[float] = [16.0, 36.66995819344008, 18.494022038310142]
NLL: dict[str, list[float]] = {
    'afaf': [60.28241960999292, 60.33386358332053],
    'lstm': [59.37941029235918, 59.37941029235918],
    'svae_vmf': [9.619521209293746, 9.632761746890633, 4.080713272094727],
}
SAMPLES: dict[str, dict[str, Any]] = {
    'afaf': {'lengths': [152, 79, 60], 'notes': 12706, 'weighted': 722960.0},
    'lstm': {'lengths': [152, 79, 60], 'notes': 12530, 'weighted': 712867.0},
    'svae_vmf': {'lengths': [12, 12, 12], 'texts': ['stone able measures enviropact scrambling whichever economists proceedings sen ill revco justify', 'fearful per-share gas unscrupulous spielvogel paterson summoned right courtaulds hopefully closely profitable', 'intelligence lion plummet furriers delicate voters citicorp one-third rescue store sweep reproductive']},
}
FLOWS: dict[str, list[float]] = {
    'af_nlsq': [0.4650735855102539, 0.5220704078674316, 0.0918145477771759, 0.9277808666229248, -0.5323023200035095, 0.04857434704899788, -1.4548008441925049, 0.6923099160194397, -1.010763168334961, -0.3762367069721222, -0.8538304567337036, 0.2604532241821289, 0.05408070236444473, -0.1509544998407364, -0.2010534107685089],
    'af_affine': [0.661538302898407, 0.17455905675888062, -0.2441781908273697, 0.28952234983444214, -0.4688275456428528, -0.212347611784935, -1.6602160930633545, 0.04677826911211014, -1.0533772706985474, -0.5669791102409363, -1.0965569019317627, -0.39896947145462036, -0.1967075616121292, -0.19665110111236572, -0.1967102587223053],
    'iaf_nlsq': [0.4650735855102539, 0.5220732092857361, 0.09187281876802444, 0.9278178811073303, -0.5323023200035095, 0.048588238656520844, -1.4547759294509888, 0.6923157572746277, -1.010763168334961, -0.3762392997741699, -0.8538383841514587, 0.260456383228302, 0.0541066899895668, -0.15094050765037537, -0.20105218887329102],
    'iaf_affine': [0.661538302898407, 0.17455905675888062, -0.24417978525161743, 0.2894560694694519, -0.4688275456428528, -0.212349995970726, -1.6602234840393066, 0.046767860651016235, -1.0533772706985474, -0.5669829845428467, -1.096564531326294, -0.398969829082489, -0.19671666622161865, -0.19665062427520752, -0.1967083364725113],
    'scf_nlsq': [0.6613521575927734, 0.266924113035202, 0.06274380534887314, 0.6190251708030701, -0.4519059658050537, -0.16613022983074188, -1.5231564044952393, 0.38072288036346436, -1.0276086330413818, -0.563052773475647, -0.8922408223152161, -0.06017521768808365, -0.001097245141863823, 0.00028670550091192126, 0.0004431850975379348],
    'scf_affine': [0.6613521575927734, 0.266924113035202, 0.06648068875074387, 0.6264155507087708, -0.4519059658050537, -0.16613022983074188, -1.5246646404266357, 0.38073596358299255, -1.0276086330413818, -0.563052773475647, -0.8962269425392151, -0.06003669649362564, 0.001423517009243369, 0.00034243398113176227, 0.0009495029225945473],
}
# fmt: on


# ------------------------------------------------------------------------------------------
# the tests


def _close(got: list[float], want: list[float]) -> None:
    assert got == pytest.approx(want, rel=REL, abs=ABS), f"got {got!r}"


@pytest.fixture(autouse=True)
def _seeded():
    pyro.set_rng_seed(0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_loss(name, data_dir, tmp_path):
    _close(train_figures(CASES[name], data_dir, tmp_path), TRAIN[name])


def test_lstm_epoch_of_run_training(data_dir, tmp_path):
    _close(lstm_epoch_figures(data_dir, tmp_path), LSTM_EPOCH)


@pytest.mark.parametrize("name", sorted(FIXTURE_CASES))
def test_checkpoint_nll(name, data_dir):
    _close(nll_figures(name, data_dir), NLL[name])


@pytest.mark.parametrize("name", sorted(FIXTURE_CASES))
def test_checkpoint_sample(name, data_dir, tmp_path):
    got, want = sample_figures(name, data_dir, tmp_path), SAMPLES[name]
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=REL), key
        else:
            assert got[key] == value, key


@pytest.mark.parametrize("transform", ["nlsq", "affine"])
@pytest.mark.parametrize("kind", FLOW_KINDS)
def test_flow(kind, transform):
    _close(flow_figures(kind, transform), FLOWS[f"{kind}_{transform}"])


# ------------------------------------------------------------------------------------------
# recording


def write_fixtures(data_dir: str | Path, work: Path) -> None:
    """Train and save the fixture checkpoints that do not exist yet (model weights, the run's
    progress and options, the LSTM's param store; no optimizer or generator states, to keep
    them small)."""
    FIXTURES.mkdir(exist_ok=True)
    for name, case in FIXTURE_CASES.items():
        path = fixture_path(name)
        if path.exists():
            print(f"{path} exists: kept")
            continue
        pyro.set_rng_seed(0)
        out = work / name
        out.mkdir(parents=True)
        module, config, lines = train_case(case, data_dir, out)
        if name not in WITH_PARAM_STORE:
            pyro.clear_param_store()  # the weights once, not also as Pyro's parameters
        save_checkpoint(path, module=module, progress={"epoch": lines[-1]["epoch"] + 1},
                        train_config=config.to_dict(), rng={})
        print(f"wrote {path} ({path.stat().st_size} bytes)")


def _print_figures(data_dir: str | Path, work: Path) -> None:
    def run(name, fn, *args):
        pyro.set_rng_seed(0)
        (work / name).mkdir(parents=True, exist_ok=True)
        return fn(*args, work / name) if fn not in (nll_figures,) else fn(*args)

    print("TRAIN = {")
    for name, case in CASES.items():
        print(f"    {name!r}: {run('train_' + name, train_figures, case, data_dir)!r},")
    print("}")
    print(f"LSTM_EPOCH = {run('epoch', lstm_epoch_figures, data_dir)!r}")
    print("NLL = {")
    for name in FIXTURE_CASES:
        print(f"    {name!r}: {run('nll_' + name, nll_figures, name, data_dir)!r},")
    print("}")
    print("SAMPLES = {")
    for name in FIXTURE_CASES:
        print(f"    {name!r}: {run('sample_' + name, sample_figures, name, data_dir)!r},")
    print("}")
    print("FLOWS = {")
    for kind in FLOW_KINDS:
        for transform in ("nlsq", "affine"):
            print(f"    '{kind}_{transform}': {flow_figures(kind, transform)!r},")
    print("}")


if __name__ == "__main__":
    import os
    import tempfile

    torch.set_num_threads(1)
    data = os.environ.get("LNF_DATA_DIR") or str(Path(__file__).resolve().parents[2]
                                                 / "shared" / "data")
    with tempfile.TemporaryDirectory() as tmp:
        if "--write-fixtures" in sys.argv:
            write_fixtures(data, Path(tmp) / "fixtures")
        _print_figures(data, Path(tmp) / "figures")
