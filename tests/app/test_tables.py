"""`lnf evaluate`'s table fits 80 columns (what rich draws off a terminal) and keeps every
label intact; `lnf datasets`' is checked in test_cli_datasets.py."""

from __future__ import annotations

from rich.cells import cell_len
from rich.console import Console

from pyro_lnf.app import cli

FLOW = {
    "model": "lnf", "dataset": "jsb_chorales", "split": "test", "sequences": 77,
    "units": 4802.0, "frames": 4725.0, "num_samples": 100, "nll_nats_per_unit": 6.5332,
    "nll_bits_per_unit": 9.4255, "nll_nats_per_frame": 6.6396, "nll_bits_per_frame": 9.5789,
    "elbo_loss_nats_per_unit": 6.9, "reconstruction_nats_per_unit": 6.1,
    "kl_nats_per_unit": 0.8, "elbo_loss_nats_per_frame": 7.0,
    "reconstruction_nats_per_frame": 6.2, "kl_nats_per_frame": 0.81, "precision": "bf16",
}
VAE = {
    "model": "svae", "dataset": "ptb_words", "split": "test", "average": "corpus",
    "sequences": 3761, "tokens": 82430, "num_samples": 30, "ppl_elbo": 123.4567,
    "ppl_is": 118.2, "nll_elbo_nats_per_token": 4.81, "nll_is_nats_per_token": 4.77,
    "kl_nats_per_sequence": 3.1, "reconstruction_nats_per_token": 4.7,
    "analytic_kl_nats_per_sequence": 3.05,
}


def render(results: dict, width: int = 80) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    console.print(cli.evaluation_table(results))
    return console.export_text()


def test_evaluate_table_fits_80_columns_with_every_number_and_label():
    for results in (FLOW, VAE):
        text = render(results)
        assert max(map(cell_len, text.splitlines())) <= 80, text
        for key, value in results.items():
            if key not in ("model", "dataset", "split", "precision"):
                assert key in text, key
    flow = render(FLOW)
    assert "lnf on jsb_chorales / test (bf16 LSTMs)" in flow
    assert "4,802" in flow and "6.5332" in flow  # a count as a count, a rate to 4 places
    assert "7.0000" in flow
    # brackets in a label are text, not rich markup (they vanished before)
    assert "E_q[log q(z|x) − log p(z)]" in " ".join(flow.split())
    # each family's wording for the keys both report
    assert "number of sequences evaluated" in flow
    assert "sentences / documents" in render(VAE)
    assert "corpus" in render(VAE)


def test_evaluate_table_uses_a_wider_terminal_without_wrapping_keys():
    text = render(FLOW, width=160)
    assert max(map(cell_len, text.splitlines())) <= 160
    assert any("reconstruction_nats_per_frame" in line and "6.2000" in line
               for line in text.splitlines())
