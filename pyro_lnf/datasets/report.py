"""The table ``lnf datasets`` prints: every dataset, its sizes, and whether it is present.

It fits 80 columns (what rich assumes off a terminal): each dataset takes two lines, its
sequences over its units (frames, characters, words) per split, and its kind under its name.
"""

from __future__ import annotations

import os

from rich import box
from rich.markup import escape
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
    table = Table(title=f"datasets in {escape(str(root))}", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, show_lines=True)
    for header, justify in (
        ("dataset\nkind", "left"),
        ("count", "left"),
        *((split, "right") for split in SPLITS),
        ("max\nlength", "right"),
        ("features", "right"),
    ):
        table.add_column(header, justify=justify, no_wrap=True)
    errors: list[str] = []
    notes: list[str] = []
    for name, spec in DATASETS.items():
        label = f"{name}\n[dim]{spec.kind}[/]"
        try:
            s: DatasetSummary = summarize(name, root)
        except DatasetError as err:
            errors.append(f"{name}: {err}")
            table.add_row(label, "[red]invalid[/]", "-", "-", "-", "-", "-")
            continue
        if not s.present:
            table.add_row(label, "[yellow]missing[/]", "-", "-", "-", "-", "-")
            continue
        table.add_row(
            label,
            f"sequences\n{spec.unit}",
            *(f"{s.sequences[split]:,}\n{s.units[split]:,}" for split in SPLITS),
            f"{s.max_length:,}",
            f"{s.num_features:,}",
        )
        if s.note:
            notes.append(f"{name}: {escape(s.note)}")
    if notes:
        table.caption = "; ".join(notes)
        table.caption_justify = "left"
    return table, errors
