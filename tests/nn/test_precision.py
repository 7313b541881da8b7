"""bulk_precision: the latent-flow model's LSTMs and projection in bfloat16, the rest in
float32, and the importance-sampled NLL close to the float32 one on the same draws."""

import os
import subprocess
import sys

import pyro
import pytest
import torch

from helpers import REPO
from pyro_lnf.datasets import iterate_batches
from pyro_lnf.checkpoint import save_checkpoint
from pyro_lnf.errors import ConfigError
from pyro_lnf.evaluate import importance_sample
from pyro_lnf.app.run import evaluate_checkpoint
from pyro_lnf.models.baseline import LSTMBaseline
from pyro_lnf.nn.lstm import BiLSTM
from pyro_lnf.models.lnf import LatentFlowModel
from pyro_lnf.nn.precision import bf16_lstm_supported, bulk_precision

#: The numerics of bf16 can only be checked where oneDNN runs a bfloat16 LSTM; elsewhere the
#: refusal is what is tested (below, on every CPU).
needs_bf16 = pytest.mark.skipif(
    not bf16_lstm_supported(), reason="this CPU has no bfloat16 LSTM kernel (no AVX-512)"
)

SIZES = dict(
    latent_dim=4, hidden_size=32, embedding_dim=16, flow_layers=2, flow_hidden=(8, 8),
    length_dim=4, dropout=0.0,
)


@needs_bf16
def test_bilstm_computes_in_bfloat16_and_returns_float32_only_inside_the_context():
    torch.manual_seed(0)
    rnn = BiLSTM(5, 16, num_layers=2)
    x, lengths = torch.randn(3, 7, 5), torch.tensor([7, 3, 5])
    full = rnn(x, lengths)
    with bulk_precision(torch.bfloat16):
        reduced = rnn(x, lengths)
    assert reduced.dtype == torch.float32
    error = (reduced - full).abs().max().item()
    assert 0 < error < 0.02  # rounded (so bf16 did run), but only by bfloat16's 2^-8
    assert torch.equal(rnn(x, lengths), full)  # nothing left switched on after the block


@needs_bf16
@pytest.mark.parametrize("prior", ["afaf", "afscf", "iafscf"])
def test_importance_sampled_nll_moves_little_in_bfloat16(prior):
    lengths = [9, 6, 8, 3]
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(n, 6, generator=g) < 0.3).float() for n in lengths]
    batch = next(iterate_batches(data, 4, shuffle=False, pad_value=0))
    torch.manual_seed(1)
    model = LatentFlowModel(
        kind="binary", num_features=6, max_length=9, lengths=lengths, prior=prior, **SIZES
    ).eval()

    def nll_per_frame(dtype):
        pyro.set_rng_seed(5)  # the same guide draws in both precisions
        with bulk_precision(dtype):
            est = importance_sample(model.model, model.guide, batch, 1.0, num_samples=20)
        assert est.log_likelihood.dtype == torch.float32
        return -est.log_likelihood / batch.lengths

    full, reduced = nll_per_frame(None), nll_per_frame(torch.bfloat16)
    shift = (reduced - full).abs().max().item()
    assert 0 < shift < 2e-3  # nats per frame, for each sequence (about 1e-4 here)


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="bulk precision"):
        with bulk_precision(torch.float16):
            pass


def test_evaluate_checkpoint_refuses_bf16_where_it_would_do_nothing(tmp_path):
    baseline = LSTMBaseline(
        kind="binary", num_features=6, max_length=9, lengths=[3, 5], embedding_dim=8,
        hidden_size=8, length_dim=4, dataset="jsb_chorales",
    )
    path = save_checkpoint(tmp_path / "lstm.pt", module=baseline)
    with pytest.raises(ConfigError, match="latent-flow models"):
        evaluate_checkpoint(str(path), precision="bf16")
    with pytest.raises(ConfigError, match="--precision must be one of fp32, bf16"):
        evaluate_checkpoint(str(path), precision="fp16")


def test_bf16_is_refused_in_one_line_where_the_cpu_lacks_it(monkeypatch):
    monkeypatch.setattr("pyro_lnf.nn.precision.bf16_lstm_supported", lambda: False)
    with pytest.raises(ConfigError, match="bfloat16 LSTM kernel .* evaluate in fp32"):
        with bulk_precision(torch.bfloat16):
            pass
    with bulk_precision(None):  # float32 is always there
        pass


def test_probe_finds_no_bf16_lstm_on_an_avx2_only_cpu(tmp_path, data_dir):
    """Capping oneDNN at AVX2 makes any x86 CPU look like an AVX2-only EPYC, where the
    bfloat16 LSTM fails: the probe must say so, and the CLI must refuse in one line."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    code = "from pyro_lnf.nn.precision import bf16_lstm_supported as s; print(s())"
    probe = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, check=True)
    assert probe.stdout.strip() == "False"
    baseline = LatentFlowModel(
        kind="binary", num_features=88, max_length=9, lengths=[3, 5], prior="afaf",
        dataset="jsb_chorales", **SIZES,
    )
    path = save_checkpoint(tmp_path / "tiny.pt", module=baseline)
    cli = [sys.executable, "-c", "import cli; cli.main()", "evaluate", str(path),
           "--precision", "bf16", "--data-dir", str(data_dir)]
    result = subprocess.run(cli, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: bf16 needs a CPU with a bfloat16 LSTM kernel (AVX-512: Zen 4, Cooper Lake or "
        "later), which this one lacks; evaluate in fp32"
    ]


@needs_bf16
def test_evaluate_checkpoint_repeats_exactly_under_its_seed(tmp_path, data_dir):
    torch.manual_seed(0)
    model = LatentFlowModel(
        kind="binary", num_features=88, max_length=200, lengths=list(range(20, 200)),
        prior="afaf", dataset="jsb_chorales", **SIZES,
    )
    path = str(save_checkpoint(tmp_path / "tiny.pt", module=model))
    options = dict(split="valid", num_samples=2, data_dir=str(data_dir), quiet=True)
    first, again = (evaluate_checkpoint(path, **options) for _ in range(2))
    other = evaluate_checkpoint(path, seed=1, **options)
    reduced = evaluate_checkpoint(path, precision="bf16", **options)
    assert first["nll_nats_per_unit"] == again["nll_nats_per_unit"]
    assert other["nll_nats_per_unit"] != first["nll_nats_per_unit"]
    # the same draws: bf16 rounding moves the NLL far less than a change of seed does
    shift = abs(reduced["nll_nats_per_unit"] - first["nll_nats_per_unit"])
    assert 0 < shift < abs(other["nll_nats_per_unit"] - first["nll_nats_per_unit"]) / 10
