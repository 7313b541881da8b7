"""pyro-lnf: latent normalizing flows for discrete sequences, on Pyro."""

from pyro_lnf.errors import (
    CheckpointError,
    ChecksumError,
    ConfigError,
    DatasetError,
    DownloadError,
    LnfError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ChecksumError",
    "ConfigError",
    "DatasetError",
    "DownloadError",
    "LnfError",
]
