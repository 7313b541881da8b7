"""Datasets: loading, validation, download and length-bucketed batching.

Example::

    >>> from pyro_lnf.datasets import load_dataset  # doctest: +SKIP
    >>> ds = load_dataset("jsb_chorales", data_dir="data", download=True)  # doctest: +SKIP
    >>> for batch in ds.batches("train", 16, seed=0):  # doctest: +SKIP
    ...     batch.x.shape, batch.mask.shape   # (16, T_max, 88), (16, T_max)
"""

from pyro_lnf.datasets.base import SPLITS, Dataset, Vocab, resolve_data_dir
from pyro_lnf.datasets.batching import Batch, batch_indices, collate, iterate_batches
from pyro_lnf.datasets.download import MIRROR_ENV, Source, fetch_bytes, fetch_file, mirror_urls
from pyro_lnf.datasets.polyphonic import MUSIC, RestrictedUnpickler
from pyro_lnf.datasets.registry import (
    DATASETS,
    DatasetSpec,
    DatasetSummary,
    fetch_dataset,
    get_spec,
    load_dataset,
    summarize,
)

__all__ = [
    "DATASETS",
    "MIRROR_ENV",
    "MUSIC",
    "SPLITS",
    "Batch",
    "Dataset",
    "DatasetSpec",
    "DatasetSummary",
    "RestrictedUnpickler",
    "Source",
    "Vocab",
    "batch_indices",
    "collate",
    "fetch_bytes",
    "fetch_dataset",
    "fetch_file",
    "get_spec",
    "iterate_batches",
    "load_dataset",
    "mirror_urls",
    "resolve_data_dir",
    "summarize",
]
