"""The table ``lnf datasets`` prints: every dataset, its sizes, and whether it is present."""

from __future__ import annotations

import os

from rich.table import Table

from pyro_lnf.datasets.base import SPLITS, resolve_data_dir
from pyro_lnf.datasets.registry import DATASETS, DatasetSummary, summarize
from pyro_lnf.errors import DatasetError


def _per_split(counts: dict[str, int]) -> str:
    return " / ".join(f"{counts[s]:,}" for s in SPLITS)


def datasets_table(data_dir: str | os.PathLike | None = None) -> tuple[Table, list[str]]:
    """Summarise every dataset in :data:`DATASETS` (each is loaded once) into a rich table.

    Returns:
        the table, and one message per dataset whose files are present but invalid (those
        rows say ``invalid``; the caller decides how to fail).
    """
    root = resolve_data_dir(data_dir)
    table = Table(title=f"datasets in {root}", title_justify="left")
    for header, justify in (
        ("dataset", "left"),
        ("kind", "left"),
        ("present", "left"),
        ("sequences (train / valid / test)", "right"),
        ("size (train / valid / test)", "right"),
        ("unit", "left"),
        ("max len", "right"),
        ("features", "right"),
    ):
        table.add_column(header, justify=justify, no_wrap=header != "dataset")
    errors: list[str] = []
    notes: list[str] = []
    for name, spec in DATASETS.items():
        try:
            s: DatasetSummary = summarize(name, root)
        except DatasetError as err:
            errors.append(f"{name}: {err}")
            table.add_row(name, spec.kind, "[red]invalid[/]", "-", "-", spec.unit, "-", "-")
            continue
        if not s.present:
            table.add_row(name, spec.kind, "[yellow]missing[/]", "-", "-", spec.unit, "-", "-")
            continue
        table.add_row(
            name,
            spec.kind,
            "[green]yes[/]",
            _per_split(s.sequences),
            _per_split(s.units),
            spec.unit,
            f"{s.max_length:,}",
            f"{s.num_features:,}",
        )
        if s.note:
            notes.append(f"{name}: {s.note}")
    if notes:
        table.caption = "; ".join(notes)
        table.caption_justify = "left"
    return table, errors
