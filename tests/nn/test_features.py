"""The bidirectional LSTM over padded batches: the same function as a packed nn.LSTM."""

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pyro_lnf.nn.features import reverse_within_lengths
from pyro_lnf.nn.lstm import BiLSTM


def test_reverse_within_lengths_reverses_valid_steps_and_keeps_padding():
    x = torch.arange(2 * 4 * 3, dtype=torch.float64).view(2, 4, 3)
    lengths = torch.tensor([4, 2])
    out = reverse_within_lengths(x, lengths)
    assert torch.equal(out[0], x[0].flip(0))
    assert torch.equal(out[1, :2], x[1, :2].flip(0))
    assert torch.equal(out[1, 2:], x[1, 2:])
    assert torch.equal(reverse_within_lengths(out, lengths), x)


def test_reverse_within_lengths_gradient_is_the_same_permutation():
    x = torch.randn(3, 5, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 1, 3])
    weights = torch.randn(3, 5, 2, dtype=torch.float64)
    (reverse_within_lengths(x, lengths) * weights).sum().backward()
    assert torch.equal(x.grad, reverse_within_lengths(weights, lengths))


def test_bilstm_matches_packed_bidirectional_lstm():
    torch.manual_seed(0)
    ours = BiLSTM(3, 4, num_layers=2).double()
    reference = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True).double()
    with torch.no_grad():
        for k in range(2):
            for suffix, layers in (("", ours.forward_layers), ("_reverse", ours.backward_layers)):
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(reference, f"{kind}_l{k}{suffix}").copy_(
                        getattr(layers[k], f"{kind}_l0")
                    )
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = pad_packed_sequence(reference(packed)[0], batch_first=True)
    got = ours(x, lengths)
    mask = torch.arange(6) < lengths[:, None]
    torch.testing.assert_close(got[mask], expected[mask])
