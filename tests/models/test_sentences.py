"""Sentences from a sentence VAE: prior samples reproduce by seed and stop at <eos>, homotopies
start and end at the two encodings, and `lnf sample` writes them as text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyro_lnf.checkpoint import save_checkpoint
from pyro_lnf.datasets import load_dataset
from pyro_lnf.datasets.base import Vocab
from pyro_lnf.datasets.batching import collate
from pyro_lnf.errors import ConfigError
from pyro_lnf.app.sampling import sentence_texts
from pyro_lnf.models.sentence_vae import SentenceVAE
from pyro_lnf.sample import interpolate_sentences, sample_sentences
from helpers import assert_one_line_error, run_lnf

PAD, SOS, EOS = 0, 1, 2
VOCAB = 9


def tiny_vae(latent: str) -> SentenceVAE:
    torch.manual_seed(0)
    vae = SentenceVAE(VOCAB, latent=latent, latent_dim=4, kappa=10.0, embedding_dim=5,
                      hidden_size=6, pad_index=PAD, sos_index=SOS, eos_index=EOS)
    with torch.no_grad():  # make <eos> likely enough that most sentences stop early
        vae.output.bias[EOS] += 1.5
    return vae


@pytest.mark.parametrize("latent", ["gaussian", "vmf"])
def test_prior_sentences_reproduce_by_seed_and_stop_at_eos(latent):
    vae = tiny_vae(latent)
    tokens, lengths = sample_sentences(vae, 16, max_length=12, seed=3)
    again, again_lengths = sample_sentences(vae, 16, max_length=12, seed=3)
    other, _ = sample_sentences(vae, 16, max_length=12, seed=4)
    assert torch.equal(tokens, again) and torch.equal(lengths, again_lengths)
    assert not torch.equal(tokens, other)
    assert tokens.shape == (16, 12) and ((lengths >= 1) & (lengths <= 12)).all()
    for ids, n in zip(tokens.tolist(), lengths.tolist(), strict=True):
        assert EOS not in ids[: n - 1]  # a sentence ends at its first <eos> ...
        assert ids[n - 1] == EOS or n == 12  # ... or at the cap
        assert all(i == PAD for i in ids[n:])
    assert (lengths < 12).any()


@pytest.mark.parametrize("latent", ["gaussian", "vmf"])
def test_homotopy_runs_between_the_two_encodings(latent):
    vae = tiny_vae(latent)
    a, b = torch.tensor([3, 4, 5, EOS]), torch.tensor([6, 7, EOS])
    tokens, lengths, z = interpolate_sentences(vae, a, b, 5, max_length=10)
    vae.eval()
    with torch.no_grad():
        q_a = vae.posterior(collate([a], [0], pad_value=PAD))
        q_b = vae.posterior(collate([b], [0], pad_value=PAD))
    if latent == "gaussian":
        ends = q_a.mean[0], q_b.mean[0]
    else:
        ends = q_a.loc[0], q_b.loc[0]
        assert torch.allclose(z.norm(dim=-1), torch.ones(5), atol=1e-6)
        # On the great circle: every point is a combination of the two ends.
        basis = torch.stack(ends, 1)
        coef = torch.linalg.lstsq(basis, z.T).solution
        assert torch.allclose(basis @ coef, z.T, atol=1e-5)
    assert torch.allclose(z[0], ends[0], atol=1e-6) and torch.allclose(z[-1], ends[1], atol=1e-6)
    assert tokens.shape == (5, 10) and lengths.shape == (5,)
    # The mode is decoded, so the path does not depend on the seed.
    assert torch.equal(tokens, interpolate_sentences(vae, a, b, 5, max_length=10, seed=9)[0])
    greedy, _, _ = vae.generate(z, 10, greedy=True)
    assert torch.equal(tokens, greedy)


def test_bad_sentence_options_raise_config_errors():
    vae = tiny_vae("vmf")
    with pytest.raises(ConfigError, match="--num must be between 1 and 10000, got 0"):
        sample_sentences(vae, 0)
    with pytest.raises(ConfigError, match="--length must be between 1 and 100000, got 0"):
        sample_sentences(vae, 2, max_length=0)
    with pytest.raises(ConfigError, match=r"at most 1000000 steps in one batch, got 10000 x 101"):
        sample_sentences(vae, 10_000, max_length=101)
    with pytest.raises(ConfigError, match="unknown decoding"):
        sample_sentences(vae, 2, decode="beam")
    with pytest.raises(ConfigError, match="--steps must be between 2 and 1000, got 1"):
        interpolate_sentences(vae, torch.tensor([3, EOS]), torch.tensor([4, EOS]), 1)
    with pytest.raises(ConfigError, match="empty"):
        interpolate_sentences(vae, torch.tensor([], dtype=torch.long), torch.tensor([4, EOS]), 3)


def test_sentence_texts_drop_the_closing_eos():
    vocab = Vocab(["<pad>", "<sos>", "<eos>", "the", "cat", "sat"], unk_index=None, pad_index=PAD,
                  level="word")
    vae = tiny_vae("gaussian")
    tokens = torch.tensor([[3, 4, 5, EOS, PAD], [3, 4, 5, 4, 3]])
    texts = sentence_texts(vae, vocab, tokens, torch.tensor([4, 5]))
    assert texts == ["the cat sat", "the cat sat cat the"]


def test_cli_samples_and_interpolates_sentences(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("LNF_DATA_DIR", str(data_dir))
    ptb = load_dataset("ptb_words", data_dir=data_dir)
    torch.manual_seed(0)
    vae = SentenceVAE.from_vocab(ptb.vocab, latent="vmf", latent_dim=4, kappa=10.0,
                                 embedding_dim=4, hidden_size=4, dataset="ptb_words")
    checkpoint = save_checkpoint(tmp_path / "svae.pt", module=vae)
    out = tmp_path / "sentences"
    code, stdout, err = run_lnf(monkeypatch, capsys, "sample", str(checkpoint), "-n", "3",
                                "--length", "7", "--format", "txt", "--format", "npz",
                                "--out", str(out))
    assert code == 0, err
    arrays = np.load(out / "samples.npz")
    eos = ptb.vocab.stoi["<eos>"]
    expected = [
        " ".join(ptb.vocab.itos[i] for i in ids[:n] if i != eos)
        for ids, n in zip(arrays["x"].tolist(), arrays["lengths"], strict=True)
    ]
    assert stdout.splitlines() == expected
    assert (out / "samples.txt").read_text(encoding="utf-8").splitlines() == expected
    assert arrays["x"].shape == (3, 7)

    code, stdout, err = run_lnf(monkeypatch, capsys, "sample", str(checkpoint), "--interpolate",
                                "0", "1", "--steps", "4", "--length", "5", "--out", str(out))
    assert code == 0, err
    assert len(stdout.splitlines()) == 4 and (out / "interps.txt").exists()

    for extra, needle in [
        (["--format", "midi"], "is a sentence VAE"),
        (["--temperature", "0.5"], "not to a sentence VAE"),
        (["--interpolate", "0", "99999"], "test sentence 99999 does not exist"),
        (["--length", "0"], "'--length': 0 is not in the range 1<=x<=100000"),
    ]:
        code, _, err = run_lnf(monkeypatch, capsys, "sample", str(checkpoint), *extra,
                               "--out", str(tmp_path / "never"))
        assert_one_line_error(code, err, needle)
    assert not (tmp_path / "never").exists()
